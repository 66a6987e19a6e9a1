//! Admission webhooks (istiod's 15017, HTTPS with a serving certificate from bowline's CA).
//!
//! Contract: `/validate` (and istiod's `/validate/` path) answers AdmissionReview v1 for the
//! Istio kinds bowline models with the same parse and validation as files and the CLI: an
//! invalid object is denied with every error (field path and reason), warnings are returned as
//! admission warnings; deletes, and kinds bowline does not model, are allowed. `/inject` (and
//! `/inject/`, `/inject/<anything>` as istiod's) injects the stock Envoy sidecar into Pods
//! being created (see `inject`), and answers `istioctl kube-inject`'s reviews of a workload's
//! pod template too. A review that cannot be read is answered, as istiod answers it, with an
//! AdmissionReview that denies it and says why (never plain text, never a crash).
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
use axum::body::Bytes;
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

async fn validate(body: Bytes) -> Json<AdmissionReview<DynamicObject>> {
    match read_review(&body, |_| {}) {
        Ok(request) => Json(review_object(&request).into_review()),
        Err(denied) => Json((*denied).into_review()),
    }
}

/// The request of an AdmissionReview body, after `adjust` has seen the review as JSON. What
/// cannot be read is denied with the reason (and the request's uid when it has one), for the
/// caller to answer as an AdmissionReview, as istiod does.
pub fn read_review(
    body: &[u8],
    adjust: impl FnOnce(&mut serde_json::Value),
) -> Result<AdmissionRequest<DynamicObject>, Box<AdmissionResponse>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(AdmissionResponse::invalid(format!(
            "could not decode body: {e}"
        )))
    })?;
    adjust(&mut value);
    let uid = value
        .pointer("/request/uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let invalid = |why: String| {
        let mut response = AdmissionResponse::invalid(why);
        response.uid = uid.clone();
        Box::new(response)
    };
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(value)
        .map_err(|e| invalid(format!("could not decode object: {e}")))?;
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| invalid(e.to_string()))
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
