//! Demo peers: a WebSocket echo backend and a wscat-like client.

pub mod echo;
pub mod wscat;
