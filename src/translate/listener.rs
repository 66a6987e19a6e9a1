//! LDS: `virtualOutbound` and `virtualInbound` for captured proxies, an outbound listener per
//! port (HTTP connection manager with RDS for HTTP ports, tcp_proxy for TCP; the dynamic
//! forward proxy filters where a wildcard `DYNAMIC_DNS` service is reached), and inbound
//! listeners for the ports that bind their own address: every port of a proxy without capture,
//! and Sidecar ingress ports with `captureMode: NONE` on a captured one.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3 as http_inspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3 as original_dst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3 as tls_inspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
use envoy_types::pb::google::protobuf as pb;

use super::Part;
use super::cluster::ads_config_source;
use super::loadbalancer::TcpProxyPolicy;
use super::route;
use super::scope::{InboundPort, Scope};
use super::values::socket_address;
use super::{authz, cluster, cors, fault, metadata, naming};
use crate::envoy::pack;
use crate::model::proxy::InterceptionMode;
use crate::model::registry::Protocol;

use super::authn::{self, MtlsMode};
use super::mtls;
use super::outbound::{self, ChainAction, ChainPlan, ListenerPlan, WILDCARD};

/// Ports handled per request: declared HTTP, and undeclared ones (istiod detects HTTP there).
fn routes_http(protocol: Protocol) -> bool {
    protocol.is_http() || protocol == Protocol::Unsupported
}

pub fn build(scope: &Scope, part: Part) -> Vec<xds_listener::Listener> {
    let captured = scope.proxy.interception_mode != InterceptionMode::None;
    let mut out: Vec<xds_listener::Listener> = Vec::new();
    if part.outbound() {
        let (planned, routes) = outbound::plan(scope);
        let dfp = DynamicForwardProxies::of(scope, &routes);
        out.extend(planned.iter().map(|p| outbound_listener(scope, p, &dfp)));
        if captured {
            out.push(virtual_outbound(scope));
        }
    }
    if !part.inbound() {
        return out;
    }
    // Ports that bind their own listener (istiod's `getBindToPort`) leave `virtualInbound`.
    let (bound, redirected): (Vec<InboundPort>, Vec<InboundPort>) = scope
        .inbound()
        .into_iter()
        .partition(|p| p.binds || !captured);
    let security = authz::Inbound::build(scope);
    if captured {
        out.push(virtual_inbound(scope, &redirected, &security));
    }
    for port in bound.iter() {
        let address = port
            .bind
            .clone()
            .or_else(|| scope.proxy.ip_addresses.first().cloned())
            .unwrap_or_else(|| WILDCARD.to_string());
        let chains = inbound_chains(scope, port, false, &security);
        let inspect = chains.iter().any(matches_transport);
        out.push(xds_listener::Listener {
            name: naming::listener(&address, port.port),
            address: Some(socket_address(&address, port.port)),
            filter_chains: chains,
            listener_filters: tls_inspector_when(inspect),
            traffic_direction: xds_core::TrafficDirection::Inbound as i32,
            ..Default::default()
        });
    }
    out
}

/// The TLS inspector, when a chain matches on what it reads (SNI, transport, ALPN).
pub(super) fn tls_inspector_when(needed: bool) -> Vec<xds_listener::ListenerFilter> {
    if !needed {
        return Vec::new();
    }
    vec![listener_filter(
        "envoy.filters.listener.tls_inspector",
        &tls_inspector::TlsInspector::default(),
    )]
}

fn listener_filter<T: prost::Name + prost::Message>(
    name: &str,
    config: &T,
) -> xds_listener::ListenerFilter {
    xds_listener::ListenerFilter {
        name: name.to_string(),
        config_type: Some(xds_listener::listener_filter::ConfigType::TypedConfig(
            pack(config),
        )),
        ..Default::default()
    }
}

/// `10.0.0.0/8` or a bare address (a /32 or /128).
fn cidr(s: &str) -> Option<xds_core::CidrRange> {
    let net: ipnet::IpNet = s
        .parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))?;
    Some(xds_core::CidrRange {
        address_prefix: net.network().to_string(),
        prefix_len: Some(pb::UInt32Value {
            value: u32::from(net.prefix_len()),
        }),
    })
}

fn outbound_chain(
    scope: &Scope,
    listener: &ListenerPlan,
    chain: &ChainPlan,
    dfp: &DynamicForwardProxies,
) -> xds_listener::FilterChain {
    let filters = match &chain.action {
        ChainAction::Http { route } => {
            let mut manager = connection_manager(
                &format!("outbound_{}", listener.name),
                Vec::new(),
                rds(route),
            );
            if let Some(resolve) = dfp.http_filter(route) {
                insert_before_router(&mut manager, resolve);
            }
            vec![manager_filter(&manager)]
        }
        ChainAction::Tcp { clusters } => {
            let proxy = match clusters.as_slice() {
                // The destination's DestinationRule shapes the proxy (idle timeout, source-IP
                // hash).
                [(cluster, _)] => {
                    tcp_proxy_filter_with(cluster, TcpProxyPolicy::for_cluster(scope, cluster))
                }
                weighted => tcp_proxy_weighted(weighted),
            };
            dfp.network_filter(clusters)
                .into_iter()
                .chain([proxy])
                .collect()
        }
    };
    let has_match = !(chain.application_protocols.is_empty()
        && chain.server_names.is_empty()
        && chain.prefix_ranges.is_empty());
    xds_listener::FilterChain {
        name: chain.name.clone(),
        filter_chain_match: has_match.then(|| xds_listener::FilterChainMatch {
            application_protocols: chain.application_protocols.clone(),
            server_names: chain.server_names.clone(),
            prefix_ranges: chain.prefix_ranges.iter().filter_map(|c| cidr(c)).collect(),
            ..Default::default()
        }),
        filters,
        metadata: chain.config.clone().and_then(metadata::config_of_path),
        ..Default::default()
    }
}

fn outbound_listener(
    scope: &Scope,
    plan: &ListenerPlan,
    dfp: &DynamicForwardProxies,
) -> xds_listener::Listener {
    let mut listener_filters = Vec::new();
    if plan.inspect_tls || plan.sniff_http {
        listener_filters.push(listener_filter(
            "envoy.filters.listener.tls_inspector",
            &tls_inspector::TlsInspector::default(),
        ));
    }
    if plan.sniff_http {
        listener_filters.push(listener_filter(
            "envoy.filters.listener.http_inspector",
            &http_inspector::HttpInspector::default(),
        ));
    }
    xds_listener::Listener {
        name: plan.name.clone(),
        address: Some(socket_address(&plan.address, plan.port)),
        filter_chains: plan
            .chains
            .iter()
            .map(|c| outbound_chain(scope, plan, c, dfp))
            .collect(),
        listener_filters,
        // Server-first protocols on sniffed ports proceed as TCP when the client stays silent.
        continue_on_listener_filters_timeout: plan.sniff_http,
        bind_to_port: Some(pb::BoolValue { value: plan.bind }),
        traffic_direction: xds_core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The dynamic forward proxy services (wildcard `DYNAMIC_DNS`) a proxy reaches, and the
/// listener filters that resolve the host a connection names for their clusters (istiod's
/// `envoy.filters.http.dynamic_forward_proxy` in the HTTP connection manager, and
/// `envoy.filters.network.sni_dynamic_forward_proxy` in front of `tcp_proxy` for TLS), each
/// with the service's DNS cache, which the cluster shares.
struct DynamicForwardProxies {
    /// Route configuration → the host whose cache its connection manager resolves with (the
    /// first such service the route holds; Envoy's cluster resolves others itself).
    routes: std::collections::BTreeMap<String, String>,
    /// Cluster → (host, port).
    clusters: std::collections::BTreeMap<String, (String, u16)>,
}

impl DynamicForwardProxies {
    fn of(scope: &Scope, routes: &[outbound::RoutePlan]) -> DynamicForwardProxies {
        let routes = routes
            .iter()
            .filter_map(|r| {
                let s = r
                    .services
                    .iter()
                    .find(|s| s.dynamic_forward_proxy() && s.port(r.port).is_some())?;
                Some((r.name.clone(), s.hostname.clone()))
            })
            .collect();
        let clusters = scope
            .services()
            .into_iter()
            .filter(|s| s.dynamic_forward_proxy())
            .flat_map(|s| {
                s.ports.iter().map(|p| {
                    (
                        naming::outbound_cluster(p.number, "", &s.hostname),
                        (s.hostname.clone(), p.number),
                    )
                })
            })
            .collect();
        DynamicForwardProxies { routes, clusters }
    }

    /// The HTTP filter that resolves hosts for the services of route configuration `route`,
    /// if it routes to a dynamic forward proxy.
    fn http_filter(&self, route: &str) -> Option<hcm::HttpFilter> {
        use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3 as http_dfp;
        let host = self.routes.get(route)?;
        Some(hcm::HttpFilter {
            name: "envoy.filters.http.dynamic_forward_proxy".to_string(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &http_dfp::FilterConfig {
                    implementation_specifier: Some(
                        http_dfp::filter_config::ImplementationSpecifier::DnsCacheConfig(
                            cluster::dns_cache_config(host),
                        ),
                    ),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        })
    }

    /// The network filter that resolves the SNI a TLS connection names, in front of the
    /// `tcp_proxy` of a chain whose one destination is a dynamic forward proxy.
    fn network_filter(&self, clusters: &[(String, u32)]) -> Option<xds_listener::Filter> {
        use envoy_types::pb::envoy::extensions::filters::network::sni_dynamic_forward_proxy::v3 as sni_dfp;
        let [(name, _)] = clusters else {
            return None;
        };
        let (host, port) = self.clusters.get(name)?;
        let config = sni_dfp::FilterConfig {
            dns_cache_config: Some(cluster::dns_cache_config(host)),
            port_specifier: Some(sni_dfp::filter_config::PortSpecifier::PortValue(u32::from(
                *port,
            ))),
            ..Default::default()
        };
        Some(xds_listener::Filter {
            name: "envoy.filters.network.sni_dynamic_forward_proxy".to_string(),
            config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(&config))),
        })
    }
}

/// Puts `http` just before the router of a connection manager (other filters are left alone).
fn insert_before_router(manager: &mut hcm::HttpConnectionManager, http: hcm::HttpFilter) {
    let at = manager
        .http_filters
        .iter()
        .position(|f| f.name == "envoy.filters.http.router")
        .unwrap_or(manager.http_filters.len());
    manager.http_filters.insert(at, http);
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
            filters: vec![tcp_proxy_filter(outbound::fallback_cluster(scope))],
            ..Default::default()
        }],
        traffic_direction: xds_core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// Whether a chain selects on the transport protocol (needs the `tls_inspector`).
fn matches_transport(chain: &xds_listener::FilterChain) -> bool {
    chain
        .filter_chain_match
        .as_ref()
        .is_some_and(|m| !m.transport_protocol.is_empty())
}

fn virtual_inbound(
    scope: &Scope,
    inbound: &[InboundPort],
    security: &authz::Inbound,
) -> xds_listener::Listener {
    let mut chains: Vec<xds_listener::FilterChain> = inbound
        .iter()
        .flat_map(|port| inbound_chains(scope, port, true, security))
        .collect();
    let trust_domains = scope.model.mesh.trust_domains_for_validation();
    // Traffic to ports the proxy does not know passes through, in the workload's mode, and is
    // authorized too, as TCP (istiod also applies its policies to the passthrough chains).
    let passthrough = |mtls: bool| xds_listener::FilterChain {
        name: "InboundPassthroughFilterChain".to_string(),
        filters: security
            .tcp
            .iter()
            .cloned()
            .chain([tcp_proxy_filter(naming::INBOUND_PASSTHROUGH_CLUSTER)])
            .collect(),
        transport_socket: mtls
            .then(|| mtls::downstream(scope.proxy.secret_source, false, &trust_domains)),
        ..Default::default()
    };
    let mode = authn::inbound_mode(scope, None);
    let default_filter_chain = match mode {
        MtlsMode::Disable => Some(passthrough(false)),
        MtlsMode::Permissive => {
            chains.push(xds_listener::FilterChain {
                filter_chain_match: Some(xds_listener::FilterChainMatch {
                    transport_protocol: "tls".to_string(),
                    application_protocols: mtls::ISTIO_MTLS_ALPNS.map(String::from).to_vec(),
                    ..Default::default()
                }),
                ..passthrough(true)
            });
            Some(passthrough(false))
        }
        // No default: plaintext to an unknown port matches no chain and is closed.
        MtlsMode::Strict => {
            chains.push(xds_listener::FilterChain {
                filter_chain_match: Some(xds_listener::FilterChainMatch {
                    transport_protocol: "tls".to_string(),
                    ..Default::default()
                }),
                ..passthrough(true)
            });
            None
        }
    };
    let mut listener_filters = vec![xds_listener::ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_string(),
        config_type: Some(xds_listener::listener_filter::ConfigType::TypedConfig(
            pack(&original_dst::OriginalDst {}),
        )),
        ..Default::default()
    }];
    if chains.iter().any(matches_transport) {
        listener_filters.push(listener_filter(
            "envoy.filters.listener.tls_inspector",
            &tls_inspector::TlsInspector::default(),
        ));
    }
    xds_listener::Listener {
        name: naming::VIRTUAL_INBOUND.to_string(),
        address: Some(socket_address(
            WILDCARD,
            scope.proxy.proxy_config.proxy_inbound_listen_port,
        )),
        listener_filters,
        transparent: (scope.proxy.interception_mode == InterceptionMode::Tproxy)
            .then_some(pb::BoolValue { value: true }),
        filter_chains: chains,
        default_filter_chain,
        traffic_direction: xds_core::TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// The filter chains of one workload port in its mTLS mode; `port_match`: select the port by
/// its original destination (the captured `virtualInbound` listener).
fn inbound_chains(
    scope: &Scope,
    port: &InboundPort,
    port_match: bool,
    security: &authz::Inbound,
) -> Vec<xds_listener::FilterChain> {
    let mode = authn::inbound_mode(scope, Some(port.port));
    let http = routes_http(port.protocol);
    let mut base = inbound_chain(port, security, mode != MtlsMode::Disable);
    // istiod names the Sidecar on the chains of its ingress listeners.
    base.metadata = scope.sidecar_ingress().and_then(metadata::config);
    let matching = |transport: &str, alpn: &[&str]| {
        let m = xds_listener::FilterChainMatch {
            destination_port: port_match.then_some(pb::UInt32Value {
                value: u32::from(port.port),
            }),
            transport_protocol: transport.to_string(),
            application_protocols: alpn.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        (m != xds_listener::FilterChainMatch::default()).then_some(m)
    };
    let trust_domains = scope.model.mesh.trust_domains_for_validation();
    let mtls_chain = |alpn: &[&str]| xds_listener::FilterChain {
        filter_chain_match: matching("tls", alpn),
        transport_socket: Some(mtls::downstream(
            scope.proxy.secret_source,
            http,
            &trust_domains,
        )),
        ..base.clone()
    };
    match mode {
        MtlsMode::Disable => vec![xds_listener::FilterChain {
            filter_chain_match: matching("", &[]),
            ..base
        }],
        MtlsMode::Strict => vec![
            mtls_chain(&[]),
            // Plaintext to a STRICT port is closed, even when the workload's other ports
            // pass plaintext through.
            xds_listener::FilterChain {
                name: format!("{}-plaintext-refused", base.name),
                filter_chain_match: matching("raw_buffer", &[]),
                filters: vec![tcp_proxy_filter(naming::BLACKHOLE_CLUSTER)],
                ..Default::default()
            },
        ],
        MtlsMode::Permissive => {
            let mut chains = vec![mtls_chain(&mtls::ISTIO_MTLS_ALPNS)];
            if !http {
                // TLS that is not the mesh's (the application's own) passes through.
                chains.push(xds_listener::FilterChain {
                    filter_chain_match: matching("tls", &[]),
                    ..base.clone()
                });
            }
            chains.push(xds_listener::FilterChain {
                filter_chain_match: matching("raw_buffer", &[]),
                ..base
            });
            chains
        }
    }
}

/// The filter chain delivering one workload port's traffic to its inbound cluster, behind the
/// proxy's authorization filters (HTTP filters in the connection manager, network filters in
/// front of tcp_proxy); `xfcc`: tell the application who the mTLS peer is
/// (`x-forwarded-client-cert`, as istiod sets it).
fn inbound_chain(
    port: &InboundPort,
    security: &authz::Inbound,
    xfcc: bool,
) -> xds_listener::FilterChain {
    let cluster = naming::inbound_cluster(port.port);
    let mut filters = Vec::new();
    let filter = if routes_http(port.protocol) {
        let mut manager = connection_manager(
            &format!("inbound_0.0.0.0_{}", port.port),
            security.http.clone(),
            hcm::http_connection_manager::RouteSpecifier::RouteConfig(
                xds_route::RouteConfiguration {
                    name: naming::inbound_route_config(port.port),
                    virtual_hosts: vec![route::inbound_virtual_host(port.port, &cluster)],
                    validate_clusters: Some(pb::BoolValue { value: false }),
                    ..Default::default()
                },
            ),
        );
        if xfcc {
            set_xfcc(&mut manager);
        }
        manager_filter(&manager)
    } else {
        filters.extend(security.tcp.iter().cloned());
        tcp_proxy_filter(&cluster)
    };
    filters.push(filter);
    xds_listener::FilterChain {
        name: cluster.clone(),
        filters,
        ..Default::default()
    }
}

/// istiod's inbound `forward_client_cert_details: APPEND_FORWARD` with the peer's subject, DNS
/// and URI SANs.
fn set_xfcc(manager: &mut hcm::HttpConnectionManager) {
    manager.forward_client_cert_details =
        hcm::http_connection_manager::ForwardClientCertDetails::AppendForward as i32;
    manager.set_current_client_cert_details =
        Some(hcm::http_connection_manager::SetCurrentClientCertDetails {
            subject: Some(pb::BoolValue { value: true }),
            dns: true,
            uri: true,
            ..Default::default()
        });
}

/// An HTTP connection manager (inbound, outbound and gateway alike, WebSocket upgrades
/// allowed); `pre` are the authorization and authentication filters that run first.
pub(super) fn connection_manager(
    stat_prefix: &str,
    pre: Vec<hcm::HttpFilter>,
    route: hcm::http_connection_manager::RouteSpecifier,
) -> hcm::HttpConnectionManager {
    // istiod's order: authn/authz first; fault and cors act only where a route configures them.
    let mut http_filters = pre;
    http_filters.extend([
        fault::http_filter(),
        cors::http_filter(),
        hcm::HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &router::Router::default(),
            ))),
            ..Default::default()
        },
    ]);
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route),
        http_filters,
        use_remote_address: Some(pb::BoolValue { value: false }),
        normalize_path: Some(pb::BoolValue { value: true }),
        // istiod allows WebSocket upgrades on every HTTP connection manager.
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The network filter of a connection manager.
pub(super) fn manager_filter(manager: &hcm::HttpConnectionManager) -> xds_listener::Filter {
    xds_listener::Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(manager))),
    }
}

/// The connection manager's route configuration over ADS.
pub(super) fn rds(route: &str) -> hcm::http_connection_manager::RouteSpecifier {
    hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
        config_source: Some(ads_config_source()),
        route_config_name: route.to_string(),
    })
}

pub(super) fn tcp_proxy_weighted(clusters: &[(String, u32)]) -> xds_listener::Filter {
    let proxy = tcp_proxy::TcpProxy {
        stat_prefix: naming::stat_prefix(
            clusters
                .first()
                .map(|(c, _)| c.as_str())
                .unwrap_or_default(),
        ),
        cluster_specifier: Some(tcp_proxy::tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::tcp_proxy::WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(
                        |(name, weight)| tcp_proxy::tcp_proxy::weighted_cluster::ClusterWeight {
                            name: name.clone(),
                            weight: *weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            },
        )),
        ..Default::default()
    };
    xds_listener::Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(&proxy))),
    }
}

fn tcp_proxy_filter(cluster: &str) -> xds_listener::Filter {
    tcp_proxy_filter_with(cluster, TcpProxyPolicy::default())
}

/// A `tcp_proxy` with the destination's DestinationRule settings.
pub(super) fn tcp_proxy_filter_with(cluster: &str, policy: TcpProxyPolicy) -> xds_listener::Filter {
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
