//! Streams of messages over HTTP bodies, both ways.
//!
//! Upstream to client: [`MessageReader`] reads a gRPC response body (data
//! frames, then trailers) as events: each whole message, then the status.
//! [`JsonStream`] turns a server stream into JSON chunks, one per message
//! as it arrives, in the format the client's `Accept` asks for
//! ([`StreamFormat::from_accept`]):
//! - `text/event-stream`: server-sent events, `data: <json>\n\n` per
//!   message, an error as `event: error`;
//! - `application/x-ndjson` (or `application/jsonl`): one JSON document
//!   per line;
//! - `application/json`, only when asked for explicitly and neither of the
//!   above is asked for first: one JSON array, `[` ... `]`, its elements
//!   written as they arrive;
//! - anything else (`*/*`, none): NDJSON, the default.
//!
//! The first acceptable type listed wins (`q=0` excludes one). A stream
//! that fails after messages were sent ends with an error object,
//! `{"error": {"code", "message", "details"}}`: the last line, the last
//! event (`event: error`), or the array's last element before `]`; the
//! body itself then ends cleanly. An error before the first message is a
//! real HTTP status, decided before the body starts ([`super::Transcoder::response`]).
//!
//! Client to upstream: [`NdjsonFrames`] turns an NDJSON request body (one
//! JSON message per line, blank lines skipped) into gRPC frames, an error
//! naming the line.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::{Body, Frame};

use crate::body::BoxError;

use super::error::TranscodeError;
use super::frame::{self, FrameDecoder};
use super::json::{Assignments, RequestMapping, ResponseMapping};
use super::status::{Code, GrpcStatus};

/// What reading a gRPC response body yields next.
#[derive(Debug)]
pub enum Event {
    Message(Bytes),
    /// The body ended: with the trailers' status, or `missing`.
    End(GrpcStatus),
    /// The body broke or held garbage.
    Failed(TranscodeError),
}

/// Reads whole messages and then the status out of a gRPC response body.
#[derive(Debug)]
pub struct MessageReader<B> {
    /// `None` once the body ended.
    upstream: Option<B>,
    decoder: FrameDecoder,
    /// The status of a trailers-only response, from its headers.
    headers_status: Option<GrpcStatus>,
}

impl<B> MessageReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// `headers_status`: the status the response's headers carry (a
    /// trailers-only response), used when the body ends without trailers.
    pub fn new(upstream: B, max_message: usize, headers_status: Option<GrpcStatus>) -> Self {
        Self { upstream: Some(upstream), decoder: FrameDecoder::new(max_message), headers_status }
    }

    /// The next event; after `End` or `Failed`, `End` with a missing status.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            match self.decoder.next_message() {
                Ok(Some(message)) => return Poll::Ready(Event::Message(message)),
                Ok(None) => {}
                Err(error) => {
                    self.upstream = None;
                    return Poll::Ready(Event::Failed(TranscodeError::from_response_frame(error)));
                }
            }
            let Some(upstream) = self.upstream.as_mut() else { return Poll::Ready(Event::End(GrpcStatus::missing())) };
            let trailers = match ready!(Pin::new(upstream).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.decoder.push(&data);
                        continue;
                    }
                    Err(frame) => frame.into_trailers().ok(),
                },
                Some(Err(error)) => {
                    self.upstream = None;
                    return Poll::Ready(Event::Failed(TranscodeError::UpstreamBody(error.into())));
                }
                None => None,
            };
            self.upstream = None;
            if let Err(error) = self.decoder.finish() {
                return Poll::Ready(Event::Failed(TranscodeError::from_response_frame(error)));
            }
            let status = trailers
                .as_ref()
                .and_then(GrpcStatus::from_headers)
                .or_else(|| self.headers_status.take())
                .unwrap_or_else(GrpcStatus::missing);
            return Poll::Ready(Event::End(status));
        }
    }

    pub async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }
}

/// How a server stream is written to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Ndjson,
    Sse,
    JsonArray,
}

impl StreamFormat {
    /// By the module's rule: the first acceptable recognised type of `Accept`, else NDJSON.
    pub fn from_accept(headers: &HeaderMap) -> Self {
        let ranges =
            headers.get_all(http::header::ACCEPT).iter().filter_map(|value| value.to_str().ok()).flat_map(|value| value.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|parameter| {
                let parameter = parameter.trim().replace(' ', "");
                parameter.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if refused {
                continue;
            }
            match media_type.as_str() {
                "text/event-stream" => return Self::Sse,
                "application/x-ndjson" | "application/jsonl" => return Self::Ndjson,
                "application/json" => return Self::JsonArray,
                _ => {}
            }
        }
        Self::Ndjson
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Sse => "text/event-stream",
            Self::JsonArray => "application/json",
        }
    }

    /// A message's chunk; `first`: no element was written yet.
    fn message(self, json: &[u8], first: bool) -> Bytes {
        let (before, after): (&[u8], &[u8]) = match self {
            Self::Ndjson => (b"", b"\n"),
            Self::Sse => (b"data: ", b"\n\n"),
            Self::JsonArray if first => (b"[", b""),
            Self::JsonArray => (b",", b""),
        };
        Bytes::from([before, json, after].concat())
    }

    /// The last chunk of a stream that ended with `error`.
    fn error(self, error: &serde_json::Value, first: bool) -> Bytes {
        let object = serde_json::json!({ "error": error }).to_string();
        match self {
            Self::Sse => Bytes::from(format!("event: error\ndata: {object}\n\n")),
            Self::Ndjson => self.message(object.as_bytes(), first),
            Self::JsonArray => Bytes::from([&self.message(object.as_bytes(), first)[..], b"]"].concat()),
        }
    }

    /// The last chunk of a stream that ended well.
    fn end(self, first: bool) -> Option<Bytes> {
        match self {
            Self::JsonArray => Some(Bytes::from_static(if first { b"[]" } else { b"]" })),
            Self::Ndjson | Self::Sse => None,
        }
    }
}

/// What a stream body needs to render messages and statuses.
#[derive(Debug)]
pub struct StreamRendering {
    pub response: ResponseMapping,
    /// Resolves the types of error details.
    pub pool: prost_reflect::DescriptorPool,
}

/// A server stream as JSON chunks, one per message, as they arrive.
#[derive(Debug)]
pub struct JsonStream<B> {
    reader: MessageReader<B>,
    rendering: Arc<StreamRendering>,
    format: StreamFormat,
    /// Rendered, not yet sent: the first message, read before the response started.
    queued: VecDeque<Bytes>,
    first: bool,
    finished: bool,
}

impl<B> JsonStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The rest of `reader`'s stream; messages already read are given with [`Self::push_message`].
    pub fn new(reader: MessageReader<B>, rendering: Arc<StreamRendering>, format: StreamFormat) -> Self {
        Self { reader, rendering, format, queued: VecDeque::new(), first: true, finished: false }
    }

    /// A stream that already ended with `status` (OK, and no message).
    pub fn ended(reader: MessageReader<B>, rendering: Arc<StreamRendering>, format: StreamFormat, status: &GrpcStatus) -> Self {
        let mut stream = Self::new(reader, rendering, format);
        stream.finish(status);
        stream
    }

    /// Renders `message` as the next chunk.
    pub fn push_message(&mut self, message: Bytes) -> Result<(), TranscodeError> {
        let json = self.rendering.response.render(message)?;
        let chunk = self.format.message(&json, self.first);
        self.first = false;
        self.queued.push_back(chunk);
        Ok(())
    }

    fn finish(&mut self, status: &GrpcStatus) {
        self.finished = true;
        let chunk = if status.is_ok() {
            self.format.end(self.first)
        } else {
            let error = status.to_json(&self.rendering.pool, self.rendering.response.serialize_options());
            Some(self.format.error(&error, self.first))
        };
        self.queued.extend(chunk);
    }
}

/// The status a stream reports for the gateway's own failure.
fn status_of(error: &TranscodeError) -> GrpcStatus {
    let code = match error {
        TranscodeError::ResponseTooLarge { .. } => Code::ResourceExhausted,
        TranscodeError::UpstreamBody(_) => Code::Unavailable,
        _ => Code::Internal,
    };
    GrpcStatus::new(code, error.to_string())
}

impl<B> Body for JsonStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match ready!(this.reader.poll_event(cx)) {
                Event::Message(message) => {
                    if let Err(error) = this.push_message(message) {
                        this.finish(&status_of(&error));
                    }
                }
                Event::End(status) => this.finish(&status),
                Event::Failed(error) => this.finish(&status_of(&error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.queued.is_empty()
    }
}

/// An NDJSON request body as gRPC frames, one message per non-blank line.
#[derive(Debug)]
pub struct NdjsonFrames<B> {
    /// `None` once the client's body ended.
    client: Option<B>,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no newline (not searched again
    /// as the line grows).
    scanned: usize,
    /// Lines taken so far.
    line: usize,
    request: Arc<RequestMapping>,
    assignments: Arc<Assignments>,
    max_message: usize,
}

impl<B> NdjsonFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Each line is parsed as `request` says and given `assignments`; a
    /// line, or its message, over `max_message` bytes is refused.
    pub fn new(client: B, request: Arc<RequestMapping>, assignments: Arc<Assignments>, max_message: usize) -> Self {
        Self { client: Some(client), buffer: BytesMut::new(), scanned: 0, line: 0, request, assignments, max_message }
    }

    /// The frame of the next non-blank complete line (the last one may lack its newline).
    fn next_line(&mut self) -> Option<Result<Bytes, TranscodeError>> {
        loop {
            let end = match memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
                Some(newline) => self.scanned + newline + 1,
                None if self.client.is_none() && !self.buffer.is_empty() => self.buffer.len(),
                None => {
                    self.scanned = self.buffer.len();
                    return None;
                }
            };
            self.scanned = 0;
            let line = self.buffer.split_to(end);
            self.line += 1;
            if line.len() > self.max_message + 2 {
                return Some(Err(TranscodeError::RequestTooLarge { limit: self.max_message }));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(self.frame(&line));
        }
    }

    fn frame(&self, line: &[u8]) -> Result<Bytes, TranscodeError> {
        let message = self.request.message(line, Some(self.line), &self.assignments)?;
        frame::encode_message(&message, self.max_message).map_err(|_| TranscodeError::RequestTooLarge { limit: self.max_message })
    }
}

impl<B> Body for NdjsonFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(framed) = this.next_line() {
                return Poll::Ready(Some(framed.map(Frame::data).map_err(BoxError::from)));
            }
            // No whole line buffered: one longer than the limit is refused before it ends.
            if this.buffer.len() > this.max_message + 2 {
                this.buffer.clear();
                this.scanned = 0;
                this.client = None;
                return Poll::Ready(Some(Err(Box::new(TranscodeError::RequestTooLarge { limit: this.max_message }))));
            }
            let Some(client) = this.client.as_mut() else { return Poll::Ready(None) };
            match ready!(Pin::new(client).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => {
                    this.client = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => this.client = None,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.client.is_none() && self.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::headers;
    use super::*;

    #[test]
    fn the_format_follows_the_first_acceptable_type_named() {
        let format = |accept: &str| StreamFormat::from_accept(&headers(&[("accept", accept)]));
        assert_eq!(StreamFormat::from_accept(&HeaderMap::new()), StreamFormat::Ndjson);
        assert_eq!(format("*/*"), StreamFormat::Ndjson);
        assert_eq!(format("text/event-stream"), StreamFormat::Sse);
        assert_eq!(format("application/json"), StreamFormat::JsonArray);
        assert_eq!(format("application/x-ndjson, application/json"), StreamFormat::Ndjson);
        assert_eq!(format("Application/JSON; charset=utf-8"), StreamFormat::JsonArray);
        assert_eq!(format("text/event-stream;q=0, application/json"), StreamFormat::JsonArray);
        assert_eq!(format("text/html, application/jsonl"), StreamFormat::Ndjson);
        assert_eq!(format("text/html, */*;q=0.8"), StreamFormat::Ndjson);
    }
}
