//! One connection per service per node: the [`Broker`].
//!
//! A supervisor task keeps the connection: it tries the service's targets
//! in order (failover), and after a loss reconnects with capped
//! exponential backoff. Requests never wait on a broker that is down:
//! while the connection is lost or the broker blocks publishers
//! (`connection.blocked`, a resource alarm) they fail at once with
//! [`AmqpError::Unavailable`] (`503` with `Retry-After`); only the first
//! connection of a new broker is waited for, within the request's deadline.
//!
//! Channels come from a bounded pool: each is in confirm mode and consumes
//! RabbitMQ's direct reply-to pseudo-queue (no-ack) into its own
//! [`ReplySlot`], so any of them serves `publish` and `rpc` alike
//! ([`super::rpc`]). A request holds its channel alone ([`Lease`]) until it
//! ends. A channel whose state is unknown (the broker closed it over a
//! publish to a missing exchange, or an `rpc` call ended without its reply)
//! is discarded: closed, never returned to the pool. Channels of a lost
//! connection are dropped with it.
//!
//! A broker is carried across config versions while its [`BrokerSettings`]
//! are unchanged ([`Broker::new`] with the previous version's).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::uri::{AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::AmqpError;
use super::metrics;
use super::rpc::ReplySlot;

/// RabbitMQ's direct reply-to pseudo-queue.
pub(super) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// First pause after a failed connection attempt; it doubles up to [`BrokerSettings::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Heartbeat interval asked of the broker (seconds) unless a target's URI
/// sets `heartbeat`: a silently dead connection is noticed within about
/// twice this, instead of RabbitMQ's default 60 s.
const HEARTBEAT_S: u16 = 10;

/// Why a request fails while the broker blocks publishers.
pub(super) const BLOCKED: &str = "the broker blocks publishers (resource alarm)";

/// How often the supervisor checks a connection that sends no events.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// What a service's broker connection is made of; the lead maps the
/// service (protocol `amqp`/`amqps`, targets, credentials, TLS) onto it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// The service's name (metrics, errors).
    pub service: Arc<str>,
    /// `amqp://host:port/vhost` or `amqps://…` (vhost percent-encoded,
    /// `%2F` for `/`), tried in order.
    pub targets: Vec<String>,
    /// The broker login; `None` keeps a target's own (else guest/guest).
    pub credentials: Option<Credentials>,
    /// For `amqps` targets.
    pub tls: TlsSettings,
    /// Most channels open at once; a request waits for one (within its deadline).
    pub pool_size: usize,
    /// How long one target may take to connect.
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// The `Retry-After` of a `503`.
    pub retry_after: Duration,
}

impl fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("service", &self.service)
            .field("targets", &self.targets)
            .field("credentials", &self.credentials)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// A broker login (write-only in the model: never logged here either).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// TLS towards `amqps` targets: the broker verified against the service's
/// CA bundle (else the system roots), with its client certificate if any.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificates.
    pub ca_bundle: Option<String>,
    /// PEM certificate chain and PEM (PKCS#8, PKCS#1 or SEC1) key.
    pub client_cert: Option<(String, String)>,
}

/// The connection as the supervisor last saw it.
#[derive(Clone)]
enum Link {
    /// Never connected yet: requests wait (within their deadline).
    Connecting,
    Up(Arc<Connected>),
    /// Lost or never reached: requests fail at once.
    Down(String),
}

struct Connected {
    connection: Connection,
    /// Tells this connection's channels from an earlier one's.
    generation: u64,
}

/// A channel of the pool, of the connection of `generation`, with where its direct replies go.
struct PooledChannel {
    channel: Channel,
    replies: Arc<ReplySlot>,
    generation: u64,
}

/// What the supervisor, the pool and the reply consumers share.
pub(super) struct Shared {
    settings: BrokerSettings,
    targets: Vec<AMQPUri>,
    tls: OwnedTLSConfig,
    link: watch::Sender<Link>,
    blocked: AtomicBool,
    idle: Mutex<Vec<PooledChannel>>,
    permits: Arc<Semaphore>,
    /// `rpc` calls awaiting their reply.
    pub(super) rpc_waiters: AtomicUsize,
    /// Replies that are not the reply of the call holding their channel (late, or not ours).
    stray_replies: AtomicU64,
}

/// A service's broker connection and channel pool.
pub struct Broker {
    pub(super) shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker").field("settings", &self.shared.settings).finish_non_exhaustive()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Link::Up(connected) = &*self.shared.link.borrow()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let connected = Arc::clone(connected);
            runtime.spawn(async move {
                let _ = connected.connection.close(200, "portico: service removed or changed".into()).await;
            });
        }
    }
}

impl Broker {
    /// The broker of `settings`: `previous` (the last config version's
    /// broker of the same service) when it serves the same settings, else
    /// a new one, connecting in the background (on the current Tokio runtime).
    /// A target that is not an AMQP URI is an error naming it.
    pub fn new(settings: BrokerSettings, previous: Option<&Arc<Broker>>) -> Result<Arc<Broker>, String> {
        if let Some(previous) = previous.filter(|previous| previous.serves(&settings)) {
            return Ok(Arc::clone(previous));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| format!("service '{}': a broker needs a Tokio runtime", settings.service))?;
        if settings.targets.is_empty() {
            return Err(format!("service '{}': no broker target", settings.service));
        }
        let targets = settings
            .targets
            .iter()
            .map(|target| {
                let mut uri = AMQPUri::from_str(target).map_err(|e| format!("service '{}': target '{target}': {e}", settings.service))?;
                uri.query.heartbeat.get_or_insert(HEARTBEAT_S);
                if let Some(credentials) = &settings.credentials {
                    uri.authority.userinfo =
                        AMQPUserInfo { username: credentials.username.clone(), password: credentials.password.clone() };
                }
                Ok(uri)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let tls = tls_config(&settings.tls);
        let pool_size = settings.pool_size.max(1);
        metrics::pool_size(&settings.service, pool_size);
        let shared = Arc::new(Shared {
            targets,
            tls,
            link: watch::Sender::new(Link::Connecting),
            blocked: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(pool_size)),
            rpc_waiters: AtomicUsize::new(0),
            stray_replies: AtomicU64::new(0),
            settings,
        });
        let supervisor = runtime.spawn(supervise(Arc::clone(&shared)));
        Ok(Arc::new(Broker { shared, supervisor }))
    }

    /// Whether this broker was made for `settings` (and so is kept).
    pub fn serves(&self, settings: &BrokerSettings) -> bool {
        self.shared.settings == *settings
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.shared.settings
    }

    /// Whether the connection is up (and the broker not blocking publishers).
    pub fn is_available(&self) -> bool {
        matches!(*self.shared.link.borrow(), Link::Up(_)) && !self.shared.blocked.load(Ordering::Acquire)
    }

    /// `rpc` calls awaiting their reply now.
    pub fn rpc_waiters(&self) -> usize {
        self.shared.rpc_waiters.load(Ordering::Relaxed)
    }

    /// Replies dropped since the start because the call holding their channel
    /// awaits another correlation id, or none.
    pub fn stray_replies(&self) -> u64 {
        self.shared.stray_replies.load(Ordering::Relaxed)
    }

    /// Channels lent to requests now.
    pub fn channels_in_use(&self) -> usize {
        self.shared.settings.pool_size.max(1) - self.shared.permits.available_permits()
    }

    /// Waits until the broker is available, at most `timeout` (tests, readiness).
    pub async fn wait_available(&self, timeout: Duration) -> bool {
        let mut link = self.shared.link.subscribe();
        let available = async {
            loop {
                if self.is_available() {
                    return;
                }
                if link.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, available).await.is_ok()
    }

    /// A channel of the pool for a request due by `deadline`.
    pub(super) async fn lease(&self, deadline: Instant) -> Result<Lease, AmqpError> {
        let shared = &self.shared;
        let connected = self.connected(deadline).await?;
        if shared.blocked.load(Ordering::Acquire) {
            return Err(shared.unavailable(BLOCKED));
        }
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&shared.permits).acquire_owned())
            .await
            .map_err(|_| shared.unavailable("every channel of the pool is busy"))?
            .map_err(|_| shared.unavailable("the pool is closed"))?;
        let reused = {
            let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|pooled| pooled.generation == connected.generation && pooled.channel.status().connected());
            idle.pop()
        };
        let (channel, replies) = match reused {
            Some(pooled) => (pooled.channel, pooled.replies),
            None => tokio::time::timeout_at(deadline, open_channel(shared, &connected.connection))
                .await
                .map_err(|_| shared.unavailable("opening a channel timed out"))?
                .map_err(|e| shared.unavailable(&format!("cannot open a channel: {e}")))?,
        };
        metrics::channels_in_use(&shared.settings.service, self.channels_in_use());
        Ok(Lease { channel, replies, keep: true, generation: connected.generation, shared: Arc::clone(shared), _permit: permit })
    }

    /// The connection, waiting for a first one until `deadline`.
    async fn connected(&self, deadline: Instant) -> Result<Arc<Connected>, AmqpError> {
        let mut link = self.shared.link.subscribe();
        loop {
            let current = link.borrow_and_update().clone();
            match current {
                Link::Up(connected) => return Ok(connected),
                Link::Down(reason) => return Err(self.shared.unavailable(&reason)),
                Link::Connecting => {}
            }
            match tokio::time::timeout_at(deadline, link.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(self.shared.unavailable("still connecting")),
            }
        }
    }
}

impl Shared {
    pub(super) fn unavailable(&self, reason: &str) -> AmqpError {
        AmqpError::Unavailable {
            service: self.settings.service.to_string(),
            reason: reason.to_owned(),
            retry_after_s: self.retry_after_s(),
        }
    }

    /// Returns once the broker blocks publishers (`connection.blocked`).
    /// RabbitMQ says so only when a publish arrives under a resource
    /// alarm: that publish's confirm will not come until the alarm clears,
    /// so its wait ends here.
    pub(super) async fn until_blocked(&self) {
        let mut link = self.link.subscribe();
        while !self.blocked.load(Ordering::Acquire) {
            if link.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Records `connection.blocked`/`unblocked`, waking [`Broker::wait_available`] and [`Shared::until_blocked`].
    fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Release);
        self.link.send_modify(|_| {});
    }

    pub(super) fn retry_after_s(&self) -> u64 {
        self.settings.retry_after.as_secs().max(1)
    }

    pub(super) fn service(&self) -> &str {
        &self.settings.service
    }

    fn count_stray_reply(&self) {
        self.stray_replies.fetch_add(1, Ordering::Relaxed);
        metrics::stray_reply(self.service());
    }
}

/// A pooled channel lent to one request; back to the pool when dropped,
/// unless the broker closed it or [`Lease::discard`] was called.
pub(super) struct Lease {
    channel: Channel,
    replies: Arc<ReplySlot>,
    keep: bool,
    generation: u64,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub(super) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Where the channel's direct replies go.
    pub(super) fn replies(&self) -> &ReplySlot {
        &self.replies
    }

    /// Closes the channel when the lease ends instead of returning it (its state is unknown).
    pub(super) fn discard(&mut self) {
        self.keep = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let open = self.channel.status().connected();
        if self.keep && open {
            let pooled = PooledChannel { channel: self.channel.clone(), replies: Arc::clone(&self.replies), generation: self.generation };
            self.shared.idle.lock().unwrap_or_else(PoisonError::into_inner).push(pooled);
        } else if open && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Its reply consumer keeps it open otherwise; once closed, the broker drops what is sent to its reply-to.
            let channel = self.channel.clone();
            let wait = self.shared.settings.connect_timeout;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(wait, channel.close(200, "portico: channel discarded".into())).await;
            });
        }
        // The permit is released after this; count it as returned.
        let in_use = self.shared.settings.pool_size.max(1) - self.shared.permits.available_permits() - 1;
        metrics::channels_in_use(self.shared.service(), in_use);
    }
}

/// A new channel in confirm mode, consuming direct replies into its slot.
async fn open_channel(shared: &Arc<Shared>, connection: &Connection) -> lapin::Result<(Channel, Arc<ReplySlot>)> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "portico-replies".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await?;
    let slot = Arc::new(ReplySlot::default());
    tokio::spawn(consume_replies(Arc::downgrade(shared), Arc::clone(&slot), replies));
    Ok((channel, slot))
}

/// Hands a channel's direct replies to its slot until the channel closes;
/// counts those the call holding the channel does not await.
async fn consume_replies(shared: Weak<Shared>, slot: Arc<ReplySlot>, mut replies: lapin::Consumer) {
    while let Some(delivery) = replies.next().await {
        let Some(shared) = shared.upgrade() else { return };
        match delivery {
            Ok(delivery) => {
                if !slot.deliver(delivery) {
                    shared.count_stray_reply();
                }
            }
            Err(error) => {
                tracing::debug!(service = shared.service(), %error, "reply consumer ended");
                return;
            }
        }
    }
}

/// Keeps the connection: connect (targets in order), watch, reconnect with backoff.
async fn supervise(shared: Arc<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    let mut generation = 0;
    loop {
        match connect_any(&shared).await {
            Ok(connection) => {
                generation += 1;
                backoff = FIRST_BACKOFF;
                let events = connection.events_listener();
                shared.blocked.store(connection.status().blocked(), Ordering::Release);
                let connected = Arc::new(Connected { connection, generation });
                shared.link.send_replace(Link::Up(Arc::clone(&connected)));
                metrics::connected(shared.service(), true);
                tracing::info!(service = shared.service(), "connected to the broker");
                let reason = watch_connection(&shared, &connected.connection, events).await;
                tracing::warn!(service = shared.service(), %reason, "lost the broker connection");
                // Closed if it is not already (a heartbeat missed on a half-open socket).
                let _ =
                    tokio::time::timeout(shared.settings.connect_timeout, connected.connection.close(320, "portico: reconnecting".into()))
                        .await;
                shared.link.send_replace(Link::Down(reason));
                shared.blocked.store(false, Ordering::Release);
                shared.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
                metrics::connected(shared.service(), false);
            }
            Err(reason) => {
                tracing::warn!(service = shared.service(), %reason, "cannot connect to the broker");
                shared.link.send_replace(Link::Down(reason));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(shared.settings.max_backoff.max(FIRST_BACKOFF));
    }
}

/// Follows a connection's events until it is lost; answers why.
async fn watch_connection(shared: &Shared, connection: &Connection, events: impl futures::Stream<Item = Event> + Send + 'static) -> String {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(service = shared.service(), %reason, "the broker blocks publishers");
                    shared.set_blocked(true);
                }
                Some(Event::ConnectionUnblocked) => {
                    tracing::info!(service = shared.service(), "the broker unblocked publishers");
                    shared.set_blocked(false);
                }
                // A channel's error (a soft one: the broker closed that channel) is reported here too.
                Some(Event::Error(error)) if error.is_amqp_soft_error() || connection.status().connected() => {
                    tracing::debug!(service = shared.service(), %error, "channel error");
                }
                Some(Event::Error(error)) => return format!("connection error: {error}"),
                Some(_) => {}
                None => return "connection closed".to_owned(),
            },
            _ = check.tick() => {
                if !connection.status().connected() {
                    return "connection closed".to_owned();
                }
            }
        }
    }
}

/// Connects to the first target that answers.
async fn connect_any(shared: &Shared) -> Result<Connection, String> {
    let mut failures = Vec::new();
    for uri in &shared.targets {
        let target = format!("{}:{}", uri.authority.host, uri.authority.port);
        let properties = ConnectionProperties::default().with_connection_name(format!("portico {}", shared.service()).into());
        let attempt = async {
            let runtime = lapin::runtime::default_runtime()?;
            if uri.scheme == AMQPScheme::AMQPS {
                Connection::connect_uri_with_config(uri.clone(), properties, shared.tls.clone(), runtime).await
            } else {
                Connection::connect_uri_with_runtime(uri.clone(), properties, runtime).await
            }
        };
        match tokio::time::timeout(shared.settings.connect_timeout, attempt).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => failures.push(format!("{target}: {error}")),
            Err(_) => failures.push(format!("{target}: timed out")),
        }
    }
    Err(failures.join("; "))
}

/// lapin's TLS settings: the CA bundle, else the system roots (as PEM).
fn tls_config(tls: &TlsSettings) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: tls
            .client_cert
            .as_ref()
            .map(|(cert, key)| OwnedIdentity::PKCS8 { pem: cert.clone().into_bytes(), key: key.clone().into_bytes() }),
        cert_chain: Some(tls.ca_bundle.clone().unwrap_or_else(|| system_roots_pem().to_owned())),
    }
}

/// The system's trusted roots as PEM, read once per process.
fn system_roots_pem() -> &'static str {
    static ROOTS: OnceLock<String> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut pem = String::new();
        for cert in found.certs {
            let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem
    })
}
