//! Demo peers: a WebSocket echo backend and a wscat-like client.
//!
//! * [`echo`]: `sluice echo`, the backend of the nginx WebSocket guide, plus a
//!   browser test page and hooks for proxy tests (`/close`, `/big`, `--name`).
//! * [`wscat`]: `sluice wscat`, a line-oriented client for trying a proxy by
//!   hand or from scripts.

pub mod echo;
pub mod wscat;
