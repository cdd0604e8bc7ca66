//! TLS towards `https` targets: rustls (ring), TLS 1.2 and 1.3, the target
//! always verified for the host name of its URL (also the SNI sent),
//! against the system roots (read once per process) or the service's CA
//! bundle, with the service's client certificate when it has one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use portico_shared::model::Service;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, version};

/// The system's trusted roots.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "a system root certificate could not be read");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system roots loaded");
            Arc::new(roots)
        })
        .clone()
}

/// The TLS client settings of `service`.
pub(super) fn client_config(service: &Service) -> Result<ClientConfig, String> {
    let fail = |e: String| format!("service '{}': {e}", service.name);
    let tls = service.tls.as_ref();
    let roots = match tls.and_then(|t| t.ca_bundle.as_deref()) {
        Some(bundle) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
                roots.add(cert.map_err(|e| fail(format!("ca_bundle: {e}")))?).map_err(|e| fail(format!("ca_bundle: {e}")))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots);
    match tls.and_then(|t| t.client_cert.as_deref().zip(t.client_key.as_deref())) {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().map_err(|e| fail(format!("client_cert: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| fail(format!("client_key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| fail(format!("client certificate: {e}")))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A connector for `http` and `https` targets with `tls` and `connect_timeout`.
pub(super) fn connector(tls: ClientConfig, connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http)
}
