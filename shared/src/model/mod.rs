//! The entities of a gateway's config, as users write them and as data
//! planes receive them: one module per entity family, each with the
//! `impl Validate` of its types beside them (checks of one entity, with
//! fields relative to it). This module holds the whole config
//! ([`GatewayConfig`]) and what every entity has in common ([`Entity`]);
//! checks across entities (references, uniqueness) are
//! [`crate::validate`]'s. Each entity carries `id`, `created_at` and
//! `updated_at`, assigned by the control plane; a declarative document may
//! leave them out (the control plane keeps them stable by name).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;
use uuid::Uuid;

/// Implements [`Entity`] for an entity type; used beside each type.
macro_rules! entity {
    ($type:ty, $kind:expr, $collection:ident, $name:ident $(, owner = $owner:ident)? $(, secrets = ($redact:path, $keep:path))? $(, derived = $drop_derived:path)?) => {
        impl $crate::model::Entity for $type {
            const KIND: $crate::model::EntityKind = $kind;
            const NAME_FIELD: &'static str = stringify!($name);
            const COLLECTION: &'static str = stringify!($collection);

            fn name(&self) -> &str {
                &self.$name
            }
            fn id(&self) -> Option<uuid::Uuid> {
                self.id
            }
            fn collection(config: &$crate::model::GatewayConfig) -> &Vec<Self> {
                &config.$collection
            }
            fn collection_mut(config: &mut $crate::model::GatewayConfig) -> &mut Vec<Self> {
                &mut config.$collection
            }
            fn set_meta(
                &mut self,
                id: Option<uuid::Uuid>,
                created_at: Option<chrono::DateTime<chrono::Utc>>,
                updated_at: Option<chrono::DateTime<chrono::Utc>>,
            ) {
                self.id = id;
                self.created_at = created_at;
                self.updated_at = updated_at;
            }
            fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
                self.created_at
            }
            fn updated_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
                self.updated_at
            }
            fn tags(&self) -> &[String] {
                &self.tags
            }
            fn tags_mut(&mut self) -> &mut Vec<String> {
                &mut self.tags
            }
            $(
                fn owner(&self) -> Option<&str> {
                    Some(&self.$owner)
                }
            )?
            $(
                fn shown(&self) -> Self {
                    let mut shown = self.clone();
                    $redact(&mut shown);
                    shown
                }
                fn keep_secrets_of(&mut self, previous: &Self) {
                    $keep(self, previous);
                }
            )?
            $(
                fn drop_derived(&mut self) {
                    $drop_derived(self);
                }
            )?
        }
    };
}

pub mod aggregate;
pub mod amqp;
mod certificate;
mod consumer;
pub(crate) mod credential;
pub mod grpc;
pub mod policy;
pub mod proto;
mod route;
mod service;

pub use aggregate::{Aggregate, AggregateCall, Merge};
pub use amqp::{AmqpBackend, AmqpMode, AmqpTarget, BrokerCredentials};
pub use certificate::Certificate;
pub use consumer::Consumer;
pub use credential::{Credential, CredentialKind, JwtAlgorithm, JwtCredential, KeyAuthCredential};
pub use grpc::{GrpcBackend, JsonNames};
pub use policy::{
    BackendFailure, JwtPolicy, KeyAuthPolicy, Policy, RateLimitAlgorithm, RateLimitBackend, RateLimitKey, RateLimitPolicy, ScopesPolicy,
    effective_policies,
};
pub use proto::Proto;
pub use route::{Route, RouteBackend};
pub use service::{
    ActiveHealthCheck, CircuitBreaker, HashOn, HealthCheck, LoadBalancing, PassiveHealthCheck, Protocol, Retries, RetryOn, Service, Target,
    Timeouts, UpstreamTls,
};

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
    /// Empty lists are left out of the encoding, so snapshots made before
    /// credentials existed keep their canonical bytes and hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// TLS certificates the data planes serve, chosen by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Protobuf descriptors of the services behind `grpc` routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protos: Vec<Proto>,
    /// Policies for every route of the gateway; a route's or service's own
    /// policy of the same type takes precedence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// Proxies (CIDRs) in front of the gateway whose `X-Forwarded-For`
    /// entries are believed when finding a client's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// The kinds of entity a gateway's config holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Service,
    Route,
    Consumer,
    Credential,
    Certificate,
    Proto,
    /// The gateway's own settings (its `policies`), in a diff.
    Gateway,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Route => "route",
            Self::Consumer => "consumer",
            Self::Credential => "credential",
            Self::Certificate => "certificate",
            Self::Proto => "proto",
            Self::Gateway => "gateway",
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
    /// Free-form labels users select entities by (`portico apply --select-tag`).
    fn tags(&self) -> &[String];
    fn tags_mut(&mut self) -> &mut Vec<String>;
    /// The name of the entity this one belongs to (a credential's consumer).
    fn owner(&self) -> Option<&str> {
        None
    }

    /// The entity as the admin API shows it: without write-only secrets
    /// (a certificate's private key).
    fn shown(&self) -> Self {
        self.clone()
    }

    /// Takes the write-only secrets a write left out from the entity it replaces.
    fn keep_secrets_of(&mut self, _previous: &Self) {}

    /// Drops what the control plane derives from the entity's other fields
    /// (a proto's descriptor set, compiled from its `files`), so that a
    /// write derives it again from what was written.
    fn drop_derived(&mut self) {}

    /// The entity as a user would write it: without server-assigned fields.
    fn declarative(&self) -> Self {
        let mut copy = self.clone();
        copy.set_meta(None, None, None);
        copy
    }
}

impl GatewayConfig {
    /// The config as a user would write it: entities without
    /// server-assigned fields, in name order.
    pub fn declarative(&self) -> Self {
        Self {
            services: self.services.iter().map(Entity::declarative).collect(),
            routes: self.routes.iter().map(Entity::declarative).collect(),
            consumers: self.consumers.iter().map(Entity::declarative).collect(),
            credentials: self.credentials.iter().map(Entity::declarative).collect(),
            certificates: self.certificates.iter().map(Entity::declarative).collect(),
            protos: self.protos.iter().map(Entity::declarative).collect(),
            policies: self.policies.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// The config as the admin API shows it: without write-only secrets.
    pub fn shown(&self) -> Self {
        Self {
            services: self.services.iter().map(Entity::shown).collect(),
            certificates: self.certificates.iter().map(Entity::shown).collect(),
            ..self.clone()
        }
    }

    /// Sort every collection by name: the canonical order of a snapshot.
    pub fn sort(&mut self) {
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
        self.consumers.sort_by(|a, b| a.username.cmp(&b.username));
        self.credentials.sort_by(|a, b| a.name.cmp(&b.name));
        self.certificates.sort_by(|a, b| a.name.cmp(&b.name));
        self.protos.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Drops what every entity derives from its other fields
    /// ([`Entity::drop_derived`]): what a write does to a document before
    /// checking it.
    pub fn drop_derived(&mut self) {
        self.protos.iter_mut().for_each(Entity::drop_derived);
    }
}

fn default_true() -> bool {
    true
}
