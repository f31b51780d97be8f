//! STUB: replaced by the routing branch.
#[derive(Debug)]
pub struct UriError;
pub fn normalize(raw: &str, _merge: bool) -> Result<String, UriError> {
    if !raw.starts_with('/') {
        return Err(UriError);
    }
    Ok(raw.to_string())
}
