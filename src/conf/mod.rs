//! The nginx configuration language: lexer, parser, includes, and the typed model.

pub mod compile;
pub mod directives;
pub mod error;
pub mod model;
pub mod parse;
pub mod ssl;
pub mod units;

pub use compile::{load, load_str, LoadOptions};
pub use error::{ConfError, ConfErrorKind, SrcLoc};
pub use model::Config;
