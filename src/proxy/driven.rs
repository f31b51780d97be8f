//! Upstream connections polled by the request that uses them.
//!
//! hyper's client splits a connection into a sender and a connection future
//! that moves the bytes. A connection that may go back to the keepalive
//! cache needs a task of its own, since it outlives the request. One that
//! serves a single request (no `keepalive` in the group, or a request sent
//! with `Connection: close`), as nginx's are by default, is polled by the
//! request instead: beside the wait for the response head, then with the
//! response body, or until its `101` hands the socket back. That spares a
//! task, the wake-ups between two tasks, and hyper's boxed upgrade, per
//! request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::forward::UpstreamIo;
use crate::server::tls::UpstreamStream;

/// hyper's connection future of one upstream HTTP/1 connection.
pub type Conn = hyper::client::conn::http1::Connection<TokioIo<UpstreamIo>, ProxyBody>;

/// A connection future polled beside whatever waits on it.
pub struct Driver {
    /// Taken by an upgrade, which hands the socket to the tunnel.
    conn: Option<Conn>,
    /// `Some(ok)` once the connection has finished: its response was
    /// delivered (or failed, which its sender reports), or it upgraded.
    finished: Option<bool>,
}

impl Driver {
    pub fn new(conn: Conn) -> Self {
        Driver {
            conn: Some(conn),
            finished: None,
        }
    }

    /// Moves the connection on; nothing to do once it has finished.
    fn poll_drive(&mut self, cx: &mut Context<'_>) {
        if let (None, Some(conn)) = (self.finished, self.conn.as_mut()) {
            if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                self.finished = Some(r.is_ok());
            }
        }
    }

    /// The socket and the bytes read past the head, after a `101`
    /// (`None`: the connection failed instead).
    pub async fn upgraded(mut self: Box<Self>) -> Option<(UpstreamStream, Bytes)> {
        std::future::poll_fn(|cx| {
            self.poll_drive(cx);
            match self.finished {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
        .await;
        if self.finished != Some(true) {
            return None;
        }
        let parts = self.conn.take()?.into_parts();
        Some((parts.io.into_inner().0, detach(parts.read_buf)))
    }
}

impl Drop for Driver {
    /// A connection hyper saw to its end (the request written and the
    /// response read whole, or an error already reported) closes with RST,
    /// as `forward::reset_on_close` explains; one dropped mid-exchange
    /// closes as before.
    fn drop(&mut self) {
        if self.finished == Some(true) {
            if let Some(conn) = self.conn.take() {
                super::forward::reset_on_close(conn.into_parts().io.inner());
            }
        }
    }
}

/// Polls `fut` and, before it, the connection it waits on, if that has no
/// task of its own.
pub async fn with<F: Future>(driver: &mut Option<Box<Driver>>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Some(d) = driver.as_mut() {
            d.poll_drive(cx);
        }
        fut.as_mut().poll(cx)
    })
    .await
}

/// A response body that polls its connection before each read.
pub struct DrivenBody {
    body: Incoming,
    driver: Option<Box<Driver>>,
}

impl DrivenBody {
    pub fn new(body: Incoming, driver: Option<Box<Driver>>) -> Self {
        DrivenBody { body, driver }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(d) = this.driver.as_mut() {
            d.poll_drive(cx);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An upstream's response head, with the driver of its connection when the
/// request drives it.
pub struct Answer {
    pub response: http::Response<Incoming>,
    pub driver: Option<Box<Driver>>,
}

/// The upstream side of a tunnel after its `101`: a connection this request
/// drives, which hands its socket back once it has passed the `101`, or one
/// whose own task hands it over through hyper's upgrade.
pub enum UpstreamUpgrade {
    Driven(Box<Driver>),
    Pending(OnUpgrade),
}

impl UpstreamUpgrade {
    /// The upgrade of the connection that answered `response` with `101`.
    pub fn of(driver: Option<Box<Driver>>, response: &mut http::Response<Incoming>) -> Self {
        match driver {
            Some(d) => UpstreamUpgrade::Driven(d),
            None => UpstreamUpgrade::Pending(hyper::upgrade::on(response)),
        }
    }

    /// The socket and the bytes read past the head, detached from hyper's
    /// buffers (a tunnel may live for days).
    pub async fn get(self) -> Option<(UpstreamStream, Bytes)> {
        match self {
            UpstreamUpgrade::Driven(d) => d.upgraded().await,
            UpstreamUpgrade::Pending(up) => {
                let u = up.await.ok()?.downcast::<TokioIo<UpstreamIo>>().ok()?;
                Some((u.io.into_inner().0, detach(u.read_buf)))
            }
        }
    }
}

/// A copy of bytes read past a head, so that hyper's read buffer is freed.
pub fn detach(b: Bytes) -> Bytes {
    if b.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&b)
    }
}
