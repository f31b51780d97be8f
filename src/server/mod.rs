//! Serving: listeners and connections (to come), and the pure routing logic
//! that picks a virtual server and a location for a request, as nginx does.

pub mod location;
pub mod uri;
pub mod vhost;

use regex::{CaptureLocations, Regex};

/// The captures of the regex that matched (a `~` location or a `~` server
/// name), as offsets into the string it ran on (`$uri` or the host), for
/// `$1`..`$9` and named captures.
#[derive(Debug, Clone)]
pub struct RegexCaptures<'a> {
    pub regex: &'a Regex,
    pub locs: CaptureLocations,
}

impl RegexCaptures<'_> {
    /// Group `i` (0 is the whole match) as a byte range of the subject.
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        self.locs.get(i)
    }

    /// A named group as a byte range of the subject.
    pub fn name(&self, name: &str) -> Option<(usize, usize)> {
        let i = self.regex.capture_names().position(|n| n == Some(name))?;
        self.locs.get(i)
    }

    /// The number of groups, the whole match included.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locs.len() == 0
    }
}

/// Runs `regex` on `subject`, keeping its captures when it matches.
pub(crate) fn run_regex<'a>(regex: &'a Regex, subject: &str) -> Option<RegexCaptures<'a>> {
    let mut locs = regex.capture_locations();
    regex.captures_read(&mut locs, subject)?;
    Some(RegexCaptures { regex, locs })
}
