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
//!
//! Each review counts in istiod's series: `galley_validation_passed` / `_failed` (by group,
//! version, resource and, for a failure, reason) and `sidecar_injection_*` (see `inject`).

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
        Ok(request) => {
            let (response, verdict) = judge_object(&request);
            record_validation(&request, verdict);
            Json(response.into_review())
        }
        Err(denied) => Json((*denied).into_review()),
    }
}

/// What the validation webhook made of a request, in istiod's terms: passed, or the reason
/// it did not (`galley_validation_failed{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(&'static str),
    /// A kind bowline does not model: allowed without being validated, counted in neither
    /// series (istiod validates such kinds; counting them as failed would raise alerts on
    /// objects that were admitted).
    NotValidated,
}

/// istiod's reasons a review is not passed.
pub const REASON_UNSUPPORTED_OPERATION: &str = "unsupported_operation";
pub const REASON_DECODE: &str = "yaml_decode_error";
pub const REASON_INVALID: &str = "invalid_resource";

/// Counts a review in `galley_validation_passed` or `galley_validation_failed`, labelled by
/// the resource reviewed; a dry run's failure is not counted (as istiod).
fn record_validation(request: &AdmissionRequest<DynamicObject>, verdict: Verdict) {
    let r = &request.resource;
    let labels = [
        ("group", r.group.clone()),
        ("version", r.version.clone()),
        ("resource", r.resource.clone()),
    ];
    match verdict {
        Verdict::NotValidated => {}
        Verdict::Passed => metrics::counter!("galley_validation_passed", &labels).increment(1),
        Verdict::Failed(_) if request.dry_run => {}
        Verdict::Failed(reason) => {
            let mut labels = labels.to_vec();
            labels.push(("reason", reason.to_string()));
            metrics::counter!("galley_validation_failed", &labels).increment(1)
        }
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
    judge_object(request).0
}

/// The decision for one admission request, and its verdict for the metrics. Deletes,
/// connects and kinds bowline does not model are allowed without being validated.
pub fn judge_object(request: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, Verdict) {
    let response = AdmissionResponse::from(request);
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return (response, Verdict::Failed(REASON_UNSUPPORTED_OPERATION));
    }
    let Some(object) = &request.object else {
        return (response, Verdict::Failed(REASON_DECODE));
    };
    let gvk = &request.kind;
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    // Only the kinds bowline models are judged; the others pass.
    if Kind::resolve(&api_version, &gvk.kind).is_err() {
        return (response, Verdict::NotValidated);
    }
    let mut value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return (
                response.deny(format!("object does not serialize: {e}")),
                Verdict::Failed(REASON_DECODE),
            );
        }
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
        (response, Verdict::Passed)
    } else {
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        (
            response.deny(format!("configuration is invalid: {}", lines.join("; "))),
            Verdict::Failed(REASON_INVALID),
        )
    }
}

type Connections = Pin<Box<dyn Stream<Item = Result<TlsConnection, io::Error>> + Send>>;

/// TLS connections for axum: handshakes run concurrently (see `ca::serving::incoming`).
pub struct TlsListener {
    connections: Connections,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        admission: crate::net::Admission,
        port: &TlsPort,
        ca: Arc<Ca>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            connections: Box::pin(incoming(listener, admission, port.acceptor.clone(), ca)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(
        kind: &str,
        operation: &str,
        spec: serde_json::Value,
    ) -> AdmissionRequest<DynamicObject> {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": kind},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "x"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {},
                "object": {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": kind,
                    "metadata": {"name": "a", "namespace": "shop"},
                    "spec": spec
                },
                "dryRun": false
            }
        });
        read_review(&serde_json::to_vec(&body).unwrap(), |_| {}).expect("a request")
    }

    /// Each review gets istiod's verdict for `galley_validation_*`.
    #[test]
    fn verdicts_follow_istiods_reasons() {
        let route = |host: &str| json!({"hosts": ["web"], "http": [{"route": [{"destination": {"host": host}}]}]});
        let verdict = |r: &AdmissionRequest<DynamicObject>| judge_object(r).1;
        assert_eq!(
            verdict(&review("VirtualService", "CREATE", route("web"))),
            Verdict::Passed
        );
        let (response, v) = judge_object(&review("VirtualService", "UPDATE", route("")));
        assert!(!response.allowed);
        assert_eq!(v, Verdict::Failed(REASON_INVALID));
        assert_eq!(
            verdict(&review("VirtualService", "DELETE", route(""))),
            Verdict::Failed(REASON_UNSUPPORTED_OPERATION)
        );
        let (response, v) = judge_object(&review("EnvoyFilter", "CREATE", json!({})));
        assert!(response.allowed);
        assert_eq!(v, Verdict::NotValidated);
    }
}
