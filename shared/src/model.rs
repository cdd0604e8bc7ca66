//! The entities of a gateway's config, as users write them and as data
//! planes receive them. Each entity carries `id`, `created_at` and
//! `updated_at`, assigned by the control plane; a declarative document may
//! leave them out (the control plane keeps them stable by name).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;
use uuid::Uuid;

/// The whole config of one gateway: what a data plane serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub consumers: Vec<Consumer>,
}

/// Where traffic goes: a named group of upstream targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Assigned by the control plane; may be given on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// `[a-z0-9._-]`, 1 to 64 characters, starting with a letter or digit.
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// At least one; each `scheme://host[:port]` with the service's protocol.
    pub targets: Vec<Target>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Upstream protocol of a service. Only protocols that data planes speak
/// are accepted (`https` upstreams arrive with upstream TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Http => "http",
        }
    }
}

/// One upstream address of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port` (no path, query or credentials).
    pub url: String,
    /// Relative share of traffic, 0 to 1000; 0 takes a target out of rotation.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// How a service spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin.
    #[default]
    RoundRobin,
}

/// Upstream timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time to establish the upstream connection, 1 to 60000 (default 2000).
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u32,
    /// Time from sending the request until the upstream's response headers
    /// arrive, 1 to 3600000 (default 30000); the body then streams.
    #[serde(default = "default_request_ms")]
    pub request_ms: u32,
}

fn default_connect_ms() -> u32 {
    2_000
}

fn default_request_ms() -> u32 {
    30_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect_ms: default_connect_ms(), request_ms: default_request_ms() }
    }
}

/// What traffic a route takes, and which service it goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// Name of the service that serves this route.
    pub service: String,
    /// Path prefixes, matched on segment boundaries (`/users` takes
    /// `/users/7`, not `/usersx`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host names, exact or `*.example.com`; empty means any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Request headers that must be present with one of the listed values.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the matched path prefix before calling the upstream.
    #[serde(default = "default_true")]
    pub strip_path: bool,
    /// Send the client's `Host` header upstream instead of the target's.
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

fn default_true() -> bool {
    true
}

/// Who calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// 1 to 128 characters of `[A-Za-z0-9._@+-]`, unique in the gateway.
    pub username: String,
    /// The caller's id in your own systems; unique in the gateway when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A policy on a route or a service, chosen by `type`. Only policy types
/// that data planes enforce are accepted; the others are refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Policy {
    /// Refuse request bodies larger than `max_bytes` with `413`.
    RequestSizeLimit {
        /// 1 byte to 1 GiB.
        max_bytes: u64,
    },
}

/// The kinds of entity a gateway's config holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Service,
    Route,
    Consumer,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Route => "route",
            Self::Consumer => "consumer",
        }
    }
}

/// What every entity of a config has in common; the admin API, the
/// declarative merge and the diff are written once against it.
pub trait Entity: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: EntityKind;
    /// The field that names the entity (`name`, or `username` for consumers).
    const NAME_FIELD: &'static str;
    /// The key of this entity's list in a [`GatewayConfig`].
    const COLLECTION: &'static str;

    fn name(&self) -> &str;
    fn id(&self) -> Option<Uuid>;
    fn collection(config: &GatewayConfig) -> &Vec<Self>;
    fn collection_mut(config: &mut GatewayConfig) -> &mut Vec<Self>;
    /// The entity's own fields, with the server-assigned ones set.
    fn set_meta(&mut self, id: Option<Uuid>, created_at: Option<DateTime<Utc>>, updated_at: Option<DateTime<Utc>>);
    fn created_at(&self) -> Option<DateTime<Utc>>;
    fn updated_at(&self) -> Option<DateTime<Utc>>;

    /// The entity as a user would write it: without server-assigned fields.
    fn declarative(&self) -> Self {
        let mut copy = self.clone();
        copy.set_meta(None, None, None);
        copy
    }
}

macro_rules! entity {
    ($type:ty, $kind:expr, $collection:ident, $name:ident) => {
        impl Entity for $type {
            const KIND: EntityKind = $kind;
            const NAME_FIELD: &'static str = stringify!($name);
            const COLLECTION: &'static str = stringify!($collection);

            fn name(&self) -> &str {
                &self.$name
            }
            fn id(&self) -> Option<Uuid> {
                self.id
            }
            fn collection(config: &GatewayConfig) -> &Vec<Self> {
                &config.$collection
            }
            fn collection_mut(config: &mut GatewayConfig) -> &mut Vec<Self> {
                &mut config.$collection
            }
            fn set_meta(&mut self, id: Option<Uuid>, created_at: Option<DateTime<Utc>>, updated_at: Option<DateTime<Utc>>) {
                self.id = id;
                self.created_at = created_at;
                self.updated_at = updated_at;
            }
            fn created_at(&self) -> Option<DateTime<Utc>> {
                self.created_at
            }
            fn updated_at(&self) -> Option<DateTime<Utc>> {
                self.updated_at
            }
        }
    };
}

entity!(Service, EntityKind::Service, services, name);
entity!(Route, EntityKind::Route, routes, name);
entity!(Consumer, EntityKind::Consumer, consumers, username);

impl GatewayConfig {
    /// The config as a user would write it: entities without
    /// server-assigned fields, in name order.
    pub fn declarative(&self) -> Self {
        Self {
            services: self.services.iter().map(Entity::declarative).collect(),
            routes: self.routes.iter().map(Entity::declarative).collect(),
            consumers: self.consumers.iter().map(Entity::declarative).collect(),
        }
    }

    /// Sort every collection by name: the canonical order of a snapshot.
    pub fn sort(&mut self) {
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
        self.consumers.sort_by(|a, b| a.username.cmp(&b.username));
    }
}
