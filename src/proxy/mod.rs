//! Forwarding to upstream peers; for now the byte tunnel of upgraded
//! connections.

pub mod tunnel;
