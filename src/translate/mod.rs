//! Translation: Istio configuration → Envoy resources for one proxy.
//!
//! Contract: pure and deterministic. `generate(model, proxy, types)` reads only the model and
//! the proxy's class, does no I/O, holds no clock, and returns the same resources for the same
//! inputs (ordered by name). What cannot be translated is skipped and reported as a diagnostic,
//! never a panic. One file per Envoy resource kind; every name comes from `naming`.

pub mod authn;
pub mod authz;
pub mod cluster;
pub mod cors;
pub mod endpoint;
pub mod envoy;
pub mod fault;
pub mod listener;
pub mod loadbalancer;
pub mod mtls;
pub mod naming;
pub mod outbound;
pub mod policy;
pub mod route;
mod scope;
mod virtual_service;

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;

use crate::cache::{ResourceType, TypeSet};
use crate::model::{Diagnostic, Model, Proxy, Severity};

pub use scope::{Rule, RuleSubset, Scope};

/// Generated resources, each list sorted by name, and what went wrong on the way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub clusters: Vec<xds_cluster::Cluster>,
    pub endpoints: Vec<xds_endpoint::ClusterLoadAssignment>,
    pub listeners: Vec<xds_listener::Listener>,
    pub routes: Vec<xds_route::RouteConfiguration>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Output {
    /// Canonical JSON of every generated resource, by type, and the diagnostics as text: the
    /// form golden files and debug views use.
    pub fn to_json(&self) -> Result<serde_json::Value, envoy::RenderError> {
        fn list<T: prost::Name + prost::Message>(
            items: &[T],
        ) -> Result<serde_json::Value, envoy::RenderError> {
            items
                .iter()
                .map(|i| envoy::any_to_json(&envoy::pack(i)))
                .collect::<Result<Vec<_>, _>>()
                .map(serde_json::Value::Array)
        }
        Ok(serde_json::json!({
            "clusters": list(&self.clusters)?,
            "endpoints": list(&self.endpoints)?,
            "listeners": list(&self.listeners)?,
            "routes": list(&self.routes)?,
            "diagnostics": self.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
    }
}

/// Generates the requested types of resources for `proxy`.
pub fn generate(model: &Model, proxy: &Proxy, types: TypeSet) -> Output {
    let scope = Scope::new(model, proxy);
    let mut out = Output::default();
    if types.contains(ResourceType::Cds) {
        out.clusters = cluster::build(&scope);
        out.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if types.contains(ResourceType::Eds) {
        out.endpoints = endpoint::build(&scope);
        out.endpoints
            .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    }
    if types.contains(ResourceType::Lds) {
        out.listeners = listener::build(&scope);
        out.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if types.contains(ResourceType::Rds) {
        out.routes = route::build(&scope);
        out.routes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out.diagnostics = scope.take_diagnostics();
    out
}

/// Lowers a diagnostic raised during translation to a warning: the resource is still used.
trait IntoWarning {
    fn into_warning(self) -> Diagnostic;
}

impl IntoWarning for Diagnostic {
    fn into_warning(mut self) -> Diagnostic {
        self.severity = Severity::Warning;
        self
    }
}
