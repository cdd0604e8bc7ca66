//! Certificates: the TLS certificates data planes serve, chosen by the
//! client's SNI. Parsing and the key check are [`crate::tls`]'s; that each
//! server name has one certificate and one at most is the default is
//! checked across the config in [`crate::validate`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{MAX_LIST, Result, Validate, bounded, host_pattern, name, tags, unique};

/// A TLS certificate the data planes serve on `--tls-listen`, chosen by the
/// client's SNI; managed at `/api/v1/gateways/{gw}/certificates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// PEM: the certificate, then the intermediates of its chain.
    pub cert: String,
    /// PEM private key of the certificate. Write-only: the admin API never
    /// returns it (a write without it keeps the stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Server names it is served for, exact or `*.example.com`; empty: the
    /// DNS names of the certificate (read again whenever it changes).
    #[serde(default)]
    pub snis: Vec<String>,
    /// Served to clients whose SNI matches no certificate (one at most).
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

entity!(Certificate, crate::model::EntityKind::Certificate, certificates, name, secrets = (redact_private_key, keep_private_key));

// `key` is write-only: never shown by the admin API; a write that leaves it
// out keeps the stored one.

fn redact_private_key(certificate: &mut Certificate) {
    certificate.key = None;
}

fn keep_private_key(certificate: &mut Certificate, previous: &Certificate) {
    if certificate.key.is_none() {
        certificate.key.clone_from(&previous.key);
    }
}

impl Validate for Certificate {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(name("name", &self.name));
        // Left empty, the names are read from the certificate itself (each
        // time it changes), not stored.
        if let Some(parsed) = errors.check(crate::tls::parse_certificate(&self.cert, self.key.as_deref()))
            && self.snis.is_empty()
            && parsed.dns_names.is_empty()
        {
            errors.add(ConfigError::invalid("snis", "the certificate names no DNS name: list the server names it is for"));
        }
        if errors.check(bounded("snis", self.snis.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, sni) in self.snis.iter_mut().enumerate() {
                sni.make_ascii_lowercase();
                errors.check(host_pattern(&format!("snis[{i}]"), sni));
            }
            if errors.count() == before {
                errors.check(unique("snis", &self.snis));
            }
        }
        errors.check(tags(&self.tags));
        errors.finish()
    }
}
