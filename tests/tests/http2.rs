//! The data plane's HTTP/2 limits (`server.rs`, `h2_limits`) seen from a
//! client: raw frames over h2c prior knowledge, so each test sends exactly
//! the abuse it is about (floods, resets, window overruns) and asserts what
//! comes back, against the real control plane and data plane.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::Duration;

use portico_test_support::h2frames::{self, Frame, FrameReader, flag, kind, reason, setting};
use portico_test_support::{ControlPlane, DataPlane, TestDb, TestUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

const DEADLINE: Duration = Duration::from_secs(10);

// The values `server.rs` sets (and README's table states).
const MAX_CONCURRENT_STREAMS: u32 = 100;
const INITIAL_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 256 * 1024;
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 100;

struct Gateway {
    _db: TestDb,
    _cp: ControlPlane,
    dp: DataPlane,
    upstream: TestUpstream,
    _hole: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    fn addr(&self) -> &str {
        self.dp.proxy_url.trim_start_matches("http://")
    }

    /// A connection past the handshake: the server's SETTINGS acknowledged.
    async fn connect(&self) -> (OwnedWriteHalf, FrameReader, Frame) {
        let (mut write, reader, settings) = h2frames::connect(self.addr(), &[(setting::ENABLE_PUSH, 0)]).await;
        write.write_all(&h2frames::settings_ack()).await.unwrap();
        (write, reader, settings)
    }

    /// A new connection (from a real HTTP/2 client) still gets a `200`.
    async fn still_serves(&self) {
        let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
        let response = client.get(format!("{}/app/after", self.dp.proxy_url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
    }
}

/// A gateway routing `/app` to an echo upstream and, when `hole`, `/hole`
/// to an upstream that accepts connections and never reads them.
async fn gateway(hole: bool) -> Gateway {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "dp-h2", None).await;
    let upstream = TestUpstream::start("a").await;
    let mut services = vec![json!({"name": "app", "targets": [{"url": upstream.url()}]})];
    let mut routes = vec![json!({"name": "app", "service": "app", "paths": ["/app"]})];
    let mut task = None;
    if hole {
        let (url, held) = black_hole().await;
        services.push(json!({"name": "hole", "targets": [{"url": url}]}));
        routes.push(json!({"name": "hole", "service": "hole", "paths": ["/hole"]}));
        task = Some(held);
    }
    let response = cp
        .admin(Method::PUT, "/api/v1/gateways/default/config")
        .json(&json!({"services": services, "routes": routes}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    let version = response.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    dp.wait_for_version(version).await;
    Gateway { _db: db, _cp: cp, dp, upstream, _hole: task }
}

/// An upstream that accepts and holds connections with a tiny receive
/// buffer and never reads, so the gateway cannot drain a request body into it.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    h2frames::headers(stream, &h2frames::request_block("GET", path, "gw", &[]), flag::END_HEADERS | flag::END_STREAM)
}

/// Opens a POST whose body is still to come: the stream stays open.
fn open_post(stream: u32, path: &str) -> Vec<u8> {
    h2frames::headers(stream, &h2frames::request_block("POST", path, "gw", &[]), flag::END_HEADERS)
}

fn is_goaway(frame: &Frame) -> bool {
    frame.kind == kind::GOAWAY
}

/// The response status on `stream`, skipping other frames.
async fn status_of(reader: &mut FrameReader, stream: u32) -> u16 {
    let mut seen = Vec::new();
    let headers = reader.until(DEADLINE, |f| f.kind == kind::HEADERS && f.stream == stream, &mut seen).await;
    let headers = headers.unwrap_or_else(|| panic!("the connection closed before stream {stream} was answered: {seen:?}"));
    headers.status().unwrap_or_else(|| panic!("no :status in {headers:?}"))
}

#[tokio::test]
async fn the_server_settings_advertise_the_configured_limits() {
    let gw = gateway(false).await;
    let (_write, mut reader, settings) = gw.connect().await;
    let values = settings.settings();
    let value = |id: u16| values.iter().find(|(key, _)| *key == id).map(|(_, v)| *v);
    assert_eq!(value(setting::MAX_CONCURRENT_STREAMS), Some(MAX_CONCURRENT_STREAMS), "{values:?}");
    assert_eq!(value(setting::INITIAL_WINDOW_SIZE), Some(INITIAL_WINDOW), "{values:?}");
    assert_eq!(value(setting::MAX_FRAME_SIZE), Some(MAX_FRAME_SIZE), "{values:?}");
    assert_eq!(value(setting::MAX_HEADER_LIST_SIZE), Some(MAX_HEADER_LIST_SIZE), "{values:?}");
    // The connection window is raised from the RFC's 65,535 by a WINDOW_UPDATE on stream 0.
    let mut seen = Vec::new();
    let update = reader.until(DEADLINE, |f| f.kind == kind::WINDOW_UPDATE && f.stream == 0, &mut seen).await.unwrap();
    assert_eq!(update.increment(), Some(INITIAL_WINDOW - 65_535), "connection window of {INITIAL_WINDOW}");
}

#[tokio::test]
async fn a_stream_past_max_concurrent_streams_is_refused_and_the_others_are_served() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    // 100 streams held open (request bodies still to come), then one more.
    let ids: Vec<u32> = (0..=MAX_CONCURRENT_STREAMS).map(|i| 1 + 2 * i).collect();
    let burst: Vec<u8> = ids.iter().flat_map(|&id| open_post(id, "/app/held")).collect();
    write.write_all(&burst).await.unwrap();
    let excess = *ids.last().unwrap();
    let mut seen = Vec::new();
    let refused = reader.until(DEADLINE, |f| f.kind == kind::RST_STREAM || is_goaway(f), &mut seen).await.unwrap();
    assert_eq!(
        (refused.kind, refused.stream, refused.error_code()),
        (kind::RST_STREAM, excess, Some(reason::REFUSED_STREAM)),
        "{refused:?}"
    );
    // The allowed ones go on: finish the first stream's body, get its answer.
    write.write_all(&h2frames::data(1, b"hello", true)).await.unwrap();
    let answered = reader.until(DEADLINE, |f| f.kind == kind::HEADERS && f.stream == 1, &mut seen).await.unwrap();
    assert_eq!(answered.status(), Some(200), "{answered:?}");
    // Once its answer has ended (not merely begun: until then the stream
    // still counts), its slot is free again: a new stream is served on the
    // same connection.
    if answered.flags & flag::END_STREAM == 0 {
        let ends = |f: &Frame| f.stream == 1 && f.flags & flag::END_STREAM != 0;
        reader.until(DEADLINE, ends, &mut seen).await.expect("the first stream's answer ends");
    }
    let next = excess + 2;
    write.write_all(&get(next, "/app/next")).await.unwrap();
    assert_eq!(status_of(&mut reader, next).await, 200);
}

#[tokio::test]
async fn a_rapid_reset_burst_ends_in_goaway_without_a_request_per_reset() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    let resets = 10 * MAX_PENDING_ACCEPT_RESETS;
    let burst: Vec<u8> = (0..resets)
        .map(|i| 1 + 2 * u32::try_from(i).unwrap())
        .flat_map(|id| get(id, "/app/reset").into_iter().chain(h2frames::rst_stream(id, reason::CANCEL)))
        .collect();
    write.write_all(&burst).await.unwrap();
    let mut seen = Vec::new();
    let goaway = reader.until(DEADLINE, is_goaway, &mut seen).await.expect("a GOAWAY, not a silent close");
    assert_eq!(goaway.error_code(), Some(reason::ENHANCE_YOUR_CALM), "{goaway:?}");
    assert_eq!(goaway.debug_data(), "too_many_resets");
    assert!(reader.until(DEADLINE, |_| false, &mut seen).await.is_none(), "the connection ends after the GOAWAY");
    let reached = gw.upstream.requests();
    assert!(reached <= MAX_PENDING_ACCEPT_RESETS, "{reached} of {resets} reset streams reached the upstream");
    gw.still_serves().await;
}

#[tokio::test]
async fn local_error_resets_past_the_limit_end_in_goaway() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    // MadeYouReset: each request makes the server reset its stream (a
    // stream error: a content-length of 5 and END_STREAM on the HEADERS).
    // (A WINDOW_UPDATE of 0 would not do: h2 makes it a connection error.)
    let block = h2frames::request_block("POST", "/app/reset", "gw", &[("content-length", "5")]);
    let malformed = |id: u32| h2frames::headers(id, &block, flag::END_HEADERS | flag::END_STREAM);
    // Below the limit each one costs the client its stream, not the connection.
    let mut seen = Vec::new();
    for id in [1, 3, 5] {
        write.write_all(&malformed(id)).await.unwrap();
        let reset = reader.until(DEADLINE, |f| f.kind == kind::RST_STREAM || is_goaway(f), &mut seen).await.unwrap();
        assert_eq!((reset.kind, reset.stream, reset.error_code()), (kind::RST_STREAM, id, Some(reason::PROTOCOL_ERROR)), "{reset:?}");
    }
    let streams = 2 * MAX_LOCAL_ERROR_RESETS;
    let burst: Vec<u8> = (0..streams).map(|i| 7 + 2 * u32::try_from(i).unwrap()).flat_map(malformed).collect();
    write.write_all(&burst).await.unwrap();
    let goaway = reader.until(DEADLINE, is_goaway, &mut seen).await.expect("a GOAWAY, not a silent close");
    assert_eq!(goaway.error_code(), Some(reason::ENHANCE_YOUR_CALM), "{goaway:?}");
    assert_eq!(goaway.debug_data(), "too_many_internal_resets");
    let resets = seen.iter().filter(|f| f.kind == kind::RST_STREAM).count();
    assert!(resets <= MAX_LOCAL_ERROR_RESETS, "{resets} resets before the GOAWAY");
    assert_eq!(gw.upstream.requests(), 0, "a malformed request never reaches the upstream");
    gw.still_serves().await;
}

/// `count` header fields of `each` bytes (name and value).
fn big_fields(count: usize, each: usize) -> Vec<(String, String)> {
    (0..count).map(|i| (format!("x-fill-{i:03}"), "v".repeat(each - 10))).collect()
}

/// A request whose header block is cut into frames of at most `MAX_FRAME_SIZE`.
fn split_request(stream: u32, path: &str, fields: &[(String, String)]) -> Vec<u8> {
    let extra: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let block = h2frames::request_block("GET", path, "gw", &extra);
    let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME_SIZE as usize).collect();
    let last = chunks.len() - 1;
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let end = if i == last { flag::END_HEADERS } else { 0 };
        bytes.extend(match i {
            0 => h2frames::headers(stream, chunk, end | flag::END_STREAM),
            _ => h2frames::continuation(stream, chunk, end == flag::END_HEADERS),
        });
    }
    bytes
}

#[tokio::test]
async fn header_blocks_over_the_limits_get_431_and_the_connection_goes_on() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    // 96 KiB: within the codec's list size, over the pipeline's 64 KiB: its JSON 431.
    write.write_all(&split_request(1, "/app/big", &big_fields(24, 4096))).await.unwrap();
    let mut seen = Vec::new();
    let response = reader.until(DEADLINE, |f| f.kind == kind::HEADERS && f.stream == 1, &mut seen).await.unwrap();
    assert_eq!(response.status(), Some(431), "{response:?}");
    let body = reader.until(DEADLINE, |f| f.kind == kind::DATA && f.stream == 1, &mut seen).await.unwrap();
    let error: Value = serde_json::from_slice(&body.payload).unwrap();
    assert_eq!(error["error"]["code"], "headers_too_large", "{error}");
    write.write_all(&get(3, "/app/small")).await.unwrap();
    assert_eq!(status_of(&mut reader, 3).await, 200, "the same connection serves the next request");

    // 320 KiB over 20 CONTINUATION frames: past the list size, h2's own bare
    // 431 (on a new connection: h2 would send the status as a dynamic-table index).
    let (mut write, mut reader, _) = gw.connect().await;
    write.write_all(&split_request(1, "/app/bigger", &big_fields(80, 4096))).await.unwrap();
    let response = reader.until(DEADLINE, |f| f.kind == kind::HEADERS && f.stream == 1, &mut seen).await.unwrap();
    assert_eq!(response.status(), Some(431), "{response:?}");
    assert_ne!(response.flags & flag::END_STREAM, 0, "no body: {response:?}");
    write.write_all(&get(3, "/app/small")).await.unwrap();
    assert_eq!(status_of(&mut reader, 3).await, 200, "the same connection serves the next request");
    assert_eq!(gw.upstream.requests(), 2, "only the small requests reached the upstream");
}

#[tokio::test]
async fn a_continuation_flood_without_end_headers_is_cut() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    // A valid start, then small CONTINUATION frames that never end the block:
    // h2 bounds their number (20 here), not just their bytes.
    let mut flood = h2frames::headers(1, &h2frames::request_block("GET", "/app/flood", "gw", &[]), flag::END_STREAM);
    let field = {
        let mut field = vec![0x00, 0x07];
        field.extend_from_slice(b"x-flood");
        field.push(100);
        field.extend_from_slice(&[b'f'; 100]);
        field
    };
    for _ in 0..200 {
        flood.extend(h2frames::continuation(1, &field, false));
    }
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&flood).await; // the server may close mid-flood
        write
    });
    let mut seen = Vec::new();
    let goaway = reader.until(DEADLINE, is_goaway, &mut seen).await.expect("a GOAWAY, not a silent close");
    assert_eq!(goaway.error_code(), Some(reason::ENHANCE_YOUR_CALM), "{goaway:?}");
    assert_eq!(goaway.debug_data(), "too_many_continuations");
    assert!(seen.iter().all(|f| f.kind != kind::HEADERS), "no response was started: {seen:?}");
    drop(writer.await.unwrap());
    assert_eq!(gw.upstream.requests(), 0);
    gw.still_serves().await;
}

#[tokio::test]
async fn data_past_the_flow_control_window_gets_flow_control_error() {
    let gw = gateway(true).await;
    let (mut write, mut reader, _) = gw.connect().await;
    // A body to an upstream that reads nothing, sent without regard for the
    // server's window: the gateway's buffers fill, then the window is overrun.
    write.write_all(&open_post(1, "/hole/upload")).await.unwrap();
    let chunk = vec![b'd'; MAX_FRAME_SIZE as usize];
    let frames = 4 * INITIAL_WINDOW as usize / chunk.len();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..frames {
            if write.write_all(&h2frames::data(1, &chunk, false)).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        (write, sent)
    });
    let mut seen = Vec::new();
    let error = reader
        .until(DEADLINE, |f| f.error_code().is_some_and(|code| code != reason::NO_ERROR), &mut seen)
        .await
        .expect("an error frame, not a silent close");
    // Past the stream's window the stream is reset, past the connection's
    // the connection ends: both with FLOW_CONTROL_ERROR (RFC 9113 §6.9),
    // whichever window the gateway finds overrun first (it varies with timing).
    let stream_reset = error.kind == kind::RST_STREAM && error.stream == 1;
    assert!(error.kind == kind::GOAWAY || stream_reset, "{error:?}");
    assert_eq!(error.error_code(), Some(reason::FLOW_CONTROL_ERROR), "{error:?}");
    let granted: u64 = seen.iter().filter(|f| f.stream == 0).filter_map(Frame::increment).map(u64::from).sum();
    let (_write, sent) = writer.await.unwrap();
    assert!(
        (sent as u64) > 65_535 + granted,
        "the error came once the client had sent {sent} bytes past a window of 65535 + {granted} granted"
    );
}

#[tokio::test]
async fn a_frame_over_the_max_frame_size_ends_in_frame_size_error() {
    let gw = gateway(false).await;
    let (mut write, mut reader, _) = gw.connect().await;
    write.write_all(&open_post(1, "/app/upload")).await.unwrap();
    write.write_all(&h2frames::data(1, &vec![b'd'; MAX_FRAME_SIZE as usize + 1], true)).await.unwrap();
    let mut seen = Vec::new();
    let error = reader.until(DEADLINE, |f| f.error_code().is_some(), &mut seen).await.expect("an error frame, not a silent close");
    assert_eq!((error.kind, error.error_code()), (kind::GOAWAY, Some(reason::FRAME_SIZE_ERROR)), "{error:?}");
    gw.still_serves().await;
}
