//! `proxy_buffering`: with it on, the upstream's answer is read ahead into
//! at most `proxy_buffer_size + proxy_buffers` of memory, so a slow client
//! does not hold the upstream connection while a response that fits is
//! still being sent. Beyond that budget sluice applies backpressure to the
//! upstream instead of spilling to temporary files as nginx does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::body::{BoxError, ProxyBody};
use crate::conf::model::Settings;

/// Parsed at compile time: a `&str` name would be parsed on every response.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether this response is buffered: the setting, unless the upstream says
/// otherwise with `X-Accel-Buffering: yes|no` (as nginx's proxy module lets it).
pub fn buffering(settings: &Settings, upstream: &HeaderMap) -> bool {
    match upstream.get(X_ACCEL_BUFFERING).map(|v| v.as_bytes()) {
        Some(v) if v.eq_ignore_ascii_case(b"yes") => true,
        Some(v) if v.eq_ignore_ascii_case(b"no") => false,
        _ => settings.proxy_buffering,
    }
}

/// The read-ahead budget in bytes: nginx's in-memory buffers for one response.
pub fn budget(settings: &Settings) -> usize {
    let total = settings.proxy_buffer_size.saturating_add(
        settings
            .proxy_buffers
            .count
            .saturating_mul(settings.proxy_buffers.size),
    );
    usize::try_from(total.clamp(1, u64::from(u32::MAX >> 3))).unwrap_or(1 << 16)
}

/// The largest known-length body served without the read-ahead task: well
/// within what hyper's server connection buffers before it waits on the socket.
const INLINE_MAX: u64 = 16 << 10;

type Item = Result<(Frame<Bytes>, Option<OwnedSemaphorePermit>), BoxError>;

/// Reads `inner` ahead in its own task into at most `budget` bytes (plus one
/// frame larger than the budget). The task ends, dropping `inner` (and with
/// it the upstream connection), at the end of the body or when the client
/// goes away.
pub fn read_ahead(inner: ProxyBody, budget: usize) -> ProxyBody {
    if inner.is_end_stream() {
        return inner;
    }
    // A body of known length that fits hyper's write buffer is pulled
    // whole into it as soon as the head is written, which frees the
    // upstream as early as the pump would: no task needed.
    let exact = inner.size_hint().exact();
    if exact.is_some_and(|n| n <= INLINE_MAX.min(budget as u64)) {
        return inner;
    }
    let sem = Arc::new(Semaphore::new(budget));
    // The semaphore bounds what is queued; the channel itself needs no bound.
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    tokio::spawn(crate::runtime::busy::active(async move {
        let mut inner = inner;
        loop {
            let frame = tokio::select! {
                f = inner.frame() => f,
                () = tx.closed() => return,
            };
            let item = match frame {
                None => return,
                Some(Err(e)) => Err(e),
                Some(Ok(f)) => {
                    let n = f.data_ref().map_or(0, |d| d.len());
                    if n == 0 {
                        Ok((f, None))
                    } else {
                        let want = u32::try_from(n.min(budget)).unwrap_or(u32::MAX);
                        let permit = tokio::select! {
                            p = sem.clone().acquire_many_owned(want) => p.ok(),
                            () = tx.closed() => return,
                        };
                        Ok((f, permit))
                    }
                }
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
    }));
    ReadAhead { rx, left: exact }.boxed()
}

struct ReadAhead {
    rx: mpsc::UnboundedReceiver<Item>,
    /// Bytes still to come when the length is known: hyper stops polling a
    /// body once its Content-Length is written, so the end must show in
    /// `is_end_stream` (the upstream connection is kept only after a body
    /// that ended).
    left: Option<u64>,
}

impl Body for ReadAhead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The permit is released as the frame is handed to the connection.
        let r = ready!(self.rx.poll_recv(cx)).map(|r| r.map(|(frame, _permit)| frame));
        if let (Some(Ok(f)), Some(left)) = (&r, self.left.as_mut()) {
            let n = f.data_ref().map_or(0, |d| d.len() as u64);
            *left = left.saturating_sub(n);
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::{Bufs, LevelSettings};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn x_accel_buffering_overrides() {
        let mut s = LevelSettings::default().resolve();
        let mut h = HeaderMap::new();
        assert!(buffering(&s, &h));
        h.insert("x-accel-buffering", "no".parse().expect("value"));
        assert!(!buffering(&s, &h));
        s.proxy_buffering = false;
        h.insert("x-accel-buffering", "YES".parse().expect("value"));
        assert!(buffering(&s, &h));
        h.insert("x-accel-buffering", "maybe".parse().expect("value"));
        assert!(!buffering(&s, &h));
    }

    #[test]
    fn budget_is_buffer_size_plus_buffers() {
        let mut s = LevelSettings::default().resolve();
        assert_eq!(budget(&s), 4096 + 8 * 4096);
        s.proxy_buffer_size = 8192;
        s.proxy_buffers = Bufs {
            count: 4,
            size: 16384,
        };
        assert_eq!(budget(&s), 8192 + 4 * 16384);
    }

    /// A source that counts how many bytes were taken from it.
    struct Counted {
        left: usize,
        taken: Arc<AtomicUsize>,
    }
    impl Body for Counted {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(1000);
            self.left -= n;
            self.taken.fetch_add(n, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; n])))))
        }
    }

    #[tokio::test]
    async fn reads_ahead_up_to_the_budget_only() {
        let taken = Arc::new(AtomicUsize::new(0));
        let src = Counted {
            left: 100_000,
            taken: taken.clone(),
        }
        .boxed();
        let mut body = read_ahead(src, 10_000);
        // Without a reader the pump fills the budget and stops.
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(1000));
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let t = taken.load(Ordering::SeqCst);
        assert!(t <= 12_000, "took {t} bytes ahead");
        assert!(t >= 10_000, "took only {t} bytes ahead");
        let rest = body.collect().await.expect("rest").to_bytes();
        assert_eq!(rest.len() + 1000, 100_000);
    }

    #[tokio::test]
    async fn a_known_length_body_ends_at_its_length() {
        // hyper stops polling once Content-Length is written: the end must
        // show without a final `None`, or the upstream connection is lost.
        let src = crate::proxy::body::full(vec![1u8; 40_000]);
        let mut body = read_ahead(src, 100_000);
        assert_eq!(body.size_hint().exact(), Some(40_000));
        let mut got = 0;
        while !body.is_end_stream() {
            let f = body.frame().await.expect("frame").expect("ok");
            got += f.data_ref().map_or(0, |d| d.len());
        }
        assert_eq!(got, 40_000);
        // A small one of known length is not pumped at all.
        let small = read_ahead(crate::proxy::body::full(vec![1u8; 100]), 100_000);
        assert_eq!(small.size_hint().exact(), Some(100));
    }

    #[tokio::test]
    async fn a_small_response_is_read_whole() {
        let taken = Arc::new(AtomicUsize::new(0));
        let src = Counted {
            left: 5000,
            taken: taken.clone(),
        }
        .boxed();
        let body = read_ahead(src, 10_000);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(taken.load(Ordering::SeqCst), 5000);
        let all = body.collect().await.expect("all").to_bytes();
        assert_eq!(all.len(), 5000);
    }
}
