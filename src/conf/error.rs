//! Configuration errors, displayed in nginx's words with the file and line they point at.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a directive or token came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SrcLoc {
    pub file: Arc<PathBuf>,
    pub line: u32,
}

impl fmt::Display for SrcLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Directives from `-g`: nginx says just "in command line".
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The kinds of failure a configuration can have. The `Display` text is nginx's
/// own wording, without the location; [`ConfError`] appends ` in file:line`.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ConfErrorKind {
    #[error("unexpected \"{0}\"")]
    Unexpected(char),
    #[error("unexpected end of file, expecting \";\" or \"}}\"")]
    UnexpectedEofInDirective,
    #[error("unexpected end of file, expecting \"}}\"")]
    UnexpectedEofInBlock,
    #[error("unknown directive \"{0}\"")]
    UnknownDirective(String),
    #[error("\"{0}\" directive is not allowed here")]
    NotAllowedHere(String),
    #[error("invalid number of arguments in \"{0}\" directive")]
    InvalidArgCount(String),
    #[error("directive \"{0}\" has no opening \"{{\"")]
    NoOpeningBrace(String),
    #[error("directive \"{0}\" is not terminated by \";\"")]
    NotTerminated(String),
    #[error("\"{0}\" directive is duplicate")]
    Duplicate(String),
    #[error("invalid value \"{value}\" in \"{directive}\" directive{hint}")]
    InvalidValue {
        directive: String,
        value: String,
        /// nginx sometimes adds ", it must be ..." after the value.
        hint: String,
    },
    /// What nginx's generic slot handlers say after the name:
    /// `"client_max_body_size" directive invalid value`.
    #[error("\"{directive}\" directive {what}")]
    DirectiveSays {
        directive: String,
        what: &'static str,
    },
    #[error("{0}")]
    Message(String),
    #[error("open() \"{path}\" failed ({reason})")]
    Open { path: String, reason: String },
    #[error("include cycle: \"{0}\" includes itself")]
    IncludeCycle(String),
    #[error("too deeply nested blocks or includes (limit {0})")]
    TooDeep(usize),
    #[error("configuration is too large (limit {0} bytes)")]
    TooLarge(usize),
    #[error("file is not valid UTF-8")]
    NotUtf8,
    #[error("duplicate location \"{0}\"")]
    DuplicateLocation(String),
    #[error("host not found in upstream \"{0}\"")]
    HostNotFound(String),
    #[error("unknown \"{0}\" variable")]
    UnknownVariable(String),
    #[error("pcre2_compile() failed: {reason} in \"{pattern}\"")]
    Regex { pattern: String, reason: String },
    #[error("no \"events\" section in configuration")]
    NoEvents,
}

/// A configuration error with the place it was found, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub kind: ConfErrorKind,
    pub loc: Option<SrcLoc>,
}

impl ConfError {
    pub fn at(kind: ConfErrorKind, loc: &SrcLoc) -> Self {
        ConfError {
            kind,
            loc: Some(loc.clone()),
        }
    }

    pub fn bare(kind: ConfErrorKind) -> Self {
        ConfError { kind, loc: None }
    }

    pub fn msg(text: impl Into<String>, loc: &SrcLoc) -> Self {
        Self::at(ConfErrorKind::Message(text.into()), loc)
    }
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(loc) => write!(f, "{} in {}", self.kind, loc),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ConfError {}

pub type Result<T> = std::result::Result<T, ConfError>;
