//! STUB: replaced by the vars branch.
pub mod access;
pub mod error;
