//! Body types and wrappers: per-read timeouts, size limits, and a hook that
//! runs when a response body is finished (for the access log).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream timed out (110: Connection timed out) while reading upstream")]
    UpstreamReadTimeout,
    #[error("client timed out (110: Connection timed out) while reading client request body")]
    ClientReadTimeout,
    #[error("client intended to send too large body")]
    TooLarge,
}

pin_project_lite::pin_project! {
    /// Fails the body when no frame arrives within `timeout` of asking.
    pub struct Timed<B> {
        #[pin]
        inner: B,
        // Made at the first wait only: most bodies never wait.
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        timeout: Duration,
        armed: bool,
        error: fn() -> BodyError,
    }
}

impl<B> Timed<B> {
    pub fn new(inner: B, timeout: Duration, error: fn() -> BodyError) -> Self {
        Timed {
            inner,
            sleep: None,
            timeout,
            armed: false,
            error,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if !*this.armed {
            *this.armed = true;
            let deadline = tokio::time::Instant::now() + *this.timeout;
            match this.sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(deadline),
                None => this.sleep.set(Some(tokio::time::sleep_until(deadline))),
            }
        }
        match this
            .sleep
            .as_pin_mut()
            .map(|s| std::future::Future::poll(s, cx))
        {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new((this.error)())))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Counts bytes of a streamed request body against `client_max_body_size`.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        tripped: Arc<AtomicBool>,
    }
}

impl<B> Limited<B> {
    /// `limit` 0 means unlimited, as in nginx.
    pub fn new(inner: B, limit: u64, tripped: Arc<AtomicBool>) -> Self {
        Limited {
            inner,
            remaining: if limit == 0 { u64::MAX } else { limit },
            tripped,
        }
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
                    }
                    *this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once when a response body ends, with the body bytes sent and
/// whether it completed; and before that, when the body fails.
pub trait OnDone: Send + Sync + 'static {
    fn done(self: Box<Self>, body_bytes: u64, complete: bool);

    fn failed(&self, _e: &(dyn std::error::Error + 'static)) {}
}

pin_project_lite::pin_project! {
    /// Runs an [`OnDone`] hook when the body ends or is dropped.
    ///
    /// A failure is held back for one poll: hyper drops what it has not
    /// written yet when a body fails, so the head and the bytes before the
    /// failure go out first, and the client sees a cut response, as from
    /// nginx, rather than a connection closed with nothing.
    pub struct Finished<B> {
        #[pin]
        inner: B,
        sent: u64,
        // The inner body said it ended: hyper may drop a body whose
        // `is_end_stream()` is true without polling it to `None`.
        ended: bool,
        hook: Option<Box<dyn OnDone>>,
        failure: Option<BoxError>,
    }
    impl<B> PinnedDrop for Finished<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(hook) = this.hook.take() {
                hook.done(*this.sent, *this.ended);
            }
        }
    }
}

impl<B> Finished<B> {
    pub fn new(inner: B, hook: Box<dyn OnDone>) -> Self {
        Finished {
            inner,
            sent: 0,
            ended: false,
            hook: Some(hook),
            failure: None,
        }
    }
}

impl<B> Body for Finished<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(e) = this.failure.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let r = this.inner.as_mut().poll_frame(cx);
        match r {
            Poll::Ready(Some(Err(e))) => {
                if let Some(hook) = this.hook.as_ref() {
                    hook.failed(&*e);
                }
                // With nothing from the body now, hyper writes what it holds.
                *this.failure = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.sent += d.len() as u64;
                }
                *this.ended = this.inner.is_end_stream();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(hook) = this.hook.take() {
                    hook.done(*this.sent, true);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Raises a flag once the body has been sent to its end.
    pub struct SentFlag<B> {
        #[pin]
        inner: B,
        flag: Arc<AtomicBool>,
    }
}

impl<B> SentFlag<B> {
    pub fn new(inner: B, flag: Arc<AtomicBool>) -> Self {
        SentFlag { inner, flag }
    }
}

impl<B> Body for SentFlag<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.flag.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.flag.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
