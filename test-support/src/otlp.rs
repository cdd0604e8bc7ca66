//! A real OTLP trace receiver for the tests, from PyPI rather than from our
//! own Rust: `tests/otlp/receiver.py`, PyPI's opentelemetry-proto messages
//! served with grpcio (OTLP/gRPC) and Python's `http.server` (OTLP/HTTP
//! protobuf). It records every span exported to it; [`OtlpReceiver::spans`]
//! reads them back. Like the gRPC peers it runs on `PORTICO_PYTHON`
//! (`scripts/test` installs `tests/peers/requirements.txt`); tests fail,
//! never skip, without it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::process::Log;

/// Longest the receiver may take to start or to answer.
const DEADLINE: Duration = Duration::from_secs(60);

/// `tests/otlp/receiver.py` in the workspace.
fn receiver_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/otlp/receiver.py")
}

/// Which OTLP transport delivered a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `TraceService/Export` over gRPC.
    Grpc,
    /// `POST /v1/traces` (protobuf) over HTTP.
    Http,
}

/// A span as the receiver decoded it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedSpan {
    pub transport: Transport,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The W3C `tracestate`, as exported (`""` when none).
    pub trace_state: String,
    /// The span's `flags` (the W3C trace flags in the low 8 bits).
    pub flags: u32,
    pub name: String,
    /// The enum name, such as `SPAN_KIND_SERVER`.
    pub kind: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// The enum name: `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status_code: String,
    pub status_message: String,
    /// Values as JSON: strings, booleans, integers and doubles as such,
    /// arrays as arrays, key-value lists as objects, bytes as base64.
    pub attributes: Map<String, Value>,
    /// The attributes of the span's resource, likewise.
    pub resource_attributes: Map<String, Value>,
    /// The instrumentation scope's name (`""` when none).
    pub scope_name: String,
    pub scope_version: String,
}

/// A running `tests/otlp/receiver.py`, killed when dropped.
pub struct OtlpReceiver {
    child: Child,
    /// Held open: the receiver stops when it closes, so that it dies with a
    /// test process killed without unwinding.
    _stdin: ChildStdin,
    grpc_port: u16,
    http_port: u16,
    client: reqwest::Client,
    log: Log,
}

/// The receiver's first line: its ports.
#[derive(Deserialize)]
struct Ports {
    grpc: u16,
    http: u16,
}

impl OtlpReceiver {
    /// Starts the receiver on fresh ports and waits until both serve.
    pub async fn start() -> Self {
        let log = Log::new();
        let mut child = Command::new(crate::grpc_peer::python())
            .arg(receiver_script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.stdio())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tests/otlp/receiver.py with PORTICO_PYTHON");
        let stdin = child.stdin.take().expect("the receiver's stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("the receiver's stdout is piped"));
        let mut first_line = String::new();
        let read = tokio::time::timeout(DEADLINE, stdout.read_line(&mut first_line)).await;
        let Ok(Ports { grpc, http }) = serde_json::from_str(&first_line) else {
            panic!("tests/otlp/receiver.py did not print its ports ({read:?}, printed {first_line:?}); its log:\n{}", log.read());
        };
        let client = reqwest::Client::builder().no_proxy().timeout(DEADLINE).build().expect("an HTTP client");
        Self { child, _stdin: stdin, grpc_port: grpc, http_port: http, client, log }
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:<port>` (h2c).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The OTLP/HTTP base endpoint, `http://127.0.0.1:<port>`, as in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: traces go to its `/v1/traces`.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The OTLP/HTTP traces URL, `http://127.0.0.1:<port>/v1/traces`, as in
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn http_traces_url(&self) -> String {
        format!("{}/v1/traces", self.http_endpoint())
    }

    /// Every span received so far, over either transport, in the order received.
    pub async fn spans(&self) -> Vec<ReceivedSpan> {
        let url = format!("{}/spans", self.http_endpoint());
        let response = match self.client.get(&url).send().await {
            Ok(response) if response.status().is_success() => response,
            answer => panic!("GET {url} failed ({answer:?}); the receiver's log:\n{}", self.log.read()),
        };
        response.json().await.unwrap_or_else(|e| panic!("GET {url} answered no list of spans: {e}"))
    }

    /// The spans received once `done` holds for them; panics, showing the
    /// spans and the receiver's log, when it does not within `deadline`.
    pub async fn wait_for_spans(&self, deadline: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let last_seen = std::sync::Mutex::new(Vec::new());
        let (done, last_seen) = (&done, &last_seen);
        let check = move || async move {
            let spans = self.spans().await;
            if done(&spans) {
                return Some(spans);
            }
            *last_seen.lock().expect("the spans last seen") = spans;
            None
        };
        crate::eventually_explained(deadline, check, || {
            format!(
                "the spans the test waits for; received:\n{:#?}\nthe receiver's log:\n{}",
                last_seen.lock().expect("the spans last seen"),
                self.log.read()
            )
        })
        .await
    }

    /// What the receiver wrote on stderr so far (one line per HTTP request).
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// Kills the receiver and waits until it has exited, so its ports refuse
    /// connections (to test an exporter whose collector is down).
    pub async fn stop(&mut self) {
        self.child.kill().await.expect("kill tests/otlp/receiver.py");
    }
}
