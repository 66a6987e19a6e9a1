//! Gateways (`router~` proxies): what istiod gives a gateway, and nothing a sidecar gets.
//!
//! The servers of the Gateways selecting the proxy (`model::gateway::selecting`), merged per
//! listener port (`merge`), become listeners (`listener`, with the TLS they terminate in
//! `tls`) and HTTP route configurations (`route`) for the VirtualServices bound to those
//! Gateways. Clusters and endpoints are the sidecar's outbound ones for every service visible
//! to the gateway's namespace (a Sidecar resource does not apply to gateways), plus the
//! SNI-DNAT clusters AUTO_PASSTHROUGH servers forward to. No `virtualOutbound`, no
//! `virtualInbound`, no passthrough cluster: a gateway intercepts nothing.
//!
//! A gateway's configuration is one part: the inbound part is empty.

mod listener;
mod merge;
mod route;
mod tls;

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;

use super::Part;
use super::cluster;
use super::scope::{Scope, exported_to};
use crate::model::networking::VirtualService;
use crate::model::{Kind, Resource, Spec};
use crate::translate::naming;

pub fn clusters(scope: &Scope, part: Part) -> Vec<xds_cluster::Cluster> {
    if !part.outbound() {
        return Vec::new();
    }
    let mut out = cluster::outbound_clusters(scope);
    let auto_passthrough = merge::merge(scope, false)
        .ports
        .iter()
        .flat_map(|p| &p.servers)
        .any(|s| s.tls_mode() == Some(crate::model::networking::ServerTlsMode::AutoPassthrough));
    if auto_passthrough {
        let dnat: Vec<xds_cluster::Cluster> = sni_dnat_clusters(scope)
            .into_iter()
            .filter_map(|d| {
                let mut c = out.iter().find(|c| c.name == d.outbound)?.clone();
                c.name = d.sni;
                c.transport_socket = None;
                c.transport_socket_matches.clear();
                Some(c)
            })
            .collect();
        out.extend(dnat);
    }
    let jwks = cluster::jwks_clusters(scope, &out);
    out.extend(jwks);
    out
}

pub fn listeners(scope: &Scope, part: Part) -> Vec<xds_listener::Listener> {
    if !part.outbound() {
        return Vec::new();
    }
    listener::build(scope, &merge::merge(scope, true))
}

pub fn routes(scope: &Scope) -> Vec<xds_route::RouteConfiguration> {
    route::build(scope, &merge::merge(scope, false))
}

/// The VirtualServices bound to a Gateway (`namespace/name`) that the gateway proxy sees,
/// in istiod's precedence: those of the proxy's namespace, then those exported to it, then
/// public ones; oldest first within each.
fn virtual_services_for<'a>(
    scope: &Scope<'a>,
    gateway: &str,
) -> Vec<(&'a Resource, &'a VirtualService)> {
    let model: &'a crate::model::Model = scope.model;
    let mut out: Vec<(&Resource, &VirtualService)> = model
        .index()
        .of_kind(Kind::VirtualService)
        .iter()
        .filter_map(|p| model.resources.get(*p))
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r.as_ref(), vs.as_ref())),
            _ => None,
        })
        .filter(|(r, vs)| {
            super::route::Binding::Gateway(gateway).named_in(&vs.gateways, &r.meta.namespace)
                && exported_to(&vs.export_to, &r.meta.namespace, &scope.proxy.namespace)
        })
        .collect();
    out.sort_by_cached_key(|(r, vs)| {
        let public = vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*");
        let group = if r.meta.namespace == scope.proxy.namespace && !public {
            0
        } else if public {
            2
        } else {
            1
        };
        (
            group,
            r.meta.creation_timestamp.clone().unwrap_or_default(),
            r.meta.name.clone(),
            r.meta.namespace.clone(),
        )
    });
    out
}

/// An SNI-DNAT cluster of AUTO_PASSTHROUGH servers: named by the SNI a sidecar's mTLS
/// connection to a service port carries, a copy of that port's outbound cluster.
struct SniDnat {
    sni: String,
    outbound: String,
    host: String,
}

/// The SNI-DNAT clusters: one per service port the gateway reaches over EDS.
fn sni_dnat_clusters(scope: &Scope) -> Vec<SniDnat> {
    cluster::outbound(scope)
        .into_iter()
        .filter(|c| c.subset.is_none() && c.uses_eds())
        .map(|c| SniDnat {
            sni: naming::outbound_sni(c.port, "", &c.service.hostname),
            outbound: c.name,
            host: c.service.hostname.clone(),
        })
        .collect()
}
