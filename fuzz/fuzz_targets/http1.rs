//! The HTTP/1 wire rules on arbitrary byte streams: requests through the
//! client side's guard (`portico_dp::http1::Scanner`), responses through
//! the fast lane's reader (`portico_dp::http1::response`).
//!
//! Properties: nothing panics; the verdict does not depend on how the
//! stream is cut into reads (one read, or the fuzzer's cut points, or one
//! byte at a time); every request head the scanner accepts is, for
//! httparse (hyper's own parser), either a complete head of exactly the
//! same length or an error (which hyper refuses itself): never a head that
//! ends elsewhere, which would let the two read different messages; and a
//! response gives the same status, the same body bytes and the same end
//! (or the same broken rule) however it is cut.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portico_dp::http1::response::{self, Next};
use portico_dp::http1::{Fault, Scanner, Violation};

#[derive(Debug, Arbitrary)]
struct Input {
    upstream: bool,
    head_request: bool,
    cuts: Vec<u16>,
    bytes: Vec<u8>,
}

/// What a scan found, but where in a read (which depends on the cuts).
fn verdict(result: Result<(), Fault>) -> Option<(Option<u64>, Violation)> {
    match result {
        Ok(()) => None,
        Err(Fault::Head { index, violation }) => Some((Some(index), violation)),
        Err(Fault::Stream { violation, .. }) => Some((None, violation)),
    }
}

/// The input's bytes in the reads its cut points make.
fn reads(input: &Input) -> Vec<&[u8]> {
    let mut points: Vec<usize> = input.cuts.iter().map(|c| usize::from(*c) % (input.bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut at = 0;
    let mut reads = Vec::new();
    for point in points.into_iter().chain([input.bytes.len()]) {
        reads.push(&input.bytes[at..point]);
        at = point;
    }
    reads
}

fn split(input: &Input) -> Result<(), Fault> {
    let mut scanner = Scanner::new();
    for read in reads(input) {
        scanner.feed(read)?;
    }
    Ok(())
}

/// What reading a response gave: its status, its body's bytes, and whether
/// the body ended (`Ok(false)`: more bytes were wanted) or which rule broke.
#[derive(Debug, PartialEq)]
struct Transcript {
    status: Option<u16>,
    body: Vec<u8>,
    outcome: Result<bool, Violation>,
}

/// Reads a response from `reads` as the fast lane does (`head_request`: to a `HEAD`).
fn read_response<'a>(reads: impl IntoIterator<Item = &'a [u8]>, head_request: bool) -> Transcript {
    let mut transcript = Transcript { status: None, body: Vec::new(), outcome: Ok(false) };
    let mut buf = BytesMut::new();
    let mut head = None;
    for read in reads {
        buf.extend_from_slice(read);
        if head.is_none() {
            match response::read_head(&mut buf, head_request, &mut http::HeaderMap::new()) {
                Ok(Some(read)) => {
                    transcript.status = Some(read.response.status().as_u16());
                    head = Some(read);
                }
                Ok(None) => continue,
                Err(violation) => {
                    transcript.outcome = Err(violation);
                    return transcript;
                }
            }
        }
        let Some(head) = head.as_mut() else { continue };
        loop {
            match head.body.next(&mut buf) {
                Ok(Next::Data(data)) => transcript.body.extend_from_slice(&data),
                Ok(Next::More) => break,
                Ok(Next::End) => {
                    transcript.outcome = Ok(true);
                    return transcript;
                }
                Err(violation) => {
                    transcript.outcome = Err(violation);
                    return transcript;
                }
            }
        }
    }
    transcript
}

fuzz_target!(|input: Input| {
    if input.upstream {
        let whole = read_response([&input.bytes[..]], input.head_request);
        assert_eq!(read_response(reads(&input), input.head_request), whole, "the cut points changed the response");
        let bytewise = read_response(input.bytes.chunks(1), input.head_request);
        assert_eq!(bytewise, whole, "byte-at-a-time reads changed the response");
        return;
    }
    let whole = verdict(Scanner::new().feed(&input.bytes));
    assert_eq!(verdict(split(&input)), whole, "the cut points changed the verdict");

    // One byte at a time, noting where each accepted request head ends.
    let mut scanner = Scanner::new();
    let mut start = 0;
    let mut outcome = Ok(());
    for (at, byte) in input.bytes.iter().enumerate() {
        if scanner.between_messages() {
            start = at;
        }
        let heads = scanner.heads();
        outcome = scanner.feed(std::slice::from_ref(byte));
        if outcome.is_err() {
            break;
        }
        if scanner.heads() > heads {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&input.bytes[start..]) {
                Ok(httparse::Status::Complete(length)) => {
                    assert_eq!(length, at + 1 - start, "httparse ends the head at {} of {start}..={at}", start + length)
                }
                Ok(httparse::Status::Partial) => panic!("httparse wants more than the head at {start}..={at}"),
                Err(_) => {}
            }
        }
    }
    assert_eq!(verdict(outcome), whole, "byte-at-a-time reads changed the verdict");
});
