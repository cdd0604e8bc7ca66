//! The HTTP/1 wire guard (`portico_dp::http1::Scanner`), on arbitrary
//! streams of either side.
//!
//! Properties: nothing panics; the verdict does not depend on how the
//! stream is cut into reads (one read, or the fuzzer's cut points, or one
//! byte at a time); and every request head the scanner accepts is, for
//! httparse (hyper's own parser), either a complete head of exactly the
//! same length or an error (which hyper refuses itself): never a head that
//! ends elsewhere, which would let the two read different messages.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portico_dp::http1::{Fault, Scanner, Side, Violation};

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

fn scanner(input: &Input) -> Scanner {
    let mut scanner = Scanner::new(if input.upstream { Side::Upstream } else { Side::Client });
    scanner.expect_response(input.head_request);
    scanner
}

fn split(input: &Input) -> Result<(), Fault> {
    let mut scanner = scanner(input);
    let mut points: Vec<usize> = input.cuts.iter().map(|c| usize::from(*c) % (input.bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut at = 0;
    for point in points.into_iter().chain([input.bytes.len()]) {
        scanner.feed(&input.bytes[at..point])?;
        at = point;
    }
    Ok(())
}

fuzz_target!(|input: Input| {
    let whole = verdict(scanner(&input).feed(&input.bytes));
    assert_eq!(verdict(split(&input)), whole, "the cut points changed the verdict");

    // One byte at a time, noting where each accepted request head ends.
    let mut scanner = scanner(&input);
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
        if !input.upstream && scanner.heads() > heads {
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
