//! A request body that must keep arriving: after a grace period, at least a least rate on
//! average, or it fails. A client that declares a body and trickles it (one byte every few
//! seconds) would otherwise hold its connection, and a handler, for as long as it likes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The body came too slowly: what the handler's extractor reports, and the log.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body came too slowly: {received} bytes in {elapsed:?} (at least {rate} bytes a second after the first {grace:?})"
)]
pub(crate) struct TooSlow {
    received: u64,
    elapsed: Duration,
    rate: u64,
    grace: Duration,
}

/// `inner`, failing once fewer than `(elapsed - grace) * rate` bytes have come.
pub(crate) struct Paced<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    started: Instant,
    grace: Duration,
    rate: u64,
    received: u64,
}

impl<B> Paced<B> {
    #[allow(clippy::disallowed_methods)] // An I/O deadline on a socket, not domain time.
    pub(crate) fn new(inner: B, grace: Duration, rate: u64) -> Self {
        let started = Instant::now();
        let rate = rate.max(1);
        let deadline = Box::pin(tokio::time::sleep_until(started + grace));
        Self { inner, deadline, started, grace, rate, received: 0 }
    }
}

/// When `received` bytes stop being enough: `grace` plus the time they buy at `rate`.
fn due(started: Instant, grace: Duration, rate: u64, received: u64) -> Instant {
    let bought = Duration::from_secs_f64(received as f64 / rate as f64);
    started + grace + bought.min(Duration::from_secs(24 * 3600))
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let next = due(this.started, this.grace, this.rate, this.received);
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    #[allow(clippy::disallowed_methods)] // Measuring real I/O.
                    let elapsed = this.started.elapsed();
                    let slow = TooSlow {
                        received: this.received,
                        elapsed,
                        rate: this.rate,
                        grace: this.grace,
                    };
                    tracing::debug!(error = %slow, "a request body was cut off");
                    Poll::Ready(Some(Err(Box::new(slow))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
