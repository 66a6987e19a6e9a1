//! Workload identity: who a proxy has proven to be, as a SPIFFE ID
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! An identity is only ever made by authentication (a token bowline issued, a client
//! certificate bowline issued); node metadata is checked against it, never trusted in its place.

use serde::Serialize;

/// Errors parsing a SPIFFE ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "{0:?} is not a SPIFFE ID of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Form(String),
}

/// A proven workload identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Whether a name part is usable in a SPIFFE path segment (Kubernetes names, plus `_`).
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl Identity {
    /// An identity from its parts; `None` when a part is empty or has characters a SPIFFE
    /// path segment cannot carry.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Option<Identity> {
        (valid_part(trust_domain) && valid_part(namespace) && valid_part(service_account)).then(
            || Identity {
                trust_domain: trust_domain.to_string(),
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
            },
        )
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn parse(uri: &str) -> Result<Identity, IdentityError> {
        let err = || IdentityError::Form(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Identity::new(td, ns, sa).ok_or_else(err),
            _ => Err(err()),
        }
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(&self.trust_domain, &self.namespace, &self.service_account)
    }
}

/// `spiffe://<td>/ns/<ns>/sa/<sa>`, as istiod spells a service account's identity.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let id = Identity::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.service_account, "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        for bad in [
            "spiffe://cluster.local/ns/shop",
            "https://cluster.local/ns/shop/sa/cart",
            "spiffe://cluster.local/ns//sa/cart",
            "spiffe://cluster.local/ns/shop/sa/cart/extra",
            "spiffe://cluster.local/ns/sh op/sa/cart",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
