//! Test certificates, made with rcgen: self-signed, for given names, valid
//! from yesterday for a year (or already expired).

/// A certificate and its private key, in PEM.
pub struct TestCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to compare with what a server presents.
    pub der: Vec<u8>,
    /// The private key in DER (PKCS#8).
    pub key_der: Vec<u8>,
}

/// A self-signed certificate for `names`; `expired` makes one whose validity ended yesterday.
pub fn self_signed(names: &[&str], expired: bool) -> TestCertificate {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("certificate names");
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();
    (params.not_before, params.not_after) = if expired { (now - day * 30, now - day) } else { (now - day, now + day * 365) };
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    TestCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec(), key_der: key.serialize_der() }
}
