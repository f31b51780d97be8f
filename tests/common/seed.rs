//! Helpers shared by the configuration tests: temporary directories and the
//! seed configs with their machine-specific parts substituted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A bare directory under the system temp dir (no `logs/` or `conf/`),
/// removed like any [`super::TestDir`].
pub type TempDir = super::TestDir;

impl super::TestDir {
    /// A bare directory (`temp_dir` makes a prefix with `logs/` and `conf/`).
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sluice-conf-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        super::TestDir(path, std::sync::atomic::AtomicBool::new(false))
    }

    /// Writes `text` at `rel`, creating parent directories.
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }
}

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn seed(name: &str) -> String {
    std::fs::read_to_string(repo_file(&format!("tests/fixtures/seed/{name}"))).expect("seed")
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The seed `nginx.conf` and `test.com` made loadable here: the include path
/// made relative, the user made one that exists, `/dev/shm` paths moved into
/// the temp dir and the upstream moved to loopback. Returns the prefix; the
/// files are in `prefix/conf/`.
pub fn seed_prefix(tmp: &TempDir) -> PathBuf {
    let shm = tmp.path().join("shm");
    std::fs::create_dir_all(&shm).expect("shm dir");
    let main = seed("nginx.conf")
        .replace("/home/apps/tengine/conf/test.com", "test.com")
        .replace(
            "user apps apps;",
            &format!("user {} {};", id("-un"), id("-gn")),
        )
        .replace("/dev/shm", &shm.display().to_string());
    let vhost = seed("test.com").replace("192.168.1.5", "127.0.0.1");
    tmp.write("conf/nginx.conf", main);
    tmp.write("conf/test.com", vhost);
    tmp.write(
        "conf/mime.types",
        std::fs::read(repo_file("conf/mime.types")).expect("mime.types"),
    );
    tmp.path().to_path_buf()
}

/// websocket-example.conf wrapped in `events {}` and `http {}`, upstream on
/// loopback. Returns the main file's path.
pub fn websocket_conf(tmp: &TempDir) -> PathBuf {
    let snippet = seed("websocket-example.conf").replace("192.168.100.10", "127.0.0.1");
    tmp.write("conf/websocket-example.conf", snippet);
    tmp.write(
        "conf/nginx.conf",
        "events {}\nhttp {\n    include websocket-example.conf;\n}\n",
    )
}
