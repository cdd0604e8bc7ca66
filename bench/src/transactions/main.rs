//! A load generator whose unit is a *transaction*: a fixed sequence of
//! GETs sent one after the other on the same keep-alive connections, the
//! way a client that needs three answers calls three endpoints. It is what
//! `bench/aggregate` compares one aggregate request with, and it can also
//! be the upstream that answers after a fixed delay.
//!
//! * `transactions load --connections C --seconds S [--warmup S] URL...`:
//!   C connections loop over the URLs for S seconds (closed loop); prints
//!   one JSON line: transactions, seconds, transactions per second, the
//!   latency of a whole transaction (p50, p99, p99.9, in µs) and the
//!   transactions with a non-2xx answer or a failed connection.
//! * `transactions serve --delay-ms D PORT...`: on each loopback port, a
//!   fixed small JSON document (`{"service": "s<N>", ...}`, N from 1 in
//!   port order) after D ms.
//!
//! Single-threaded (`bench/aggregate` pins it to one core).

mod load;
mod serve;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut numbers = std::collections::HashMap::new();
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--") {
            Some(flag) => {
                let value: f64 = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("--{flag} needs a number"));
                numbers.insert(flag.to_owned(), value);
            }
            None => positional.push(arg),
        }
    }
    let number = |flag: &str, default: f64| numbers.get(flag).copied().unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    match command.as_str() {
        "load" => {
            assert!(!positional.is_empty(), "load: give the transaction's URLs");
            let plan = load::Plan {
                urls: positional.iter().map(|url| url.parse().expect("an http:// URL")).collect(),
                connections: number("connections", 64.0) as usize,
                duration: Duration::from_secs_f64(number("seconds", 10.0)),
                warmup: Duration::from_secs_f64(number("warmup", 0.0)),
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
