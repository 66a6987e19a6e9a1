//! Kubernetes service-account tokens as credentials: the bearer token is checked with the API
//! server's TokenReview (for the audiences istiod accepts, `istio-ca` by default), and the
//! authenticated user `system:serviceaccount:<namespace>:<name>` is the identity.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::TrustDomain;
use super::authn::{AuthError, Authenticator, Caller};
use crate::model::Identity;

/// The audience istio-agent requests for its projected token.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

const USER_PREFIX: &str = "system:serviceaccount:";

pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
    /// The identity is the service account in the trust domain in force (as istiod's
    /// Kubernetes JWT authenticator reads the current mesh configuration).
    trust_domain: TrustDomain,
}

impl TokenReviewAuthenticator {
    pub fn new(client: kube::Client, audiences: Vec<String>, trust_domain: TrustDomain) -> Self {
        TokenReviewAuthenticator {
            client,
            audiences,
            trust_domain,
        }
    }

    fn refuse(&self, message: impl Into<String>) -> AuthError {
        AuthError {
            authenticator: self.name(),
            message: message.into(),
        }
    }
}

/// The identity of a service account's user name, `system:serviceaccount:<ns>:<name>`.
pub fn identity_of(user: &str, trust_domain: &str) -> Option<Identity> {
    let (namespace, name) = user.strip_prefix(USER_PREFIX)?.split_once(':')?;
    Identity::new(trust_domain, namespace, name)
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        "kubernetes-token"
    }

    async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError> {
        let Some(token) = &caller.bearer else {
            return Ok(None);
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.clone(),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| self.refuse(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(self.refuse(
                status
                    .error
                    .unwrap_or_else(|| "token not authenticated".into()),
            ));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        identity_of(&user, &self.trust_domain.get())
            .map(Some)
            .ok_or_else(|| self.refuse(format!("{user:?} is not a service account")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users_are_identities() {
        let id = identity_of(
            "system:serviceaccount:default:bookinfo-reviews",
            "cluster.local",
        )
        .unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("default", "bookinfo-reviews")
        );
        assert!(identity_of("kube-env-admin", "cluster.local").is_none());
        assert!(identity_of("system:serviceaccount:default", "cluster.local").is_none());
    }
}
