//! Variables: the registry of names, templates compiled once at load, and `map`.

pub mod eval;
pub mod registry;
pub mod template;

pub use registry::{Builtin, Var, VarRegistry};
pub use template::{Part, Template, TemplateError};
