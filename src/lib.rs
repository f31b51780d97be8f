//! sluice: a reverse proxy and load balancer for HTTP and WebSocket that reads
//! the nginx configuration language.

pub mod conf;
pub mod proxy;
pub mod runtime;
pub mod tools;
pub mod vars;
