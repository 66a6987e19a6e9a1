//! Admission webhooks (istiod's 15017, HTTPS with a serving certificate from bowline's CA).
//!
//! Contract: `/validate` (and istiod's `/validate/` path) answers AdmissionReview v1 for the
//! Istio kinds bowline models with the same parse and validation as files and the CLI: an
//! invalid object is denied with every error (field path and reason), warnings are returned as
//! admission warnings; deletes, and kinds bowline does not model, are allowed. `/inject` (and
//! `/inject/`, `/inject/<anything>` as istiod's) injects the stock Envoy sidecar into Pods
//! being created (see `inject`). A malformed review gets an error response, never a crash.
//! `publish` keeps the webhook configurations' CA bundles and the namespaces' root-certificate
//! ConfigMaps written.

pub mod inject;
pub mod publish;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::post;
use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::ca::Ca;
use crate::ca::serving::{TlsConnection, TlsPort, incoming};
use crate::model::Kind;
use crate::model::resource::parse_value;

/// The webhook routes; injected sidecars follow `inject`.
pub fn router(inject: Arc<inject::Options>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/", post(validate))
        .route("/inject", post(inject::handle))
        .route("/inject/", post(inject::handle))
        .route("/inject/{*params}", post(inject::handle))
        .with_state(inject)
}

async fn validate(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e.to_string()).into_review()),
    };
    Json(review_object(&request).into_review())
}

/// The decision for one admission request.
pub fn review_object(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return response;
    }
    let Some(object) = &request.object else {
        return response;
    };
    let gvk = &request.kind;
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    // Only the kinds bowline models are judged; the others pass.
    if Kind::resolve(&api_version, &gvk.kind).is_err() {
        return response;
    }
    let mut value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return response.deny(format!("object does not serialize: {e}")),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), gvk.kind.clone().into());
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            // The object's namespace comes with the request when it is not in the object yet.
            if !meta.contains_key("namespace")
                && let Some(ns) = &request.namespace
            {
                meta.insert("namespace".into(), ns.clone().into());
            }
            meta.remove("managedFields");
        }
    }
    let parsed = parse_value(value, None);
    let (errors, warnings): (Vec<_>, Vec<_>) =
        parsed.diagnostics.into_iter().partition(|d| d.is_error());
    let mut response = response;
    if !warnings.is_empty() {
        response.warnings = Some(warnings.iter().map(|d| d.to_string()).collect());
    }
    if errors.is_empty() {
        response
    } else {
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        response.deny(format!("configuration is invalid: {}", lines.join("; ")))
    }
}

type Connections = Pin<Box<dyn Stream<Item = Result<TlsConnection, io::Error>> + Send>>;

/// TLS connections for axum: handshakes run concurrently (see `ca::serving::incoming`).
pub struct TlsListener {
    connections: Connections,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, port: &TlsPort, ca: Arc<Ca>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            connections: Box::pin(incoming(listener, port.acceptor.clone(), ca)),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(c)) => {
                    let remote = c.remote().unwrap_or(self.local);
                    return (c, remote);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "webhook connection"),
                // The acceptor task ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
