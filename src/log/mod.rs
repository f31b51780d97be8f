//! Logs: access log lines from `log_format` written by a background thread,
//! and the error log.

pub mod access;
pub mod error;
pub mod writer;

/// The error log, by the name nginx's directive uses.
pub use self::error as error_log;
pub use access::{format_line, log_request};
pub use writer::{AccessLogs, FileSpec, LogError, LogTarget};
