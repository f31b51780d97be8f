//! STUB
use crate::conf::model::AccessLog;
use crate::vars::eval::VarCtx;
pub struct LogSink;
impl LogSink {
    pub fn open(_c: &crate::conf::Config) -> std::io::Result<LogSink> {
        Ok(LogSink)
    }
    pub fn reopen(&self) {}
    pub fn flush_all(&self) {}
}
pub fn log_request(_logs: &[AccessLog], _cx: &VarCtx<'_>, _sink: &LogSink) {}
