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
mod istiod;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::ca::authn::Caller;
use crate::xds::Shared;
use crate::xds::debug::{DebugViews, NAMESPACE_VIEWS};

#[derive(Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
    pub metrics: PrometheusHandle,
    pub views: Arc<debug::Views>,
}

/// The admin routes. Serve them with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the debug views tell local callers by their address.
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
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let caller_namespace = match authorize(&admin.shared, remote, request.headers(), &view).await {
        Ok(ns) => ns,
        Err(status) => return status.into_response(),
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let reply = admin.views.serve(
        &admin.shared,
        &format!("{view}{query}"),
        caller_namespace.as_deref(),
    );
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
    shared: &Shared,
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
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let caller = Caller {
        remote,
        bearer,
        certificate: None,
    };
    let identity = match &shared.security {
        Some(security) => security.authn.authenticate(&caller).await,
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
    let root = shared.snapshots.borrow().model.mesh.root_namespace.clone();
    if identity.namespace != root && !NAMESPACE_VIEWS.contains(&view) {
        tracing::warn!(%remote, view, identity = %identity.spiffe_id(), "debug request refused: the view is for the mesh's root namespace");
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(Some(identity.namespace))
}
