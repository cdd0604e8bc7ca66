//! Storing a response as it streams to the client: its frames go on
//! unchanged while a copy collects, up to the policy's `max_entry_bytes`.
//! A body that grows past the cap is let go (the copy is dropped, the
//! client gets the rest as it comes); a body cut short (client gone,
//! upstream error) is not stored. The entry is stored once the body has
//! ended, and only then are the requests waiting for it released.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame};

use super::ResponseCache;
use super::flight::FlightGuard;
use super::key::Key;
use super::store::{Resource, Variant};
use crate::body::{BoxError, ResponseBody};

/// A response body being stored as it passes.
#[derive(Debug)]
pub struct Recording {
    body: ResponseBody,
    /// `None` once it cannot be stored.
    pending: Option<Pending>,
}

/// What the entry needs besides its body.
#[derive(Debug)]
pub struct Pending {
    cache: Arc<ResponseCache>,
    key: Key,
    /// The resource and variant (its body empty until the end).
    entry: Option<(Resource, Variant)>,
    limit: usize,
    /// Released after the entry is stored (or found unfit).
    _guard: Option<FlightGuard>,
    copy: BytesMut,
    complete: bool,
}

impl Pending {
    pub fn new(
        cache: Arc<ResponseCache>,
        key: Key,
        resource: Resource,
        variant: Variant,
        limit: usize,
        guard: Option<FlightGuard>,
    ) -> Self {
        Self { cache, key, entry: Some((resource, variant)), limit, _guard: guard, copy: BytesMut::new(), complete: false }
    }
}

impl Recording {
    /// `body`, stored under `pending` once it has ended whole.
    pub fn new(body: ResponseBody, pending: Pending) -> Self {
        let mut recording = Self { body, pending: Some(pending) };
        if recording.body.is_end_stream() {
            recording.ended();
        }
        recording
    }

    fn ended(&mut self) {
        if let Some(pending) = &mut self.pending {
            pending.complete = true;
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(pending), Some(data)) = (&mut self.pending, frame.data_ref()) {
                    if pending.copy.len() + data.len() > pending.limit {
                        // Too large to keep: let it stream, store nothing, release the waiters now.
                        self.pending = None;
                    } else {
                        pending.copy.extend_from_slice(data);
                    }
                }
                if self.body.is_end_stream() {
                    self.ended();
                }
            }
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Err(_))) => self.pending = None,
            Poll::Pending => {}
        }
        frame
    }

    pub fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    pub fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((resource, variant)) = self.entry.take().filter(|_| self.complete) {
            let body = std::mem::take(&mut self.copy).freeze();
            self.cache.store(self.key, resource, Variant { body, ..variant });
        }
        // The guard drops after the store, so waiters find the entry.
    }
}
