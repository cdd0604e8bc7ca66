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

/// A test certificate authority that issues leaf certificates.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Portico test CA");
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("the CA certificate");
        Self { cert_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A certificate for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> TestCertificate {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("certificate names");
        let key = rcgen::KeyPair::generate().expect("a key pair");
        let cert = params.signed_by(&key, &self.issuer).expect("a signed certificate");
        TestCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec(), key_der: key.serialize_der() }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
