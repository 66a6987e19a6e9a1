//! LDS: `virtualOutbound` and `virtualInbound` for captured proxies, an outbound listener per
//! port (HTTP connection manager with RDS for HTTP ports, tcp_proxy for TCP), and inbound
//! listeners for Sidecar ingress ports of proxies that bind their own addresses.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3 as original_dst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
use envoy_types::pb::google::protobuf as pb;

use super::cluster::ads_config_source;
use super::endpoint::socket_address;
use super::envoy::pack;
use super::loadbalancer::TcpProxyPolicy;
use super::naming;
use super::route;
use super::scope::{InboundPort, Scope};
use crate::model::Diagnostic;
use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::proxy::InterceptionMode;
use crate::model::registry::{Protocol, Service};
use std::sync::Arc;

const WILDCARD: &str = "0.0.0.0";

/// An HTTP route configuration an outbound listener fetches over RDS, and the services whose
/// virtual hosts it holds. Shared by LDS and RDS so both agree on names.
#[derive(Debug)]
pub struct RoutePlan<'a> {
    pub name: String,
    pub port: u16,
    pub services: Vec<&'a Arc<Service>>,
}

/// One outbound listener to build.
#[derive(Debug)]
enum Outbound<'a> {
    Http {
        route: String,
    },
    Tcp {
        cluster: String,
        service: Option<&'a Service>,
    },
}

struct Planned<'a> {
    address: String,
    port: u16,
    bind: bool,
    kind: Outbound<'a>,
}

/// Ports handled per request: declared HTTP, and undeclared ones (istiod detects HTTP there).
fn routes_http(protocol: Protocol) -> bool {
    protocol.is_http() || protocol == Protocol::Unsupported
}

/// The outbound listeners and route configurations of a proxy.
fn plan<'a>(scope: &Scope<'a>) -> (Vec<Planned<'a>>, Vec<RoutePlan<'a>>) {
    let mut listeners: BTreeMap<String, Planned<'a>> = BTreeMap::new();
    let mut routes: BTreeMap<String, RoutePlan<'a>> = BTreeMap::new();
    let conflict = |scope: &Scope, name: &str, what: String| {
        scope.report(Diagnostic::warning(
            "Proxy",
            &scope.proxy.namespace,
            &scope.proxy.name,
            "",
            format!("listener {name}: {what}"),
        ));
    };
    // Explicit egress ports first: they take precedence over the catch-all.
    for egress in scope.egress.iter().filter(|e| e.port.is_some()) {
        let Some(port) = &egress.port else { continue };
        let address = egress.bind.clone().unwrap_or_else(|| WILDCARD.to_string());
        let name = naming::listener(&address, port.number);
        if listeners.contains_key(&name) {
            conflict(
                scope,
                &name,
                "defined twice by the Sidecar; the first wins".into(),
            );
            continue;
        }
        let on_port: Vec<&Arc<Service>> = egress
            .services
            .iter()
            .copied()
            .filter(|s| s.port(port.number).is_some())
            .collect();
        let kind = if routes_http(port.protocol) {
            let route = naming::route_config(port.number);
            routes
                .entry(route.clone())
                .or_insert_with(|| RoutePlan {
                    name: route.clone(),
                    port: port.number,
                    services: Vec::new(),
                })
                .services
                .extend(on_port);
            Outbound::Http { route }
        } else {
            match on_port.first() {
                Some(s) => Outbound::Tcp {
                    cluster: naming::outbound_cluster(port.number, "", &s.hostname),
                    service: Some(s),
                },
                None => Outbound::Tcp {
                    cluster: fallback_cluster(scope).to_string(),
                    service: None,
                },
            }
        };
        listeners.insert(
            name,
            Planned {
                address,
                port: port.number,
                bind: egress.binds,
                kind,
            },
        );
    }
    for egress in scope.egress.iter().filter(|e| e.port.is_none()) {
        for service in &egress.services {
            for port in &service.ports {
                if routes_http(port.protocol) {
                    let name = naming::listener(WILDCARD, port.number);
                    let route = naming::route_config(port.number);
                    match listeners.get(&name) {
                        Some(Planned {
                            kind: Outbound::Http { route: r },
                            ..
                        }) if *r == route => {}
                        Some(_) => {
                            conflict(
                                scope,
                                &name,
                                format!(
                                    "port {} of {} is already taken",
                                    port.number, service.hostname
                                ),
                            );
                            continue;
                        }
                        None => {
                            listeners.insert(
                                name,
                                Planned {
                                    address: WILDCARD.to_string(),
                                    port: port.number,
                                    bind: egress.binds,
                                    kind: Outbound::Http {
                                        route: route.clone(),
                                    },
                                },
                            );
                        }
                    }
                    let plan = routes.entry(route.clone()).or_insert_with(|| RoutePlan {
                        name: route,
                        port: port.number,
                        services: Vec::new(),
                    });
                    if !plan.services.iter().any(|s| s.hostname == service.hostname) {
                        plan.services.push(service);
                    }
                } else {
                    let vip = service
                        .addresses
                        .iter()
                        .find(|a| a.parse::<std::net::IpAddr>().is_ok());
                    let address = vip.cloned().unwrap_or_else(|| WILDCARD.to_string());
                    let name = naming::listener(&address, port.number);
                    if listeners.contains_key(&name) {
                        conflict(
                            scope,
                            &name,
                            format!(
                                "port {} of {} is already taken",
                                port.number, service.hostname
                            ),
                        );
                        continue;
                    }
                    listeners.insert(
                        name,
                        Planned {
                            address,
                            port: port.number,
                            bind: egress.binds,
                            kind: Outbound::Tcp {
                                cluster: naming::outbound_cluster(
                                    port.number,
                                    "",
                                    &service.hostname,
                                ),
                                service: Some(service),
                            },
                        },
                    );
                }
            }
        }
    }
    (
        listeners.into_values().collect(),
        routes.into_values().collect(),
    )
}

/// Route configurations of the proxy's outbound HTTP listeners.
pub fn route_plans<'a>(scope: &Scope<'a>) -> Vec<RoutePlan<'a>> {
    plan(scope).1
}

/// Where unmatched outbound traffic goes.
pub fn fallback_cluster(scope: &Scope) -> &'static str {
    match scope.outbound_policy {
        OutboundTrafficPolicy::AllowAny => naming::PASSTHROUGH_CLUSTER,
        OutboundTrafficPolicy::RegistryOnly => naming::BLACKHOLE_CLUSTER,
    }
}

pub fn build(scope: &Scope) -> Vec<xds_listener::Listener> {
    let captured = scope.proxy.interception_mode != InterceptionMode::None;
    let mut out = Vec::new();
    let (planned, _) = plan(scope);
    for p in planned {
        let name = naming::listener(&p.address, p.port);
        let filter = match &p.kind {
            Outbound::Http { route } => http_manager(
                &format!("outbound_{}", name),
                hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                    config_source: Some(ads_config_source()),
                    route_config_name: route.clone(),
                }),
            ),
            Outbound::Tcp { cluster, service } => {
                let _ = service;
                tcp_proxy_filter_with(cluster, TcpProxyPolicy::for_cluster(scope, cluster))
            }
        };
        out.push(xds_listener::Listener {
            name: name.clone(),
            address: Some(socket_address(&p.address, p.port)),
            filter_chains: vec![xds_listener::FilterChain {
                filters: vec![filter],
                ..Default::default()
            }],
            bind_to_port: Some(pb::BoolValue { value: p.bind }),
            traffic_direction: xds_core::TrafficDirection::Outbound as i32,
            ..Default::default()
        });
    }
    let inbound = scope.inbound();
    if captured {
        out.push(virtual_outbound(scope));
        out.push(virtual_inbound(scope, &inbound));
    } else {
        for port in inbound.iter() {
            let address = port
                .bind
                .clone()
                .or_else(|| scope.proxy.ip_addresses.first().cloned())
                .unwrap_or_else(|| WILDCARD.to_string());
            out.push(xds_listener::Listener {
                name: naming::listener(&address, port.port),
                address: Some(socket_address(&address, port.port)),
                filter_chains: vec![inbound_chain(port)],
                traffic_direction: xds_core::TrafficDirection::Inbound as i32,
                ..Default::default()
            });
        }
    }
    out
}

fn virtual_outbound(scope: &Scope) -> xds_listener::Listener {
    xds_listener::Listener {
        name: naming::VIRTUAL_OUTBOUND.to_string(),
        address: Some(socket_address(
            WILDCARD,
            scope.proxy.proxy_config.proxy_listen_port,
        )),
        use_original_dst: Some(pb::BoolValue { value: true }),
        filter_chains: vec![xds_listener::FilterChain {
            name: naming::PASSTHROUGH_FILTER_CHAIN.to_string(),
            filters: vec![tcp_proxy_filter(fallback_cluster(scope))],
            ..Default::default()
        }],
        traffic_direction: xds_core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn virtual_inbound(scope: &Scope, inbound: &[InboundPort]) -> xds_listener::Listener {
    let mut chains: Vec<xds_listener::FilterChain> = inbound.iter().map(inbound_chain).collect();
    for (chain, port) in chains.iter_mut().zip(inbound) {
        chain.filter_chain_match = Some(xds_listener::FilterChainMatch {
            destination_port: Some(pb::UInt32Value {
                value: u32::from(port.port),
            }),
            ..Default::default()
        });
    }
    xds_listener::Listener {
        name: naming::VIRTUAL_INBOUND.to_string(),
        address: Some(socket_address(
            WILDCARD,
            scope.proxy.proxy_config.proxy_inbound_listen_port,
        )),
        listener_filters: vec![xds_listener::ListenerFilter {
            name: "envoy.filters.listener.original_dst".to_string(),
            config_type: Some(xds_listener::listener_filter::ConfigType::TypedConfig(
                pack(&original_dst::OriginalDst {}),
            )),
            ..Default::default()
        }],
        transparent: (scope.proxy.interception_mode == InterceptionMode::Tproxy)
            .then_some(pb::BoolValue { value: true }),
        filter_chains: chains,
        default_filter_chain: Some(xds_listener::FilterChain {
            name: "InboundPassthroughFilterChain".to_string(),
            filters: vec![tcp_proxy_filter(naming::INBOUND_PASSTHROUGH_CLUSTER)],
            ..Default::default()
        }),
        traffic_direction: xds_core::TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// The filter chain delivering one workload port's traffic to its inbound cluster.
fn inbound_chain(port: &InboundPort) -> xds_listener::FilterChain {
    let cluster = naming::inbound_cluster(port.port);
    let filter = if routes_http(port.protocol) {
        http_manager(
            &format!("inbound_0.0.0.0_{}", port.port),
            hcm::http_connection_manager::RouteSpecifier::RouteConfig(
                xds_route::RouteConfiguration {
                    name: naming::inbound_route_config(port.port),
                    virtual_hosts: vec![route::inbound_virtual_host(port.port, &cluster)],
                    validate_clusters: Some(pb::BoolValue { value: false }),
                    ..Default::default()
                },
            ),
        )
    } else {
        tcp_proxy_filter(&cluster)
    };
    xds_listener::FilterChain {
        name: cluster.clone(),
        filters: vec![filter],
        ..Default::default()
    }
}

fn http_manager(
    stat_prefix: &str,
    route: hcm::http_connection_manager::RouteSpecifier,
) -> xds_listener::Filter {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &router::Router::default(),
            ))),
            ..Default::default()
        }],
        use_remote_address: Some(pb::BoolValue { value: false }),
        normalize_path: Some(pb::BoolValue { value: true }),
        ..Default::default()
    };
    xds_listener::Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(
            &manager,
        ))),
    }
}

fn tcp_proxy_filter(cluster: &str) -> xds_listener::Filter {
    tcp_proxy_filter_with(cluster, TcpProxyPolicy::default())
}

/// A `tcp_proxy` with the destination's DestinationRule settings.
fn tcp_proxy_filter_with(cluster: &str, policy: TcpProxyPolicy) -> xds_listener::Filter {
    let mut proxy = tcp_proxy::TcpProxy {
        stat_prefix: naming::stat_prefix(cluster),
        cluster_specifier: Some(tcp_proxy::tcp_proxy::ClusterSpecifier::Cluster(
            cluster.to_string(),
        )),
        ..Default::default()
    };
    policy.apply(&mut proxy);
    xds_listener::Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(&proxy))),
    }
}
