//! A load generator whose unit is a *transaction*: a fixed sequence of
//! requests sent one after the other on the same keep-alive connections,
//! the way a client that needs three answers calls three endpoints. It is
//! what `bench/aggregate` compares one aggregate request with and what
//! `bench/grpc` loads gRPC and transcoded calls with, and it can also be
//! the upstream that answers after a fixed delay.
//!
//! * `transactions load --connections C --seconds S [--warmup S] [REQUEST] URL...`:
//!   C connections loop over the URLs for S seconds (closed loop); prints
//!   one JSON line: transactions, seconds, transactions per second, the
//!   latency of a whole transaction (p50, p99, p99.9, in µs) and the
//!   transactions with a failed request (a non-2xx answer, a gRPC status
//!   other than OK, an unexpected body, a failed connection). REQUEST is
//!   a GET by default, or `--json FILE` (a POST of the file as JSON) or
//!   `--grpc FILE` (a unary gRPC call whose request message is the file's
//!   encoded protobuf, over HTTP/2); `--http2` speaks HTTP/2 with prior
//!   knowledge instead of HTTP/1.1, `--host NAME` sends that host instead
//!   of the URL's, `--expect FILE` fails answers whose body (the reply
//!   message, for gRPC) is not the file's bytes, `--expect-status CODE`
//!   answers of another status (a `202` whose body varies, say).
//! * `transactions serve --delay-ms D PORT...`: on each loopback port, a
//!   fixed small JSON document (`{"service": "s<N>", ...}`, N from 1 in
//!   port order) after D ms.
//!
//! Single-threaded (`bench/aggregate` pins it to one core).

mod load;
mod serve;

use std::time::Duration;

use hyper::body::Bytes;

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut values = std::collections::HashMap::new();
    let mut http2 = false;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--") {
            Some("http2") => http2 = true,
            Some(flag) => {
                let value = args.next().unwrap_or_else(|| panic!("--{flag} needs a value"));
                values.insert(flag.to_owned(), value);
            }
            None => positional.push(arg),
        }
    }
    let number = |flag: &str, default: f64| {
        values.get(flag).map_or(default, |value| value.parse().unwrap_or_else(|_| panic!("--{flag} needs a number")))
    };
    let file =
        |flag: &str| values.get(flag).map(|path| Bytes::from(std::fs::read(path).unwrap_or_else(|e| panic!("--{flag} {path}: {e}"))));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    match command.as_str() {
        "load" => {
            assert!(!positional.is_empty(), "load: give the transaction's URLs");
            let call = match (file("json"), file("grpc")) {
                (None, None) => load::Call::Get,
                (Some(body), None) => load::Call::PostJson(body),
                (None, Some(message)) => load::Call::Grpc(message),
                (Some(_), Some(_)) => panic!("load: --json or --grpc, not both"),
            };
            let plan = load::Plan {
                urls: positional.iter().map(|url| url.parse().expect("an http:// URL")).collect(),
                connections: number("connections", 64.0) as usize,
                duration: Duration::from_secs_f64(number("seconds", 10.0)),
                warmup: Duration::from_secs_f64(number("warmup", 0.0)),
                call,
                http2,
                host: values.get("host").cloned(),
                expect: file("expect"),
                expect_status: values.get("expect-status").map(|code| code.parse().expect("--expect-status needs an HTTP status")),
            };
            let report = runtime.block_on(load::run(&plan));
            println!("{}", report.json());
        }
        "serve" => {
            let ports: Vec<u16> = positional.iter().map(|port| port.parse().expect("a port")).collect();
            assert!(!ports.is_empty(), "serve: give the ports");
            runtime.block_on(serve::serve(&ports, Duration::from_secs_f64(number("delay-ms", 0.0) / 1000.0)));
        }
        other => panic!("unknown command '{other}': load or serve"),
    }
}
