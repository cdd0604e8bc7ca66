//! Reading HTTP/1.1 responses off a raw socket, for tests that write
//! requests byte by byte.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long one read may wait.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Reads one response from `stream`, head and body, as text: the body by
/// `Content-Length` or chunked framing, none when the head has neither (a
/// `101`, a `204`). The connection stays open; a close or a stall before
/// the response is whole fails the test.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !complete(&received) {
        let n = tokio::time::timeout(READ_DEADLINE, stream.read(&mut chunk)).await.expect("a response in time").expect("a read");
        assert!(n > 0, "the gateway closed the connection after {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether `bytes` hold a whole response.
fn complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| line.strip_prefix("content-length:")).map(|v| v.trim().parse::<usize>().expect("a length"));
    match length {
        Some(length) => bytes.len() >= end + 4 + length,
        None if head.contains("transfer-encoding: chunked") => bytes.ends_with(b"\r\n0\r\n\r\n"),
        None => true,
    }
}

/// Whether the gateway closes `stream` within `limit`, reading whatever it
/// sends meanwhile.
pub async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(limit, async {
        while let Ok(n) = stream.read(&mut buffer).await
            && n > 0
        {}
    })
    .await
    .is_ok()
}
