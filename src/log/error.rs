//! STUB
pub fn init(_e: &crate::conf::model::ErrorLog) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
}
