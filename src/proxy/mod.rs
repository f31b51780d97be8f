//! Forwarding a request to a peer with nginx's header, URI, timeout and
//! failure rules; an accepted upgrade becomes a byte tunnel.

pub mod body;
pub mod buffer;
pub mod drain;
pub mod driven;
pub mod forward;
pub mod gzip;
pub mod h2ws;
pub mod headers;
pub mod pages;
pub mod redirect;
pub mod tunnel;
pub mod upgraded;
pub mod upstream_tls;
pub mod uri;
pub mod wsframe;

pub use forward::forward;
