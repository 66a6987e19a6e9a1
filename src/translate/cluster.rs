//! CDS: `outbound|<port>|<subset>|<host>` per imported service port and DestinationRule
//! subset, `inbound|<port>||` per workload port, and the fixed `BlackHoleCluster`,
//! `PassthroughCluster` and `InboundPassthroughCluster`, and clusters for the JWKS servers of
//! RequestAuthentications.

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::google::protobuf as pb;

use super::authz;
use super::endpoint;
use super::envoy::pack;
use super::naming;
use super::scope::{InboundPort, Scope};
use crate::model::networking::{self, SimpleLB};
use crate::model::proxy::InterceptionMode;
use crate::model::registry::{Resolution, Service};
use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};

/// One outbound cluster to build: a service port, optionally narrowed to a subset.
#[derive(Debug)]
pub struct OutboundCluster<'a> {
    pub name: String,
    pub service: &'a Service,
    pub port: u16,
    pub subset: Option<&'a networking::Subset>,
    pub rule: Option<&'a networking::DestinationRule>,
}

/// Every outbound cluster of the proxy (shared with EDS, which must cover the same set).
pub fn outbound<'a>(scope: &Scope<'a>) -> Vec<OutboundCluster<'a>> {
    let mut out = Vec::new();
    for service in scope.services() {
        let rule = scope.destination_rule(service).map(|(_, dr)| dr);
        for port in &service.ports {
            out.push(OutboundCluster {
                name: naming::outbound_cluster(port.number, "", &service.hostname),
                service,
                port: port.number,
                subset: None,
                rule,
            });
            for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
                out.push(OutboundCluster {
                    name: naming::outbound_cluster(port.number, &subset.name, &service.hostname),
                    service,
                    port: port.number,
                    subset: Some(subset),
                    rule,
                });
            }
        }
    }
    out
}

pub fn build(scope: &Scope) -> Vec<xds_cluster::Cluster> {
    let connect_timeout = duration(scope.model.mesh.connect_timeout);
    let mut clusters: Vec<xds_cluster::Cluster> = outbound(scope)
        .iter()
        .map(|c| outbound_cluster(scope, c, &connect_timeout))
        .collect();
    clusters.push(xds_cluster::Cluster {
        name: naming::BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(connect_timeout),
        ..Default::default()
    });
    clusters.push(original_dst(
        naming::PASSTHROUGH_CLUSTER,
        &connect_timeout,
        None,
    ));
    if scope.proxy.interception_mode != InterceptionMode::None {
        clusters.push(original_dst(
            naming::INBOUND_PASSTHROUGH_CLUSTER,
            &connect_timeout,
            Some(naming::INBOUND_PASSTHROUGH_BIND_V4),
        ));
    }
    for inbound in scope.inbound() {
        clusters.push(inbound_cluster(scope, &inbound, &connect_timeout));
    }
    // The JWKS servers of RequestAuthentications that the registry does not already give a
    // cluster to.
    let names: std::collections::BTreeSet<String> =
        clusters.iter().map(|c| c.name.clone()).collect();
    clusters.extend(authz::jwks_clusters(scope, &names, connect_timeout));
    clusters
}

fn duration(d: std::time::Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

fn original_dst(
    name: &str,
    connect_timeout: &pb::Duration,
    bind: Option<&str>,
) -> xds_cluster::Cluster {
    xds_cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(*connect_timeout),
        upstream_bind_config: bind.map(|b| xds_core::BindConfig {
            source_address: Some(endpoint::socket(b, 0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `ads: {}` as the config source.
pub fn ads_config_source() -> xds_core::ConfigSource {
    xds_core::ConfigSource {
        config_source_specifier: Some(xds_core::config_source::ConfigSourceSpecifier::Ads(
            xds_core::AggregatedConfigSource {},
        )),
        resource_api_version: xds_core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn http2_options() -> (String, pb::Any) {
    let options = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(
            upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                upstream_http::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            xds_core::Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        pack(&options),
    )
}

/// The traffic policy in force for a cluster: subset over rule, port-level over rule-wide.
pub fn load_balancer<'a>(c: &OutboundCluster<'a>) -> Option<&'a networking::LoadBalancerSettings> {
    let port_level = |p: &'a networking::TrafficPolicy| {
        p.port_level_settings
            .iter()
            .find(|s| {
                s.port
                    .as_ref()
                    .is_some_and(|sel| sel.number == u32::from(c.port))
            })
            .and_then(|s| s.load_balancer.as_ref())
            .or(p.load_balancer.as_ref())
    };
    c.subset
        .and_then(|s| s.traffic_policy.as_ref())
        .and_then(port_level)
        .or_else(|| {
            c.rule
                .and_then(|r| r.traffic_policy.as_ref())
                .and_then(port_level)
        })
}

fn outbound_cluster(
    scope: &Scope,
    c: &OutboundCluster,
    connect_timeout: &pb::Duration,
) -> xds_cluster::Cluster {
    let mut cluster = xds_cluster::Cluster {
        name: c.name.clone(),
        connect_timeout: Some(*connect_timeout),
        ..Default::default()
    };
    match c.service.resolution {
        Resolution::Static => {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            cluster.eds_cluster_config = Some(xds_cluster::cluster::EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: c.name.clone(),
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let kind = if c.service.resolution == Resolution::Dns {
                DiscoveryType::StrictDns
            } else {
                DiscoveryType::LogicalDns
            };
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
            cluster.dns_lookup_family = xds_cluster::cluster::DnsLookupFamily::V4Only as i32;
            let mut assignment: xds_endpoint::ClusterLoadAssignment =
                endpoint::assignment(scope, c);
            if kind == DiscoveryType::LogicalDns {
                // LOGICAL_DNS takes exactly one host.
                for group in &mut assignment.endpoints {
                    group.lb_endpoints.truncate(1);
                }
                assignment.endpoints.retain(|g| !g.lb_endpoints.is_empty());
                assignment.endpoints.truncate(1);
            }
            cluster.load_assignment = Some(assignment);
        }
        Resolution::Passthrough => {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        }
    }
    if c.service.resolution != Resolution::Passthrough {
        match load_balancer(c).and_then(|lb| match &lb.lb_policy {
            Some(networking::LbPolicy::Simple(simple)) => Some(*simple),
            _ => None,
        }) {
            Some(SimpleLB::LeastRequest) | Some(SimpleLB::LeastConn) => {
                cluster.lb_policy = LbPolicy::LeastRequest as i32
            }
            Some(SimpleLB::Random) => cluster.lb_policy = LbPolicy::Random as i32,
            Some(SimpleLB::Passthrough) => {
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32,
                ));
                cluster.lb_policy = LbPolicy::ClusterProvided as i32;
                cluster.eds_cluster_config = None;
                cluster.load_assignment = None;
            }
            Some(SimpleLB::RoundRobin) | Some(SimpleLB::Unspecified) | None => {}
        }
    }
    if c.service
        .port(c.port)
        .is_some_and(|p| p.protocol.is_http2())
    {
        let (key, value) = http2_options();
        cluster.typed_extension_protocol_options.insert(key, value);
    }
    cluster
}

fn inbound_cluster(
    scope: &Scope,
    inbound: &InboundPort,
    connect_timeout: &pb::Duration,
) -> xds_cluster::Cluster {
    let name = naming::inbound_cluster(inbound.port);
    match &inbound.endpoint {
        Some(target) => {
            let mut cluster = xds_cluster::Cluster {
                name: name.clone(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                connect_timeout: Some(*connect_timeout),
                load_assignment: Some(endpoint::static_assignment(&name, target, scope)),
                ..Default::default()
            };
            if inbound.protocol.is_http2() {
                let (key, value) = http2_options();
                cluster.typed_extension_protocol_options.insert(key, value);
            }
            cluster
        }
        None => {
            let mut cluster = original_dst(
                &name,
                connect_timeout,
                Some(naming::INBOUND_PASSTHROUGH_BIND_V4),
            );
            if inbound.protocol.is_http2() {
                let (key, value) = http2_options();
                cluster.typed_extension_protocol_options.insert(key, value);
            }
            cluster
        }
    }
}
