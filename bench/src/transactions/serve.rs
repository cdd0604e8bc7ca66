//! The delayed upstream: a fixed JSON document per port, answered after a
//! fixed delay (what nginx cannot do without its echo module).

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The document port number `index` (from 0) answers; the same shape as the nginx upstreams' in `bench/aggregate`.
pub(crate) fn document(index: usize) -> String {
    format!(r#"{{"service":"s{}","id":42,"items":[1,2,3]}}"#, index + 1)
}

pub(crate) async fn serve(ports: &[u16], delay: Duration) {
    let mut listeners = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let listener = TcpListener::bind(("127.0.0.1", *port)).await.unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listeners.push(tokio::spawn(accept(listener, Bytes::from(document(index)), delay)));
    }
    for listener in listeners {
        listener.await.expect("the listener task");
    }
}

async fn accept(listener: TcpListener, body: Bytes, delay: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let body = body.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
