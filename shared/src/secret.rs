//! API keys as both planes see them: never stored or shipped in the clear,
//! only as an HMAC-SHA256 under a key derived from the cluster token, which
//! the control plane and every data plane hold and the store and snapshot
//! cache do not. A stolen database or cache file therefore gives no usable
//! key and cannot be brute-forced offline. Rotating the cluster token
//! changes every hash (re-create the keys after rotating it).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Label of the key derivation, versioned so the scheme can change.
const DERIVATION_LABEL: &[u8] = b"portico key-auth v1";

/// Hashes API keys with the cluster's key-auth key.
#[derive(Clone)]
pub struct KeyHasher {
    keyed: HmacSha256,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// The hasher of the cluster whose token is `cluster_token`.
    pub fn from_cluster_token(cluster_token: &str) -> Self {
        let mut derive = HmacSha256::new_from_slice(cluster_token.as_bytes()).expect("HMAC takes keys of any length");
        derive.update(DERIVATION_LABEL);
        let key = derive.finalize().into_bytes();
        Self { keyed: HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length") }
    }

    /// The keyed hash of an API key.
    pub fn digest(&self, api_key: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(api_key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// [`KeyHasher::digest`] in lowercase hex, as `key_hash` holds it.
    pub fn hash_hex(&self, api_key: &str) -> String {
        hex::encode(self.digest(api_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_cluster_token() {
        let a = KeyHasher::from_cluster_token("cluster-token-a-0123456789");
        let b = KeyHasher::from_cluster_token("cluster-token-b-0123456789");
        assert_eq!(a.hash_hex("key"), a.hash_hex("key"));
        assert_ne!(a.hash_hex("key"), b.hash_hex("key"));
        assert_ne!(a.hash_hex("key"), a.hash_hex("key2"));
        assert_eq!(a.hash_hex("key").len(), 64);
    }
}
