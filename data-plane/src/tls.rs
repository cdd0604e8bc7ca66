//! TLS termination: rustls (ring), TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`. The certificate is chosen per handshake by SNI from the
//! runtime serving at that moment (exact name, then `*.` wildcard, then the
//! default certificate), so a certificate replaced through the admin API is
//! served from the next handshake on, without a restart.

use std::collections::HashMap;
use std::sync::Arc;

use portico_shared::model::Certificate;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use crate::state::NodeState;

/// The certificates of one config version, by server name.
#[derive(Debug, Default)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    pub fn compile(certificates: &[Certificate]) -> Result<Self, String> {
        let mut compiled = Self::default();
        for certificate in certificates {
            let parsed = portico_shared::tls::parse_certificate(&certificate.cert, certificate.key.as_deref())
                .map_err(|e| format!("certificate '{}': {e}", certificate.name))?;
            let key = parsed.certified.ok_or_else(|| format!("certificate '{}' has no private key", certificate.name))?;
            let names = if certificate.snis.is_empty() { &parsed.dns_names } else { &certificate.snis };
            for sni in names {
                match sni.strip_prefix("*.") {
                    Some(parent) => compiled.wildcard.insert(parent.to_owned(), key.clone()),
                    None => compiled.exact.insert(sni.clone(), key.clone()),
                };
            }
            if certificate.default {
                compiled.default = Some(key);
            }
        }
        Ok(compiled)
    }

    /// The certificate for `server_name` (none given: the default).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else { return self.default.clone() };
        self.exact
            .get(&name)
            .or_else(|| name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// Picks the certificate from the node's current runtime.
#[derive(Debug)]
struct SniResolver(Arc<NodeState>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.runtime()?.certificates.lookup(hello.server_name())
    }
}

/// The TLS server configuration of a node.
pub fn server_config(node: Arc<NodeState>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(node)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
