//! Storing a response as it streams to the client: its frames go on
//! unchanged while a copy collects, up to the policy's `max_entry_bytes`
//! and within the store's copy budget ([`ResponseCache::reserve_copy`]).
//! A body that grows past either is let go (the copy is dropped, the
//! client gets the rest as it comes); a body cut short (client gone,
//! upstream error) is not stored. The entry is stored once the body has
//! ended (as its last frame goes to the client, not after it is written),
//! and only then are the requests waiting for it released.

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
    /// The store's generation when the fetch began.
    began: u64,
    /// Released after the entry is stored (or found unfit).
    _guard: Option<FlightGuard>,
    copied: BytesMut,
    complete: bool,
}

impl Pending {
    /// `began`: the store's [`ResponseCache::generation`] when the fetch began.
    pub fn new(
        cache: Arc<ResponseCache>,
        key: Key,
        (resource, variant): (Resource, Variant),
        limit: usize,
        began: u64,
        guard: Option<FlightGuard>,
    ) -> Self {
        Self { cache, key, entry: Some((resource, variant)), limit, began, _guard: guard, copied: BytesMut::new(), complete: false }
    }

    /// Copies `data`; `false` when it would pass the entry cap or the copy budget.
    fn copy(&mut self, data: &Bytes) -> bool {
        let fits = self.copied.len() + data.len() <= self.limit && self.cache.reserve_copy(data.len() as u64);
        if fits {
            self.copied.extend_from_slice(data);
        }
        fits
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

    /// The body ended whole: the entry is stored now (as `pending` drops),
    /// before the last bytes reach the client, so that a request the client
    /// sends at once on another connection finds it; the requests waiting
    /// for it are released with it.
    fn ended(&mut self) {
        if let Some(mut pending) = self.pending.take() {
            pending.complete = true;
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(pending), Some(data)) = (&mut self.pending, frame.data_ref())
                    && !pending.copy(data)
                {
                    // Too large to keep: let it stream, store nothing, release the waiters now.
                    self.pending = None;
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
        let copied = std::mem::take(&mut self.copied).freeze();
        self.cache.release_copy(copied.len() as u64);
        if let Some((resource, variant)) = self.entry.take().filter(|_| self.complete) {
            self.cache.store(self.key, resource, Variant { body: copied, ..variant }, self.began);
        }
        // The guard drops after the store, so waiters find the entry.
    }
}
