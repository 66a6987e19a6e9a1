//! EDS: one `ClusterLoadAssignment` per EDS cluster, endpoints grouped by locality, subsets
//! narrowed by their labels, locality priorities and weights relative to the proxy (see
//! `loadbalancer`). DNS clusters embed the same assignment.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::google::protobuf as pb;

use super::cluster::{self, OutboundCluster};
use super::loadbalancer::{self, Group, LabeledEndpoint};
use super::scope::Scope;
use super::values;
use crate::model::Diagnostic;
use crate::model::proxy::Locality;
use crate::model::registry::{self, Health, Service};

pub fn build(scope: &Scope) -> Vec<xds_endpoint::ClusterLoadAssignment> {
    build_of(scope, &|_| true)
}

/// The assignments of the clusters of the services `wanted` keeps.
pub fn build_of(
    scope: &Scope,
    wanted: &dyn Fn(&Service) -> bool,
) -> Vec<xds_endpoint::ClusterLoadAssignment> {
    cluster::outbound_of(scope, wanted)
        .iter()
        .filter(|c| c.uses_eds())
        .map(|c| assignment(scope, c))
        .collect()
}

/// The assignment for one outbound cluster: the service port's endpoints (narrowed to the
/// subset's labels), grouped by locality in locality order, with the cluster's locality load
/// balancing applied relative to the proxy's locality.
pub fn assignment(scope: &Scope, c: &OutboundCluster) -> xds_endpoint::ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<LabeledEndpoint>> = BTreeMap::new();
    for ep in c.service.endpoints.get(&c.port).into_iter().flatten() {
        if let Some(subset) = c.subset
            && !registry::selects(&subset.subset.labels, &ep.labels)
        {
            continue;
        }
        let health = match ep.health {
            Health::Healthy => xds_core::HealthStatus::Healthy,
            Health::Unhealthy => xds_core::HealthStatus::Unhealthy,
            Health::Draining => xds_core::HealthStatus::Draining,
        };
        let locality = ep.locality.as_deref().unwrap_or_default();
        let labels = loadbalancer::with_topology_labels(&ep.labels, &Locality::parse(locality));
        by_locality.entry(locality).or_default().push((
            xds_endpoint::LbEndpoint {
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
                metadata: super::mtls::endpoint_metadata(&ep.labels),
            },
            labels,
        ));
    }
    let mut groups: Vec<Group> = by_locality
        .into_iter()
        .map(|(locality, endpoints)| {
            let mut g = Group {
                locality: Locality::parse(locality),
                weight: 0,
                priority: 0,
                endpoints,
            };
            g.weight = g.endpoint_weight_sum();
            g
        })
        .collect();
    if let Some(setting) = loadbalancer::locality_setting(scope, c.policy.load_balancer.as_ref()) {
        let proxy_labels =
            loadbalancer::with_topology_labels(&scope.proxy.labels, &scope.proxy.locality);
        loadbalancer::apply_locality(
            &mut groups,
            &setting,
            &scope.proxy.locality,
            &proxy_labels,
            c.policy.outlier_detection.is_some(),
        );
    }
    xds_endpoint::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: groups
            .into_iter()
            .map(|g| xds_endpoint::LocalityLbEndpoints {
                locality: (!g.locality.is_empty()).then_some(xds_core::Locality {
                    region: g.locality.region,
                    zone: g.locality.zone,
                    sub_zone: g.locality.subzone,
                }),
                load_balancing_weight: Some(pb::UInt32Value {
                    value: g.weight.max(1),
                }),
                priority: g.priority,
                lb_endpoints: g.endpoints.into_iter().map(|(e, _)| e).collect(),
                ..Default::default()
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
                Ok(p) => Some(values::socket_address(
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

/// An endpoint address: IP or DNS name with a port, or `unix://` path.
pub fn address(host: &str, port: u16) -> xds_core::Address {
    match host.strip_prefix("unix://") {
        Some(path) => pipe(path),
        None => values::socket_address(host, port),
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
