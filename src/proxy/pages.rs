//! Responses sluice makes itself: nginx's error pages, `return`, redirects.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, ProxyBody};

/// The product token in `Server` and on error pages.
pub fn server_token(full_version: bool) -> &'static str {
    if full_version {
        concat!("sluice/", env!("CARGO_PKG_VERSION"))
    } else {
        "sluice"
    }
}

/// nginx's reason phrase for the status codes it has pages for.
fn title(code: u16) -> Option<&'static str> {
    Some(match code {
        301 => "301 Moved Permanently",
        302 => "302 Found",
        303 => "303 See Other",
        307 => "307 Temporary Redirect",
        308 => "308 Permanent Redirect",
        400 => "400 Bad Request",
        401 => "401 Authorization Required",
        402 => "402 Payment Required",
        403 => "403 Forbidden",
        404 => "404 Not Found",
        405 => "405 Not Allowed",
        406 => "406 Not Acceptable",
        408 => "408 Request Time-out",
        409 => "409 Conflict",
        410 => "410 Gone",
        411 => "411 Length Required",
        412 => "412 Precondition Failed",
        413 => "413 Request Entity Too Large",
        414 => "414 Request-URI Too Large",
        415 => "415 Unsupported Media Type",
        416 => "416 Requested Range Not Satisfiable",
        421 => "421 Misdirected Request",
        429 => "429 Too Many Requests",
        494 => "400 Request Header Or Cookie Too Large",
        495 => "400 The SSL certificate error",
        496 => "400 No required SSL certificate was sent",
        497 => "400 The plain HTTP request was sent to HTTPS port",
        500 => "500 Internal Server Error",
        501 => "501 Not Implemented",
        502 => "502 Bad Gateway",
        503 => "503 Service Temporarily Unavailable",
        504 => "504 Gateway Time-out",
        505 => "505 HTTP Version Not Supported",
        507 => "507 Insufficient Storage",
        _ => return None,
    })
}

/// nginx's reason phrase in the status line (`ngx_http_status_lines`),
/// where it differs from the one hyper would write.
pub fn status_reason(code: u16) -> Option<&'static [u8]> {
    Some(match code {
        302 => b"Moved Temporarily",
        401 => b"Unauthorized",
        405 => b"Not Allowed",
        408 => b"Request Time-out",
        413 => b"Request Entity Too Large",
        414 => b"Request-URI Too Large",
        416 => b"Requested Range Not Satisfiable",
        503 => b"Service Temporarily Unavailable",
        504 => b"Gateway Time-out",
        _ => return None,
    })
}

/// Gives a response sluice makes nginx's status line.
pub fn set_nginx_reason(resp: &mut Response<ProxyBody>) {
    if let Some(r) = status_reason(resp.status().as_u16()) {
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(r));
    }
}

/// The status sent on the wire for nginx's internal codes (494..497 are 400).
pub fn wire_status(code: u16) -> StatusCode {
    let code = match code {
        494..=497 => 400,
        c => c,
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// nginx's built-in error page body for `code`, if it has one.
pub fn error_body(code: u16, tokens: bool) -> Option<String> {
    let t = title(code)?;
    // 494..497 are 400s whose page names the reason under the heading.
    let (h1, detail) = match t.strip_prefix("400 ") {
        Some(d) if code != 400 => ("400 Bad Request", format!("<center>{d}</center>\r\n")),
        _ => (t, String::new()),
    };
    Some(format!(
        "<html>\r\n<head><title>{t}</title></head>\r\n<body>\r\n<center><h1>{h1}</h1></center>\r\n{detail}<hr><center>{}</center>\r\n</body>\r\n</html>\r\n",
        server_token(tokens)
    ))
}

/// An error (or redirect) response with nginx's page.
pub fn error(code: u16, tokens: bool, close: bool) -> Response<ProxyBody> {
    let body = error_body(code, tokens).unwrap_or_default();
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = wire_status(code);
    set_nginx_reason(&mut resp);
    let h = resp.headers_mut();
    // nginx gives a 204 no Content-Type (it has no page either).
    if code != 204 {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `return code text` / `return 3xx URL`.
pub fn returned(
    code: u16,
    text: Option<Vec<u8>>,
    tokens: bool,
    default_type: &str,
) -> Response<ProxyBody> {
    let is_redirect = matches!(code, 301 | 302 | 303 | 307 | 308);
    match (is_redirect, text) {
        (true, Some(url)) => {
            let mut resp = error(code, tokens, false);
            if let Ok(v) = HeaderValue::from_bytes(&url) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        (false, Some(text)) => {
            let mut resp = Response::new(full(Bytes::from(text)));
            *resp.status_mut() = wire_status(code);
            set_nginx_reason(&mut resp);
            if let Ok(v) = HeaderValue::from_str(default_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
        (_, None) => error(code, tokens, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_494_page_names_the_reason_under_a_400_heading() {
        let page = error_body(494, false).unwrap_or_default();
        assert!(page.contains("<title>400 Request Header Or Cookie Too Large</title>"));
        assert!(page.contains("<h1>400 Bad Request</h1></center>\r\n<center>Request Header Or Cookie Too Large</center>"));
        let page = error_body(404, false).unwrap_or_default();
        assert!(page.contains("<h1>404 Not Found</h1></center>\r\n<hr>"));
    }

    #[test]
    fn status_lines_carry_nginx_s_reasons() {
        let resp = error(504, false, false);
        let r = resp.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(r.map(|r| r.as_bytes()), Some(&b"Gateway Time-out"[..]));
        assert!(error(204, false, false)
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none());
    }
}
