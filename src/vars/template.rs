//! Templates: strings with `$var` and `${var}` references, split once at load
//! into literal and variable parts.

use super::registry::{Var, VarRegistry};

/// One piece of a compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// A string with variables, compiled at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub parts: Box<[Part]>,
    /// The text as written, for messages and `-T`.
    pub source: Box<str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unknown \"{0}\" variable")]
    UnknownVariable(String),
    #[error("invalid variable name in \"{0}\"")]
    InvalidName(String),
    #[error("the closing bracket in \"{0}\" variable is missing")]
    MissingBracket(String),
}

impl Template {
    /// Splits `text` into parts, resolving each variable name in `reg`.
    pub fn compile(text: &str, reg: &VarRegistry) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                // Push the whole UTF-8 character.
                let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
                lit.push_str(&text[i..i + ch_len]);
                i += ch_len;
                continue;
            }
            i += 1;
            let (name, next) = if b.get(i) == Some(&b'{') {
                let close = text[i..]
                    .find('}')
                    .ok_or_else(|| TemplateError::MissingBracket(text.to_string()))?;
                (&text[i + 1..i + close], i + close + 1)
            } else {
                let end = b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(b.len(), |p| i + p);
                // `$1x` is the capture `$1` followed by `x`, as in nginx.
                let end = if b.get(i).is_some_and(u8::is_ascii_digit) {
                    i + 1
                } else {
                    end
                };
                (&text[i..end], end)
            };
            if name.is_empty() {
                return Err(TemplateError::InvalidName(text.to_string()));
            }
            let var = reg
                .resolve(name)
                .ok_or_else(|| TemplateError::UnknownVariable(name.to_string()))?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into_boxed_str()));
            }
            parts.push(Part::Var(var));
            i = next;
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into_boxed_str()));
        }
        Ok(Template {
            parts: parts.into_boxed_slice(),
            source: text.into(),
        })
    }

    /// A template with no variables.
    pub fn literal(text: &str) -> Self {
        let parts: Box<[Part]> = if text.is_empty() {
            Box::new([])
        } else {
            Box::new([Part::Lit(text.into())])
        };
        Template {
            parts,
            source: text.into(),
        }
    }

    /// The text, when the template has no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match &*self.parts {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::registry::Builtin;

    #[test]
    fn splits_parts() {
        let reg = VarRegistry::default();
        let t = Template::compile("$remote_addr - ${host}x $1y $http_user_agent", &reg).unwrap();
        assert_eq!(
            &*t.parts,
            &[
                Part::Var(Var::Builtin(Builtin::RemoteAddr)),
                Part::Lit(" - ".into()),
                Part::Var(Var::Builtin(Builtin::Host)),
                Part::Lit("x ".into()),
                Part::Var(Var::Capture(1)),
                Part::Lit("y ".into()),
                Part::Var(Var::Http(Some(http::header::USER_AGENT))),
            ]
        );
    }

    #[test]
    fn unknown_variable() {
        let reg = VarRegistry::default();
        assert_eq!(
            Template::compile("a $nope", &reg),
            Err(TemplateError::UnknownVariable("nope".into()))
        );
        assert!(Template::compile("${host", &reg).is_err());
        assert!(Template::compile("a $", &reg).is_err());
    }

    #[test]
    fn literal() {
        let reg = VarRegistry::default();
        let t = Template::compile("upgrade", &reg).unwrap();
        assert_eq!(t.as_literal(), Some("upgrade"));
        assert_eq!(Template::compile("", &reg).unwrap().as_literal(), Some(""));
    }
}
