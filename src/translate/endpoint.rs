//! EDS: one `ClusterLoadAssignment` per EDS cluster, endpoints grouped by locality, subsets
//! narrowed by their labels.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::google::protobuf as pb;

use super::cluster::{self, OutboundCluster};
use super::scope::Scope;
use crate::model::Diagnostic;
use crate::model::registry::{self, Health, Resolution};

pub fn build(scope: &Scope) -> Vec<xds_endpoint::ClusterLoadAssignment> {
    cluster::outbound(scope)
        .iter()
        .filter(|c| c.service.resolution == Resolution::Static && !passthrough_lb(c))
        .map(|c| assignment(scope, c))
        .collect()
}

/// A DestinationRule with `loadBalancer.simple: PASSTHROUGH` turns the cluster into an
/// original-destination cluster, which has no endpoints.
fn passthrough_lb(c: &OutboundCluster) -> bool {
    use crate::model::networking::{LbPolicy, SimpleLB};
    matches!(
        cluster::load_balancer(c).and_then(|lb| lb.lb_policy.as_ref()),
        Some(LbPolicy::Simple(SimpleLB::Passthrough))
    )
}

/// The assignment for one outbound cluster.
pub fn assignment(scope: &Scope, c: &OutboundCluster) -> xds_endpoint::ClusterLoadAssignment {
    let _ = scope;
    let mut by_locality: BTreeMap<String, Vec<xds_endpoint::LbEndpoint>> = BTreeMap::new();
    for ep in c.service.endpoints.get(&c.port).into_iter().flatten() {
        if let Some(subset) = c.subset
            && !registry::selects(&subset.labels, &ep.labels)
        {
            continue;
        }
        let health = match ep.health {
            Health::Healthy => xds_core::HealthStatus::Healthy,
            Health::Unhealthy => xds_core::HealthStatus::Unhealthy,
            Health::Draining => xds_core::HealthStatus::Draining,
        };
        by_locality
            .entry(ep.locality.clone().unwrap_or_default())
            .or_default()
            .push(xds_endpoint::LbEndpoint {
                health_status: health as i32,
                load_balancing_weight: Some(pb::UInt32Value {
                    value: ep.weight.max(1),
                }),
                host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    xds_endpoint::Endpoint {
                        address: Some(address(&ep.address, ep.port)),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            });
    }
    xds_endpoint::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| {
                let weight: u32 = lb_endpoints
                    .iter()
                    .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                    .sum();
                xds_endpoint::LocalityLbEndpoints {
                    locality: locality_of(&locality),
                    load_balancing_weight: Some(pb::UInt32Value {
                        value: weight.max(1),
                    }),
                    lb_endpoints,
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// An assignment with one fixed endpoint (`127.0.0.1:8080`, `unix:///path`), for Sidecar
/// ingress `defaultEndpoint`.
pub fn static_assignment(
    name: &str,
    target: &str,
    scope: &Scope,
) -> xds_endpoint::ClusterLoadAssignment {
    let address = if let Some(path) = target.strip_prefix("unix://") {
        Some(pipe(path))
    } else {
        match target.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) => Some(socket_address(
                    host.trim_start_matches('[').trim_end_matches(']'),
                    p,
                )),
                Err(_) => None,
            },
            None => None,
        }
    };
    let Some(address) = address else {
        scope.report(Diagnostic::error(
            "Sidecar",
            scope
                .sidecar
                .map(|r| r.meta.namespace.as_str())
                .unwrap_or_default(),
            scope
                .sidecar
                .map(|r| r.meta.name.as_str())
                .unwrap_or_default(),
            "spec.ingress.defaultEndpoint",
            format!("{target:?} is not host:port or unix://path"),
        ));
        return xds_endpoint::ClusterLoadAssignment {
            cluster_name: name.to_string(),
            ..Default::default()
        };
    };
    xds_endpoint::ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![xds_endpoint::LocalityLbEndpoints {
            lb_endpoints: vec![xds_endpoint::LbEndpoint {
                host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    xds_endpoint::Endpoint {
                        address: Some(address),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn locality_of(s: &str) -> Option<xds_core::Locality> {
    if s.is_empty() {
        return None;
    }
    let mut parts = s.splitn(3, '/');
    Some(xds_core::Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    })
}

/// An endpoint address: IP or DNS name with a port, or `unix://` path.
pub fn address(host: &str, port: u16) -> xds_core::Address {
    match host.strip_prefix("unix://") {
        Some(path) => pipe(path),
        None => socket_address(host, port),
    }
}

pub fn socket_address(host: &str, port: u16) -> xds_core::Address {
    xds_core::Address {
        address: Some(xds_core::address::Address::SocketAddress(socket(
            host, port,
        ))),
    }
}

pub fn socket(host: &str, port: u16) -> xds_core::SocketAddress {
    xds_core::SocketAddress {
        address: host.to_string(),
        port_specifier: Some(xds_core::socket_address::PortSpecifier::PortValue(
            u32::from(port),
        )),
        ..Default::default()
    }
}

fn pipe(path: &str) -> xds_core::Address {
    xds_core::Address {
        address: Some(xds_core::address::Address::Pipe(xds_core::Pipe {
            path: path.to_string(),
            mode: 0,
        })),
    }
}
