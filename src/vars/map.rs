//! `map` evaluation, done lazily when the target variable is read.

use std::cell::Cell;

use super::eval::{Captures, VarCtx};
use crate::conf::model::MapConf;

/// Maps that read each other can loop; nginx reports "cycle while evaluating
/// variable". Past this depth the value is empty.
const MAX_DEPTH: u32 = 16;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Appends the value of `map` for this request: exact key (case-insensitive),
/// then with `hostnames` the wildcard keys (most specific first), then the
/// regexes in order (their captures usable in the value), else the default.
pub fn map_lookup(map: &MapConf, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    let depth = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v
    });
    if depth < MAX_DEPTH {
        lookup(map, cx, out);
    }
    DEPTH.with(|d| d.set(depth));
}

fn lookup(map: &MapConf, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    let mut src = Vec::new();
    map.source.render(cx, &mut src);
    let mut key: &[u8] = &src;
    if map.hostnames {
        if let Some(k) = key.strip_suffix(b".") {
            key = k;
        }
    }
    // Keys are compiled lower-case; only build a lower-case copy when needed.
    let lower;
    let low: &[u8] = if key.iter().any(u8::is_ascii_uppercase) {
        lower = key.to_ascii_lowercase();
        &lower
    } else {
        key
    };
    let low_str = String::from_utf8_lossy(low);

    if let Some(v) = map.exact.get(&*low_str) {
        return v.render(cx, out);
    }
    if map.hostnames {
        // Both lists are sorted longest first, the most specific match.
        for (suffix, also_bare, v) in &map.wild_start {
            let s = suffix.as_bytes();
            let sub = low.len() > s.len() && low.ends_with(s);
            let bare = *also_bare && &s[1..] == low;
            if sub || bare {
                return v.render(cx, out);
            }
        }
        for (prefix, v) in &map.wild_end {
            let p = prefix.as_bytes();
            if low.len() > p.len() && low.starts_with(p) {
                return v.render(cx, out);
            }
        }
    }
    // nginx tries the regexes only on a non-empty value, in the original case.
    if !key.is_empty() && !map.regexes.is_empty() {
        let subject = String::from_utf8_lossy(key);
        for (re, v) in &map.regexes {
            if let Some(caps) = Captures::from_regex(re, &subject) {
                let inner = VarCtx {
                    captures: Some(&caps),
                    ..*cx
                };
                return v.render(&inner, out);
            }
        }
    }
    map.default.render(cx, out);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::conf::model::MapConf;
    use crate::vars::eval::tests::{conn, ctx, parts};
    use crate::vars::{Template, VarRegistry};

    /// Compiles the `map` blocks of an http block body through the real
    /// config compiler and returns them with the registry.
    fn maps(text: &str) -> (Vec<Arc<MapConf>>, VarRegistry) {
        let conf = format!("events {{}} http {{ {text} }}");
        let cfg = crate::conf::load_str(&conf, "test.conf", std::path::Path::new("/tmp"))
            .expect("config loads");
        let http = cfg.http.expect("http block");
        // Rebuild the registry the compiler used: map targets in order.
        let mut reg = VarRegistry::default();
        for m in &http.maps {
            reg.add_map(&m.target);
            for (re, _) in &m.regexes {
                re.capture_names()
                    .flatten()
                    .for_each(|n| reg.add_named_capture(n));
            }
        }
        (http.maps, reg)
    }

    fn eval(text: &str, template: &str, hdrs: &[(&str, &str)], target: &str) -> String {
        let (maps, reg) = maps(text);
        let c = conn();
        let p = parts(target, hdrs);
        let mut cx = ctx(&c, &p, None);
        cx.maps = &maps;
        let t = Template::compile(template, &reg).unwrap();
        String::from_utf8(t.render_to_vec(&cx)).unwrap()
    }

    #[test]
    fn connection_upgrade() {
        let m = "map $http_upgrade $connection_upgrade { default upgrade; '' close; }";
        assert_eq!(
            eval(m, "$connection_upgrade", &[("upgrade", "websocket")], "/"),
            "upgrade"
        );
        assert_eq!(eval(m, "$connection_upgrade", &[], "/"), "close");
    }

    #[test]
    fn exact_is_case_insensitive_and_default() {
        let m = "map $http_x $v { Foo foo-value; bar $uri; }";
        assert_eq!(eval(m, "[$v]", &[("x", "FOO")], "/"), "[foo-value]");
        assert_eq!(eval(m, "[$v]", &[("x", "bar")], "/"), "[/a b]");
        assert_eq!(eval(m, "[$v]", &[("x", "baz")], "/"), "[]");
    }

    #[test]
    fn hostnames() {
        let m = "map $http_host $v { hostnames; default d; \
                 example.com exact; .example.com dot; *.a.example.com star; www.example.* tail; }";
        let v = |h: &str| eval(m, "$v", &[("host", h)], "/");
        assert_eq!(v("example.com"), "exact");
        assert_eq!(v("EXAMPLE.com."), "exact");
        assert_eq!(v("x.example.com"), "dot");
        assert_eq!(v("x.a.example.com"), "star");
        assert_eq!(v("y.x.a.example.com"), "star");
        assert_eq!(v("a.example.com"), "dot");
        assert_eq!(v("www.example.org"), "tail");
        assert_eq!(v("example.org"), "d");
        let m2 = "map $http_host $v { hostnames; .example.com dot; }";
        assert_eq!(eval(m2, "$v", &[("host", "example.com")], "/"), "dot");
    }

    #[test]
    fn regex_with_captures() {
        let m = "map $http_x $v { default none; ~^/img/(?<name>\\w+)\\.(png|gif)$ $2:$name; \
                 ~*^A(.*) a:$1; }";
        assert_eq!(eval(m, "$v", &[("x", "/img/cat.png")], "/"), "png:cat");
        assert_eq!(eval(m, "$v", &[("x", "aBc")], "/"), "a:Bc");
        assert_eq!(eval(m, "$v", &[("x", "zzz")], "/"), "none");
        // Captures of a map regex do not leak into the request.
        assert_eq!(eval(m, "$v[$1]", &[("x", "abc")], "/"), "a:bc[]");
    }

    #[test]
    fn map_of_a_map_and_cycles() {
        let m = "map $http_x $a { default $b; } map $http_y $b { default b$c; y $a; } \
                 map $b $c { default c; }";
        assert_eq!(eval(m, "$a", &[], "/"), "bc");
        // $a -> $b -> $a ... stops without overflowing the stack.
        let out = eval(m, "$a", &[("y", "y")], "/");
        assert!(out.is_empty(), "{out}");
    }
}
