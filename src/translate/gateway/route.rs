//! RDS for a gateway: one route configuration per HTTP route name of the merged servers
//! (`http.<port>`, `https.<port>.<portName>.<gateway>.<namespace>`). A virtual host per host
//! that a server and a VirtualService bound to the server's Gateway share (the more specific
//! of the two names), with the VirtualService's HTTP routes for that Gateway; virtual hosts
//! whose routes are equal collapse into one (the first name, every domain), as istiod's do.
//! `httpsRedirect` servers make their hosts' virtual hosts require TLS (a 301 to https). With
//! no virtual host at all, istiod's `blackhole:<port>` answers 404 to everything.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::google::protobuf as pb;

use super::merge::{GatewayServer, Merged};
use super::virtual_services_for;
use crate::model::Resource;
use crate::model::networking::VirtualService;
use crate::translate::naming;
use crate::translate::route::{self, Binding, MAX_DIRECT_RESPONSE_BODY};
use crate::translate::scope::{Scope, host_matches, resolve_host};
use crate::translate::virtual_service;

pub fn build(scope: &Scope, merged: &Merged) -> Vec<xds_route::RouteConfiguration> {
    merged
        .routes()
        .iter()
        .map(|(name, servers)| route_configuration(scope, name, servers))
        .collect()
}

/// The hosts a server and a VirtualService both cover: for each pair that overlaps, the more
/// specific name (istiod's `Names.Intersection`).
fn shared_hosts(
    scope: &Scope,
    server: &GatewayServer,
    vs: &Resource,
    spec: &VirtualService,
) -> Vec<String> {
    let namespace = &vs.meta.namespace;
    let vs_hosts: Vec<String> = spec
        .hosts
        .iter()
        .map(|h| resolve_host(h, namespace, scope.domain_suffix()))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (ns, server_host) in &server.hosts {
        if ns != "*" && ns != namespace {
            continue;
        }
        for vs_host in &vs_hosts {
            let shared = if host_matches(vs_host, server_host) {
                server_host
            } else if host_matches(server_host, vs_host) {
                vs_host
            } else {
                continue;
            };
            let shared = shared.to_ascii_lowercase();
            if !out.contains(&shared) {
                out.push(shared);
            }
        }
    }
    out
}

fn route_configuration(
    scope: &Scope,
    name: &str,
    servers: &[&GatewayServer],
) -> xds_route::RouteConfiguration {
    // Routes per (Gateway, VirtualService): made once, whatever the number of hosts.
    let mut made: BTreeMap<(String, String), Vec<xds_route::Route>> = BTreeMap::new();
    let mut hosts: BTreeMap<String, xds_route::VirtualHost> = BTreeMap::new();
    for server in servers {
        let port = u16::try_from(server.server.port.number).unwrap_or(server.port);
        let redirect = server.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for (vs, spec) in virtual_services_for(scope, &server.gateway_name) {
            let shared = shared_hosts(scope, server, vs, spec);
            if shared.is_empty() {
                continue;
            }
            let routes = made
                .entry((server.gateway_name.clone(), vs.key().to_string()))
                .or_insert_with(|| {
                    let rules = virtual_service::http_rules(scope, vs, spec);
                    route::http_routes(scope, &rules, port, Binding::Gateway(&server.gateway_name))
                })
                .clone();
            for host in shared {
                let vhost = virtual_host(&mut hosts, &host, port);
                vhost.routes.extend(routes.iter().cloned());
                if redirect {
                    vhost.require_tls = xds_route::virtual_host::TlsRequirementType::All as i32;
                }
            }
        }
        if redirect {
            for host in server.host_names() {
                let host = host.to_ascii_lowercase();
                let vhost = virtual_host(&mut hosts, &host, port);
                vhost.require_tls = xds_route::virtual_host::TlsRequirementType::All as i32;
            }
        }
    }
    let virtual_hosts = if hosts.is_empty() {
        let port = servers.first().map_or(0, |s| s.server.port.number);
        vec![xds_route::VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".to_string()],
            ..Default::default()
        }]
    } else {
        collapse(hosts)
    };
    xds_route::RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        validate_clusters: Some(pb::BoolValue { value: false }),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(pb::UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
        ..Default::default()
    }
}

/// The virtual host of `host`, made empty (`<host>:<port>`) the first time.
fn virtual_host<'m>(
    hosts: &'m mut BTreeMap<String, xds_route::VirtualHost>,
    host: &str,
    port: u16,
) -> &'m mut xds_route::VirtualHost {
    hosts
        .entry(host.to_string())
        .or_insert_with(|| xds_route::VirtualHost {
            name: naming::virtual_host(host, port),
            domains: vec![host.to_string()],
            include_request_attempt_count: true,
            ..Default::default()
        })
}

/// Virtual hosts with equal routes and TLS requirement become one: the first by host name
/// keeps its name and gains the others' domains. Catch-all routes move after the others,
/// and the result is sorted by name.
fn collapse(hosts: BTreeMap<String, xds_route::VirtualHost>) -> Vec<xds_route::VirtualHost> {
    let mut out: Vec<xds_route::VirtualHost> = Vec::new();
    for (_, mut vhost) in hosts {
        let (specific, catch_all): (Vec<_>, Vec<_>) = vhost
            .routes
            .into_iter()
            .partition(|r| !r.r#match.as_ref().is_some_and(route::is_catch_all));
        vhost.routes = specific.into_iter().chain(catch_all).collect();
        match out
            .iter_mut()
            .find(|o| o.routes == vhost.routes && o.require_tls == vhost.require_tls)
        {
            Some(first) => first.domains.extend(vhost.domains),
            None => out.push(vhost),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
