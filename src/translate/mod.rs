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
pub mod fault;
mod gateway;
pub mod listener;
pub mod loadbalancer;
pub mod metadata;
pub mod mtls;
pub mod name_table;
pub mod naming;
pub mod outbound;
pub mod policy;
pub mod route;
pub mod scope;
pub mod values;
mod virtual_service;

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;

use crate::envoy::{self, ResourceType, TypeSet};
use crate::model::proxy::ProxyType;
use crate::model::{Diagnostic, Model, Proxy, Severity};

pub use scope::{Rule, RuleSubset, Scope};

/// Generated resources, each list sorted by name, and what went wrong on the way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub clusters: Vec<xds_cluster::Cluster>,
    pub endpoints: Vec<xds_endpoint::ClusterLoadAssignment>,
    pub listeners: Vec<xds_listener::Listener>,
    pub routes: Vec<xds_route::RouteConfiguration>,
    /// Everything that went wrong, sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// The same diagnostics by the type being generated when each was raised, in
    /// [`ResourceType::CONFIG`] order: a type kept from an earlier generation keeps its own.
    pub diagnostics_by_type: [Vec<Diagnostic>; 4],
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

/// Which resources to generate: a proxy's configuration is the union of an outbound part and
/// an inbound part, which share no resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Everything.
    All,
    /// What the proxy needs to call services: outbound clusters (and `BlackHoleCluster`,
    /// `PassthroughCluster`), every endpoint assignment, the outbound listeners (and
    /// `virtualOutbound`), every route configuration. It reads the proxy's labels only through
    /// the selectors [`crate::model::index::Index::outbound_label_keys`] collects, so proxies
    /// whose labels agree on those keys get the same outbound part ([`outbound_proxy`]).
    Outbound,
    /// What the proxy's own workload serves: `InboundPassthroughCluster`, the inbound clusters,
    /// JWKS clusters, and `virtualInbound` (or the inbound listeners without capture).
    Inbound,
}

impl Part {
    fn outbound(self) -> bool {
        matches!(self, Part::All | Part::Outbound)
    }
    fn inbound(self) -> bool {
        matches!(self, Part::All | Part::Inbound)
    }
}

/// Generates the requested types of resources for `proxy`.
pub fn generate(model: &Model, proxy: &Proxy, types: TypeSet) -> Output {
    generate_part(model, proxy, types, Part::All)
}

/// Generates one part of the requested types of resources for `proxy`: a sidecar's, or a
/// gateway's (`gateway`, for `router` proxies; endpoints are made alike for both).
pub fn generate_part(model: &Model, proxy: &Proxy, types: TypeSet, part: Part) -> Output {
    let scope = Scope::new(model, proxy);
    let mut out = Output::default();
    // Each type's diagnostics are taken after it is built; what Scope::new raised goes with
    // the first type generated.
    let mut by_type: [Vec<Diagnostic>; 4] = Default::default();
    let gateway = proxy.proxy_type == ProxyType::Router;
    if types.contains(ResourceType::Cds) {
        out.clusters = if gateway {
            gateway::clusters(&scope, part)
        } else {
            cluster::build(&scope, part)
        };
        out.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        by_type[slot(ResourceType::Cds)] = scope.take_diagnostics();
    }
    if types.contains(ResourceType::Eds) && part.outbound() {
        out.endpoints = endpoint::build(&scope);
        out.endpoints
            .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
        by_type[slot(ResourceType::Eds)] = scope.take_diagnostics();
    }
    if types.contains(ResourceType::Lds) {
        out.listeners = if gateway {
            gateway::listeners(&scope, part)
        } else {
            listener::build(&scope, part)
        };
        out.listeners.sort_by(|a, b| a.name.cmp(&b.name));
        by_type[slot(ResourceType::Lds)] = scope.take_diagnostics();
    }
    if types.contains(ResourceType::Rds) && part.outbound() {
        out.routes = if gateway {
            gateway::routes(&scope)
        } else {
            route::build(&scope)
        };
        out.routes.sort_by(|a, b| a.name.cmp(&b.name));
        by_type[slot(ResourceType::Rds)] = scope.take_diagnostics();
    }
    // Raised with no type generated (nothing requested of this part).
    let rest = scope.take_diagnostics();
    out.diagnostics = by_type.iter().flatten().chain(&rest).cloned().collect();
    out.diagnostics.sort();
    out.diagnostics.dedup();
    out.diagnostics_by_type = by_type;
    out
}

/// The position of a generated type in [`Output::diagnostics_by_type`].
fn slot(t: ResourceType) -> usize {
    ResourceType::CONFIG
        .iter()
        .position(|c| *c == t)
        .unwrap_or_default()
}

/// The endpoint assignments of the outbound part of `proxy` for the services `wanted` keeps
/// (`generate_part`'s EDS, narrowed to them).
pub fn generate_endpoints(
    model: &Model,
    proxy: &Proxy,
    wanted: &dyn Fn(&crate::model::registry::Service) -> bool,
) -> Output {
    let scope = Scope::new(model, proxy);
    let mut out = Output {
        endpoints: endpoint::build_of(&scope, wanted),
        ..Default::default()
    };
    out.endpoints
        .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out.diagnostics = scope.take_diagnostics();
    out.diagnostics_by_type[slot(ResourceType::Eds)] = out.diagnostics.clone();
    out
}

/// The proxy whose outbound part `proxy` shares: the same, with only the labels whose keys
/// outbound configuration can depend on in `model` (all of them when any may matter).
/// A gateway's labels select its Gateways and its whole configuration is its outbound part:
/// it keeps them all.
pub fn outbound_proxy(model: &Model, proxy: &Proxy) -> Proxy {
    let mut shared = proxy.clone();
    if proxy.proxy_type == ProxyType::Router {
        return shared;
    }
    if let Some(keys) = model.index().outbound_label_keys() {
        shared.labels.retain(|k, _| keys.contains(k));
    }
    shared
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
