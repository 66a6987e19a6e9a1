//! Admin HTTP (istiod's 15014 / 8080 role): readiness, debug views and Prometheus metrics.
//!
//! Contract: read-only views of the other stages. `/ready`, `/version` (istiod's plain
//! `<version>-<git revision>-<Clean|Modified>`), `/debug/syncz` (every
//! connected proxy: per type the version sent and ACKed and the last NACK, whether it holds a
//! workload certificate, and what went wrong generating its configuration), `/debug/configz`
//! (loaded resources, the diagnostics of rejected ones, and `translation`: what went wrong
//! generating the connected proxies' configuration), `/debug/config_dump?proxyID=`
//! (what bowline sends that proxy, as Envoy ConfigDump JSON), `/metrics`, and istiod's own
//! debug views with istiod's paths and field names (`/debug/list`, `/debug/connections`,
//! `/debug/mesh`, `/debug/push_status`, `/debug/registryz`, `/debug/endpointz`; see `istiod`).

mod config_dump;
mod istiod;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::model::Diagnostic;
use crate::xds::Shared;

#[derive(Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
    pub metrics: PrometheusHandle,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/list", get(|| async { Json(istiod::list()) }))
        .route("/debug/connections", get(connections))
        .route("/debug/mesh", get(mesh))
        .route("/debug/push_status", get(push_status))
        .route("/debug/registryz", get(registryz))
        .route("/debug/endpointz", get(endpointz))
        .route("/debug/endpointShardz", get(endpointz))
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

async fn syncz(State(admin): State<Admin>) -> Response {
    Json(admin.shared.registry.views()).into_response()
}

async fn connections(State(admin): State<Admin>) -> Response {
    Json(istiod::connections(&admin.shared.registry.connections())).into_response()
}

async fn mesh(State(admin): State<Admin>) -> Response {
    let snapshot = admin.shared.snapshots.borrow().clone();
    Json(istiod::mesh(&snapshot.model.mesh)).into_response()
}

async fn push_status(State(admin): State<Admin>) -> Response {
    Json(istiod::push_status(&admin.shared.registry.connections())).into_response()
}

async fn registryz(State(admin): State<Admin>) -> Response {
    let snapshot = admin.shared.snapshots.borrow().clone();
    Json(istiod::registryz(&snapshot.model.registry.services)).into_response()
}

async fn endpointz(State(admin): State<Admin>) -> Response {
    let snapshot = admin.shared.snapshots.borrow().clone();
    Json(istiod::endpointz(&snapshot.model.registry.services)).into_response()
}

#[derive(Serialize)]
struct ConfigzResource<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
}

async fn configz(State(admin): State<Admin>) -> Response {
    let snapshot = admin.shared.snapshots.borrow().clone();
    let model = &snapshot.model;
    let resources: Vec<ConfigzResource> = model
        .resources
        .iter()
        .map(|r| ConfigzResource {
            kind: r.kind.as_str(),
            namespace: &r.meta.namespace,
            name: &r.meta.name,
            origin: r.origin.as_deref(),
        })
        .collect();
    // What went wrong generating the connected proxies' configuration (a Gateway server that
    // conflicts with another, a route skipped), once each, with the proxies it concerns.
    let mut translation: std::collections::BTreeMap<Diagnostic, Vec<String>> = Default::default();
    for c in admin.shared.registry.connections() {
        for d in c.diagnostics() {
            translation.entry(d).or_default().push(c.proxy.short_id());
        }
    }
    let translation: Vec<serde_json::Value> = translation
        .into_iter()
        .map(|(d, proxies)| {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["proxies"] = proxies.into();
            v
        })
        .collect();
    let body = serde_json::json!({
        "generation": snapshot.generation,
        "resources": resources,
        "services": model.registry.services.iter().map(|s| &s.hostname).collect::<Vec<_>>(),
        "diagnostics": model.diagnostics,
        "translation": translation,
    });
    Json(body).into_response()
}

#[derive(Deserialize)]
struct DumpQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

async fn config_dump(State(admin): State<Admin>, Query(q): Query<DumpQuery>) -> Response {
    let Some(id) = q.proxy_id.filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "proxyID is required (<pod>.<namespace>)\n",
        )
            .into_response();
    };
    let Some(connection) = admin.shared.registry.connection(&id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("proxy {id:?} is not connected\n"),
        )
            .into_response();
    };
    let snapshot = admin.shared.snapshots.borrow().clone();
    let resources = match admin.shared.resources(&snapshot, &connection.proxy).await {
        Ok(r) => r,
        Err(status) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", status.message()),
            )
                .into_response();
        }
    };
    match config_dump::render(&resources, &connection.secrets()) {
        Ok(json) => Json(json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
