//! The allocator, and giving freed heap back to the system after a burst
//! of connections.
//!
//! The binary allocates with jemalloc (`#[global_allocator]` in main.rs):
//! glibc's malloc spent about a quarter of the user-space instructions of a
//! WebSocket handshake (~72 allocations, 8-32 KiB buffers that trigger
//! `malloc_consolidate`, `posix_memalign` for every task's cache-aligned
//! cell) and jemalloc about 10 % fewer instructions in all per handshake;
//! its size classes also hold an idle tunnel's blocks with less slack
//! (see docs/performance.md). mimalloc, measured too, kept more per idle
//! tunnel and did not give memory back.
//!
//! Tunnels that opened together and then closed leave their freed blocks
//! scattered between blocks still in use; an allocator keeps such pages
//! until it decides to purge them (glibc: only from the top of an arena;
//! jemalloc: after its decay time, and only when called again). So once
//! [`BATCH`] connections have opened or closed and that has paused for
//! [`QUIET`], every arena's unused dirty pages are purged now: never under
//! steady load, once after a burst. (With glibc's malloc, RSS stayed at 160
//! MiB after 9,000 tunnels had closed, against 6 MiB before they opened.)
//!
//! jemalloc's thread caches are also made larger than its default for the
//! bigger small sizes ([`MALLOC_CONF`]): a request's 8 KiB read buffers and
//! the like otherwise overflow a cache of a few blocks and go to the arena
//! and back every few requests (callgrind: 3-8 % of the user-space
//! instructions of a handshake or a request). What a cache holds after a
//! burst is returned with the trim.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

/// Opened or closed connections that make a trim worth its cost (it walks the free
/// lists: a few milliseconds for a heap of hundreds of MiB).
pub const BATCH: u64 = 256;
/// How long closing must pause before the trim runs.
pub const QUIET: Duration = Duration::from_secs(1);

static EVENTS: AtomicU64 = AtomicU64::new(0);
static WAKE: Notify = Notify::const_new();

/// Notes an accepted or closed client connection (closed with its tunnel,
/// if it had one).
pub fn connection_event() {
    if EVENTS.fetch_add(1, Relaxed) + 1 == BATCH {
        // Stores a permit if the trimmer is busy: no wake-up is lost.
        WAKE.notify_one();
    }
}

/// The trimmer; spawned once, runs until the runtime stops.
pub async fn run() {
    loop {
        WAKE.notified().await;
        // Let the burst finish first, so one trim covers it.
        loop {
            let before = EVENTS.load(Relaxed);
            tokio::time::sleep(QUIET).await;
            if EVENTS.load(Relaxed) == before {
                break;
            }
        }
        // Events from here on count towards the next trim.
        EVENTS.store(0, Relaxed);
        // This is a worker thread (the only one with `worker_processes 1`):
        // its cache goes back first.
        flush_thread_cache();
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// jemalloc's options, read at its start from this symbol (the prefixed
/// name of its `malloc_conf`; `_RJEM_MALLOC_CONF` in the environment still
/// overrides them). At least 64 blocks per size class in a thread's cache
/// (jemalloc's default minimum is 20 and fewer for the larger classes), and
/// 64 KiB slabs for the classes from 4 to 14 KiB (hyper's 8 KiB buffers, a
/// request's future): jemalloc's default slab for 8 and 12 KiB holds one
/// block, so every cache refill or flush of those classes made or unmade a
/// slab (callgrind: ~6k instructions per HTTP/2 request, ~3k per WebSocket
/// handshake). Idle tunnels hold no blocks of these sizes, so the bigger
/// slabs pin no memory behind them.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"tcache_nslots_small_min:64,slab_sizes:4097-14336:16".as_ptr());

/// A C string pointer, as jemalloc declares `malloc_conf`.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a static, immutable, NUL-terminated string.
unsafe impl Sync for MallocConf {}

/// Calls a jemalloc control that reads and writes nothing; false if it
/// refused it.
fn mallctl_void(name: &std::ffi::CStr) -> bool {
    // SAFETY: the name of a control that takes and returns no value.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

/// Returns what the calling thread's jemalloc cache holds to the arenas, so
/// that [`trim`] can release it.
pub fn flush_thread_cache() -> bool {
    mallctl_void(c"thread.tcache.flush")
}

/// Releases free heap pages to the system: jemalloc's `arena.<all>.purge`.
/// False if jemalloc refused the control.
pub fn trim() -> bool {
    // MALLCTL_ARENAS_ALL: every arena. It only makes jemalloc return its
    // unused dirty pages.
    mallctl_void(c"arena.4096.purge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_runs() {
        // Freed jemalloc memory between live blocks, then a purge: jemalloc
        // accepts the control and the live blocks are intact. (The test
        // binary's global allocator is the system's, so jemalloc is called
        // directly here.)
        use std::alloc::{GlobalAlloc, Layout};
        let (small, big) = (Layout::new::<[u8; 64]>(), Layout::new::<[u8; 16 << 10]>());
        let je = tikv_jemallocator::Jemalloc;
        // SAFETY: every block is allocated, written, checked and freed with
        // its own layout, once.
        unsafe {
            let keep: Vec<*mut u8> = (0..64).map(|_| je.alloc(small)).collect();
            let gone: Vec<*mut u8> = (0..64).map(|_| je.alloc(big)).collect();
            assert!(keep.iter().chain(&gone).all(|p| !p.is_null()));
            keep.iter().for_each(|p| p.write_bytes(7, 64));
            gone.into_iter().for_each(|p| je.dealloc(p, big));
            assert!(trim());
            assert!(keep
                .iter()
                .all(|p| std::slice::from_raw_parts(*p, 64) == [7u8; 64]));
            keep.into_iter().for_each(|p| je.dealloc(p, small));
        }
        assert!(flush_thread_cache());
    }

    #[test]
    fn jemalloc_reads_the_options() {
        // Unless the environment overrides them for this run.
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return;
        }
        assert_eq!(read::<u32>(c"opt.tcache_nslots_small_min"), 64);
        // The 8 KiB class: eight blocks to a slab (jemalloc's default: one).
        let nregs = (0..read::<u32>(c"arenas.nbins"))
            .find(|i| read::<usize>(&bin_ctl(*i, "size")) == 8192)
            .map(|i| read::<u32>(&bin_ctl(i, "nregs")));
        assert_eq!(nregs, Some(8));
    }

    fn bin_ctl(i: u32, what: &str) -> std::ffi::CString {
        std::ffi::CString::new(format!("arenas.bin.{i}.{what}")).expect("no NUL")
    }

    /// Reads a jemalloc control's value.
    fn read<T: Default>(name: &std::ffi::CStr) -> T {
        let mut v = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `v` is as long as `len` says; the callers name controls
        // of that type.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut v as *mut T).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "{name:?}");
        v
    }
}
