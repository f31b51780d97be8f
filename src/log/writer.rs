//! The access log writer: one background thread per process owns the open
//! files, so a worker never waits on the disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::conf::model::{AccessLog, Config, LocationConf, LogLevel};

/// Lines waiting for the writer thread; past this, lines are dropped.
const QUEUE_LINES: usize = 16 * 1024;
/// How long the writer lets lines gather after a batch. Waking the writer
/// thread costs a timer interrupt and two context switches on the worker's
/// core, more than rendering and writing a line; under load one wake and
/// one write() serve every line of this window. A line waits at most this
/// long more. (At 500 µs the writer still took about 1 % of the worker's
/// core under a WebSocket handshake load.)
const GATHER: Duration = Duration::from_millis(2);
/// nginx's buffer when `gzip` is given without `buffer=`.
const GZIP_DEFAULT_BUFFER: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("open() \"{path}\" failed ({reason})")]
    Open { path: String, reason: String },
    #[error("could not start the log writer thread ({0})")]
    Thread(String),
}

/// nginx's rendering of an OS error: `2: No such file or directory`.
pub fn os_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match e.raw_os_error() {
        Some(code) => format!("{code}: {text}"),
        None => text,
    }
}

/// One access log file and how it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub path: PathBuf,
    /// `buffer=size`; 0 writes every line at once.
    pub buffer: u64,
    /// `flush=time`: the longest a line waits in the buffer.
    pub flush: Option<Duration>,
    /// `gzip=level`: every buffer written is one gzip member.
    pub gzip: Option<u32>,
}

/// A file of [`AccessLogs`], found once by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTarget(usize);

enum Msg {
    Line(usize, Vec<u8>),
    Flush(SyncSender<()>),
    Reopen(SyncSender<Vec<LogError>>),
    /// Answered once everything queued before it is handled, buffers left alone.
    Probe(SyncSender<()>),
    Stop,
}

/// The open access logs of one configuration, deduplicated by path.
pub struct AccessLogs {
    tx: SyncSender<Msg>,
    index: HashMap<PathBuf, usize>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogs")
            .field("files", &self.index.len())
            .finish()
    }
}

impl AccessLogs {
    /// Every access log file a configuration names, first parameters winning
    /// for a path named twice.
    pub fn specs(config: &Config) -> Vec<FileSpec> {
        let mut specs: Vec<FileSpec> = Vec::new();
        let mut add = |logs: &[AccessLog]| {
            for l in logs {
                if let AccessLog::File {
                    path,
                    buffer,
                    flush,
                    gzip,
                    ..
                } = l
                {
                    if specs.iter().any(|s| &s.path == path) {
                        continue;
                    }
                    let buffer = match (buffer, gzip) {
                        (Some(b), _) => *b,
                        (None, Some(_)) => GZIP_DEFAULT_BUFFER,
                        (None, None) => 0,
                    };
                    specs.push(FileSpec {
                        path: path.clone(),
                        buffer,
                        flush: *flush,
                        gzip: *gzip,
                    });
                }
            }
        };
        fn walk(locs: &[LocationConf], add: &mut dyn FnMut(&[AccessLog])) {
            for l in locs {
                add(&l.settings.access_log);
                walk(&l.children, add);
            }
        }
        if let Some(http) = &config.http {
            for s in &http.servers {
                add(&s.settings.access_log);
                walk(&s.locations, &mut add);
            }
        }
        specs
    }

    /// Opens the access logs of `config` and starts the writer.
    pub fn from_config(config: &Config) -> Result<AccessLogs, LogError> {
        AccessLogs::open(Self::specs(config))
    }

    /// Opens every file (failing as nginx does when one cannot be opened;
    /// parent directories are not created) and starts the writer thread.
    pub fn open(specs: Vec<FileSpec>) -> Result<AccessLogs, LogError> {
        let mut files = Vec::with_capacity(specs.len());
        let mut index = HashMap::new();
        for spec in specs {
            if index.contains_key(&spec.path) {
                continue;
            }
            let file = open_append(&spec.path)?;
            index.insert(spec.path.clone(), files.len());
            files.push(FileState::new(spec, file));
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let thread = std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || run(files, rx))
            .map_err(|e| LogError::Thread(e.to_string()))?;
        Ok(AccessLogs {
            tx,
            index,
            dropped: Arc::new(AtomicU64::new(0)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The file for `path`, when it is one of this configuration's logs.
    pub fn target(&self, path: &Path) -> Option<LogTarget> {
        // Asked once per log line: a few files compare faster than a hash.
        if self.index.len() <= 8 {
            let want = path.as_os_str().as_encoded_bytes();
            let found = self
                .index
                .iter()
                .find(|(p, _)| p.as_os_str().as_encoded_bytes() == want);
            if let Some((_, i)) = found {
                return Some(LogTarget(*i));
            }
        }
        self.index.get(path).copied().map(LogTarget)
    }

    /// Queues one line (with its newline) for `target`.
    pub fn write(&self, target: LogTarget, line: Vec<u8>) {
        // A full queue means the disk is slower than the traffic. Waiting
        // here would stall every connection of this worker thread on the
        // disk, which nginx's event loop would not suffer either for long;
        // losing a log line is the lesser harm, and it is counted.
        match self.tx.try_send(Msg::Line(target.0, line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes every queued and buffered line; returns once they are written.
    pub fn flush_all(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Returns once the writer has handled every line queued before; buffers
    /// are not forced out (that is [`AccessLogs::flush_all`]).
    pub fn sync(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Probe(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Re-opens every file by path (USR1): what was queued before goes to the
    /// old file, every line written after this returns goes to the new one.
    /// A file that cannot be re-opened keeps its old handle, as in nginx.
    pub fn reopen(&self) -> Vec<LogError> {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Reopen(ack)).is_err() {
            return Vec::new();
        }
        done.recv().unwrap_or_default()
    }

    /// Flushes everything and stops the writer thread.
    pub fn shutdown(&self) {
        let handle = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Stop);
            let _ = h.join();
        }
    }
}

impl Drop for AccessLogs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| LogError::Open {
            path: path.display().to_string(),
            reason: os_error(&e),
        })
}

struct FileState {
    spec: FileSpec,
    file: File,
    buf: Vec<u8>,
    /// Lines of an unbuffered log read in the current batch, written
    /// together before the writer waits again.
    staged: Vec<u8>,
    /// When the buffer must be written at the latest (`flush=`).
    deadline: Option<Instant>,
}

impl FileState {
    fn new(spec: FileSpec, file: File) -> FileState {
        let cap = usize::try_from(spec.buffer).unwrap_or(usize::MAX);
        FileState {
            buf: Vec::with_capacity(cap.min(1 << 20)),
            staged: Vec::new(),
            spec,
            file,
            deadline: None,
        }
    }

    fn cap(&self) -> usize {
        usize::try_from(self.spec.buffer).unwrap_or(usize::MAX)
    }

    /// As nginx's `ngx_http_log_write` with a buffer: write the buffer out
    /// when the line does not fit, keep the line if it fits, else write it.
    fn push(&mut self, line: Vec<u8>) {
        let cap = self.cap();
        if cap == 0 && self.spec.gzip.is_none() {
            self.staged.extend_from_slice(&line);
            return;
        }
        if cap == 0 {
            self.write_raw(&line);
            return;
        }
        if line.len() > cap - self.buf.len() {
            self.write_buf();
        }
        if line.len() <= cap - self.buf.len() {
            if self.buf.is_empty() {
                self.deadline = self.spec.flush.map(|f| Instant::now() + f);
            }
            self.buf.extend_from_slice(&line);
        } else {
            self.write_raw(&line);
        }
    }

    /// Writes the lines staged in this batch, in one write.
    fn write_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        self.write_raw(&staged);
        self.staged = staged;
        self.staged.clear();
    }

    fn write_buf(&mut self) {
        self.write_staged();
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        self.write_raw(&buf);
        self.buf = buf;
        self.buf.clear();
        self.deadline = None;
    }

    fn write_raw(&mut self, data: &[u8]) {
        let res = match self.spec.gzip {
            Some(level) => gzip_member(data, level).and_then(|gz| self.file.write_all(&gz)),
            None => self.file.write_all(data),
        };
        if let Err(e) = res {
            crate::log::error::write(
                LogLevel::Alert,
                None,
                format_args!(
                    "write() to \"{}\" failed ({})",
                    self.spec.path.display(),
                    os_error(&e)
                ),
            );
        }
    }

    fn reopen(&mut self) -> Result<(), LogError> {
        self.write_buf();
        self.file = open_append(&self.spec.path)?;
        Ok(())
    }
}

fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// The writer thread: lines in order, buffers flushed by size, by their
/// `flush=` deadline, on request, on reopen and at the end.
fn run(mut files: Vec<FileState>, rx: Receiver<Msg>) {
    let mut batch = false;
    loop {
        let next = files.iter().filter_map(|f| f.deadline).min();
        let msg = match rx.try_recv() {
            Ok(m) => Ok(m),
            Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(mpsc::TryRecvError::Empty) => {
                // The batch is read: write it, then give the next lines a
                // moment to gather before waiting for them.
                files.iter_mut().for_each(FileState::write_staged);
                if std::mem::take(&mut batch) {
                    // Lines that keep coming must not hold a `flush=` back.
                    if next.is_some_and(|at| at <= Instant::now()) {
                        files
                            .iter_mut()
                            .filter(|f| f.deadline.is_some_and(|d| d <= Instant::now()))
                            .for_each(FileState::write_buf);
                    }
                    std::thread::sleep(GATHER);
                    continue;
                }
                match next {
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                }
            }
        };
        if !matches!(msg, Ok(Msg::Line(..))) {
            // What was queued before a control message is written first.
            files.iter_mut().for_each(FileState::write_staged);
        }
        match msg {
            Ok(Msg::Line(i, line)) => {
                batch = true;
                if let Some(f) = files.get_mut(i) {
                    f.push(line);
                }
            }
            Ok(Msg::Flush(ack)) => {
                files.iter_mut().for_each(FileState::write_buf);
                let _ = ack.send(());
            }
            Ok(Msg::Probe(ack)) => {
                let _ = ack.send(());
            }
            Ok(Msg::Reopen(ack)) => {
                let errors = files.iter_mut().filter_map(|f| f.reopen().err()).collect();
                let _ = ack.send(errors);
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for f in files
                    .iter_mut()
                    .filter(|f| f.deadline.is_some_and(|d| d <= now))
                {
                    f.write_buf();
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                files.iter_mut().for_each(FileState::write_buf);
                return;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicUsize;

    /// A unit test's temporary directory: removed on drop when the test
    /// passes, kept (and named on stderr) when it panics, for inspection.
    /// Declare it before whatever writes into it, so that drops first.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        /// Creates `path` afresh.
        pub(crate) fn new(path: PathBuf) -> TestDir {
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create test dir");
            TestDir(path)
        }
    }

    impl std::ops::Deref for TestDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TestDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("kept test dir {}", self.0.display());
            } else {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    pub(crate) fn temp_dir(tag: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        TestDir::new(std::env::temp_dir().join(format!(
            "sluice-log-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn spec(path: &Path, buffer: u64, flush: Option<Duration>) -> FileSpec {
        FileSpec {
            path: path.to_path_buf(),
            buffer,
            flush,
            gzip: None,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn unbuffered_lines_arrive_in_order() {
        let dir = temp_dir("plain");
        let p = dir.join("a.log");
        let logs = AccessLogs::open(vec![spec(&p, 0, None), spec(&p, 0, None)]).unwrap();
        let t = logs.target(&p).unwrap();
        for i in 0..100 {
            logs.write(t, format!("line {i}\n").into_bytes());
        }
        logs.flush_all();
        let text = read(&p);
        assert_eq!(text.lines().count(), 100);
        assert!(text.starts_with("line 0\nline 1\n"));
        assert_eq!(logs.dropped(), 0);
        assert!(logs.target(&dir.join("other.log")).is_none());
    }

    #[test]
    fn buffer_holds_lines_until_full() {
        let dir = temp_dir("buf");
        let q = dir.join("b.log");
        // No flush= : only a full buffer, flush_all, reopen or shutdown write.
        let logs = AccessLogs::open(vec![spec(&q, 16, None)]).unwrap();
        let t = logs.target(&q).unwrap();
        logs.write(t, b"0123456\n".to_vec()); // 8 bytes, buffered
        logs.write(t, b"abcdefg\n".to_vec()); // 16: fills exactly, still buffered
        logs.sync();
        assert_eq!(read(&q), "", "lines stay in the buffer until it is full");
        logs.write(t, b"x\n".to_vec()); // does not fit: the buffer goes out
        logs.sync();
        assert_eq!(read(&q), "0123456\nabcdefg\n");
        logs.write(t, b"a line longer than the buffer\n".to_vec());
        logs.sync();
        assert_eq!(
            read(&q),
            "0123456\nabcdefg\nx\na line longer than the buffer\n"
        );
        logs.write(t, b"last\n".to_vec());
        drop(logs); // shutdown flushes
        assert_eq!(
            read(&q),
            "0123456\nabcdefg\nx\na line longer than the buffer\nlast\n"
        );
    }

    #[test]
    fn flush_interval_writes_buffer() {
        let dir = temp_dir("flush");
        let p = dir.join("a.log");
        let logs = AccessLogs::open(vec![spec(&p, 4096, Some(Duration::from_millis(10)))]).unwrap();
        let t = logs.target(&p).unwrap();
        logs.write(t, b"hello\n".to_vec());
        // The flush timer, not flush_all, writes it: poll the file, bounded.
        let mut ok = false;
        for _ in 0..500 {
            if read(&p) == "hello\n" {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ok, "flush= wrote the buffer");
    }

    #[test]
    fn reopen_after_rename() {
        let dir = temp_dir("reopen");
        let p = dir.join("access.log");
        let logs = AccessLogs::open(vec![spec(&p, 1024, None)]).unwrap();
        let t = logs.target(&p).unwrap();
        logs.write(t, b"before 1\n".to_vec());
        logs.write(t, b"before 2\n".to_vec());
        let old = dir.join("access.log.1");
        std::fs::rename(&p, &old).unwrap();
        logs.write(t, b"queued before reopen\n".to_vec());
        assert!(logs.reopen().is_empty());
        logs.write(t, b"after\n".to_vec());
        logs.flush_all();
        assert_eq!(read(&old), "before 1\nbefore 2\nqueued before reopen\n");
        assert_eq!(read(&p), "after\n");
    }

    #[test]
    fn missing_directory_fails_like_nginx() {
        let dir = temp_dir("missing");
        let p = dir.join("no/such/dir/access.log");
        let err = AccessLogs::open(vec![spec(&p, 0, None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "open() \"{}\" failed (2: No such file or directory)",
                p.display()
            )
        );
    }

    #[test]
    fn gzip_members() {
        let dir = temp_dir("gzip");
        let p = dir.join("a.log.gz");
        let logs = AccessLogs::open(vec![FileSpec {
            path: p.clone(),
            buffer: 64,
            flush: None,
            gzip: Some(5),
        }])
        .unwrap();
        let t = logs.target(&p).unwrap();
        logs.write(t, b"one\n".to_vec());
        logs.flush_all();
        logs.write(t, b"two\n".to_vec());
        logs.flush_all();
        let raw = std::fs::read(&p).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "one\ntwo\n");
    }
}
