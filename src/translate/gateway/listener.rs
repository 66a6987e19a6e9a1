//! LDS for a gateway: one listener per merged port, `<bind>_<port>` (`0.0.0.0_<port>`), bound
//! by the gateway itself (no capture). Plaintext HTTP servers: one chain, an HTTP connection
//! manager on `http.<port>`. TLS servers: a chain per server told apart by SNI (the server's
//! hosts; none for `*`): HTTPS terminated here is a connection manager on its own route
//! configuration; TLS (or TCP) is proxied per the first VirtualService `tcp` route bound to the
//! server; PASSTHROUGH is a chain per VirtualService `tls` match, by its SNI hosts;
//! AUTO_PASSTHROUGH a chain per service cluster, by the SNI `outbound_.<port>_.<subset>_.<host>`
//! that sidecars send it. Authorization and request authentication apply as on a sidecar's
//! inbound side, since a gateway is where traffic enters. A port left without chains gets no
//! listener, with a diagnostic.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf as pb;

use super::merge::{GatewayServer, Merged, MergedPort};
use super::tls::server_socket;
use super::{sni_dnat_clusters, virtual_services_for};
use crate::model::networking::{self, ServerTlsMode};
use crate::translate::IntoWarning;
use crate::translate::authz;
use crate::translate::listener::{
    connection_manager, manager_filter, rds, tcp_proxy_filter_with, tcp_proxy_weighted,
    tls_inspector_when,
};
use crate::translate::loadbalancer::TcpProxyPolicy;
use crate::translate::outbound::weighted;
use crate::translate::route::Binding;
use crate::translate::scope::{Scope, host_matches, resolve_host};
use crate::translate::values::socket_address;

pub fn build(scope: &Scope, merged: &Merged) -> Vec<xds_listener::Listener> {
    let security = authz::Inbound::build(scope);
    let mut out = Vec::new();
    for port in &merged.ports {
        let name = port.listener_name();
        let chains = if port.plaintext {
            plaintext_chains(scope, port, &name, &security)
        } else {
            let mut sni_taken = BTreeSet::new();
            port.servers
                .iter()
                .flat_map(|s| tls_chains(scope, s, &name, &security, &mut sni_taken))
                .collect()
        };
        if chains.is_empty() {
            if let Some(first) = port.servers.first() {
                scope.report(
                    first
                        .gateway
                        .diagnostic(
                            &first.field,
                            format!(
                                "no VirtualService bound to Gateway {} routes port {}; listener {name} not created",
                                first.gateway_name, port.port
                            ),
                        )
                        .into_warning(),
                );
            }
            continue;
        }
        let inspect = chains.iter().any(|c| {
            c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.server_names.is_empty())
        });
        out.push(xds_listener::Listener {
            name: name.clone(),
            address: Some(socket_address(
                port.bind.as_deref().unwrap_or("0.0.0.0"),
                port.port,
            )),
            filter_chains: chains,
            listener_filters: tls_inspector_when(inspect),
            traffic_direction: xds_core::TrafficDirection::Outbound as i32,
            ..Default::default()
        });
    }
    out
}

/// A gateway's connection manager: the client's address is the remote peer's, and client
/// certificate details are sanitized and set from the connection (istiod's `SANITIZE_SET`).
fn gateway_manager(
    stat_prefix: &str,
    route: &str,
    security: &authz::Inbound,
) -> xds_listener::Filter {
    let mut manager = connection_manager(stat_prefix, security.http.clone(), rds(route));
    manager.use_remote_address = Some(pb::BoolValue { value: true });
    manager.forward_client_cert_details =
        hcm::http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    manager.set_current_client_cert_details =
        Some(hcm::http_connection_manager::SetCurrentClientCertDetails {
            subject: Some(pb::BoolValue { value: true }),
            cert: true,
            dns: true,
            uri: true,
            ..Default::default()
        });
    manager_filter(&manager)
}

fn plaintext_chains(
    scope: &Scope,
    port: &MergedPort,
    name: &str,
    security: &authz::Inbound,
) -> Vec<xds_listener::FilterChain> {
    let Some(first) = port.servers.first() else {
        return Vec::new();
    };
    let filters = match &first.route_name {
        Some(route) => vec![gateway_manager(
            &format!("outbound_{name}"),
            route,
            security,
        )],
        None => match tcp_filters(scope, first, security) {
            Some(f) => f,
            None => return Vec::new(),
        },
    };
    vec![xds_listener::FilterChain {
        filters,
        ..Default::default()
    }]
}

/// The chains of one TLS server. `sni_taken`: SNI names of the port's chains so far (Envoy
/// rejects two chains with equal matches).
fn tls_chains(
    scope: &Scope,
    server: &GatewayServer,
    name: &str,
    security: &authz::Inbound,
    sni_taken: &mut BTreeSet<String>,
) -> Vec<xds_listener::FilterChain> {
    let Some(settings) = &server.server.tls else {
        return Vec::new();
    };
    let sni = server_names(server.host_names());
    let chain = |filters: Vec<xds_listener::Filter>| xds_listener::FilterChain {
        filter_chain_match: (!sni.is_empty()).then(|| xds_listener::FilterChainMatch {
            server_names: sni.clone(),
            ..Default::default()
        }),
        filters,
        transport_socket: Some(server_socket(scope, settings)),
        ..Default::default()
    };
    match settings.mode.unwrap_or(ServerTlsMode::Passthrough) {
        ServerTlsMode::Passthrough => passthrough_chains(scope, server, sni_taken),
        ServerTlsMode::AutoPassthrough => auto_passthrough_chains(scope, server, sni_taken),
        _ => match &server.route_name {
            Some(route) => {
                let stat_prefix = server
                    .server
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("outbound_{name}"));
                vec![chain(vec![gateway_manager(&stat_prefix, route, security)])]
            }
            None => tcp_filters(scope, server, security)
                .map(|f| vec![chain(f)])
                .unwrap_or_default(),
        },
    }
}

/// SNI names of a chain: none (any) when `*` is among them.
fn server_names(mut hosts: Vec<String>) -> Vec<String> {
    if hosts.iter().any(|h| h == "*") {
        return Vec::new();
    }
    hosts.sort();
    hosts
}

/// Whether a VirtualService (in `namespace`, with `hosts`) routes for a server: one of its
/// hosts overlaps one the server exposes to that namespace.
fn binds_server(scope: &Scope, server: &GatewayServer, namespace: &str, hosts: &[String]) -> bool {
    server.hosts.iter().any(|(ns, server_host)| {
        (ns == "*" || ns == namespace)
            && hosts.iter().any(|h| {
                let h = resolve_host(h, namespace, scope.domain_suffix());
                host_matches(&h, server_host) || host_matches(server_host, &h)
            })
    })
}

/// Whether an L4 match applies to a server of the Gateway: its port, and its `gateways`.
fn l4_applies(
    server: &GatewayServer,
    port: Option<u32>,
    gateways: &[String],
    namespace: &str,
) -> bool {
    port.is_none_or(|p| p == server.server.port.number)
        && (gateways.is_empty()
            || Binding::Gateway(&server.gateway_name).named_in(gateways, namespace))
}

/// tcp_proxy to the destinations of the first VirtualService `tcp` route bound to the server
/// (after the authorization filters); `None` when there is none.
fn tcp_filters(
    scope: &Scope,
    server: &GatewayServer,
    security: &authz::Inbound,
) -> Option<Vec<xds_listener::Filter>> {
    let port = u16::try_from(server.server.port.number).unwrap_or(server.port);
    for (vs, spec) in virtual_services_for(scope, &server.gateway_name) {
        if !binds_server(scope, server, &vs.meta.namespace, &spec.hosts) {
            continue;
        }
        for rule in &spec.tcp {
            let applies = rule.match_.is_empty()
                || rule
                    .match_
                    .iter()
                    .any(|m| l4_applies(server, m.port, &m.gateways, &vs.meta.namespace));
            if !applies || rule.route.is_empty() {
                continue;
            }
            let mut filters = security.tcp.clone();
            filters.push(proxy_to(scope, vs, &rule.route, port));
            return Some(filters);
        }
    }
    None
}

/// tcp_proxy to the destinations of an L4 route.
fn proxy_to(
    scope: &Scope,
    vs: &crate::model::Resource,
    route: &[networking::RouteDestination],
    port: u16,
) -> xds_listener::Filter {
    match weighted(scope, vs, route, port).as_slice() {
        [(cluster, _)] => {
            tcp_proxy_filter_with(cluster, TcpProxyPolicy::for_cluster(scope, cluster))
        }
        clusters => tcp_proxy_weighted(clusters),
    }
}

/// PASSTHROUGH: a chain per `tls` match of the VirtualServices bound to the server, by its SNI
/// hosts; a match whose SNI hosts an earlier chain took is skipped with a diagnostic.
fn passthrough_chains(
    scope: &Scope,
    server: &GatewayServer,
    sni_taken: &mut BTreeSet<String>,
) -> Vec<xds_listener::FilterChain> {
    let port = u16::try_from(server.server.port.number).unwrap_or(server.port);
    let mut out = Vec::new();
    for (vs, spec) in virtual_services_for(scope, &server.gateway_name) {
        if !binds_server(scope, server, &vs.meta.namespace, &spec.hosts) {
            continue;
        }
        for (i, rule) in spec.tls.iter().enumerate() {
            if rule.route.is_empty() {
                continue;
            }
            for (j, m) in rule.match_.iter().enumerate() {
                if !l4_applies(server, m.port, &m.gateways, &vs.meta.namespace) {
                    continue;
                }
                let sni = server_names(m.sni_hosts.clone());
                if let Some(taken) = sni.iter().find(|h| sni_taken.contains(*h)) {
                    scope.report(
                        vs.diagnostic(
                            format!("spec.tls[{i}].match[{j}].sniHosts"),
                            format!(
                                "SNI host {taken} on port {} of Gateway {} is already routed; match skipped",
                                server.port, server.gateway_name
                            ),
                        )
                        .into_warning(),
                    );
                    continue;
                }
                sni_taken.extend(sni.iter().cloned());
                out.push(xds_listener::FilterChain {
                    filter_chain_match: Some(xds_listener::FilterChainMatch {
                        server_names: sni,
                        ..Default::default()
                    }),
                    filters: vec![proxy_to(scope, vs, &rule.route, port)],
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// AUTO_PASSTHROUGH: a chain per service cluster whose host a server host covers, matched by
/// the SNI a sidecar's mTLS connection to that cluster carries, proxied unchanged (the
/// endpoint terminates the mTLS) to the cluster of that name.
fn auto_passthrough_chains(
    scope: &Scope,
    server: &GatewayServer,
    sni_taken: &mut BTreeSet<String>,
) -> Vec<xds_listener::FilterChain> {
    let hosts = server.host_names();
    let mut out = Vec::new();
    for dnat in sni_dnat_clusters(scope) {
        if !hosts.iter().any(|h| host_matches(h, &dnat.host)) {
            continue;
        }
        let cluster = dnat.sni;
        if !sni_taken.insert(cluster.clone()) {
            continue;
        }
        out.push(xds_listener::FilterChain {
            filter_chain_match: Some(xds_listener::FilterChainMatch {
                server_names: vec![cluster.clone()],
                ..Default::default()
            }),
            filters: vec![tcp_proxy_filter_with(&cluster, TcpProxyPolicy::default())],
            ..Default::default()
        });
    }
    out
}
