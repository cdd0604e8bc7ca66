//! Following a chunked body (RFC 9112 §7.1) byte by byte, to find where it
//! ends and refuse what two parsers could read two ways.

use super::Violation;

/// Most hex digits of a chunk size (64 bits).
const MAX_SIZE_DIGITS: u8 = 16;
/// Most bytes of one chunk's extensions.
const MAX_EXTENSION: u16 = 4096;
/// Most bytes of trailer lines.
const MAX_TRAILERS: u32 = 16 * 1024;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In a chunk size: its digits so far and value.
    Size { digits: u8, value: u64 },
    /// In a chunk's extensions (`;name`, `;name=token` or `;name="quoted"`,
    /// without spaces): where in one, and the bytes of all so far.
    Extension { value: u64, length: u16, part: Part },
    /// The `LF` of a chunk size line.
    SizeLf { value: u64 },
    /// In a chunk's data.
    Data { left: u64 },
    /// The `CR` after a chunk's data.
    DataCr,
    /// The `LF` after a chunk's data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer line, before (`colon: false`) or after its colon.
    Trailer { colon: bool },
    /// The `LF` of a trailer line.
    TrailerLf,
    /// The `LF` of the final empty line.
    EndLf,
}

/// Where in one chunk extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Right after `;`: a name must start.
    NameStart,
    Name,
    /// Right after `=`: a token or a quoted string must start.
    ValueStart,
    Token,
    Quoted,
    /// After a `\` in a quoted string.
    Escaped,
    /// After the closing quote.
    Closed,
}

/// What the next bytes of a chunked body are, and how many of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Sizes, extensions, line ends or trailers.
    Framing(usize),
    /// A chunk's data.
    Data(usize),
    /// The last framing bytes: the body ends after them.
    End(usize),
}

/// A chunked body being followed.
#[derive(Debug, Clone)]
pub struct Chunked {
    at: At,
    trailer_bytes: u32,
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Self { at: At::Size { digits: 0, value: 0 }, trailer_bytes: 0 }
    }

    /// Takes bytes of the body: how many were its own, and whether it ended there.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), Violation> {
        let mut used = 0;
        while used < bytes.len() {
            match self.next(&bytes[used..])? {
                Piece::Framing(n) | Piece::Data(n) => used += n,
                Piece::End(n) => return Ok((used + n, true)),
            }
        }
        Ok((used, false))
    }

    /// What the next of `bytes` (not empty) hold: framing up to the next
    /// data or the end of `bytes`, data (as much of the chunk as is
    /// there), or the end of the body.
    pub(crate) fn next(&mut self, bytes: &[u8]) -> Result<Piece, Violation> {
        if let At::Data { left } = &mut self.at {
            // Data is taken whole, not byte by byte.
            let take = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
            *left -= take as u64;
            if *left == 0 {
                self.at = At::DataCr;
            }
            return Ok(Piece::Data(take));
        }
        for (at, byte) in bytes.iter().enumerate() {
            if self.step(*byte)? {
                return Ok(Piece::End(at + 1));
            }
            if matches!(self.at, At::Data { .. }) {
                return Ok(Piece::Framing(at + 1));
            }
        }
        Ok(Piece::Framing(bytes.len()))
    }

    /// One byte outside data; `true` when it ended the body.
    fn step(&mut self, byte: u8) -> Result<bool, Violation> {
        self.at = match (self.at, byte) {
            (At::Size { digits, value }, b) if b.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(Violation::ChunkSize);
                }
                let digit = (b as char).to_digit(16).map_or(0, u64::from);
                At::Size { digits: digits + 1, value: (value << 4) | digit }
            }
            (At::Size { digits: 0, .. }, _) => return Err(Violation::ChunkSize),
            (At::Size { value, .. }, b';') => At::Extension { value, length: 0, part: Part::NameStart },
            (At::Size { value, .. }, b'\r') => At::SizeLf { value },
            (At::Size { .. }, _) => return Err(Violation::ChunkSize),
            (At::Extension { value, part: Part::Name | Part::Token | Part::Closed, .. }, b'\r') => At::SizeLf { value },
            (At::Extension { value, length, part }, b) => {
                let part = extension(part, b).filter(|_| length < MAX_EXTENSION).ok_or(Violation::ChunkExtension)?;
                At::Extension { value, length: length + 1, part }
            }
            (At::SizeLf { value: 0 }, b'\n') => At::TrailerStart,
            (At::SizeLf { value }, b'\n') => At::Data { left: value },
            (At::SizeLf { .. }, _) => return Err(Violation::ChunkSize),
            (At::DataCr, b'\r') => At::DataLf,
            (At::DataLf, b'\n') => At::Size { digits: 0, value: 0 },
            (At::DataCr | At::DataLf, _) => return Err(Violation::ChunkEnd),
            (At::TrailerStart, b'\r') => At::EndLf,
            (At::EndLf, b'\n') => return Ok(true),
            (At::EndLf, _) => return Err(Violation::ChunkEnd),
            (At::TrailerStart | At::Trailer { colon: false }, b) if super::head::is_token(b) => self.trailer(false)?,
            (At::Trailer { colon: false }, b':') => self.trailer(true)?,
            (At::Trailer { colon: true }, b'\r') => At::TrailerLf,
            (At::Trailer { colon: true }, b) if super::head::is_field_text(b) => self.trailer(true)?,
            (At::TrailerLf, b'\n') => At::TrailerStart,
            (At::TrailerStart | At::Trailer { .. } | At::TrailerLf, _) => return Err(Violation::Trailer),
            (At::Data { .. }, _) => unreachable!("data is skipped in feed"),
        };
        Ok(false)
    }

    /// One more byte of trailer lines, within their bound.
    fn trailer(&mut self, colon: bool) -> Result<At, Violation> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(Violation::Trailer);
        }
        Ok(At::Trailer { colon })
    }
}

/// The next place in a chunk extension after `byte`, if it may come there.
fn extension(part: Part, byte: u8) -> Option<Part> {
    let token = super::head::is_token(byte);
    Some(match (part, byte) {
        (Part::NameStart | Part::Name, _) if token => Part::Name,
        (Part::Name | Part::Token | Part::Closed, b';') => Part::NameStart,
        (Part::Name, b'=') => Part::ValueStart,
        (Part::ValueStart | Part::Token, _) if token => Part::Token,
        (Part::ValueStart, b'"') => Part::Quoted,
        (Part::Quoted, b'"') => Part::Closed,
        (Part::Quoted, b'\\') => Part::Escaped,
        (Part::Quoted | Part::Escaped, b) if super::head::is_field_text(b) => Part::Quoted,
        _ => return None,
    })
}
