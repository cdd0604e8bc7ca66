use proptest::prelude::*;

use super::*;

/// Feeds `bytes` to a client-side scanner in one go.
fn scan(bytes: &[u8]) -> Result<(), Fault> {
    Scanner::new().feed(bytes)
}

fn head_fault(bytes: &[u8]) -> Option<(u64, Violation)> {
    match scan(bytes) {
        Err(Fault::Head { index, violation }) => Some((index, violation)),
        _ => None,
    }
}

fn stream_fault(bytes: &[u8]) -> Option<Violation> {
    match scan(bytes) {
        Err(Fault::Stream { violation, .. }) => Some(violation),
        _ => None,
    }
}

const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.1\r\nHost: api.example.com:8080\r\nAccept: */*\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=value;flag\r\nhello\r\n3;q=\"a \\\"b\\\" c\"\r\nabc\r\n0\r\nTrailer-X: 1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
    b"GET http://b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
];

#[test]
fn accepts_well_formed_requests() {
    for request in VALID {
        assert_eq!(scan(request), Ok(()), "{}", String::from_utf8_lossy(request));
    }
}

#[test]
fn refuses_framing_that_parsers_read_two_ways() {
    let cases: &[(&[u8], Violation)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::DuplicateTransferEncoding,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::LengthAndChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", Violation::LengthAndChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", Violation::TransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Violation::TransferEncoding),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::TransferEncodingOnHttp10),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", Violation::DuplicateContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", Violation::ContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx", Violation::ContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Violation::ContentLength),
        (b"GET / HTTP/1.1\nHost: a\n\n", Violation::BareLf),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n", Violation::BareLf),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", Violation::ObsFold),
        (b"GET / HTTP/1.1\r\n\r\n", Violation::MissingHost),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello", Violation::DisguisedFraming),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer--Encoding: chunked\r\n\r\n", Violation::DisguisedFraming),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Violation::DuplicateHost),
        (b"GET / HTTP/1.1\r\nHost: a b@evil/x\r\n\r\n", Violation::Host),
        (b"GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n", Violation::Host),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Violation::RequestLine),
        (b"GET /\r\n\r\n", Violation::RequestLine),
        (b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXGET / HTTP/1.1\r\nHost: a\r\n\r\n", Violation::RequestLine),
    ];
    for (request, expected) in cases {
        assert_eq!(head_fault(request), Some((0, *expected)), "{}", String::from_utf8_lossy(request));
    }
}

/// Left to hyper's parser, which refuses them itself (a bare `400` and a
/// close): the scanner need not look at every byte twice.
#[test]
fn leaves_byte_level_syntax_to_hyper() {
    for request in [
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n".as_slice(),
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\rZ\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
    ] {
        assert_eq!(scan(request), Ok(()), "{}", String::from_utf8_lossy(request));
    }
}

#[test]
fn refuses_malformed_chunked_bodies_as_the_stream() {
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: &[(&[u8], Violation)] = &[
        (b"fffffffffffffffff\r\n", Violation::ChunkSize),
        (b"0x5\r\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b" 5\r\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b"5\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b"5 x\r\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b"5 \r\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b"5;\r\nhello\r\n0\r\n\r\n", Violation::ChunkExtension),
        (b"5;a b\r\nhello\r\n0\r\n\r\n", Violation::ChunkExtension),
        (b"5;a=\r\nhello\r\n0\r\n\r\n", Violation::ChunkExtension),
        (b"5;a=\"open\r\nhello\r\n0\r\n\r\n", Violation::ChunkExtension),
        (b"5;\x00ext\r\nhello\r\n0\r\n\r\n", Violation::ChunkExtension),
        (b"5\r\nhelloX\r\n0\r\n\r\n", Violation::ChunkEnd),
        (b"5\r\nhello\n0\r\n\r\n", Violation::ChunkEnd),
        (b"5\r\r\nhello\r\n0\r\n\r\n", Violation::ChunkSize),
        (b"0\r\nBad Trailer\r\n\r\n", Violation::Trailer),
        (b"0\r\nX: 1\n\r\n", Violation::Trailer),
    ];
    for (body, expected) in cases {
        let request = [head.as_slice(), body].concat();
        assert_eq!(stream_fault(&request), Some(*expected), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn counts_pipelined_requests_to_name_the_bad_one() {
    let stream = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nGET /3 HTTP/1.1\r\n\r\n";
    // The body of /2 is four bytes ("GET "), so the bad head is the one after it.
    assert_eq!(head_fault(stream), Some((2, Violation::RequestLine)));
}

#[test]
fn stops_checking_after_an_upgrade_or_the_http2_preface() {
    assert_eq!(scan(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\n\n"), Ok(()));
    assert_eq!(scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"), Ok(()));
    assert_eq!(
        head_fault(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Some((1, Violation::RequestLine)),
        "the preface only counts first"
    );
    assert_eq!(
        Scanner::resumed().feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Err(Fault::Head { index: 0, violation: Violation::RequestLine }),
        "nor first after requests another reader took"
    );
}

#[test]
fn bounds_heads_that_never_end() {
    let mut scanner = Scanner::new();
    let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    assert_eq!(scanner.feed(b"GET / HTTP/1.1\r\n"), Ok(()));
    let mut outcome = Ok(());
    for _ in 0..(MAX_REQUEST_HEAD / line.len() + 2) {
        outcome = scanner.feed(line);
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(Fault::Head { index: 0, violation: Violation::HeadTooLarge }));
}

/// Pieces of HTTP/1 messages for the generated streams.
const FRAGMENTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n",
    b"Host: a\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Upgrade: websocket\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b";a=\"b\"",
    b"X: y",
];

/// Feeds `bytes` split at `cuts`, stopping at the first fault.
fn scan_split(bytes: &[u8], cuts: &[usize]) -> Result<(), Fault> {
    let mut scanner = Scanner::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    for point in points.into_iter().chain([bytes.len()]) {
        scanner.feed(&bytes[at..point])?;
        at = point;
    }
    Ok(())
}

/// What a scan found, but where in a read (which depends on the split).
fn verdict(scanned: Result<(), Fault>) -> Option<(Option<u64>, Violation)> {
    match scanned {
        Ok(()) => None,
        Err(Fault::Head { index, violation }) => Some((Some(index), violation)),
        Err(Fault::Stream { violation, .. }) => Some((None, violation)),
    }
}

proptest! {
    /// However a stream is cut into reads, the scanner reaches the same verdict.
    #[test]
    fn verdicts_do_not_depend_on_how_reads_split(
        picks in proptest::collection::vec(0usize..VALID.len() + 3, 1..6),
        cuts in proptest::collection::vec(0usize..4096, 0..12),
    ) {
        let extra: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\nZ: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
        ];
        let stream: Vec<u8> = picks.iter().flat_map(|i| VALID.get(*i).copied().unwrap_or_else(|| extra[i - VALID.len()]).to_vec()).collect();
        prop_assert_eq!(verdict(scan_split(&stream, &cuts)), verdict(scan(&stream)));
    }

    /// Streams of HTTP/1 fragments and arbitrary bytes never make the
    /// scanner, or the fast lane's response reader, panic.
    #[test]
    fn any_stream_is_scanned_without_panicking(
        pieces in proptest::collection::vec(prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            proptest::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec),
        ], 0..96),
        cuts in proptest::collection::vec(0usize..2048, 0..4),
        head_request in any::<bool>(),
    ) {
        let bytes = pieces.concat();
        let _ = scan_split(&bytes, &cuts);
        let _ = read_response(head_request, &bytes);
    }
}

/// Reads `bytes` as the fast lane reads a response (`head_request`: to a
/// `HEAD`): its head, then its body to the end of the bytes.
fn read_response(head_request: bool, bytes: &[u8]) -> Result<(), Violation> {
    let mut buf = bytes::BytesMut::from(bytes);
    let Some(mut head) = response::read_head(&mut buf, head_request, &mut http::HeaderMap::new())? else { return Ok(()) };
    head.body.check(&buf)?;
    while let response::Next::Data(_) = head.body.next(&mut buf)? {}
    Ok(())
}

#[test]
fn a_kept_header_map_is_empty_and_one_grown_large_is_not_kept() {
    let mut small = http::HeaderMap::with_capacity(8);
    small.insert("x-a", http::HeaderValue::from_static("1"));
    let capacity = small.capacity();
    let small = super::kept(small);
    assert!(small.is_empty());
    assert_eq!(small.capacity(), capacity, "its room is kept");
    let mut large = http::HeaderMap::new();
    for i in 0..100 {
        large.append(http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), http::HeaderValue::from_static("v"));
    }
    assert_eq!(super::kept(large).capacity(), 0, "a map with room for 100 fields is dropped");
}
