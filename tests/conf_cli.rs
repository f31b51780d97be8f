//! The real `sluice` binary against configuration files: the seed configs
//! pass `-t`, each class of error is reported in nginx's words with file:line,
//! `-T` round-trips, and the nginx command-line flags behave as nginx's.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{seed_prefix, websocket_conf, TempDir};

fn sluice(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run sluice")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn ok_lines(conf: &Path) -> [String; 2] {
    [
        format!(
            "sluice: the configuration file {} syntax is ok",
            conf.display()
        ),
        format!(
            "sluice: configuration file {} test is successful",
            conf.display()
        ),
    ]
}

#[test]
fn seed_nginx_conf_passes_t() {
    let tmp = TempDir::new("seed");
    let prefix = seed_prefix(&tmp);
    let out = sluice(&["-t", "-p", prefix.to_str().unwrap()], &prefix);
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:#?}");
    let conf = prefix.join("conf/nginx.conf");
    assert_eq!(lines[lines.len() - 2..], ok_lines(&conf));
    // Directives accepted without effect are each named once, with file:line.
    let warns: Vec<_> = lines.iter().filter(|l| l.contains("[warn]")).collect();
    assert!(warns.iter().any(|l| l.starts_with(
        "sluice: [warn] \"proxy_cache_path\" directive is accepted but has no effect"
    ) && l.ends_with(&format!("{}:75", conf.display()))));
    let fastcgi = warns
        .iter()
        .filter(|l| l.contains("\"fastcgi_connect_timeout\""))
        .count();
    assert_eq!(fastcgi, 1);
    assert!(out.stdout.is_empty());
}

#[test]
fn websocket_example_passes_t() {
    let tmp = TempDir::new("ws");
    let conf = websocket_conf(&tmp);
    let out = sluice(&["-t", "-c", conf.to_str().unwrap()], tmp.path());
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:#?}");
    assert_eq!(lines, ok_lines(&conf));
}

/// Each error class: the configuration text, then the message nginx gives
/// and the line it points at (`None` for errors without a place).
const ERRORS: &[(&str, &str, Option<u32>)] = &[
    (
        "events {}\n\nworker_processes 1;\nhttp {\n    frobnicate on;\n}\n",
        "unknown directive \"frobnicate\"",
        Some(5),
    ),
    ("events {}\n}\n", "unexpected \"}\"", Some(2)),
    (
        "events {}\nhttp {\n  server {\n",
        "unexpected end of file, expecting \"}\"",
        Some(4),
    ),
    (
        "events {}\nworker_processes 1",
        "unexpected end of file, expecting \";\" or \"}\"",
        Some(2),
    ),
    ("events {}\n;\n", "unexpected \";\"", Some(2)),
    ("events {}\nhttp { server_name \"a\"b; }\n", "unexpected \"b\"", Some(2)),
    (
        "events {}\nhttp {\n    listen 80;\n}\n",
        "\"listen\" directive is not allowed here",
        Some(3),
    ),
    (
        "events {}\nworker_processes\n  1 2;\n",
        "invalid number of arguments in \"worker_processes\" directive",
        Some(3),
    ),
    (
        "events {}\nhttp {\n    client_max_body_size 5q;\n}\n",
        "\"client_max_body_size\" directive invalid value",
        Some(3),
    ),
    (
        "events {}\nhttp {\n    gzip maybe;\n}\n",
        "invalid value \"maybe\" in \"gzip\" directive, it must be \"on\" or \"off\"",
        Some(3),
    ),
    (
        "events {}\nworker_processes 1;\nworker_processes 2;\n",
        "\"worker_processes\" directive is duplicate",
        Some(3),
    ),
    (
        "events {}\nhttp {\n  server {\n    location /a {}\n    location /a {}\n  }\n}\n",
        "duplicate location \"/a\"",
        Some(5),
    ),
    (
        "events {}\nhttp {\n  server {\n    location / {\n      proxy_pass http://no-such-host.invalid;\n    }\n  }\n}\n",
        "host not found in upstream \"no-such-host.invalid\"",
        Some(5),
    ),
    (
        "events {}\nhttp {\n  server {\n    location / {\n      proxy_set_header X $no_such_var;\n    }\n  }\n}\n",
        "unknown \"no_such_var\" variable",
        Some(5),
    ),
    (
        "events\n{}\nhttp;\n",
        "directive \"http\" has no opening \"{\"",
        Some(3),
    ),
    (
        "events {}\nworker_processes 1 {}\n",
        "directive \"worker_processes\" is not terminated by \";\"",
        Some(2),
    ),
    ("http {}\n", "no \"events\" section in configuration", None),
];

#[test]
fn every_error_class_in_nginx_words_with_file_and_line() {
    for (text, message, line) in ERRORS {
        let tmp = TempDir::new("err");
        let conf = tmp.write("conf/nginx.conf", text);
        let out = sluice(&["-t", "-c", conf.to_str().unwrap()], tmp.path());
        let lines = stderr_lines(&out);
        let want = match line {
            Some(n) => format!("sluice: [emerg] {message} in {}:{n}", conf.display()),
            None => format!("sluice: [emerg] {message}"),
        };
        assert_eq!(out.status.code(), Some(1), "{text:?}");
        assert_eq!(
            lines,
            [
                want,
                format!("sluice: configuration file {} test failed", conf.display())
            ],
            "{text:?}"
        );
    }
}

#[test]
fn errors_in_included_files_name_that_file() {
    let tmp = TempDir::new("inc");
    let conf = tmp.write(
        "conf/nginx.conf",
        "events {}\nhttp {\n    include sites/*.conf;\n}\n",
    );
    let site = tmp.write(
        "conf/sites/a.conf",
        "server {\n    listen 80;\n    bogus;\n}\n",
    );
    let out = sluice(&["-t", "-c", conf.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out)[0],
        format!(
            "sluice: [emerg] unknown directive \"bogus\" in {}:3",
            site.display()
        )
    );
    // A missing plain include is reported at its line.
    std::fs::write(
        &conf,
        "events {}\nhttp {\n    include sites/*.conf;\n    include missing.conf;\n}\n",
    )
    .unwrap();
    std::fs::write(&site, "server {\n    listen 80;\n}\n").unwrap();
    let out = sluice(&["-t", "-c", conf.to_str().unwrap()], tmp.path());
    assert_eq!(
        stderr_lines(&out)[0],
        format!(
            "sluice: [emerg] open() \"{}\" failed (2: No such file or directory) in {}:4",
            tmp.path().join("conf/missing.conf").display(),
            conf.display()
        )
    );
    // An include cycle is an error, not a hang.
    // Relative includes resolve against the main file's directory, as nginx.
    std::fs::write(&site, "include nginx.conf;\n").unwrap();
    let out = sluice(&["-t", "-c", conf.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_lines(&out)[0].contains("include cycle"),
        "{:?}",
        stderr_lines(&out)
    );
}

/// Splits a `-T` dump back into (path, text) pairs.
fn split_dump(dump: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in dump.split_inclusive('\n') {
        let header = line
            .strip_prefix("# configuration file ")
            .and_then(|l| l.strip_suffix(":\n"));
        match (header, files.last_mut()) {
            (Some(path), _) => files.push((path.to_string(), String::new())),
            (None, Some((_, text))) => text.push_str(line),
            (None, None) => panic!("dump does not start with a header: {line:?}"),
        }
    }
    // nginx writes one newline after each file's text.
    for (_, text) in &mut files {
        assert!(text.ends_with('\n'));
        text.pop();
    }
    files
}

#[test]
fn dump_round_trips_to_the_same_tree() {
    let tmp = TempDir::new("dump");
    let prefix = seed_prefix(&tmp);
    let out = sluice(&["-T", "-p", prefix.to_str().unwrap()], &prefix);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    let dump = String::from_utf8(out.stdout).unwrap();
    let files = split_dump(&dump);
    let names: Vec<_> = files
        .iter()
        .map(|(p, _)| Path::new(p).file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx.conf", "mime.types", "test.com"]);

    // Re-create the files from the dump alone, elsewhere, and parse again.
    let copy = TempDir::new("dump-copy");
    let conf_dir = prefix.join("conf");
    for (path, text) in &files {
        assert_eq!(text, &std::fs::read_to_string(path).unwrap());
        let rel = Path::new(path).strip_prefix(&conf_dir).unwrap();
        copy.write(&format!("conf/{}", rel.display()), text);
    }
    let load = |prefix: &Path| {
        sluice::conf::load(&sluice::conf::LoadOptions {
            prefix: prefix.to_path_buf(),
            conf_file: "conf/nginx.conf".into(),
            global_directives: None,
        })
        .unwrap()
    };
    let (a, b) = (load(&prefix), load(copy.path()));
    assert!(!a.tree.is_empty());
    assert_eq!(a.tree, b.tree);
    assert_ne!(a.tree[0].loc.file, b.tree[0].loc.file);
}

#[test]
fn version_and_help() {
    let tmp = TempDir::new("ver");
    let v = sluice(&["-v"], tmp.path());
    assert!(v.status.success());
    assert_eq!(
        stderr_lines(&v),
        [
            format!("sluice version: sluice/{}", env!("CARGO_PKG_VERSION")),
            "nginx version: nginx/1.22.1".to_string()
        ]
    );
    let big_v = sluice(&["-V"], tmp.path());
    assert!(big_v.status.success());
    let lines = stderr_lines(&big_v);
    assert_eq!(lines[..2], stderr_lines(&v)[..]);
    assert!(lines.iter().any(|l| l.starts_with("configure arguments: ")));
    for flag in ["-h", "-?"] {
        let h = sluice(&[flag], tmp.path());
        assert!(h.status.success());
        let text = String::from_utf8_lossy(&h.stderr);
        assert!(text.contains("Usage: sluice [-?hvVtTq]"), "{text}");
        assert!(text.contains("-s signal     : send signal"), "{text}");
    }
}

#[test]
fn quiet_test_prints_nothing_for_a_clean_config() {
    let tmp = TempDir::new("q");
    let conf = websocket_conf(&tmp);
    let out = sluice(&["-t", "-q", "-c", conf.to_str().unwrap()], tmp.path());
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    // Errors are still printed.
    std::fs::write(&conf, "events {}\nnope;\n").unwrap();
    let out = sluice(&["-t", "-q", "-c", conf.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_lines(&out)[0].starts_with("sluice: [emerg] unknown directive \"nope\""));
}

#[test]
fn global_directives() {
    let tmp = TempDir::new("g");
    let conf = websocket_conf(&tmp);
    let c = conf.to_str().unwrap();
    let out = sluice(&["-t", "-c", c, "-g", "worker_processes 2;"], tmp.path());
    assert!(out.status.success(), "{:?}", stderr_lines(&out));

    // -g is read first, so the file's directive is the duplicate.
    let prefix = seed_prefix(&tmp);
    let out = sluice(
        &[
            "-t",
            "-p",
            prefix.to_str().unwrap(),
            "-g",
            "worker_processes 2;",
        ],
        &prefix,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out)[0],
        format!(
            "sluice: [emerg] \"worker_processes\" directive is duplicate in {}:2",
            prefix.join("conf/nginx.conf").display()
        )
    );

    let out = sluice(&["-t", "-c", c, "-g", "frobnicate;"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out)[0],
        "sluice: [emerg] unknown directive \"frobnicate\" in command line"
    );
}

#[test]
fn prefix_and_conf_resolution() {
    let tmp = TempDir::new("p");
    let conf = websocket_conf(&tmp);
    // Default: conf/nginx.conf under the prefix, which defaults to the cwd.
    let out = sluice(&["-t"], tmp.path());
    assert_eq!(stderr_lines(&out), ok_lines(&conf), "cwd as prefix");
    let elsewhere = TempDir::new("p-cwd");
    let out = sluice(
        &["-t", "-p", tmp.path().to_str().unwrap()],
        elsewhere.path(),
    );
    assert_eq!(stderr_lines(&out), ok_lines(&conf), "-p");
    // A relative -c resolves against the prefix; relative includes, in any
    // file, against the directory of the main file (nginx's conf prefix).
    let other = tmp.write(
        "alt/other.conf",
        "events {}\nhttp {\n    include ../conf/websocket-example.conf;\n}\n",
    );
    let out = sluice(
        &[
            "-t",
            "-p",
            tmp.path().to_str().unwrap(),
            "-c",
            "alt/other.conf",
        ],
        elsewhere.path(),
    );
    assert_eq!(stderr_lines(&out), ok_lines(&other), "-p with relative -c");
    // A relative -p resolves against the cwd.
    let out = sluice(&["-t", "-p", "."], tmp.path());
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
}

#[test]
fn error_log_flag_is_accepted() {
    let tmp = TempDir::new("e");
    let conf = websocket_conf(&tmp);
    let out = sluice(
        &["-t", "-e", "stderr", "-c", conf.to_str().unwrap()],
        tmp.path(),
    );
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    assert_eq!(stderr_lines(&out), ok_lines(&conf));
}

/// Kills a child that a failed assertion would otherwise leave running.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn signal_reload_sends_sighup_to_the_pid_file() {
    let tmp = TempDir::new("s");
    let pid_file = tmp.path().join("logs/sluice.pid");
    let conf = tmp.write(
        "conf/nginx.conf",
        format!("pid {};\nevents {{}}\n", pid_file.display()),
    );
    let mut child = Reap(Some(
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep"),
    ));
    let pid = child.0.as_ref().unwrap().id();
    tmp.write("logs/sluice.pid", format!("{pid}\n"));
    let out = sluice(&["-s", "reload", "-c", conf.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    let status = child.0.take().unwrap().wait().expect("wait for sleep");
    assert_eq!(status.signal(), Some(libc::SIGHUP));
}

#[test]
fn signal_with_missing_pid_file() {
    let tmp = TempDir::new("s-missing");
    // The default pid path, relative to the prefix.
    tmp.write("conf/nginx.conf", "events {}\n");
    let out = sluice(
        &["-s", "reload", "-p", tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [format!(
            "sluice: [error] open() \"{}\" failed (2: No such file or directory)",
            tmp.path().join("logs/sluice.pid").display()
        )]
    );
    let out = sluice(
        &["-s", "bogus", "-p", tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr_lines(&out), ["sluice: invalid option: \"-s bogus\""]);
}
