//! Who is asking: authentication of xDS and CA callers.
//!
//! Contract: a caller is authenticated from what its connection and request carry, never from
//! node metadata: a bearer token in the gRPC metadata `authorization: Bearer <token>`, or the
//! client certificate it presented on the TLS port (already verified against bowline's root by
//! the TLS layer). Each way is an [`Authenticator`]; [`Authenticators`] tries them in order.
//! A presented credential that does not verify is an error (the caller is refused, and it is
//! logged); no credential at all is anonymous (`Ok(None)`), which only the plaintext port
//! accepts, and only for configuration. Kubernetes TokenReview will be another
//! `Authenticator`.

use std::net::SocketAddr;
use std::sync::Arc;

use super::TrustDomain;
use super::token::TokenKey;
use crate::model::Identity;

/// What the connection proved, attached to each request by the transport (tonic's connect
/// info of the TLS port).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The identity in the client certificate, when one was presented and verified.
    pub certificate: Option<Identity>,
}

/// The credentials of one call.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub remote: Option<SocketAddr>,
    /// The bearer token, when the call carries one.
    pub bearer: Option<String>,
    /// A verified client certificate's identity.
    pub certificate: Option<Identity>,
}

/// The token of an `authorization: Bearer <token>` value (either case of `Bearer`).
pub fn bearer(value: &str) -> Option<String> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl Caller {
    /// Reads the credentials of a gRPC request.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Caller {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        Caller {
            remote: peer
                .as_ref()
                .and_then(|p| p.remote)
                .or_else(|| request.remote_addr()),
            bearer,
            certificate: peer.and_then(|p| p.certificate),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{authenticator}: {message}")]
pub struct AuthError {
    pub authenticator: &'static str,
    pub message: String,
}

/// One way of proving an identity.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    fn name(&self) -> &'static str;
    /// `Ok(None)`: the caller has no credential of this kind. `Err`: it has one and it does
    /// not verify.
    async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError>;
}

/// Bearer tokens bowline issued (see [`super::token`]), naming the trust domain in force.
pub struct TokenAuthenticator {
    key: Arc<TokenKey>,
    trust_domain: TrustDomain,
}

impl TokenAuthenticator {
    pub fn new(key: Arc<TokenKey>, trust_domain: TrustDomain) -> TokenAuthenticator {
        TokenAuthenticator { key, trust_domain }
    }
}

#[tonic::async_trait]
impl Authenticator for TokenAuthenticator {
    fn name(&self) -> &'static str {
        "token"
    }

    async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError> {
        let Some(token) = &caller.bearer else {
            return Ok(None);
        };
        self.key
            .verify(token, &self.trust_domain.get())
            .map(Some)
            .map_err(|e| AuthError {
                authenticator: self.name(),
                message: e.to_string(),
            })
    }
}

/// Client certificates bowline issued, verified by the TLS layer.
pub struct ClientCertAuthenticator;

#[tonic::async_trait]
impl Authenticator for ClientCertAuthenticator {
    fn name(&self) -> &'static str {
        "client-certificate"
    }

    async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError> {
        Ok(caller.certificate.clone())
    }
}

/// Authenticators tried in order: the first identity wins; if none proves one, any refusal is
/// the answer; with no credential at all the caller is anonymous.
#[derive(Clone, Default)]
pub struct Authenticators {
    list: Vec<Arc<dyn Authenticator>>,
}

impl Authenticators {
    pub fn new(list: Vec<Arc<dyn Authenticator>>) -> Authenticators {
        Authenticators { list }
    }

    pub async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError> {
        let mut refused = None;
        for a in &self.list {
            match a.authenticate(caller).await {
                Ok(Some(id)) => return Ok(Some(id)),
                Ok(None) => {}
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn token_then_certificate() {
        let key = Arc::new(TokenKey::generate().unwrap());
        let auth = Authenticators::new(vec![
            Arc::new(TokenAuthenticator::new(
                key.clone(),
                TrustDomain::new("cluster.local"),
            )),
            Arc::new(ClientCertAuthenticator),
        ]);
        let id = Identity::new("cluster.local", "a", "sa-a").unwrap();
        let token = key.sign(&id, Duration::from_secs(60)).unwrap();
        let good = Caller {
            bearer: Some(token),
            ..Default::default()
        };
        assert_eq!(auth.authenticate(&good).await, Ok(Some(id.clone())));
        let bad = Caller {
            bearer: Some("x.y.z".into()),
            ..Default::default()
        };
        assert!(auth.authenticate(&bad).await.is_err());
        assert_eq!(auth.authenticate(&Caller::default()).await, Ok(None));
        let cert = Caller {
            certificate: Some(id.clone()),
            ..Default::default()
        };
        assert_eq!(auth.authenticate(&cert).await, Ok(Some(id)));
    }
}
