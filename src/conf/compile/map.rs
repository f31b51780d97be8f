//! `map $source $target { default value; hostnames; key value; ~regex value; }`.

use std::collections::HashMap;

use super::http::template_error;
use super::{invalid, regex};
use crate::conf::error::{ConfError, Result};
use crate::conf::model::MapConf;
use crate::conf::parse::Directive;
use crate::vars::{Template, VarRegistry};

pub(super) fn compile(reg: &VarRegistry, d: &Directive) -> Result<MapConf> {
    let source = Template::compile(&d.args[0], reg).map_err(|e| template_error(e, d))?;
    let target = d.args[1]
        .strip_prefix('$')
        .ok_or_else(|| invalid(d, &d.args[1]))?
        .to_string();
    let mut map = MapConf {
        source,
        target,
        default: Template::literal(""),
        hostnames: false,
        exact: HashMap::new(),
        wild_start: Vec::new(),
        wild_end: Vec::new(),
        regexes: Vec::new(),
        volatile: false,
        loc: d.loc.clone(),
    };
    let entries = d.block.as_deref().unwrap_or_default();
    // `hostnames` changes how every key is read, wherever it is written.
    map.hostnames = entries
        .iter()
        .any(|e| e.name == "hostnames" && e.args.is_empty());
    let mut default_set = false;
    for e in entries {
        if e.block.is_some() {
            return Err(ConfError::msg(
                "unexpected \"{\" in map".to_string(),
                &e.loc,
            ));
        }
        match (e.name.as_str(), e.args.len()) {
            ("hostnames", 0) => continue,
            ("volatile", 0) => {
                map.volatile = true;
                continue;
            }
            (_, 1) => {}
            _ => {
                return Err(ConfError::msg(
                    "invalid number of the map parameters".to_string(),
                    &e.loc,
                ))
            }
        }
        let value = Template::compile(&e.args[0], reg).map_err(|err| template_error(err, e))?;
        let key = e.name.as_str();
        let conflict = || ConfError::msg(format!("conflicting parameter \"{key}\""), &e.loc);
        if key == "default" {
            if default_set {
                return Err(ConfError::msg(
                    "duplicate default map parameter".to_string(),
                    &e.loc,
                ));
            }
            default_set = true;
            map.default = value;
            continue;
        }
        if let Some(p) = key.strip_prefix('~') {
            let (p, caseless) = p.strip_prefix('*').map_or((p, false), |p| (p, true));
            map.regexes.push((regex(p, caseless, &e.loc)?, value));
            continue;
        }
        // A leading backslash lets a key start with "~" or be "default".
        let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
        if map.hostnames {
            if let Some(suffix) = key.strip_prefix('*') {
                if !suffix.starts_with('.') {
                    return Err(invalid(e, &key));
                }
                map.wild_start.push((suffix.to_string(), false, value));
                continue;
            }
            if key.starts_with('.') {
                map.wild_start.push((key.clone(), true, value));
                continue;
            }
            if let Some(prefix) = key.strip_suffix('*') {
                if !prefix.ends_with('.') {
                    return Err(invalid(e, &key));
                }
                map.wild_end.push((prefix.to_string(), value));
                continue;
            }
        }
        if map.exact.insert(key.clone(), value).is_some() {
            return Err(conflict());
        }
    }
    // Longest wildcard first, as nginx's wildcard hash prefers the most specific.
    map.wild_start.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    map.wild_end.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    Ok(map)
}
