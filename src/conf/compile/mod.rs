//! From the directive tree to the typed [`Config`]: one step per context.

mod http;
mod main_ctx;
mod map;
mod server;
mod settings;
mod ssl;
mod upstream;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::directives::{self, ctx, Arity, Spec, Status};
use super::error::{ConfError, ConfErrorKind, Result, SrcLoc};
use super::model::Config;
use super::parse::{Directive, Loader};
use super::units;

/// What to load: nginx's `-p`, `-c` and `-g`.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub prefix: PathBuf,
    pub conf_file: PathBuf,
    pub global_directives: Option<String>,
}

impl LoadOptions {
    /// `conf_file` as given on the command line, resolved against the prefix.
    pub fn conf_path(&self) -> PathBuf {
        self.prefix.join(&self.conf_file)
    }
}

/// Reads, parses and compiles a configuration.
pub fn load(opts: &LoadOptions) -> Result<Config> {
    let conf_path = opts.conf_path();
    let conf_dir = conf_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| opts.prefix.clone());
    let mut loader = Loader::new(conf_dir);
    // nginx reads `-g` before the file, so a duplicate is reported in the file.
    let mut tree = match &opts.global_directives {
        Some(g) => loader.parse_command_line(g)?,
        None => Vec::new(),
    };
    tree.extend(loader.load_file(&conf_path, None)?);
    compile_tree(tree, loader, opts.prefix.clone(), conf_path)
}

/// Parses and compiles configuration text that is not on disk (the embedded
/// default); `include` paths resolve against `prefix`.
pub fn load_str(text: &str, name: &str, prefix: &Path) -> Result<Config> {
    let mut loader = Loader::new(prefix);
    let tree = loader.parse_text(text, Arc::new(PathBuf::from(name)))?;
    compile_tree(tree, loader, prefix.to_path_buf(), PathBuf::from(name))
}

fn compile_tree(
    tree: Vec<Directive>,
    loader: Loader,
    prefix: PathBuf,
    conf_file: PathBuf,
) -> Result<Config> {
    let mut cx = Cx {
        conf_dir: conf_file
            .parent()
            .map_or_else(|| prefix.clone(), |d| prefix.join(d)),
        prefix: prefix.clone(),
        warned: HashSet::new(),
        warnings: Vec::new(),
    };
    let (main, events, http) = main_ctx::compile(&mut cx, &tree)?;
    Ok(Config {
        main,
        events,
        http,
        tree,
        sources: loader.sources,
        warnings: cx.warnings,
        prefix,
        conf_file,
    })
}

/// State shared by every compile step.
pub(crate) struct Cx {
    pub prefix: PathBuf,
    /// The main file's directory: nginx's conf prefix, for `ssl_certificate`.
    pub conf_dir: PathBuf,
    warned: HashSet<&'static str>,
    pub warnings: Vec<String>,
}

impl Cx {
    /// Checks a directive against the table for context `here`, and records a
    /// warning the first time a directive without effect is seen.
    pub fn check(&mut self, d: &Directive, here: u16) -> Result<&'static Spec> {
        let spec = directives::find(&d.name, here).ok_or_else(|| {
            ConfError::at(ConfErrorKind::UnknownDirective(d.name.clone()), &d.loc)
        })?;
        if spec.ctx & here == 0 {
            return Err(ConfError::at(
                ConfErrorKind::NotAllowedHere(d.name.clone()),
                &d.loc,
            ));
        }
        match (spec.block, d.block.is_some()) {
            (true, false) => {
                return Err(ConfError::at(
                    ConfErrorKind::NoOpeningBrace(d.name.clone()),
                    &d.loc,
                ))
            }
            (false, true) => {
                return Err(ConfError::at(
                    ConfErrorKind::NotTerminated(d.name.clone()),
                    &d.loc,
                ))
            }
            _ => {}
        }
        if !spec.arity.accepts(d.args.len()) {
            return Err(ConfError::at(
                ConfErrorKind::InvalidArgCount(d.name.clone()),
                &d.loc,
            ));
        }
        if spec.arity == Arity::Flag && units::parse_flag(&d.args[0]).is_none() {
            return Err(ConfError::at(
                ConfErrorKind::InvalidValue {
                    directive: d.name.clone(),
                    value: d.args[0].clone(),
                    hint: ", it must be \"on\" or \"off\"".into(),
                },
                &d.loc,
            ));
        }
        if let Status::NoEffect(why) = spec.status {
            if self.warned.insert(spec.name) {
                self.warnings.push(format!(
                    "\"{}\" directive is accepted but has no effect ({why}) in {}",
                    spec.name, d.loc
                ));
            }
        }
        Ok(spec)
    }

    /// Records a warning once per `key` for the whole load.
    pub fn warn_once(&mut self, key: &'static str, text: String) {
        if self.warned.insert(key) {
            self.warnings.push(text);
        }
    }

    /// A path relative to the prefix, as nginx resolves log and pid paths.
    pub fn full_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.prefix.join(path)
        }
    }
}

// Small value parsers shared by the context compilers; each error names the
// directive and the value as nginx does.

pub(crate) fn invalid(d: &Directive, value: &str) -> ConfError {
    ConfError::at(
        ConfErrorKind::InvalidValue {
            directive: d.name.clone(),
            value: value.to_string(),
            hint: String::new(),
        },
        &d.loc,
    )
}

/// nginx's slot handlers name the directive but not the value.
pub(crate) fn slot_error(d: &Directive, what: &'static str) -> ConfError {
    ConfError::at(
        ConfErrorKind::DirectiveSays {
            directive: d.name.clone(),
            what,
        },
        &d.loc,
    )
}

pub(crate) fn arg_size(d: &Directive, i: usize) -> Result<u64> {
    let v = d.args.get(i).map(String::as_str).unwrap_or_default();
    units::parse_size(v).ok_or_else(|| slot_error(d, "invalid value"))
}

pub(crate) fn arg_time(d: &Directive, i: usize) -> Result<std::time::Duration> {
    let v = d.args.get(i).map(String::as_str).unwrap_or_default();
    units::parse_time(v).ok_or_else(|| slot_error(d, "invalid value"))
}

pub(crate) fn arg_flag(d: &Directive) -> bool {
    // `Cx::check` already validated the value; nginx ignores its case.
    d.args.first().is_some_and(|v| v.eq_ignore_ascii_case("on"))
}

pub(crate) fn arg_num(d: &Directive, i: usize) -> Result<u64> {
    let v = d.args.get(i).map(String::as_str).unwrap_or_default();
    v.parse::<u64>()
        .ok()
        .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| slot_error(d, "invalid number"))
}

pub(crate) fn duplicate(d: &Directive) -> ConfError {
    ConfError::at(ConfErrorKind::Duplicate(d.name.clone()), &d.loc)
}

pub(crate) fn regex(pattern: &str, caseless: bool, loc: &SrcLoc) -> Result<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .build()
        .map_err(|e| {
            let reason = e.to_string();
            let reason = reason.lines().last().unwrap_or("").trim().to_string();
            ConfError::at(
                ConfErrorKind::Regex {
                    pattern: pattern.to_string(),
                    reason,
                },
                loc,
            )
        })
}

pub(crate) use ctx::{EVENTS, HTTP, LOCATION, MAIN, SERVER, UPSTREAM};
