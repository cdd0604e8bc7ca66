//! gRPC length-prefixed messages (grpc `PROTOCOL-HTTP2.md`): a flag byte,
//! a four-byte big-endian length, the message. [`encode_message`] frames
//! one message under a size limit; [`FrameDecoder`] takes body chunks as
//! they arrive and yields whole messages, however the chunks split them. Compressed messages are
//! refused: the gateway asks for `grpc-accept-encoding: identity`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost_reflect::prost::Message;

/// The flag byte and the length.
pub const HEADER_LEN: usize = 5;

/// Why a body is not a sequence of gRPC messages the gateway accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("a compressed message, though identity encoding was asked for")]
    Compressed,
    #[error("invalid message flag {0:#04x}")]
    InvalidFlag(u8),
    #[error("the body ended inside a message ({0} bytes left over)")]
    Truncated(usize),
}

/// `message` (already encoded) with its five-byte prefix.
#[cfg(test)]
pub(crate) fn encode(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(HEADER_LEN + message.len());
    put_header(&mut framed, message.len());
    framed.put_slice(message);
    framed.freeze()
}

/// `message` encoded and framed, unless it is over `limit` bytes.
pub fn encode_message(message: &impl Message, limit: usize) -> Result<Bytes, FrameError> {
    let len = message.encoded_len();
    if len > limit {
        return Err(FrameError::TooLarge { size: len, limit });
    }
    let mut framed = BytesMut::with_capacity(HEADER_LEN + len);
    put_header(&mut framed, len);
    message.encode(&mut framed).expect("a BytesMut grows to fit any message");
    Ok(framed.freeze())
}

/// Writes the prefix of an uncompressed message of `len` bytes.
fn put_header(buffer: &mut BytesMut, len: usize) {
    buffer.put_u8(0);
    // A message over 4 GiB cannot be framed; limits far below refuse it first.
    buffer.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Cuts messages out of a body given chunk by chunk.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max_message: usize,
}

impl FrameDecoder {
    /// Messages over `max_message` bytes are refused as soon as their prefix is read.
    pub fn new(max_message: usize) -> Self {
        Self { buffer: BytesMut::new(), max_message }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole message, `None` until one is complete.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < HEADER_LEN {
            return Ok(None);
        }
        match self.buffer[0] {
            0 => {}
            1 => return Err(FrameError::Compressed),
            flag => return Err(FrameError::InvalidFlag(flag)),
        }
        let size = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
        if size > self.max_message {
            return Err(FrameError::TooLarge { size, limit: self.max_message });
        }
        if self.buffer.len() < HEADER_LEN + size {
            self.buffer.reserve(HEADER_LEN + size - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(HEADER_LEN);
        Ok(Some(self.buffer.split_to(size).freeze()))
    }

    /// At the body's end: whether a message was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() { Ok(()) } else { Err(FrameError::Truncated(self.buffer.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut FrameDecoder) -> Vec<Bytes> {
        let mut messages = Vec::new();
        while let Some(message) = decoder.next_message().unwrap() {
            messages.push(message);
        }
        messages
    }

    #[test]
    fn encodes_the_prefix() {
        assert_eq!(&encode(b"abc")[..], b"\x00\x00\x00\x00\x03abc");
        assert_eq!(&encode(b"")[..], b"\x00\x00\x00\x00\x00");
    }

    #[test]
    fn encodes_messages_under_a_limit() {
        let message = prost_reflect::prost_types::Duration { seconds: 1, nanos: 0 };
        assert_eq!(&encode_message(&message, 2).unwrap()[..], b"\x00\x00\x00\x00\x02\x08\x01");
        assert_eq!(encode_message(&message, 1), Err(FrameError::TooLarge { size: 2, limit: 1 }));
    }

    #[test]
    fn decodes_several_messages_of_one_chunk() {
        let mut decoder = FrameDecoder::new(16);
        let mut chunk = encode(b"one").to_vec();
        chunk.extend_from_slice(&encode(b""));
        chunk.extend_from_slice(&encode(b"three"));
        decoder.push(&chunk);
        assert_eq!(drain(&mut decoder), [&b"one"[..], b"", b"three"]);
        decoder.finish().unwrap();
    }

    #[test]
    fn decodes_a_message_split_at_every_byte() {
        let framed = [encode(b"hello"), encode(b"world!")].concat();
        let mut decoder = FrameDecoder::new(16);
        let mut messages = Vec::new();
        for byte in &framed {
            decoder.push(std::slice::from_ref(byte));
            messages.extend(drain(&mut decoder));
        }
        assert_eq!(messages, [&b"hello"[..], b"world!"]);
        decoder.finish().unwrap();
    }

    #[test]
    fn refuses_messages_over_the_limit_from_their_prefix() {
        let mut decoder = FrameDecoder::new(4);
        decoder.push(&encode(b"12345")[..HEADER_LEN]);
        assert_eq!(decoder.next_message(), Err(FrameError::TooLarge { size: 5, limit: 4 }));
        let mut at_limit = FrameDecoder::new(4);
        at_limit.push(&encode(b"1234"));
        assert_eq!(drain(&mut at_limit), [&b"1234"[..]]);
    }

    #[test]
    fn refuses_compressed_and_unknown_flags() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(b"\x01\x00\x00\x00\x01x");
        assert_eq!(decoder.next_message(), Err(FrameError::Compressed));
        let mut decoder = FrameDecoder::new(16);
        decoder.push(b"HTTP/1.1 200 OK");
        assert_eq!(decoder.next_message(), Err(FrameError::InvalidFlag(b'H')));
    }

    #[test]
    fn an_unfinished_message_is_truncated_at_the_end() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&encode(b"hello")[..7]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated(7)));
    }
}
