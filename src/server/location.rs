//! Location selection, as ngx_http_core_find_location does it.
//!
//! At each level (the server, then the nested locations of what matched):
//! the static locations (`=`, prefix, `^~`) are looked up first. A name equal
//! to the whole URI, exact or prefix, ends the search (regexes are not
//! tried). Failing that, a location named URI + `/` whose content is
//! `proxy_pass` asks for nginx's automatic 301 to URI + `/`. Otherwise the
//! longest matching prefix is remembered and the search goes on in its
//! nested locations; then, unless that prefix is `^~`, the regex locations of
//! the level are tried in configuration order, and the first that matches
//! wins (and its own nested locations are searched in turn). So a regex
//! nested in the longest prefix is tried before the regexes around it.
//!
//! Static names are kept sorted, split into levels the way nginx splits its
//! static tree: the names that start with a prefix location's name live
//! under it. A lookup is a binary search per level, so it costs
//! O(log n) comparisons per nested prefix, and building is O(n log n).

use std::collections::HashMap;

use super::{run_regex, RegexCaptures};
use crate::conf::model::{Handler, LocationConf, LocationMatch};

/// A location found for a URI.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub location: &'a LocationConf,
    /// The location's number in the index (depth-first configuration order);
    /// see [`LocationIndex::get`].
    pub id: usize,
    /// The captures of the last regex location that matched on the way, for
    /// `$1`..`$9` and named captures; offsets into the URI given to `find`.
    pub captures: Option<RegexCaptures<'a>>,
    /// nginx's automatic redirect: the URI plus `/` names a location whose
    /// content is `proxy_pass`, so the answer is a 301 to URI + `/` (with the
    /// query string kept).
    pub redirect: bool,
}

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    name: String,
    exact: Option<u32>,
    inclusive: Option<u32>,
    auto_redirect: bool,
    /// The level holding the names that start with this one (prefixes only).
    sub: u32,
}

/// The static locations of one level, sorted, nested as nginx's tree is.
#[derive(Debug, Default)]
struct StaticTree {
    entries: Vec<Entry>,
    /// Entry numbers per level, sorted by name; level 0 is the top.
    levels: Vec<Vec<u32>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rc {
    /// A name equal to the URI: stop.
    Exact,
    /// Automatic redirect: stop.
    Redirect,
    /// A prefix matched (or nothing did): regexes may still be tried.
    Partial,
}

impl StaticTree {
    fn build(mut entries: Vec<Entry>) -> StaticTree {
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        // An exact and a prefix location with the same name share one entry.
        let mut merged: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            match merged.last_mut() {
                Some(last) if last.name == e.name => {
                    last.exact = last.exact.or(e.exact);
                    last.inclusive = last.inclusive.or(e.inclusive);
                    last.auto_redirect |= e.auto_redirect;
                }
                _ => merged.push(e),
            }
        }
        let mut entries = merged;
        let mut levels: Vec<Vec<u32>> = vec![Vec::new()];
        // Open prefixes: (their level, the entry index where their names end).
        let mut open: Vec<(u32, usize)> = Vec::new();
        for i in 0..entries.len() {
            while open.last().is_some_and(|&(_, end)| i >= end) {
                open.pop();
            }
            let level = open.last().map_or(0, |&(l, _)| l);
            levels[level as usize].push(i as u32);
            if entries[i].inclusive.is_some() {
                let name = entries[i].name.as_str();
                // Names starting with this one follow it, contiguous.
                let n = entries[i + 1..].partition_point(|e| e.name.starts_with(name));
                if n > 0 {
                    let sub = levels.len() as u32;
                    levels.push(Vec::new());
                    entries[i].sub = sub;
                    open.push((sub, i + 1 + n));
                }
            }
        }
        StaticTree { entries, levels }
    }

    /// ngx_http_core_find_static_location: sets `found` to the best static
    /// match of this level.
    fn find(&self, uri: &str, found: &mut Option<u32>) -> Rc {
        if self.entries.is_empty() {
            return Rc::Partial;
        }
        let u = uri.as_bytes();
        let mut level = 0usize;
        loop {
            let ids = &self.levels[level];
            let e = |k: usize| &self.entries[ids[k] as usize];
            match ids.binary_search_by(|&i| self.entries[i as usize].name.as_bytes().cmp(u)) {
                Ok(k) => {
                    let hit = e(k);
                    *found = hit.exact.or(hit.inclusive);
                    return Rc::Exact;
                }
                Err(pos) => {
                    // Anything between a prefix of the URI and the URI itself
                    // starts with that prefix, so it lives in its sub-level:
                    // the only candidate here is the predecessor.
                    if pos > 0 {
                        let prev = e(pos - 1);
                        if prev.inclusive.is_some() && u.starts_with(prev.name.as_bytes()) {
                            *found = prev.inclusive;
                            if prev.sub != NONE {
                                level = prev.sub as usize;
                                continue;
                            }
                            return Rc::Partial;
                        }
                    }
                    let with_slash = ids.binary_search_by(|&i| {
                        let n = self.entries[i as usize].name.as_bytes();
                        n.iter().cmp(u.iter().chain(b"/"))
                    });
                    if let Ok(k) = with_slash {
                        let hit = e(k);
                        if hit.auto_redirect {
                            *found = hit.exact.or(hit.inclusive);
                            return Rc::Redirect;
                        }
                    }
                    return Rc::Partial;
                }
            }
        }
    }
}

/// The locations of one level: static ones in a tree, regexes in order.
#[derive(Debug, Default)]
struct Level {
    statics: StaticTree,
    regexes: Vec<u32>,
}

/// The locations of one server, indexed for lookup by URI and by name.
#[derive(Debug)]
pub struct LocationIndex {
    roots: Vec<LocationConf>,
    /// Per location id, the child indices leading to it from `roots`.
    paths: Vec<Box<[u32]>>,
    /// Per location id, the level of its nested locations.
    nested: Vec<Option<Level>>,
    top: Level,
    named: HashMap<String, u32>,
}

impl LocationIndex {
    /// Indexes a server's locations (and, recursively, nested ones).
    pub fn new(locations: &[LocationConf]) -> LocationIndex {
        let mut ix = LocationIndex {
            roots: locations.to_vec(),
            paths: Vec::new(),
            nested: Vec::new(),
            top: Level::default(),
            named: HashMap::new(),
        };
        let mut path = Vec::new();
        ix.top = ix.index_level(locations, &mut path);
        ix
    }

    fn index_level(&mut self, locs: &[LocationConf], path: &mut Vec<u32>) -> Level {
        let mut entries = Vec::new();
        let mut regexes = Vec::new();
        for (i, l) in locs.iter().enumerate() {
            let id = self.paths.len() as u32;
            path.push(i as u32);
            self.paths.push(path.clone().into_boxed_slice());
            self.nested.push(None);
            let auto_redirect = matches!(l.handler, Handler::Proxy(_));
            let entry = |name: &String, exact: bool| Entry {
                auto_redirect: auto_redirect && name.ends_with('/'),
                name: name.clone(),
                exact: exact.then_some(id),
                inclusive: (!exact).then_some(id),
                sub: NONE,
            };
            match &l.matcher {
                LocationMatch::Exact(p) => entries.push(entry(p, true)),
                LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) => {
                    entries.push(entry(p, false))
                }
                LocationMatch::Regex { .. } => regexes.push(id),
                LocationMatch::Named(n) => {
                    self.named.entry(n.clone()).or_insert(id);
                }
            }
            if !l.children.is_empty() {
                let level = self.index_level(&l.children, path);
                self.nested[id as usize] = Some(level);
            }
            path.pop();
        }
        Level {
            statics: StaticTree::build(entries),
            regexes,
        }
    }

    /// The location with this id.
    pub fn get(&self, id: usize) -> &LocationConf {
        let path = &self.paths[id];
        let mut l = &self.roots[path[0] as usize];
        for &i in &path[1..] {
            l = &l.children[i as usize];
        }
        l
    }

    /// The number of locations indexed, nested and named ones included.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// A named location, `@name` or `name`; never matched by URI.
    pub fn named(&self, name: &str) -> Option<&LocationConf> {
        let name = name.strip_prefix('@').unwrap_or(name);
        self.named.get(name).map(|&id| self.get(id as usize))
    }

    /// The location for a normalised `$uri`, in nginx's order. `None` when
    /// nothing matches: nginx then uses the server level's configuration
    /// (and, without a content handler, answers 404).
    pub fn find<'a>(&'a self, uri: &str) -> Option<Matched<'a>> {
        let mut found = None;
        let mut captures = None;
        let rc = self.find_level(&self.top, uri, &mut found, &mut captures);
        let id = found? as usize;
        Some(Matched {
            location: self.get(id),
            id,
            captures,
            redirect: rc == Rc::Redirect,
        })
    }

    fn find_level<'a>(
        &'a self,
        level: &'a Level,
        uri: &str,
        found: &mut Option<u32>,
        captures: &mut Option<RegexCaptures<'a>>,
    ) -> Rc {
        let mut hit = None;
        let mut rc = level.statics.find(uri, &mut hit);
        let mut noregex = false;
        if let Some(id) = hit {
            *found = Some(id);
            if rc == Rc::Partial {
                noregex = matches!(
                    self.get(id as usize).matcher,
                    LocationMatch::PrefixNoRegex(_)
                );
                if let Some(inner) = &self.nested[id as usize] {
                    rc = self.find_level(inner, uri, found, captures);
                }
            }
        }
        if rc != Rc::Partial || noregex {
            return rc;
        }
        for &id in &level.regexes {
            let Some(re) = self.get(id as usize).regex.as_ref() else {
                continue;
            };
            if let Some(c) = run_regex(re, uri) {
                *found = Some(id);
                *captures = Some(c);
                if let Some(inner) = &self.nested[id as usize] {
                    self.find_level(inner, uri, found, captures);
                }
                return Rc::Exact;
            }
        }
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn server_locations(body: &str) -> Vec<LocationConf> {
        let text = format!("events {{}} http {{ server {{ {body} }} }}");
        let conf = crate::conf::load_str(&text, "t.conf", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut servers = conf.http.expect("http").servers;
        servers.remove(0).locations
    }

    fn label(l: &LocationConf) -> String {
        match &l.handler {
            Handler::Return(r) => format!("{}", r.code),
            _ => "?".into(),
        }
    }

    /// The `return` code of the chosen location, "-" for none, "R" + code
    /// for an automatic redirect.
    fn pick(ix: &LocationIndex, uri: &str) -> String {
        match ix.find(uri) {
            None => "-".into(),
            Some(m) if m.redirect => format!("R{}", label(m.location)),
            Some(m) => label(m.location),
        }
    }

    #[test]
    fn nginx_documentation_example() {
        let ix = LocationIndex::new(&server_locations(
            r"location = / { return 201; }
              location / { return 202; }
              location /documents/ { return 203; }
              location ^~ /images/ { return 204; }
              location ~* \.(gif|jpg|jpeg)$ { return 205; }",
        ));
        assert_eq!(pick(&ix, "/"), "201");
        assert_eq!(pick(&ix, "/index.html"), "202");
        assert_eq!(pick(&ix, "/documents/document.html"), "203");
        assert_eq!(pick(&ix, "/images/1.gif"), "204");
        assert_eq!(pick(&ix, "/documents/1.jpg"), "205");
        assert_eq!(pick(&ix, "/documents/1.JPG"), "205");
    }

    #[test]
    fn no_match_and_case_sensitive_prefixes() {
        let ix = LocationIndex::new(&server_locations(
            "location /a/ { return 201; } location = /x { return 202; }",
        ));
        assert!(ix.find("/").is_none());
        assert!(ix.find("/A/b").is_none());
        assert!(ix.find("/x/").is_none());
        assert_eq!(pick(&ix, "/a/b"), "201");
        assert_eq!(pick(&ix, "/x"), "202");
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let ix = LocationIndex::new(&server_locations(
            "location /a/b/c { return 203; }
             location /a { return 201; }
             location /a/b { return 202; }
             location /b { return 204; }",
        ));
        assert_eq!(pick(&ix, "/a"), "201");
        assert_eq!(pick(&ix, "/a/"), "201");
        assert_eq!(pick(&ix, "/a/b"), "202");
        assert_eq!(pick(&ix, "/a/bc"), "202");
        assert_eq!(pick(&ix, "/a/b/c/d"), "203");
        assert_eq!(pick(&ix, "/ab"), "201");
        assert_eq!(pick(&ix, "/b/a/b/c"), "204");
        assert_eq!(pick(&ix, "/c"), "-");
    }

    #[test]
    fn regexes_in_order_and_prefix_equal_to_uri_stops() {
        let ix = LocationIndex::new(&server_locations(
            r"location /p { return 201; }
              location ~ \.php$ { return 202; }
              location ~ \.(php|html)$ { return 203; }
              location /x.php { return 204; }
              location ~ ^/CASE { return 205; }",
        ));
        assert_eq!(pick(&ix, "/p/a.php"), "202");
        assert_eq!(pick(&ix, "/p/a.html"), "203");
        assert_eq!(pick(&ix, "/p/a"), "201");
        // A prefix location equal to the whole URI is final, as in nginx.
        assert_eq!(pick(&ix, "/x.php"), "204");
        assert_eq!(pick(&ix, "/x.phpx/a.php"), "202");
        assert_eq!(pick(&ix, "/case"), "-");
        assert_eq!(pick(&ix, "/CASE"), "205");
    }

    #[test]
    fn exact_beats_prefix_of_the_same_name() {
        let ix = LocationIndex::new(&server_locations(
            r"location /a { return 201; } location = /a { return 202; }
              location ~ a { return 203; }",
        ));
        assert_eq!(pick(&ix, "/a"), "202");
        assert_eq!(pick(&ix, "/ab"), "203");
    }

    #[test]
    fn nested_regexes_come_before_outer_ones() {
        let ix = LocationIndex::new(&server_locations(
            r"location /a/ {
                  location ~ \.jpg$ { return 202; }
                  location /a/b/ { return 203; }
                  return 201;
              }
              location ~ \.(jpg|png)$ { return 204; }
              location ^~ /n/ {
                  location ~ \.jpg$ { return 206; }
                  return 205;
              }",
        ));
        assert_eq!(pick(&ix, "/a/x.jpg"), "202");
        assert_eq!(pick(&ix, "/a/x.png"), "204");
        assert_eq!(pick(&ix, "/a/x"), "201");
        assert_eq!(pick(&ix, "/a/b/x"), "203");
        assert_eq!(pick(&ix, "/a/b/x.jpg"), "202");
        assert_eq!(pick(&ix, "/a/b/x.png"), "204");
        // ^~ stops the regexes of its own level only: nested ones still run.
        assert_eq!(pick(&ix, "/n/x.jpg"), "206");
        assert_eq!(pick(&ix, "/n/x.png"), "205");
    }

    #[test]
    fn noregex_of_a_nested_prefix_does_not_stop_outer_regexes() {
        let ix = LocationIndex::new(&server_locations(
            r"location /a/ {
                  location ^~ /a/b/ { return 202; }
                  return 201;
              }
              location ~ \.png$ { return 203; }",
        ));
        assert_eq!(pick(&ix, "/a/b/x"), "202");
        assert_eq!(pick(&ix, "/a/b/x.png"), "203");
    }

    #[test]
    fn nested_locations_of_a_regex_location() {
        let ix = LocationIndex::new(&server_locations(
            r"location ~ ^/r/(?<rest>.*)$ {
                  location ~ ^/r/deep/(.*)$ { return 202; }
                  return 201;
              }",
        ));
        let m = ix.find("/r/abc").unwrap();
        assert_eq!(label(m.location), "201");
        let c = m.captures.unwrap();
        assert_eq!(c.name("rest"), Some((3, 6)));
        assert_eq!(c.get(1), Some((3, 6)));
        let m = ix.find("/r/deep/xy").unwrap();
        assert_eq!(label(m.location), "202");
        assert_eq!(m.captures.unwrap().get(1), Some((8, 10)));
    }

    #[test]
    fn captures_survive_a_nested_static_match() {
        let ix = LocationIndex::new(&server_locations(
            r"location ~ ^/(\w+)/ {
                  location /s/ { return 202; }
                  return 201;
              }",
        ));
        let m = ix.find("/s/q").unwrap();
        assert_eq!(label(m.location), "202");
        assert_eq!(m.captures.unwrap().get(1), Some((1, 2)));
    }

    #[test]
    fn automatic_redirect_for_proxy_pass_locations() {
        let locs = server_locations(
            "location /user/ { proxy_pass http://127.0.0.1:9; }
             location /plain/ { return 201; }
             location = /ex/ { proxy_pass http://127.0.0.1:9; }
             location / { return 202; }",
        );
        let ix = LocationIndex::new(&locs);
        let m = ix.find("/user").unwrap();
        assert!(m.redirect);
        assert_eq!(m.location.matcher, LocationMatch::Prefix("/user/".into()));
        assert!(ix.find("/ex").unwrap().redirect);
        assert!(!ix.find("/user/").unwrap().redirect);
        assert_eq!(pick(&ix, "/plain"), "202");
        assert_eq!(pick(&ix, "/use"), "202");
    }

    #[test]
    fn named_locations() {
        let ix = LocationIndex::new(&server_locations(
            "location @fallback { return 201; } location / { return 202; }",
        ));
        assert_eq!(label(ix.named("@fallback").unwrap()), "201");
        assert_eq!(label(ix.named("fallback").unwrap()), "201");
        assert!(ix.named("@nope").is_none());
        assert_eq!(pick(&ix, "@fallback"), "-");
        assert_eq!(pick(&ix, "/@fallback"), "202");
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn ids_and_get() {
        let ix = LocationIndex::new(&server_locations(
            "location /a/ { location /a/b { return 202; } return 201; }
             location /c { return 203; }",
        ));
        assert_eq!(ix.len(), 3);
        let m = ix.find("/a/b").unwrap();
        assert_eq!(m.id, 1);
        assert_eq!(label(ix.get(1)), "202");
        assert_eq!(ix.find("/c").unwrap().id, 2);
    }

    /// A straightforward rendering of nginx's rules, to check the index
    /// against: no tree, every location looked at.
    fn reference<'a>(
        locs: &'a [LocationConf],
        uri: &str,
        found: &mut Option<&'a LocationConf>,
    ) -> Rc {
        let name = |l: &'a LocationConf| match &l.matcher {
            LocationMatch::Exact(p)
            | LocationMatch::Prefix(p)
            | LocationMatch::PrefixNoRegex(p) => Some(p.as_str()),
            _ => None,
        };
        let is_exact = |l: &LocationConf| matches!(l.matcher, LocationMatch::Exact(_));
        let equal: Vec<_> = locs.iter().filter(|l| name(l) == Some(uri)).collect();
        if !equal.is_empty() {
            *found = Some(equal.iter().find(|l| is_exact(l)).unwrap_or(&equal[0]));
            return Rc::Exact;
        }
        let slash = format!("{uri}/");
        if let Some(l) = locs
            .iter()
            .find(|l| name(l) == Some(slash.as_str()) && matches!(l.handler, Handler::Proxy(_)))
        {
            *found = Some(l);
            return Rc::Redirect;
        }
        let mut rc = Rc::Partial;
        let mut noregex = false;
        let best = locs
            .iter()
            .filter(|l| !is_exact(l) && name(l).is_some_and(|n| uri.starts_with(n)))
            .max_by_key(|l| name(l).map_or(0, str::len));
        if let Some(b) = best {
            *found = Some(b);
            noregex = matches!(b.matcher, LocationMatch::PrefixNoRegex(_));
            rc = reference(&b.children, uri, found);
        }
        if rc != Rc::Partial || noregex {
            return rc;
        }
        for l in locs {
            if l.regex.as_ref().is_some_and(|r| r.is_match(uri)) {
                *found = Some(l);
                reference(&l.children, uri, found);
                return Rc::Exact;
            }
        }
        rc
    }

    /// Clones `proto` under many names, to build big sets cheaply.
    fn with_matcher(proto: &LocationConf, m: LocationMatch, tag: u16) -> LocationConf {
        let mut l = proto.clone();
        if let Handler::Return(r) = &mut l.handler {
            r.code = tag;
        }
        if let LocationMatch::Regex { pattern, caseless } = &m {
            l.regex = Some(
                regex::RegexBuilder::new(pattern)
                    .case_insensitive(*caseless)
                    .build()
                    .unwrap(),
            );
        }
        l.matcher = m;
        l
    }

    /// A small deterministic generator, so the test needs no crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn path(&mut self) -> String {
            let parts = ["a", "b", "ab", "/", "/a", "c.", "x"];
            let mut s = String::from("/");
            for _ in 0..self.next(5) {
                s.push_str(parts[self.next(parts.len() as u64) as usize]);
            }
            s
        }
    }

    #[test]
    fn agrees_with_the_reference_on_random_sets() {
        let proto = &server_locations("location /proto { return 200; }")[0];
        let proxy = &server_locations("location /p/ { proxy_pass http://127.0.0.1:9; }")[0];
        let mut rng = Lcg(7);
        for round in 0..300 {
            let mut locs: Vec<LocationConf> = Vec::new();
            let mut names = std::collections::HashSet::new();
            for k in 0..rng.next(12) {
                let p = rng.path();
                let tag = 300 + k as u16;
                let l = match rng.next(6) {
                    0 if names.insert(("=", p.clone())) => {
                        with_matcher(proto, LocationMatch::Exact(p), tag)
                    }
                    1 if names.insert(("p", p.clone())) => {
                        with_matcher(proto, LocationMatch::PrefixNoRegex(p), tag)
                    }
                    2 => with_matcher(
                        proto,
                        LocationMatch::Regex {
                            pattern: regex::escape(&p[1..]) + "$",
                            caseless: false,
                        },
                        tag,
                    ),
                    3 if names.insert(("p", p.clone())) => {
                        with_matcher(proxy, LocationMatch::Prefix(p), tag)
                    }
                    _ if names.insert(("p", p.clone())) => {
                        let mut l = with_matcher(proto, LocationMatch::Prefix(p.clone()), tag);
                        // Sometimes nest longer prefixes and a regex.
                        if rng.next(3) == 0 {
                            let q = format!("{p}{}", &rng.path()[1..]);
                            if q != p {
                                l.children.push(with_matcher(
                                    proto,
                                    LocationMatch::Prefix(q),
                                    tag + 100,
                                ));
                            }
                            l.children.push(with_matcher(
                                proto,
                                LocationMatch::Regex {
                                    pattern: "b$".into(),
                                    caseless: false,
                                },
                                tag + 200,
                            ));
                        }
                        l
                    }
                    _ => continue,
                };
                locs.push(l);
            }
            let ix = LocationIndex::new(&locs);
            for _ in 0..40 {
                let uri = rng.path();
                let mut want = None;
                let rc = reference(&locs, &uri, &mut want);
                let got = ix.find(&uri);
                let want_code = want.map(label);
                assert_eq!(
                    got.as_ref().map(|m| label(m.location)),
                    want_code,
                    "round {round} uri {uri} locations {:?}",
                    locs.iter().map(|l| &l.matcher).collect::<Vec<_>>()
                );
                assert_eq!(got.is_some_and(|m| m.redirect), rc == Rc::Redirect, "{uri}");
            }
        }
    }

    #[test]
    fn a_hundred_thousand_prefixes() {
        let proto = &server_locations("location /proto { return 200; }")[0];
        let mut locs = Vec::new();
        for i in 0..100_000u32 {
            let name = format!("/api/v{}/item{}/", i % 97, i);
            let m = if i % 3 == 0 {
                LocationMatch::Exact(name)
            } else {
                LocationMatch::Prefix(name)
            };
            locs.push(with_matcher(proto, m, (i % 900) as u16 + 100));
        }
        locs.push(with_matcher(
            proto,
            LocationMatch::Prefix("/api/".into()),
            999,
        ));
        let ix = LocationIndex::new(&locs);
        assert_eq!(ix.len(), 100_001);
        assert_eq!(pick(&ix, "/api/v1/item1/x"), format!("{}", 1 + 100));
        assert_eq!(pick(&ix, "/api/v0/item3/x"), "999");
        assert_eq!(pick(&ix, "/api/v3/item3/"), format!("{}", 3 + 100));
        // item3 is exact only: a longer URI falls back to the prefix.
        assert_eq!(pick(&ix, "/api/v3/item3/x"), "999");
        let last = format!("/api/v{}/item99998/z", 99_998 % 97);
        assert_eq!(pick(&ix, &last), format!("{}", 99_998 % 900 + 100));
        assert_eq!(pick(&ix, "/other"), "-");
    }
}
