//! The connection loop over an in-memory pipe: what a client reads back,
//! and which requests go to hyper's server with which bytes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::{Ended, serve};
use crate::body::{BoxError, RequestBody};

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

fn full(body: &'static str) -> Boxed {
    Full::new(Bytes::from_static(body.as_bytes())).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// A body of `frames` whose length is not known beforehand.
fn streamed(frames: Vec<Frame<Bytes>>) -> Boxed {
    StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok::<_, BoxError>))).boxed_unsync()
}

/// Echoes the request line and a few headers in the body, as `200`.
fn echo(request: Request<RequestBody>) -> Response<Boxed> {
    let described = format!(
        "{} {} {:?} host={:?} n={}",
        request.method(),
        request.uri(),
        request.version(),
        request.headers().get("host"),
        request.headers().len()
    );
    Response::new(Full::new(Bytes::from(described)).map_err(|never: Infallible| match never {}).boxed_unsync())
}

/// How the loop ended: closed, or handed off with the bytes it replays
/// (read to the end) and whether at the connection's first request.
type Outcome = Result<(), (Vec<u8>, bool)>;

/// Serves `input` (then the client's end of writing) with `respond`:
/// what the client read back, and how the loop ended.
async fn exchange<F>(input: &[u8], respond: F) -> (String, Outcome)
where
    F: FnMut(Request<RequestBody>) -> Response<Boxed>,
{
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let (_stop, stopped) = watch::channel(false);
    client.write_all(input).await.unwrap();
    let served = run(server, respond, stopped).await;
    client.shutdown().await.unwrap();
    let ended = match served {
        Ended::Closed => Ok(()),
        Ended::HandOff { io: mut replayed, opening } => {
            let mut bytes = Vec::new();
            replayed.read_to_end(&mut bytes).await.unwrap();
            Err((bytes, opening))
        }
    };
    let mut read = Vec::new();
    client.read_to_end(&mut read).await.unwrap();
    (String::from_utf8(read).unwrap(), ended)
}

async fn run<F>(server: DuplexStream, mut respond: F, stop: watch::Receiver<bool>) -> Ended<DuplexStream>
where
    F: FnMut(Request<RequestBody>) -> Response<Boxed>,
{
    serve(server, |request| std::future::ready(respond(request)), stop).await
}

/// The response heads and bodies in `read`, the `Date` line blanked.
fn undated(read: &str) -> String {
    read.lines().map(|line| if line.starts_with("date: ") { "date: *" } else { line }).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn keep_alive_requests_are_answered_in_order_on_one_connection() {
    let input = b"GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n\
                  GET /b HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let (read, ended) = exchange(input, echo).await;
    assert_eq!(ended, Ok(()));
    assert_eq!(
        undated(&read),
        "HTTP/1.1 200 OK\ncontent-length: 48\ndate: *\n\nGET /a?x=1 HTTP/1.1 host=Some(\"example.com\") n=2\
         HTTP/1.1 200 OK\ncontent-length: 44\ndate: *\nconnection: close\n\nGET /b HTTP/1.1 host=Some(\"example.com\") n=2"
    );
    let date = read.lines().find(|line| line.starts_with("date: ")).unwrap();
    assert!(httpdate::parse_http_date(&date["date: ".len()..]).is_ok(), "{date}");
}

#[tokio::test]
async fn leading_empty_lines_are_skipped() {
    let (read, _) = exchange(b"\r\nGET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", echo).await;
    assert!(read.ends_with("GET / HTTP/1.1 host=Some(\"h\") n=2"), "{read}");
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_and_head_204_and_304_answers_have_none() {
    let input = b"GET /s HTTP/1.1\r\nHost: h\r\n\r\nHEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\n\r\n\
                  GET /m HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (read, ended) = exchange(input, |request| match request.uri().path() {
        "/s" => Response::new(streamed(vec![Frame::data(Bytes::from_static(b"hello ")), Frame::data(Bytes::from_static(b"world"))])),
        "/h" => Response::builder().header("content-length", "120").body(full("")).unwrap(),
        "/n" => Response::builder().status(StatusCode::NO_CONTENT).body(full("dropped")).unwrap(),
        _ => Response::builder().status(StatusCode::NOT_MODIFIED).header("etag", "\"1\"").body(full("")).unwrap(),
    })
    .await;
    assert_eq!(ended, Ok(()));
    assert_eq!(
        undated(&read),
        "HTTP/1.1 200 OK\ntransfer-encoding: chunked\ndate: *\n\n6\nhello \n5\nworld\n0\n\n\
         HTTP/1.1 200 OK\ncontent-length: 120\ndate: *\n\n\
         HTTP/1.1 204 No Content\ndate: *\n\n\
         HTTP/1.1 304 Not Modified\netag: \"1\"\ndate: *\nconnection: close\n"
    );
}

#[tokio::test]
async fn trailers_go_only_to_a_client_that_takes_them_and_only_those_named() {
    let respond = |_| {
        let mut fields = http::HeaderMap::new();
        fields.insert("x-checksum", "abc".parse().unwrap());
        fields.insert("x-unnamed", "no".parse().unwrap());
        let body = streamed(vec![Frame::data(Bytes::from_static(b"data")), Frame::trailers(fields)]);
        Response::builder().header("trailer", "x-checksum").body(body).unwrap()
    };
    let taking = b"GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nConnection: close\r\n\r\n";
    let (read, _) = exchange(taking, respond).await;
    assert!(read.ends_with("\r\n\r\n4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n"), "{read:?}");
    let (read, _) = exchange(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", respond).await;
    assert!(read.ends_with("\r\n\r\n4\r\ndata\r\n0\r\n\r\n"), "{read:?}");
}

#[tokio::test]
async fn a_response_that_says_close_closes_the_connection() {
    let input = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n";
    let (read, ended) = exchange(input, |_| Response::builder().header("connection", "close").body(full("bye")).unwrap()).await;
    assert_eq!(ended, Ok(()));
    assert_eq!(read.matches("HTTP/1.1").count(), 1, "{read}");
    assert_eq!(read.matches("connection: close\r\n").count(), 1, "{read}");
    assert!(read.ends_with("bye"), "{read}");
}

#[tokio::test]
async fn a_body_shorter_than_its_length_closes_the_connection_after_it() {
    let input = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n";
    let (read, ended) = exchange(input, |_| {
        Response::builder().header("content-length", "10").body(streamed(vec![Frame::data(Bytes::from_static(b"short"))])).unwrap()
    })
    .await;
    assert_eq!(ended, Ok(()));
    assert_eq!(read.matches("HTTP/1.1").count(), 1, "{read}");
    assert!(read.ends_with("\r\n\r\nshort"), "{read}");
}

/// Each request this server leaves to hyper's: nothing is answered, and
/// the hand-off replays that request and everything after it.
#[tokio::test]
async fn requests_it_does_not_serve_go_to_hyper_with_every_byte_from_them_on() {
    let served = "GET /first HTTP/1.1\r\nHost: h\r\n\r\n";
    for left in [
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        "POST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /old HTTP/1.0\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        "GET /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        "GET /lf HTTP/1.1\nHost: h\r\n\r\n",
        "GET /two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /bad name HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: \x7f\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let input = format!("{served}{left}GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
        let (read, ended) = exchange(input.as_bytes(), echo).await;
        assert_eq!(read.matches("HTTP/1.1 200 OK").count(), 1, "{left:?}: {read}");
        assert!(read.contains("GET /first"), "{left:?}: {read}");
        assert_eq!(ended, Err((input.as_bytes()[served.len()..].to_vec(), false)), "{left:?}");
    }
}

#[tokio::test]
async fn the_http2_preface_and_heads_past_the_limits_go_to_hyper() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(exchange(preface, echo).await, (String::new(), Err((preface.to_vec(), true))));
    let fields: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
    assert_eq!(exchange(many.as_bytes(), echo).await, (String::new(), Err((many.clone().into_bytes(), true))));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(70_000));
    assert_eq!(exchange(long_target.as_bytes(), echo).await, (String::new(), Err((long_target.clone().into_bytes(), true))));
}

#[tokio::test]
async fn a_head_that_spans_reads_is_put_together() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_stop, stopped) = watch::channel(false);
    let serving = tokio::spawn(run(server, echo, stopped));
    for piece in ["GET /sp", "lit HTTP/1.1\r\nHo", "st: h\r\nConnection: close\r", "\n\r\n"] {
        client.write_all(piece.as_bytes()).await.unwrap();
        tokio::task::yield_now().await;
    }
    let mut read = String::new();
    client.read_to_string(&mut read).await.unwrap();
    assert!(read.ends_with("GET /split HTTP/1.1 host=Some(\"h\") n=2"), "{read}");
    assert!(matches!(serving.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn a_client_that_closes_while_its_request_is_answered_cancels_it() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_stop, stopped) = watch::channel(false);
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(dropped.clone());
    let serving = tokio::spawn(serve(
        server,
        move |_request| {
            let guard = DropFlag(guard.0.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Response<Boxed>>().await
            }
        },
        stopped,
    ));
    client.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    assert!(matches!(serving.await.unwrap(), Ended::Closed));
    assert!(dropped.load(Ordering::SeqCst), "the request's future was dropped");
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn stopping_closes_an_idle_connection_and_closes_a_busy_one_after_its_answer() {
    let (_client, server) = tokio::io::duplex(1 << 16);
    let (stop, stopped) = watch::channel(false);
    let serving = tokio::spawn(run(server, echo, stopped));
    tokio::task::yield_now().await;
    stop.send(true).unwrap();
    assert!(matches!(serving.await.unwrap(), Ended::Closed));

    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (stop, stopped) = watch::channel(false);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut released = Some(released);
    let serving = tokio::spawn(serve(
        server,
        move |request| {
            let released = released.take();
            async move {
                if let Some(released) = released {
                    let _ = released.await;
                }
                echo(request)
            }
        },
        stopped,
    ));
    client.write_all(b"GET /busy HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    tokio::task::yield_now().await;
    stop.send(true).unwrap();
    release.send(()).unwrap();
    let mut read = String::new();
    client.read_to_string(&mut read).await.unwrap();
    assert!(read.contains("connection: close\r\n"), "{read}");
    assert!(read.ends_with("GET /busy HTTP/1.1 host=Some(\"h\") n=1"), "{read}");
    assert!(matches!(serving.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn a_client_that_closes_while_a_response_streams_ends_it() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_stop, stopped) = watch::channel(false);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let serving = tokio::spawn(run(
        server,
        move |_| {
            let guard = DropFlag(flag.clone());
            let first = futures::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"first")))]);
            // Then nothing, ever; the stream (and the guard with it) is dropped with the body.
            let frames = first.chain(futures::stream::pending()).inspect(move |_| {
                let _ = &guard;
            });
            Response::new(StreamBody::new(frames).boxed_unsync())
        },
        stopped,
    ));
    client.write_all(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut read = Vec::new();
    while !read.ends_with(b"5\r\nfirst\r\n") {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&read));
        read.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    assert!(matches!(serving.await.unwrap(), Ended::Closed));
    assert!(dropped.load(Ordering::SeqCst), "the response body was dropped");
}

#[tokio::test]
async fn a_body_longer_than_its_length_is_cut_to_it_and_the_connection_goes_on() {
    let input = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (read, ended) = exchange(input, |request| match request.uri().path() {
        "/" => {
            Response::builder().header("content-length", "5").body(streamed(vec![Frame::data(Bytes::from_static(b"0123456789"))])).unwrap()
        }
        _ => echo(request),
    })
    .await;
    assert_eq!(ended, Ok(()));
    assert!(read.contains("\r\n\r\n01234HTTP/1.1 200 OK\r\n"), "{read}");
    assert!(read.ends_with("GET /next HTTP/1.1 host=Some(\"h\") n=2"), "{read}");
}

/// A connection that holds what is written until it is flushed, as TLS
/// does with its records.
struct HeldUntilFlushed {
    io: DuplexStream,
    held: Vec<u8>,
}

impl tokio::io::AsyncRead for HeldUntilFlushed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HeldUntilFlushed {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn each_response_is_flushed_on_a_connection_that_holds_writes() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_stop, stopped) = watch::channel(false);
    let held = HeldUntilFlushed { io: server, held: Vec::new() };
    let _serving = tokio::spawn(serve(held, |request| std::future::ready(echo(request)), stopped));
    client.write_all(b"GET /kept HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let expected = "GET /kept HTTP/1.1 host=Some(\"h\") n=1";
    let mut read = Vec::new();
    while !read.ends_with(expected.as_bytes()) {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the response of a kept-alive connection arrives")
            .unwrap();
        assert!(n > 0);
        read.extend_from_slice(&chunk[..n]);
    }
}
