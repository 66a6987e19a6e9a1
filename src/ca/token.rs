//! Tokens bowline issues to prove a workload's identity in file mode.
//!
//! Format: a JWT (RFC 7519) signed with ES256 (ECDSA P-256, SHA-256) by a key bowline keeps in
//! `--ca-dir/token-key.pem` (PKCS#8; created on first start, owner-only). Header
//! `{"alg":"ES256","typ":"JWT","kid":<key id>}`; claims `iss` = `bowline`, `aud` = `bowline`,
//! `sub` = the SPIFFE ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, `iat`, `exp`. A token is
//! accepted while the signature verifies with the current key, `exp` is in the future (60 s of
//! clock skew allowed), and its trust domain is the mesh's.
//!
//! Renewal: `bowline bootstrap --token` (or `bowline token`) signs a new token with the same
//! key; Envoy sends it when its xDS stream (re)connects, so a bootstrap must be renewed (and
//! Envoy restarted, or hot-restarted) before its token expires. A connected stream is not cut
//! when its token expires. Removing `token-key.pem` revokes every token at the next start.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest, Sha256};

use super::{CaError, KeyMaterial, pem};
use crate::model::Identity;

const ISSUER: &str = "bowline";
const AUDIENCE: &str = "bowline";
const SKEW: u64 = 60;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a JWT (header.claims.signature)")]
    Form,
    #[error("token header: {0}")]
    Header(String),
    #[error("token signature does not verify (not issued by this bowline)")]
    Signature,
    #[error("token claims: {0}")]
    Claims(String),
    #[error("token expired {0} s ago")]
    Expired(u64),
    #[error("token is for trust domain {0:?}, not {1:?}")]
    TrustDomain(String, String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
}

/// The token signing key.
pub struct TokenKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.kid)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenKey {
    fn from_pkcs8(der: &[u8]) -> Result<TokenKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"))?;
        let digest = Sha256::digest(pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        Ok(TokenKey { pair, kid })
    }

    /// A key kept in memory only.
    pub fn generate() -> Result<TokenKey, CaError> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|e| CaError::Sign(format!("token key: {e}")))?;
        TokenKey::from_pkcs8(doc.as_ref()).map_err(CaError::Sign)
    }

    /// Reads the key at `path`, creating it (owner-only) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, CaError> {
        let err = |m: String| CaError::File {
            path: path.to_path_buf(),
            message: m,
        };
        if !path.exists() {
            let doc = EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|e| err(e.to_string()))?;
            let material = KeyMaterial::new(pem::encode("PRIVATE KEY", doc.as_ref()).into_bytes());
            super::write_private(path, material.expose())?;
            tracing::info!(path = %path.display(), "created the token signing key");
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let blocks = pem::parse(&text).map_err(err)?;
        let der = blocks
            .iter()
            .find(|b| b.label == "PRIVATE KEY")
            .ok_or_else(|| err("no PRIVATE KEY block".to_string()))?;
        TokenKey::from_pkcs8(&der.der).map_err(err)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `identity`, valid for `ttl` from now.
    pub fn sign(&self, identity: &Identity, ttl: Duration) -> Result<String, CaError> {
        self.sign_at(identity, SystemTime::now(), ttl)
    }

    fn sign_at(
        &self,
        identity: &Identity,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, CaError> {
        let header = Header {
            alg: "ES256".to_string(),
            typ: Some("JWT".to_string()),
            kid: Some(self.kid.clone()),
        };
        let claims = Claims {
            iss: ISSUER.to_string(),
            aud: AUDIENCE.to_string(),
            sub: identity.spiffe_id(),
            iat: unix(now),
            exp: unix(now + ttl),
        };
        let encode = |v: &dyn erased::Json| URL_SAFE_NO_PAD.encode(v.json());
        let signing_input = format!("{}.{}", encode(&header), encode(&claims));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| CaError::Sign(format!("token: {e}")))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// The identity a token proves, if this key signed it and it is current.
    pub fn verify(&self, token: &str, trust_domain: &str) -> Result<Identity, TokenError> {
        self.verify_at(token, trust_domain, SystemTime::now())
    }

    fn verify_at(
        &self,
        token: &str,
        trust_domain: &str,
        now: SystemTime,
    ) -> Result<Identity, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Form);
        };
        let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Form)?;
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|e| TokenError::Header(e.to_string()))?;
        if header.alg != "ES256" {
            return Err(TokenError::Header(format!(
                "algorithm {:?} is not ES256",
                header.alg
            )));
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Form)?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claim_bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| TokenError::Form)?;
        let claims: Claims =
            serde_json::from_slice(&claim_bytes).map_err(|e| TokenError::Claims(e.to_string()))?;
        if claims.iss != ISSUER || claims.aud != AUDIENCE {
            return Err(TokenError::Claims(format!(
                "issuer {:?} / audience {:?} are not bowline's",
                claims.iss, claims.aud
            )));
        }
        let now = unix(now);
        if claims.exp + SKEW < now {
            return Err(TokenError::Expired(now - claims.exp));
        }
        let identity =
            Identity::parse(&claims.sub).map_err(|e| TokenError::Claims(e.to_string()))?;
        if identity.trust_domain != trust_domain {
            return Err(TokenError::TrustDomain(
                identity.trust_domain,
                trust_domain.to_string(),
            ));
        }
        Ok(identity)
    }
}

/// JSON encoding behind a trait object (header and claims differ in type).
mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::new("cluster.local", "shop", "cart").unwrap()
    }

    #[test]
    fn signs_and_verifies() {
        let key = TokenKey::generate().unwrap();
        let t = key.sign(&id(), Duration::from_secs(3600)).unwrap();
        assert_eq!(key.verify(&t, "cluster.local").unwrap(), id());
        assert!(matches!(
            key.verify(&t, "example.org"),
            Err(TokenError::TrustDomain(..))
        ));
        let other = TokenKey::generate().unwrap();
        assert_eq!(
            other.verify(&t, "cluster.local"),
            Err(TokenError::Signature)
        );
        assert_eq!(key.verify("abc", "cluster.local"), Err(TokenError::Form));
        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({
                "iss": "bowline", "aud": "bowline", "sub": "spiffe://cluster.local/ns/shop/sa/admin",
                "iat": 0, "exp": u64::MAX / 2
            }))
            .unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(
            key.verify(&parts.join("."), "cluster.local"),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn expires() {
        let key = TokenKey::generate().unwrap();
        let then = SystemTime::now() - Duration::from_secs(7200);
        let t = key.sign_at(&id(), then, Duration::from_secs(3600)).unwrap();
        assert!(matches!(
            key.verify(&t, "cluster.local"),
            Err(TokenError::Expired(_))
        ));
    }

    #[test]
    fn key_persists() {
        let dir = std::env::temp_dir().join(format!("bowline-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token-key.pem");
        let a = TokenKey::load_or_create(&path).unwrap();
        let t = a.sign(&id(), Duration::from_secs(60)).unwrap();
        let b = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(b.verify(&t, "cluster.local").unwrap(), id());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
