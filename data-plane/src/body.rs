//! The bodies that cross the proxy, as concrete types rather than boxed
//! trait objects (two allocations and dynamic calls less per request):
//! requests come from hyper's server, or without a body from Portico's own
//! ([`RequestBody`]), and go upstream as the client's body under a size limit (or kept
//! whole for retries), responses are the upstream's body (perhaps being
//! stored by the response cache as it passes) or one the gateway wrote
//! itself.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::grpc::JsonBody;
use crate::stage::cache::record::Recording;
use crate::upstream::{self, Lease};

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body: none (a request that Portico's own HTTP/1
/// server read, [`crate::http1::server`], has none), or the body hyper's
/// server reads.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Hyper(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}

/// A request body on its way upstream: the client's, streamed under a size
/// limit, or one kept whole so that a retry can send it again.
#[derive(Debug)]
pub enum UpstreamBody {
    /// `waiting` tells whether the upload is held up by the client (absent
    /// when the body is already complete).
    Streamed {
        body: Limited<RequestBody>,
        waiting: Option<Arc<ClientWait>>,
    },
    Kept(Full<Bytes>),
    /// The client's body translated as it streams (an NDJSON request to
    /// gRPC frames), with the `waiting` of the body it reads.
    Translated {
        body: BoxBody<Bytes, BoxError>,
        waiting: Option<Arc<ClientWait>>,
    },
}

/// No body.
impl Default for UpstreamBody {
    fn default() -> Self {
        Self::Kept(Full::default())
    }
}

impl UpstreamBody {
    /// The client's body, streamed, at most `limit` bytes.
    pub fn streamed(body: RequestBody, limit: usize) -> Self {
        let waiting = (!body.is_end_stream()).then(Arc::default);
        Self::Streamed { body: Limited::new(body, limit), waiting }
    }

    /// `body`, a translation of the client's (NDJSON lines into gRPC
    /// frames) whose source says whether it is `waiting`: every error of it
    /// is the client's, its body having broken or failed to translate.
    pub fn translated<B>(waiting: Option<Arc<ClientWait>>, body: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        let body = body.map_err(|error| match error.is::<ClientBodyError>() {
            true => error,
            false => Box::new(ClientBodyError(error)) as BoxError,
        });
        // Always noted: a translation can fail even when its source cannot.
        Self::Translated { body: BoxBody::new(body), waiting: Some(waiting.unwrap_or_default()) }
    }

    /// What tells whether this upload waits for the client, if it can.
    pub fn client_wait(&self) -> Option<Arc<ClientWait>> {
        match self {
            Self::Streamed { waiting, .. } | Self::Translated { waiting, .. } => waiting.clone(),
            Self::Kept(_) => None,
        }
    }
}

/// Reading the client's request body failed (it was malformed, too large
/// or cut short): the client's fault, whatever the upstream call reports.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct ClientBodyError(#[source] BoxError);

/// How an upload's client is doing: whether the last read of its body
/// found nothing yet (a request that times out then was held up by its
/// client, `408`), and whether its body failed (cut short, too large, or
/// not translatable): a request that then fails was the client's doing,
/// not the upstream's, and never counts against a target. Over HTTP/2 the
/// body's error does not reach the response's, so it is noted here.
#[derive(Debug, Default)]
pub struct ClientWait {
    waiting: AtomicBool,
    failed: AtomicBool,
}

impl ClientWait {
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Notes in `wait` that the client's body failed, when `frame` is an error.
fn note_failure<T, E>(wait: &ClientWait, frame: &Poll<Option<Result<T, E>>>) {
    if matches!(frame, Poll::Ready(Some(Err(_)))) {
        wait.failed.store(true, Ordering::Relaxed);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Streamed { body, waiting } => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Some(waiting) = waiting {
                    waiting.waiting.store(frame.is_pending(), Ordering::Relaxed);
                    note_failure(waiting, &frame);
                }
                frame.map_err(|error| Box::new(ClientBodyError(error)) as BoxError)
            }
            Self::Kept(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            Self::Translated { body, waiting } => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Some(waiting) = waiting {
                    note_failure(waiting, &frame);
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed { body, .. } => body.is_end_stream(),
            Self::Kept(body) => body.is_end_stream(),
            Self::Translated { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed { body, .. } => body.size_hint(),
            Self::Kept(body) => body.size_hint(),
            Self::Translated { body, .. } => body.size_hint(),
        }
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from the upstream, cut when it stays silent for `idle`;
    /// an HTTP/1.1 connection goes back to its pool once the body was read
    /// to its clean end, an HTTP/2 stream's `lease` ends when this is dropped.
    Upstream { body: upstream::Incoming, idle: Duration, timer: Option<Pin<Box<Sleep>>>, waiting: bool, lease: Lease },
    /// Written by the gateway (errors, shaped bodies).
    Local(Full<Bytes>),
    /// Frames already read (by a transform that then left the body alone),
    /// followed by the rest of the body they came from.
    Replay { frames: VecDeque<Frame<Bytes>>, rest: Option<Box<ResponseBody>> },
    /// A body being stored in the response cache as it passes.
    Recorded(Box<Recording>),
    /// A gRPC call's answer, watched for its `grpc-status` (and re-framed for gRPC-Web).
    Grpc(Box<crate::proxy::grpc::GrpcBody>),
    /// A gRPC answer translated to JSON (one document or a stream of them).
    Transcoded(Box<JsonBody<ResponseBody>>),
}

impl ResponseBody {
    /// `frames`, then what is left of `rest`.
    pub fn replay(frames: VecDeque<Frame<Bytes>>, rest: Option<ResponseBody>) -> Self {
        Self::Replay { frames, rest: rest.map(Box::new) }
    }

    /// The upstream's body, cut after `idle` without a frame, on the connection `lease`.
    pub fn upstream(body: upstream::Incoming, idle: Duration, lease: Lease) -> Self {
        Self::Upstream { body, idle, timer: None, waiting: false, lease }
    }
}

/// The upstream sent nothing for the service's `timeouts.idle_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct UpstreamIdle(Duration);

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream { body, idle, timer, waiting, .. } => {
                if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
                    *waiting = false;
                    return Poll::Ready(frame);
                }
                // The silence counts from when the body started waiting (a
                // slow client does not make the upstream idle); the timer
                // is made only then, so most small responses never need one.
                let deadline = Instant::now() + *idle;
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*waiting {
                    timer.as_mut().reset(deadline);
                    *waiting = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(UpstreamIdle(*idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Self::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            Self::Replay { frames, rest } => match frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => match rest {
                    Some(rest) => Pin::new(&mut **rest).poll_frame(cx),
                    None => Poll::Ready(None),
                },
            },
            Self::Recorded(recording) => recording.poll_frame(cx),
            Self::Grpc(call) => Pin::new(&mut **call).poll_frame(cx),
            Self::Transcoded(json) => Pin::new(&mut **json).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Local(body) => body.is_end_stream(),
            Self::Replay { frames, rest } => frames.is_empty() && rest.as_ref().is_none_or(|rest| rest.is_end_stream()),
            Self::Recorded(recording) => recording.is_end_stream(),
            Self::Grpc(call) => call.is_end_stream(),
            Self::Transcoded(json) => json.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Local(body) => body.size_hint(),
            Self::Replay { frames, rest } => {
                let buffered: u64 = frames.iter().filter_map(Frame::data_ref).map(|data| data.len() as u64).sum();
                let rest = rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
            Self::Recorded(recording) => recording.size_hint(),
            Self::Grpc(call) => call.size_hint(),
            Self::Transcoded(json) => json.size_hint(),
        }
    }
}
