//! RabbitMQ for the tests: the shared broker (`PORTICO_TEST_AMQP_URL`,
//! which `./scripts/test` makes sure answers), a throwaway broker of a
//! test's own for tests that stop and start it ([`ThrowawayBroker`], from
//! `tests/amqp/throwaway-rabbitmq`), and an independent AMQP peer written
//! with PyPI's pika ([`Consumer`], driving `tests/amqp/consumer.py`):
//! it declares and deletes exchanges and queues, consumes and reports each
//! message with its properties, publishes with confirms, calls over direct
//! reply-to and answers requests as an RPC responder. Like the gRPC peers
//! it runs on `PORTICO_PYTHON`; tests fail, never skip, without them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

use crate::process::{Log, free_port};

/// Longest the peer may take to start or to answer a command, and a
/// broker to boot or to stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// `tests/amqp/` in the workspace.
fn amqp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/amqp")
}

/// The shared test broker's URL, `PORTICO_TEST_AMQP_URL`. Tests that stop
/// a broker use a [`ThrowawayBroker`] instead.
pub fn amqp_url() -> String {
    std::env::var("PORTICO_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("PORTICO_TEST_AMQP_URL is not set: run the tests with ./scripts/test, which finds or starts RabbitMQ and sets it")
    })
}

/// Whether an AMQP 0-9-1 server answers on 127.0.0.1:`port`: it answers
/// the protocol header with a `connection.start` method frame.
async fn amqp_answers(port: u16) -> bool {
    let handshake = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let mut frame_header = [0u8; 7];
        stream.read_exact(&mut frame_header).await.ok()?;
        // A method frame (type 1) on channel 0.
        (frame_header[..3] == [1, 0, 0]).then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), handshake).await.ok().flatten().is_some()
}

/// The ports of a throwaway broker: AMQP, Erlang distribution, and its own epmd.
#[derive(Debug, Clone, Copy)]
struct BrokerPorts {
    amqp: u16,
    dist: u16,
    epmd: u16,
}

/// A RabbitMQ node of one test's own, on fresh loopback ports, with its
/// state in a temporary directory: it can be stopped and started again on
/// the same port with its durable exchanges and queues. Killed (with its
/// epmd) when dropped. It takes several seconds to boot.
pub struct ThrowawayBroker {
    dir: tempfile::TempDir,
    ports: BrokerPorts,
    /// The node's process group (led by the script), while it runs.
    running: Option<Child>,
    log: Log,
}

impl ThrowawayBroker {
    /// Starts a node on fresh ports and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        const PORT_TRIES: usize = 3;
        for _ in 0..PORT_TRIES {
            let ports = BrokerPorts { amqp: free_port(), dist: free_port(), epmd: free_port() };
            let dir = tempfile::tempdir().expect("a directory for the throwaway broker");
            let mut broker = Self { dir, ports, running: None, log: Log::new() };
            if broker.boot().await {
                return broker;
            }
        }
        panic!("the throwaway broker's ports were taken {PORT_TRIES} times in a row");
    }

    /// Starts the stopped node again, on the same ports and with the same state.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "the throwaway broker is running already");
        assert!(self.boot().await, "the throwaway broker could not start again: one of its ports was taken; log:\n{}", self.log.read());
    }

    /// Spawns the node and waits until it answers; false when it exited
    /// because one of its ports was taken meanwhile.
    async fn boot(&mut self) -> bool {
        use std::os::unix::process::CommandExt as _;
        let BrokerPorts { amqp, dist, epmd } = self.ports;
        let child = Command::new(amqp_dir().join("throwaway-rabbitmq"))
            .arg("run")
            .arg(self.dir.path())
            .args([amqp, dist, epmd].map(|port| port.to_string()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(self.log.stdio())
            .stderr(self.log.stdio())
            .spawn()
            .expect("spawn tests/amqp/throwaway-rabbitmq");
        let child = self.running.insert(child);
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if amqp_answers(amqp).await {
                return true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.kill();
                let log = self.log.read();
                let port_taken = ["eaddrinuse", "dist_port_already_used", "Address already in use"].iter().any(|s| log.contains(s));
                assert!(port_taken, "the throwaway broker exited ({status}) before it answered; log:\n{log}");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the throwaway broker did not answer on port {amqp} within {DEADLINE:?}; log:\n{}", self.log.read());
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2F`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2F", self.ports.amqp)
    }

    /// Its AMQP port.
    pub fn port(&self) -> u16 {
        self.ports.amqp
    }

    /// What the node and its script wrote so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// Stops the node as an operator would (SIGTERM: it closes its
    /// connections with `connection.close` and shuts down) and waits until
    /// it has exited, so its port refuses connections.
    pub async fn stop(&mut self) {
        let child = self.running.as_mut().expect("the throwaway broker is running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            assert!(started.elapsed() < DEADLINE, "the throwaway broker did not stop within {DEADLINE:?}; log:\n{}", self.log.read());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// Raises a memory alarm (`set_vm_memory_high_watermark 0`): the node
    /// blocks every connection that publishes (`connection.blocked`) until
    /// [`ThrowawayBroker::clear_memory_alarm`].
    pub async fn raise_memory_alarm(&self) {
        self.rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).await;
    }

    /// Clears the memory alarm (the default watermark, 0.4): blocked connections are unblocked.
    pub async fn clear_memory_alarm(&self) {
        self.rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    }

    /// Runs rabbitmqctl against the node (`throwaway-rabbitmq ctl`); it must succeed.
    async fn rabbitmqctl(&self, args: &[&str]) {
        let mut command = tokio::process::Command::new(amqp_dir().join("throwaway-rabbitmq"));
        command.arg("ctl").arg(self.dir.path()).args([self.ports.amqp, self.ports.epmd].map(|port| port.to_string())).args(args);
        let output = match tokio::time::timeout(DEADLINE, command.stdin(Stdio::null()).kill_on_drop(true).output()).await {
            Ok(output) => output.expect("run tests/amqp/throwaway-rabbitmq ctl"),
            Err(_) => panic!("rabbitmqctl {args:?} did not finish within {DEADLINE:?}"),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rabbitmqctl {args:?} failed ({}): {stderr}", output.status);
    }

    /// Kills the node's whole process group (epmd included) and reaps the script.
    fn kill(&mut self) {
        if let Some(mut child) = self.running.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).stderr(Stdio::null()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A message as the peer received it: consumed from a queue, a request to
/// one of its responders, or the reply to one of its calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Delivery {
    /// The queue it came from (`amq.rabbitmq.reply-to` for a reply).
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    #[serde(deserialize_with = "from_base64")]
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// 2 for persistent.
    pub delivery_mode: Option<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<u64>,
    pub app_id: Option<String>,
    pub reply_to: Option<String>,
    /// The headers table (text values as strings, `{}` when it has none).
    pub headers: serde_json::Map<String, Value>,
}

impl Delivery {
    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn from_base64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BASE64.decode(text).map_err(serde::de::Error::custom)
}

/// How the broker answered a publish with confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirm {
    Ack,
    Nack,
    /// Returned as unroutable (`mandatory`), then acked.
    Returned,
}

/// A message for [`Consumer::publish`]. `properties` is a JSON object of
/// any of `content_type`, `delivery_mode`, `message_id`, `correlation_id`,
/// `reply_to` and `headers`.
#[derive(Debug, Clone, Default)]
pub struct Publish<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: Value,
    pub mandatory: bool,
}

/// How [`Consumer::declare_queue`] declares a queue. One that is not
/// durable is exclusive to the peer's connection: it goes with the peer
/// (others may still publish to it).
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    pub durable: bool,
    /// `x-max-length`.
    pub max_length: Option<u32>,
    /// `x-overflow: reject-publish`: the broker nacks what a full queue cannot take.
    pub reject_publish: bool,
}

/// How a responder answers each request on its `reply_to`, with the
/// request's `correlation_id`: the request's body after `prefix`, with
/// `content_type` and `headers` (a JSON object, say a status header),
/// after `delay`; or never, when `silent`.
#[derive(Debug, Clone, Default)]
pub struct Responder {
    pub prefix: Vec<u8>,
    pub content_type: Option<String>,
    pub headers: Value,
    pub delay: Duration,
    pub silent: bool,
}

impl Responder {
    /// Answers `prefix` + the request's body at once.
    pub fn echo(prefix: &str) -> Self {
        Self { prefix: prefix.as_bytes().to_vec(), ..Self::default() }
    }

    /// Receives requests (they are still reported) and never answers.
    pub fn silent() -> Self {
        Self { silent: true, ..Self::default() }
    }
}

/// The command side of the peer: one command at a time, answered in order.
struct Commands {
    stdin: tokio::process::ChildStdin,
    answers: mpsc::UnboundedReceiver<Result<Value, String>>,
}

/// A running `tests/amqp/consumer.py` on one connection to a broker. Its
/// messages arrive in [`Consumer::next_message`]. When dropped, its stdin
/// closes: it deletes the transient exchanges it declared, and exits. Its
/// transient queues are exclusive to its connection and go with it;
/// durable exchanges and queues stay, so declare them only on a
/// [`ThrowawayBroker`].
pub struct Consumer {
    commands: Mutex<Commands>,
    messages: Mutex<mpsc::UnboundedReceiver<Delivery>>,
    _child: tokio::process::Child,
    log: Log,
}

impl Consumer {
    /// Starts the peer connected to `url` and waits until it is.
    pub async fn start(url: &str) -> Self {
        let log = Log::new();
        let mut child = tokio::process::Command::new(crate::grpc_peer::python())
            .arg(amqp_dir().join("consumer.py"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.stdio())
            .spawn()
            .expect("spawn tests/amqp/consumer.py with PORTICO_PYTHON");
        let stdin = child.stdin.take().expect("the peer's stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("the peer's stdout is piped")).lines();
        let ready = tokio::time::timeout(DEADLINE, stdout.next_line()).await;
        let Ok(Ok(Some(line))) = ready else {
            panic!("tests/amqp/consumer.py did not start ({ready:?}); its log:\n{}", log.read());
        };
        assert_eq!(line, r#"{"ready": true}"#, "tests/amqp/consumer.py's first line; its log:\n{}", log.read());
        let (answers_sender, answers) = mpsc::unbounded_channel();
        let (messages_sender, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let mut line: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("the peer printed {line:?}, not JSON: {e}"));
                if let Some(message) = line.get_mut("message") {
                    let delivery = serde_json::from_value(message.take()).unwrap_or_else(|e| panic!("the peer's message {line}: {e}"));
                    let _ = messages_sender.send(delivery);
                } else if let Some(reply) = line.get_mut("reply") {
                    let _ = answers_sender.send(Ok(reply.take()));
                } else {
                    let _ = answers_sender.send(Err(line["error"].as_str().unwrap_or_default().to_owned()));
                }
            }
        });
        Self { commands: Mutex::new(Commands { stdin, answers }), messages: Mutex::new(messages), _child: child, log }
    }

    /// Runs one command; its answer, or what the broker or pika refused.
    async fn try_command(&self, command: Value) -> Result<Value, String> {
        let mut commands = self.commands.lock().await;
        let line = format!("{command}\n");
        if commands.stdin.write_all(line.as_bytes()).await.is_err() {
            panic!("tests/amqp/consumer.py has exited; its log:\n{}", self.log.read());
        }
        match tokio::time::timeout(DEADLINE, commands.answers.recv()).await {
            Ok(Some(answer)) => answer,
            Ok(None) => panic!("tests/amqp/consumer.py exited on {command}; its log:\n{}", self.log.read()),
            Err(_) => panic!("tests/amqp/consumer.py did not answer {command} within {DEADLINE:?}; its log:\n{}", self.log.read()),
        }
    }

    /// Runs one command that must succeed.
    async fn command(&self, command: Value) -> Value {
        self.try_command(command.clone()).await.unwrap_or_else(|error| panic!("{command} failed: {error}"))
    }

    /// Declares a transient exchange of `kind` (`direct`, `topic`, `fanout`, `headers`).
    pub async fn declare_exchange(&self, name: &str, kind: &str) {
        self.command(json!({"op": "declare_exchange", "exchange": name, "type": kind})).await;
    }

    /// Declares a durable exchange of `kind`: it outlives a broker restart.
    pub async fn declare_durable_exchange(&self, name: &str, kind: &str) {
        self.command(json!({"op": "declare_exchange", "exchange": name, "type": kind, "durable": true})).await;
    }

    /// Deletes an exchange (say, under a publishing gateway).
    pub async fn delete_exchange(&self, name: &str) {
        self.command(json!({"op": "delete_exchange", "exchange": name})).await;
    }

    /// Declares a queue and answers its name (the server's choice for `""`).
    pub async fn declare_queue(&self, name: &str, options: QueueOptions) -> String {
        let QueueOptions { durable, max_length, reject_publish } = options;
        let answer = self
            .command(json!({
                "op": "declare_queue", "queue": name, "durable": durable, "max_length": max_length,
                "reject_publish": reject_publish,
            }))
            .await;
        answer["queue"].as_str().expect("the declared queue's name").to_owned()
    }

    /// Binds `queue` to `exchange` with `routing_key`.
    pub async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.command(json!({"op": "bind", "queue": queue, "exchange": exchange, "routing_key": routing_key})).await;
    }

    /// Deletes a queue.
    pub async fn delete_queue(&self, name: &str) {
        self.command(json!({"op": "delete_queue", "queue": name})).await;
    }

    /// How many messages wait in `queue` (ready, not being consumed).
    pub async fn message_count(&self, queue: &str) -> u64 {
        let answer = self.command(json!({"op": "count", "queue": queue})).await;
        answer["messages"].as_u64().expect("a message count")
    }

    /// Consumes `queue` (auto-ack): each message arrives in [`Consumer::next_message`].
    pub async fn consume(&self, queue: &str) {
        self.command(json!({"op": "consume", "queue": queue})).await;
    }

    /// Stops consuming (or responding on) `queue`; messages then wait there.
    pub async fn cancel(&self, queue: &str) {
        self.command(json!({"op": "cancel", "queue": queue})).await;
    }

    /// Answers each request arriving on `queue` as `responder` says; the
    /// requests arrive in [`Consumer::next_message`] too.
    pub async fn respond(&self, queue: &str, responder: Responder) {
        let Responder { prefix, content_type, headers, delay, silent } = responder;
        let headers = if headers.is_null() { json!({}) } else { headers };
        self.command(json!({
            "op": "respond", "queue": queue, "prefix": BASE64.encode(prefix), "content_type": content_type,
            "headers": headers, "delay_ms": delay.as_millis() as u64, "silent": silent,
        }))
        .await;
    }

    /// Publishes on a channel in confirm mode and answers the broker's confirm.
    pub async fn publish(&self, message: Publish<'_>) -> Confirm {
        self.try_publish(message).await.unwrap_or_else(|error| panic!("publish failed: {error}"))
    }

    /// Like [`Consumer::publish`], with what the broker refused (say, a
    /// missing exchange: the channel is closed, and the peer opens another).
    pub async fn try_publish(&self, message: Publish<'_>) -> Result<Confirm, String> {
        let Publish { exchange, routing_key, body, properties, mandatory } = message;
        let properties = if properties.is_null() { json!({}) } else { properties };
        let answer = self
            .try_command(json!({
                "op": "publish", "exchange": exchange, "routing_key": routing_key, "body": BASE64.encode(body),
                "properties": properties, "mandatory": mandatory,
            }))
            .await?;
        Ok(serde_json::from_value(answer["confirm"].clone()).unwrap_or_else(|e| panic!("the peer's confirm {answer}: {e}")))
    }

    /// Sends `body` to `routing_key` on the default exchange with
    /// `reply_to` set to direct reply-to and a fresh `correlation_id`, and
    /// answers the reply with that `correlation_id`, or `None` after `timeout`.
    pub async fn call(&self, routing_key: &str, body: &[u8], timeout: Duration) -> Option<Delivery> {
        let answer = self
            .command(json!({
                "op": "call", "exchange": "", "routing_key": routing_key, "body": BASE64.encode(body),
                "timeout_ms": timeout.as_millis() as u64,
            }))
            .await;
        if answer["timeout"] == true {
            return None;
        }
        Some(serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("the peer's reply {answer}: {e}")))
    }

    /// The next message consumed or request received; panics after a generous deadline.
    pub async fn next_message(&self) -> Delivery {
        let message = self.next_message_within(DEADLINE).await;
        message.unwrap_or_else(|| panic!("no message reached tests/amqp/consumer.py within {DEADLINE:?}; its log:\n{}", self.log.read()))
    }

    /// The next message, or `None` when none arrives within `wait` (to
    /// check that nothing more came).
    pub async fn next_message_within(&self, wait: Duration) -> Option<Delivery> {
        let mut messages = self.messages.lock().await;
        tokio::time::timeout(wait, messages.recv()).await.ok().flatten()
    }

    /// What the peer wrote on stderr so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }
}
