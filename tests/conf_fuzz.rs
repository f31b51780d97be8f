//! Mutated seed configs (byte flips, truncations, splices, inserted syntax
//! characters) through the whole loader in-process: every result is a
//! configuration or an error, never a panic, and each load finishes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use common::{seed_prefix, TempDir};

/// A hang detector, not a speed check: far above any real load time.
const HANG: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Truncate { at: usize },
    Splice { from: usize, len: usize, at: usize },
    Insert { at: usize, text: &'static str },
    Delete { at: usize, len: usize },
}

const SYNTAX: &[&str] = &[
    "{",
    "}",
    ";",
    "\"",
    "'",
    "\\",
    "$",
    "${",
    "#",
    "\n",
    " ",
    "include ",
    "(",
    ")",
    "é",
    "这",
    "~*",
    "^~",
    "=",
    "@",
    "*",
    "k",
    "m",
    "ms",
    "1h 30m",
    "\0",
    "include nginx.conf;",
    "include *;",
    "location",
    "server {",
    "if (",
    "\u{feff}",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<usize>(), 0..200usize, any::<usize>())
            .prop_map(|(from, len, at)| Mutation::Splice { from, len, at }),
        4 => (any::<usize>(), proptest::sample::select(SYNTAX))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        2 => (any::<usize>(), 1..40usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Flip { at, byte } => {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::Splice { from, len, at } => {
                let from = from % n;
                let end = (from + len).min(bytes.len());
                let piece = bytes.get(from..end).unwrap_or_default().to_vec();
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, piece);
            }
            Mutation::Insert { at, text } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, text.bytes());
            }
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
        }
    }
    bytes
}

/// Loads `prefix/conf/nginx.conf` on another thread, failing on a panic or
/// a load that does not finish.
fn load_in_time(prefix: &Path) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let prefix: PathBuf = prefix.to_path_buf();
    let worker = std::thread::spawn(move || {
        let r = sluice::conf::load(&sluice::conf::LoadOptions {
            prefix,
            conf_file: "conf/nginx.conf".into(),
            global_directives: None,
        });
        // Display must not panic either.
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(HANG) {
        Ok(_) => worker.join().map_err(|_| "panicked".to_string()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the loader panicked".into()),
        Err(mpsc::RecvTimeoutError::Timeout) => Err("the loader did not finish".into()),
    }
}

struct Seeds {
    tmp: TempDir,
    main: Vec<u8>,
    vhost: Vec<u8>,
    websocket: Vec<u8>,
}

fn seeds() -> Seeds {
    let tmp = TempDir::new("fuzz");
    let prefix = seed_prefix(&tmp);
    let read = |p: &str| std::fs::read(prefix.join(p)).unwrap();
    let websocket = common::seed("websocket-example.conf")
        .replace("192.168.100.10", "127.0.0.1")
        .into_bytes();
    Seeds {
        main: read("conf/nginx.conf"),
        vhost: read("conf/test.com"),
        websocket,
        tmp,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // SLUICE_FUZZ_CASES=100000 for a longer run.
        cases: std::env::var("SLUICE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_seed_configs_never_panic_or_hang(
        which in 0..3u8,
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        thread_local! {
            static SEEDS: Seeds = seeds();
        }
        SEEDS.with(|s| {
            let dir = s.tmp.path();
            let (main, vhost) = match which {
                0 => (apply(s.main.clone(), &muts), s.vhost.clone()),
                1 => (s.main.clone(), apply(s.vhost.clone(), &muts)),
                _ => {
                    let mut ws = b"events {}\nhttp {\n".to_vec();
                    ws.extend_from_slice(&s.websocket);
                    ws.extend_from_slice(b"\n}\n");
                    (apply(ws, &muts), s.vhost.clone())
                }
            };
            std::fs::write(dir.join("conf/nginx.conf"), &main).unwrap();
            std::fs::write(dir.join("conf/test.com"), &vhost).unwrap();
            let r = load_in_time(dir);
            prop_assert!(r.is_ok(), "{:?} on {:?}", r, String::from_utf8_lossy(&main));
            Ok(())
        })?;
    }
}
