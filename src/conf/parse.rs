//! The nginx configuration syntax: tokens, directives, blocks and `include`, as
//! `ngx_conf_read_token()` reads them, into a generic directive tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfError, ConfErrorKind, Result, SrcLoc};

/// Bounds that keep any input from exhausting memory or the stack.
pub const MAX_DEPTH: usize = 64;
pub const MAX_TOTAL_BYTES: usize = 64 << 20;
pub const MAX_FILES: usize = 4096;

/// One directive: `name arg arg;` or `name arg { ... }`. Its `loc` is where
/// nginx would point an error about it: the line of the `;` or `{` that ends it.
#[derive(Clone, Debug)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub loc: SrcLoc,
}

impl PartialEq for Directive {
    /// Trees compare by content, not by where they were read from.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.args == other.args
            && self.block == other.block
            && self.loc.line == other.loc.line
    }
}

/// Every file read while loading, in order, for `-T`.
#[derive(Clone, Debug, Default)]
pub struct SourceFiles {
    pub files: Vec<(PathBuf, String)>,
}

/// Reads a configuration file and everything it includes.
pub struct Loader {
    /// Relative `include` paths resolve against this directory.
    conf_dir: PathBuf,
    pub sources: SourceFiles,
    total_bytes: usize,
    include_stack: Vec<PathBuf>,
}

impl Loader {
    pub fn new(conf_dir: impl Into<PathBuf>) -> Self {
        Loader {
            conf_dir: conf_dir.into(),
            sources: SourceFiles::default(),
            total_bytes: 0,
            include_stack: Vec::new(),
        }
    }

    /// Parses the file at `path` (already resolved) into a directive tree.
    pub fn load_file(&mut self, path: &Path, from: Option<&SrcLoc>) -> Result<Vec<Directive>> {
        let open_err = |e: std::io::Error| {
            let kind = ConfErrorKind::Open {
                path: path.display().to_string(),
                reason: io_reason(&e),
            };
            match from {
                Some(loc) => ConfError::at(kind, loc),
                None => ConfError::bare(kind),
            }
        };
        let canonical = std::fs::canonicalize(path).map_err(open_err)?;
        if self.include_stack.contains(&canonical) {
            let kind = ConfErrorKind::IncludeCycle(path.display().to_string());
            return Err(match from {
                Some(loc) => ConfError::at(kind, loc),
                None => ConfError::bare(kind),
            });
        }
        if self.include_stack.len() >= MAX_DEPTH || self.sources.files.len() >= MAX_FILES {
            let kind = ConfErrorKind::TooDeep(MAX_DEPTH);
            return Err(match from {
                Some(loc) => ConfError::at(kind, loc),
                None => ConfError::bare(kind),
            });
        }
        let bytes = self.read_bounded(path).map_err(open_err)?;
        self.total_bytes += bytes.len();
        let file = Arc::new(path.to_path_buf());
        if self.total_bytes > MAX_TOTAL_BYTES {
            return Err(ConfError::at(
                ConfErrorKind::TooLarge(MAX_TOTAL_BYTES),
                &SrcLoc { file, line: 1 },
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u32;
            ConfError::at(
                ConfErrorKind::NotUtf8,
                &SrcLoc {
                    file: file.clone(),
                    line,
                },
            )
        })?;
        self.sources.files.push((path.to_path_buf(), text.clone()));
        self.include_stack.push(canonical);
        let result = self.parse_text(&text, file);
        self.include_stack.pop();
        result
    }

    /// Reads at most what the size bound still allows, plus one byte to
    /// notice going over: `include /dev/zero;` must end. A FIFO would block
    /// until a writer comes, so it is refused.
    fn read_bounded(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path)?.file_type().is_fifo() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let room = MAX_TOTAL_BYTES.saturating_sub(self.total_bytes) as u64 + 1;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(room)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Parses text that did not come from a file, as if read from `name`.
    pub fn parse_text(&mut self, text: &str, file: Arc<PathBuf>) -> Result<Vec<Directive>> {
        let mut lexer = Lexer::new(text, file);
        self.parse_block(&mut lexer, 0, true)
    }

    /// Parses `-g` directives. nginx names their place `command line`, with
    /// no line number (line 0 displays without one).
    pub fn parse_command_line(&mut self, text: &str) -> Result<Vec<Directive>> {
        let mut lexer = Lexer::new(text, Arc::new(PathBuf::from("command line")));
        lexer.line = 0;
        lexer.count_lines = false;
        self.parse_block(&mut lexer, 0, true)
    }

    fn parse_block(
        &mut self,
        lx: &mut Lexer<'_>,
        depth: usize,
        top: bool,
    ) -> Result<Vec<Directive>> {
        let mut out = Vec::new();
        loop {
            match lx.next_statement()? {
                Statement::Eof => {
                    if top {
                        return Ok(out);
                    }
                    return Err(lx.error(ConfErrorKind::UnexpectedEofInBlock));
                }
                Statement::BlockEnd => {
                    if top {
                        return Err(lx.error(ConfErrorKind::Unexpected('}')));
                    }
                    return Ok(out);
                }
                Statement::Directive { mut words, loc } => {
                    let name = words.remove(0);
                    if name == "include" {
                        if words.len() != 1 {
                            return Err(ConfError::at(ConfErrorKind::InvalidArgCount(name), &loc));
                        }
                        out.extend(self.include(&words[0], &loc)?);
                        continue;
                    }
                    out.push(Directive {
                        name,
                        args: words,
                        block: None,
                        loc,
                    });
                }
                Statement::BlockStart { mut words, loc } => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(ConfError::at(ConfErrorKind::TooDeep(MAX_DEPTH), &loc));
                    }
                    let name = words.remove(0);
                    if name == "include" {
                        return Err(ConfError::at(ConfErrorKind::NotTerminated(name), &loc));
                    }
                    let block = self.parse_block(lx, depth + 1, false)?;
                    out.push(Directive {
                        name,
                        args: words,
                        block: Some(block),
                        loc,
                    });
                }
            }
        }
    }

    fn include(&mut self, pattern: &str, loc: &SrcLoc) -> Result<Vec<Directive>> {
        let full = self.full_name(pattern);
        let is_glob = pattern.contains(['*', '?', '[']);
        if !is_glob {
            return self.load_file(&full, Some(loc));
        }
        let pattern_str = full.to_string_lossy().into_owned();
        let paths = glob::glob(&pattern_str)
            .map_err(|e| ConfError::msg(format!("glob() \"{pattern_str}\" failed ({e})"), loc))?;
        let mut files: Vec<PathBuf> = paths
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(self.load_file(&f, Some(loc))?);
        }
        Ok(out)
    }

    fn full_name(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.conf_dir.join(p)
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            // std appends " (os error N)"; nginx prints "N: text".
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{code}: {text}")
        }
        None => e.to_string(),
    }
}

enum Statement {
    Directive { words: Vec<String>, loc: SrcLoc },
    BlockStart { words: Vec<String>, loc: SrcLoc },
    BlockEnd,
    Eof,
}

/// A tokenizer with nginx's rules: whitespace separates words, `#` starts a
/// comment only where a word could start, quotes group, `\` escapes, `${` does
/// not open a block.
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    count_lines: bool,
    file: Arc<PathBuf>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, file: Arc<PathBuf>) -> Self {
        Lexer {
            src: text.as_bytes(),
            pos: 0,
            line: 1,
            count_lines: true,
            file,
        }
    }

    fn loc(&self, line: u32) -> SrcLoc {
        SrcLoc {
            file: self.file.clone(),
            line,
        }
    }

    fn error(&self, kind: ConfErrorKind) -> ConfError {
        ConfError::at(kind, &self.loc(self.line))
    }

    fn bump(&mut self) -> Option<u8> {
        let ch = *self.src.get(self.pos)?;
        self.pos += 1;
        if ch == b'\n' && self.count_lines {
            self.line += 1;
        }
        Some(ch)
    }

    /// Reads words up to `;`, `{`, `}` or the end of the input.
    fn next_statement(&mut self) -> Result<Statement> {
        let mut words: Vec<String> = Vec::new();
        // A character already consumed that starts the next word.
        let mut pending = None;
        loop {
            // Between words.
            let Some(ch) = pending.take().or_else(|| self.bump()) else {
                if words.is_empty() {
                    return Ok(Statement::Eof);
                }
                return Err(self.error(ConfErrorKind::UnexpectedEofInDirective));
            };
            match ch {
                b' ' | b'\t' | b'\r' | b'\n' => continue,
                b';' | b'{' => {
                    if words.is_empty() {
                        return Err(self.error(ConfErrorKind::Unexpected(ch as char)));
                    }
                    let loc = self.loc(self.line);
                    return Ok(if ch == b'{' {
                        Statement::BlockStart { words, loc }
                    } else {
                        Statement::Directive { words, loc }
                    });
                }
                b'}' => {
                    if !words.is_empty() {
                        return Err(self.error(ConfErrorKind::Unexpected('}')));
                    }
                    return Ok(Statement::BlockEnd);
                }
                b'#' => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let (word, terminator) = self.read_word(ch)?;
            words.push(word);
            match terminator {
                Some(b';') => {
                    return Ok(Statement::Directive {
                        words,
                        loc: self.loc(self.line),
                    })
                }
                Some(b'{') => {
                    return Ok(Statement::BlockStart {
                        words,
                        loc: self.loc(self.line),
                    })
                }
                // `if ($a = "b")`: nginx starts a new word with the `)`.
                Some(b')') => pending = Some(b')'),
                _ => {}
            }
        }
    }

    /// Reads one word starting with `first`. Returns the word and, when the
    /// word was ended by `;` or `{`, that character.
    fn read_word(&mut self, first: u8) -> Result<(String, Option<u8>)> {
        let quote = match first {
            b'"' | b'\'' => Some(first),
            _ => None,
        };
        let start = if quote.is_some() {
            self.pos
        } else {
            self.pos - 1
        };
        let mut escaped = first == b'\\';
        let mut variable = first == b'$';
        loop {
            let Some(ch) = self.bump() else {
                return Err(self.error(ConfErrorKind::UnexpectedEofInDirective));
            };
            if escaped {
                escaped = false;
                continue;
            }
            if ch == b'{' && variable {
                continue;
            }
            variable = false;
            match ch {
                b'\\' => escaped = true,
                b'$' => variable = true,
                _ => {}
            }
            if ch == b'\\' || ch == b'$' {
                continue;
            }
            match quote {
                Some(q) if ch == q => {
                    let word = unescape(&self.src[start..self.pos - 1]);
                    let term = self.after_quote()?;
                    return Ok((word, term));
                }
                Some(_) => {}
                None => {
                    if matches!(ch, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{') {
                        let word = unescape(&self.src[start..self.pos - 1]);
                        let term = matches!(ch, b';' | b'{').then_some(ch);
                        return Ok((word, term));
                    }
                }
            }
        }
    }

    /// After a closing quote nginx wants whitespace, `;` or `{`.
    fn after_quote(&mut self) -> Result<Option<u8>> {
        let Some(ch) = self.bump() else {
            return Err(self.error(ConfErrorKind::UnexpectedEofInDirective));
        };
        match ch {
            b' ' | b'\t' | b'\r' | b'\n' => Ok(None),
            b';' | b'{' | b')' => Ok(Some(ch)),
            _ => {
                let c = std::str::from_utf8(&self.src[self.pos - 1..])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .unwrap_or(ch as char);
                Err(self.error(ConfErrorKind::Unexpected(c)))
            }
        }
    }
}

/// nginx keeps `\x` as two characters except for `\"`, `\'`, `\\`, `\t`, `\r`, `\n`.
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            match raw[i + 1] {
                b'"' | b'\'' | b'\\' => {
                    out.push(raw[i + 1]);
                    i += 2;
                    continue;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    // The input was valid UTF-8 and escapes only replace ASCII with ASCII.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Directive>> {
        Loader::new("/nonexistent").parse_text(text, Arc::new(PathBuf::from("t.conf")))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn words_blocks_and_lines() {
        let t = parse("a b c;\n# c\nhttp {\n  x 1; # tail\n  y \"q w\" 'e\\'r';\n}\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].args, ["b", "c"]);
        assert_eq!(t[1].loc.line, 3);
        let inner = t[1].block.as_ref().unwrap();
        assert_eq!(inner[0].name, "x");
        assert_eq!(inner[0].loc.line, 4);
        assert_eq!(inner[1].args, ["q w", "e'r"]);
    }

    #[test]
    fn variables_with_braces_stay_in_words() {
        let t = parse("set $a ${b}c;").unwrap();
        assert_eq!(t[0].args, ["$a", "${b}c"]);
    }

    #[test]
    fn hash_inside_word_is_not_a_comment() {
        let t = parse("a b#c;").unwrap();
        assert_eq!(t[0].args, ["b#c"]);
    }

    #[test]
    fn utf8_comments() {
        let t = parse("worker_processes 4; # 这个由于我是用的虚拟机\nx;").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].loc.line, 2);
    }

    #[test]
    fn escapes() {
        let t = parse(r#"a "x\"y" "\t" "\d" b\;c;"#).unwrap();
        // nginx keeps `\;` as two characters, like any escape it does not know.
        assert_eq!(t[0].args, ["x\"y", "\t", "\\d", "b\\;c"]);
    }

    #[test]
    fn empty_quoted() {
        let t = parse("map a b { '' close; }").unwrap();
        assert_eq!(t[0].block.as_ref().unwrap()[0].name, "");
    }

    #[test]
    fn syntax_errors_in_nginx_words() {
        assert_eq!(err("a;\n}"), "unexpected \"}\" in t.conf:2");
        assert_eq!(
            err("a {\n b;"),
            "unexpected end of file, expecting \"}\" in t.conf:2"
        );
        assert_eq!(
            err("a b"),
            "unexpected end of file, expecting \";\" or \"}\" in t.conf:1"
        );
        assert_eq!(err(";"), "unexpected \";\" in t.conf:1");
        assert_eq!(err("a \"b\"c;"), "unexpected \"c\" in t.conf:1");
        assert_eq!(err("a b }"), "unexpected \"}\" in t.conf:1");
        assert_eq!(
            err("a \"b"),
            "unexpected end of file, expecting \";\" or \"}\" in t.conf:1"
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "a {".repeat(200);
        assert!(matches!(
            parse(&deep).unwrap_err().kind,
            ConfErrorKind::TooDeep(_)
        ));
    }

    #[test]
    fn directive_line_is_where_it_ends() {
        // nginx points at the line of the `;` or `{` (cf->conf_file->line).
        let t = parse("log_format a\n  'x'\n  'y';\nserver\n{\n}\n").unwrap();
        assert_eq!(t[0].loc.line, 3);
        assert_eq!(t[1].loc.line, 5);
        assert_eq!(
            err("a\n\nb\n{ c d\n;\n"),
            "unexpected end of file, expecting \"}\" in t.conf:6"
        );
    }

    #[test]
    fn paren_after_quote_starts_a_word() {
        let t = parse("if ($a = \"b\") { return 204; }\nif ($a ~ 'x')\n{ }").unwrap();
        assert_eq!(t[0].args, ["($a", "=", "b", ")"]);
        assert_eq!(t[1].args, ["($a", "~", "x", ")"]);
        let t = parse("a \"b\")c;").unwrap();
        assert_eq!(t[0].args, ["b", ")c"]);
    }

    #[test]
    fn non_ascii_after_quote_is_named_whole() {
        assert_eq!(err("a \"b\"é;"), "unexpected \"é\" in t.conf:1");
        assert_eq!(err("a\n'b'这;"), "unexpected \"这\" in t.conf:2");
    }

    #[test]
    fn include_arity_and_block() {
        assert_eq!(
            err("include;"),
            "invalid number of arguments in \"include\" directive in t.conf:1"
        );
        assert_eq!(
            err("include a b;"),
            "invalid number of arguments in \"include\" directive in t.conf:1"
        );
        assert_eq!(
            err("include a {}"),
            "directive \"include\" is not terminated by \";\" in t.conf:1"
        );
    }

    #[test]
    fn command_line_has_no_line_number() {
        let e = Loader::new("/nonexistent")
            .parse_command_line("a;\nb {")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected end of file, expecting \"}\" in command line"
        );
    }

    #[test]
    fn include_cycle_and_glob_relative_to_conf_dir() {
        let dir = std::env::temp_dir().join(format!("sluice-parse-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/b.conf"), "b;\n").unwrap();
        std::fs::write(dir.join("d/a.conf"), "a;\n").unwrap();
        std::fs::write(dir.join("main.conf"), "include d/*.conf;\nz;\n").unwrap();
        std::fs::write(dir.join("loop.conf"), "x;\ninclude loop.conf;\n").unwrap();
        let mut l = Loader::new(&dir);
        let t = l.load_file(&dir.join("main.conf"), None).unwrap();
        let names: Vec<_> = t.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "z"]);
        assert!(t[0].loc.file.ends_with("d/a.conf"));
        let e = Loader::new(&dir)
            .load_file(&dir.join("loop.conf"), None)
            .unwrap_err();
        assert!(matches!(e.kind, ConfErrorKind::IncludeCycle(_)), "{e}");
        assert_eq!(e.loc.unwrap().line, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn endless_and_blocking_includes_end() {
        let mut l = Loader::new("/");
        let e = l.parse_text("include /dev/zero;", Arc::new(PathBuf::from("t.conf")));
        // Too large (or not UTF-8), either way an error, not a hang.
        assert!(e.is_err());
        let dir = std::env::temp_dir().join(format!("sluice-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Loader::new(&dir)
            .parse_text("include f;", Arc::new(PathBuf::from("t.conf")))
            .unwrap_err();
        assert!(matches!(e.kind, ConfErrorKind::Open { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let t = Loader::new("/")
            .parse_text("include /dev/null;", Arc::new(PathBuf::from("t.conf")))
            .unwrap();
        assert!(t.is_empty());
    }
}
