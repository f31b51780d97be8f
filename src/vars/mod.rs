//! Variables: the registry of names, templates compiled once at load, their
//! evaluation against a request, and `map`.

pub mod eval;
pub mod map;
pub mod registry;
pub mod template;

pub use eval::{
    eval_var, var_value, Captures, ConnInfo, ResponseInfo, UpstreamInfo, UpstreamTry, VarCtx,
};
pub use map::map_lookup;
pub use registry::{Builtin, Var, VarRegistry};
pub use template::{Part, Template, TemplateError};
