//! Admin HTTP (istiod's 15014 / 8080 role): readiness, version, Prometheus metrics and
//! istiod's debug views.
//!
//! Contract: read-only views of the other stages; the one action is istiod's forced push
//! (`/debug/adsz?push=true`), which resends what the streams serve and changes nothing.
//! `/ready`, `/version` (istiod's plain `<version>-<git revision>-<Clean|Modified>`),
//! `/metrics`, and `/debug/<view>` with istiod's paths, query parameters and JSON field names
//! (see `debug`: `syncz`, `adsz`, `configz`, `config_dump?proxyID=`, `sidecarz?proxyID=`,
//! `instancesz`, `authorizationz`, `inject`, `resourcesz`, `connections`, `mesh`,
//! `push_status`, `registryz`, `endpointz`, `list`), plus bowline's `diagnosticz`. The same
//! views answer ADS `istio.io/debug` requests (`xds::debug`).
//!
//! The debug views are istiod's `allowAuthenticatedOrLocalhost`: a caller on a loopback
//! address is unrestricted; any other must present a bearer token (`Authorization: Bearer`)
//! that bowline's authenticators accept (401 otherwise), and an identity outside the mesh's
//! root namespace reaches only `config_dump` and `edsz` of its own namespace's proxies (403
//! for the other views). `/ready`, `/version` and `/metrics` are open, as istiod's.

pub mod debug;
pub mod istiod;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::ca::authn::{Authenticators, Caller};
use crate::xds::Shared;
use crate::xds::debug::{DebugViews, NAMESPACE_VIEWS};

#[derive(Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
    pub metrics: PrometheusHandle,
    pub views: Arc<debug::Views>,
}

/// The admin routes. Serve them with `into_make_service_with_connect_info::<ClientAddr>()`
/// (`crate::net`): the debug views tell local callers by their address.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/debug/{view}", get(debug_view))
        .with_state(admin)
}

async fn ready() -> &'static str {
    "ready\n"
}

/// istiod's answer: `<version>-<git revision>-<Clean|Modified>` as plain text, no newline;
/// `istioctl version` splits it at the last two dashes.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "-",
    env!("BOWLINE_GIT_REVISION"),
    "-",
    env!("BOWLINE_BUILD_STATUS")
);

async fn version() -> &'static str {
    VERSION
}

async fn metrics(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(),
    )
        .into_response()
}

/// `/debug/<view>[?query]`, for a caller allowed to see it.
async fn debug_view(
    State(admin): State<Admin>,
    Path(view): Path<String>,
    request: Request,
) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<crate::net::ClientAddr>>()
        .map(|c| c.0.0);
    let root = admin
        .shared
        .snapshots
        .borrow()
        .model
        .mesh
        .root_namespace
        .clone();
    let authn = admin.shared.security.as_ref().map(|s| &s.authn);
    let caller_namespace = match authorize(authn, &root, remote, request.headers(), &view).await {
        Ok(ns) => ns,
        Err(status) => return status.into_response(),
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    // Rendering a view (a large proxy's config dump) is CPU work: off the serving threads.
    let (views, shared) = (admin.views.clone(), admin.shared.clone());
    let request = format!("{view}{query}");
    let reply = match tokio::task::spawn_blocking(move || {
        views.serve(&shared, &request, caller_namespace.as_deref())
    })
    .await
    {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "a debug view failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the view failed\n").into_response();
        }
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if reply.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(header::CONTENT_TYPE, content_type)], reply.body).into_response()
}

/// istiod's `allowAuthenticatedOrLocalhost` (see the module docs): `Ok(None)` for an
/// unrestricted caller, `Ok(Some(namespace))` for an authenticated one.
async fn authorize(
    authn: Option<&Authenticators>,
    root: &str,
    remote: Option<SocketAddr>,
    headers: &HeaderMap,
    view: &str,
) -> Result<Option<String>, StatusCode> {
    if remote.is_some_and(|r| r.ip().to_canonical().is_loopback()) {
        return Ok(None);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::ca::authn::bearer);
    let caller = Caller {
        remote,
        bearer,
        certificate: None,
    };
    let identity = match authn {
        Some(authn) => authn.authenticate(&caller).await,
        None => Ok(None),
    };
    let remote = remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| "unknown".into());
    let identity = match identity {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            tracing::warn!(%remote, view, "debug request refused: no bearer token from a non-local caller");
            return Err(StatusCode::UNAUTHORIZED);
        }
        Err(e) => {
            tracing::warn!(%remote, view, error = %e, "debug request refused: authentication failed");
            return Err(StatusCode::UNAUTHORIZED);
        }
    };
    if identity.namespace != root && !NAMESPACE_VIEWS.contains(&view) {
        tracing::warn!(%remote, view, identity = %identity.spiffe_id(), "debug request refused: the view is for the mesh's root namespace");
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(Some(identity.namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::authn::{AuthError, Authenticator};
    use crate::model::Identity;

    /// Accepts the token `good-<namespace>` as `<namespace>/default`.
    struct Tokens;

    #[tonic::async_trait]
    impl Authenticator for Tokens {
        fn name(&self) -> &'static str {
            "test"
        }

        async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, AuthError> {
            let Some(token) = &caller.bearer else {
                return Ok(None);
            };
            match token.strip_prefix("good-") {
                Some(ns) => Ok(Some(Identity {
                    trust_domain: "cluster.local".into(),
                    namespace: ns.into(),
                    service_account: "default".into(),
                })),
                None => Err(AuthError {
                    authenticator: "test",
                    message: "bad token".into(),
                }),
            }
        }
    }

    async fn check(
        remote: &str,
        token: Option<&str>,
        view: &str,
    ) -> Result<Option<String>, StatusCode> {
        let authn = Authenticators::new(vec![Arc::new(Tokens)]);
        let mut headers = HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        authorize(
            Some(&authn),
            "istio-system",
            Some(remote.parse().unwrap()),
            &headers,
            view,
        )
        .await
    }

    #[tokio::test]
    async fn debug_views_are_for_local_or_authenticated_callers() {
        // Loopback, IPv4, IPv6 and IPv4-mapped: unrestricted, no token needed.
        for local in [
            "127.0.0.1:4000",
            "127.9.9.9:4000",
            "[::1]:4000",
            "[::ffff:127.0.0.1]:4000",
        ] {
            assert_eq!(check(local, None, "syncz").await, Ok(None), "{local}");
        }
        let remote = "10.1.2.3:4000";
        assert_eq!(
            check(remote, None, "syncz").await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(remote, Some("forged"), "syncz").await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(remote, Some("good-istio-system"), "syncz").await,
            Ok(Some("istio-system".to_string()))
        );
        // Another namespace: only the views about its own proxies.
        assert_eq!(
            check(remote, Some("good-shop"), "syncz").await,
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check(remote, Some("good-shop"), "adsz").await,
            Err(StatusCode::FORBIDDEN)
        );
        for view in ["config_dump", "edsz"] {
            assert_eq!(
                check(remote, Some("good-shop"), view).await,
                Ok(Some("shop".to_string())),
                "{view}"
            );
        }
        // Without authenticators (no CA), a remote caller cannot prove anything.
        let none = authorize(
            None,
            "istio-system",
            Some(remote.parse().unwrap()),
            &HeaderMap::new(),
            "syncz",
        )
        .await;
        assert_eq!(none, Err(StatusCode::UNAUTHORIZED));
    }
}
