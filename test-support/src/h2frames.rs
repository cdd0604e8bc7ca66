//! Raw HTTP/2 frames for tests that must control exactly what a client
//! sends (floods, resets, window abuse), which a real HTTP/2 client refuses
//! to do. It writes frames and a tiny HPACK subset by hand: static-table
//! indexed fields and literals without indexing or Huffman; it reads frames
//! and the `:status` of a response block (digits-only Huffman). It is no
//! general HTTP/2 client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// Error codes (RFC 9113 section 7).
pub mod reason {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// Setting identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A SETTINGS payload's `(identifier, value)` pairs.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload.chunks_exact(6).map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]]))).collect()
    }

    /// The error code of a RST_STREAM, or of a GOAWAY (after its last stream id).
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A GOAWAY's debug data, as text.
    pub fn debug_data(&self) -> String {
        String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned()
    }

    /// A WINDOW_UPDATE's increment.
    pub fn increment(&self) -> Option<u32> {
        let bytes = self.payload.get(..4).filter(|_| self.kind == kind::WINDOW_UPDATE)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff)
    }

    /// The `:status` of a response HEADERS frame, when it is the block's
    /// first field (as h2 writes it).
    pub fn status(&self) -> Option<u16> {
        if self.kind != kind::HEADERS {
            return None;
        }
        let block = &self.payload[..];
        let first = *block.first()?;
        // Indexed field from the static table: 8..=14 are :status values.
        let indexed = [(8, 200), (9, 204), (10, 206), (11, 304), (12, 400), (13, 404), (14, 500)];
        if first & 0x80 != 0 {
            return indexed.iter().find(|(index, _)| *index == first & 0x7f).map(|(_, status)| *status);
        }
        // A literal whose name is static entry 8 (:status), with or without indexing.
        let literal = (first & 0xc0 == 0x40 && first & 0x3f == 8) || (first & 0xf0 <= 0x10 && first & 0x0f == 8);
        if !literal {
            return None;
        }
        let head = *block.get(1)?;
        let value = block.get(2..2 + usize::from(head & 0x7f))?;
        let text = if head & 0x80 != 0 { huffman_digits(value)? } else { String::from_utf8(value.to_vec()).ok()? };
        text.parse().ok()
    }
}

/// Decodes a Huffman string of ASCII digits (RFC 7541 appendix B: `0`-`2`
/// are 5-bit codes 0-2, `3`-`9` 6-bit codes 0x19-0x1f).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<bool> = bytes.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1)).collect();
    let (mut at, mut text) = (0, String::new());
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0u8, |v, &b| v << 1 | u8::from(b));
    while at < bits.len() {
        if bits[at..].iter().all(|&b| b) && bits.len() - at < 8 {
            break; // EOS padding
        }
        if bits.len() - at >= 5 && value(at, 5) <= 2 {
            text.push(char::from(b'0' + value(at, 5)));
            at += 5;
        } else if bits.len() - at >= 6 && (0x19..=0x1f).contains(&value(at, 6)) {
            text.push(char::from(b'3' + value(at, 6) - 0x19));
            at += 6;
        } else {
            return None;
        }
    }
    Some(text)
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    assert!(length < 1 << 24, "frame payload fits 24 bits");
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&length.to_be_bytes()[1..]);
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes())).collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

pub fn headers(stream: u32, block: &[u8], flags: u8) -> Vec<u8> {
    frame(kind::HEADERS, flags, stream, block)
}

pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    frame(kind::CONTINUATION, if end_headers { flag::END_HEADERS } else { 0 }, stream, block)
}

pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(kind::DATA, if end_stream { flag::END_STREAM } else { 0 }, stream, bytes)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `high`.
fn integer(value: usize, n: u32, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | u8::try_from(value).expect("below the prefix"));
        return;
    }
    out.push(high | u8::try_from(max).expect("prefix"));
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).expect("7 bits") | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).expect("7 bits"));
}

fn string(value: &[u8], out: &mut Vec<u8>) {
    integer(value.len(), 7, 0, out);
    out.extend_from_slice(value);
}

/// An HPACK block for a request: `:method` (GET or POST, indexed),
/// `:scheme http` (indexed), `:path` (indexed when `/`, else a literal with
/// the static name), `:authority` (literal), then `extra` fields as
/// literals with new names, all without indexing.
pub fn request_block(method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86];
    if path == "/" {
        block.push(0x84);
    } else {
        integer(4, 4, 0x00, &mut block); // literal without indexing, name :path
        string(path.as_bytes(), &mut block);
    }
    integer(1, 4, 0x00, &mut block); // :authority
    string(authority.as_bytes(), &mut block);
    for (name, value) in extra {
        block.push(0x00);
        string(name.as_bytes(), &mut block);
        string(value.as_bytes(), &mut block);
    }
    block
}

/// Reads frames from a connection, each with a deadline.
pub struct FrameReader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
}

impl FrameReader {
    pub fn new(read: OwnedReadHalf) -> Self {
        Self { read, buffer: Vec::new() }
    }

    /// The next frame; `None` once the server closed the connection (or
    /// reset it); panics when nothing comes within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Option<Frame> {
        tokio::time::timeout(deadline, self.read_frame()).await.unwrap_or_else(|_| panic!("no frame within {deadline:?}"))
    }

    /// Frames until one matches `until` (returned) or the connection ends
    /// (`None`); `seen` gets every frame before. Panics past `deadline`.
    pub async fn until(&mut self, deadline: Duration, mut until: impl FnMut(&Frame) -> bool, seen: &mut Vec<Frame>) -> Option<Frame> {
        let wait = async {
            while let Some(frame) = self.read_frame().await {
                if until(&frame) {
                    return Some(frame);
                }
                seen.push(frame);
            }
            None
        };
        tokio::time::timeout(deadline, wait).await.unwrap_or_else(|_| panic!("no awaited frame within {deadline:?}; before: {seen:?}"))
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= 9 {
                let length = usize::from(self.buffer[0]) << 16 | usize::from(self.buffer[1]) << 8 | usize::from(self.buffer[2]);
                if self.buffer.len() >= 9 + length {
                    let bytes: Vec<u8> = self.buffer.drain(..9 + length).collect();
                    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
                    return Some(Frame { kind: bytes[3], flags: bytes[4], stream, payload: bytes[9..].to_vec() });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Connects to `addr`, sends the preface and `client_settings`, and returns
/// the write half, a reader and the server's first SETTINGS frame (not yet
/// acknowledged: send [`settings_ack`]).
pub async fn connect(addr: &str, client_settings: &[(u16, u32)]) -> (tokio::net::tcp::OwnedWriteHalf, FrameReader, Frame) {
    let stream = TcpStream::connect(addr).await.expect("connect for HTTP/2");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(client_settings));
    write.write_all(&hello).await.expect("send the preface");
    let mut reader = FrameReader::new(read);
    let first = reader.next(Duration::from_secs(10)).await.expect("the server's SETTINGS");
    assert_eq!((first.kind, first.flags & flag::ACK), (kind::SETTINGS, 0), "the server speaks first with SETTINGS: {first:?}");
    (write, reader, first)
}
