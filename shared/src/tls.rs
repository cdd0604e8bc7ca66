//! Certificates as both planes read them: the control plane checks them on
//! write, data planes build what they serve from them. PEM parsing and
//! the key check are rustls's (ring provider); names and validity come
//! from x509-parser.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::ConfigError;

/// What a certificate says about itself.
#[derive(Debug)]
pub struct ParsedCertificate {
    /// DNS names of the leaf (subject alternative names).
    pub dns_names: Vec<String>,
    /// Seconds since the epoch after which the leaf is expired.
    pub not_after: i64,
    /// Chain and key, ready to serve (when a key was given).
    pub certified: Option<Arc<CertifiedKey>>,
}

/// Parses a PEM chain and (optionally) its PEM private key; a key that does
/// not belong to the leaf is refused.
pub fn parse_certificate(cert_pem: &str, key_pem: Option<&str>) -> Result<ParsedCertificate, ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::invalid("cert", format!("is not a PEM certificate chain: {}", pem_problem(&e))))?;
    let leaf = chain.first().ok_or_else(|| ConfigError::invalid("cert", "holds no PEM certificate"))?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| ConfigError::invalid("cert", format!("does not parse: {e}")))?;
    let dns_names = x509
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after = x509.validity().not_after.timestamp();
    let certified = match key_pem {
        None => None,
        Some(pem) => {
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| ConfigError::invalid("key", format!("is not a PEM private key: {}", pem_problem(&e))))?;
            let certified = CertifiedKey::from_der(chain.clone(), key, &default_provider())
                .map_err(|e| ConfigError::invalid("key", format!("does not fit the certificate: {e}")))?;
            Some(Arc::new(certified))
        }
    };
    Ok(ParsedCertificate { dns_names, not_after, certified })
}

/// What is wrong with a PEM text, in words: the parser's own message shows
/// the offending line as a list of byte values.
fn pem_problem(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::IllegalSectionStart { line } => {
            format!(
                "malformed line '{}' (a PEM block is '-----BEGIN …-----', base64 lines, '-----END …-----')",
                String::from_utf8_lossy(line)
            )
        }
        Error::MissingSectionEnd { end_marker } => format!("no '{}' line", String::from_utf8_lossy(end_marker)),
        Error::NoItemsFound => "holds no PEM block of this kind".to_owned(),
        other => other.to_string(),
    }
}

/// Checks a service's upstream TLS settings: the CA bundle holds PEM
/// certificates, and a client certificate comes with its matching key.
pub fn upstream_tls(tls: &crate::model::UpstreamTls) -> Result<(), ConfigError> {
    if let Some(bundle) = &tls.ca_bundle {
        let count = CertificateDer::pem_slice_iter(bundle.as_bytes())
            .try_fold(0, |n, cert| cert.map(|_| n + 1))
            .map_err(|e| ConfigError::invalid("tls.ca_bundle", format!("is not PEM certificates: {}", pem_problem(&e))))?;
        if count == 0 {
            return Err(ConfigError::invalid("tls.ca_bundle", "holds no PEM certificate"));
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => parse_certificate(cert, Some(key)).map(drop).map_err(client_field),
        // The key may come from the stored service (a write leaves write-only
        // secrets out); the snapshot compiler checks that it is there in the end.
        (Some(cert), None) => parse_certificate(cert, None).map(drop).map_err(client_field),
        (None, Some(_)) => Err(ConfigError::invalid("tls.client_cert", "client_key needs its client_cert")),
        (None, None) => Ok(()),
    }
}

/// An error about a certificate's `cert` or `key`, named as the service's
/// `tls.client_cert` or `tls.client_key`.
fn client_field(error: ConfigError) -> ConfigError {
    let field = format!("tls.client_{}", error.field());
    match error {
        ConfigError::Invalid { message, .. } => ConfigError::invalid(field, message),
        ConfigError::Conflict { message, .. } => ConfigError::conflict(field, message),
    }
}

/// The server names a certificate is served for: its `snis`, or when empty
/// the DNS names of the certificate.
pub fn server_names(certificate: &crate::model::Certificate) -> Result<Vec<String>, ConfigError> {
    if certificate.snis.is_empty() { Ok(parse_certificate(&certificate.cert, None)?.dns_names) } else { Ok(certificate.snis.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_pem_is_described_in_words_not_bytes() {
        let tls =
            crate::model::UpstreamTls { ca_bundle: Some("-----BEGIN CERTIFICATE-----…".into()), client_cert: None, client_key: None };
        let message = upstream_tls(&tls).unwrap_err().to_string();
        assert!(message.contains("malformed line '-----BEGIN CERTIFICATE-----…'"), "{message}");
        assert!(!message.contains("[45, 45"), "{message}");
    }
}
