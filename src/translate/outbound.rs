//! The outbound listener plan: which listeners a proxy gets for the services it imports, the
//! filter chains of each (HTTP routed over RDS; TCP and TLS routed by VirtualService `tcp` and
//! `tls` rules), and the route configurations RDS must serve. LDS and RDS both read this plan so
//! they agree on names.
//!
//! As istiod: declared HTTP ports share a `0.0.0.0_<port>` listener routed by Host; TCP, TLS and
//! undeclared ports get `<vip>_<port>` when the service has a virtual IP, else `0.0.0.0_<port>`;
//! undeclared ports sniff HTTP (http_inspector) and fall back to TCP; TLS ports route by SNI
//! (tls_inspector). Explicit Sidecar egress ports take precedence over the catch-all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use super::scope::{Egress, Scope};
use super::{metadata, naming};
use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::networking;
use crate::model::registry::{self, Protocol, Service};
use crate::model::{Diagnostic, Severity};

pub const WILDCARD: &str = "0.0.0.0";

/// An HTTP route configuration and the services whose virtual hosts it holds.
#[derive(Debug)]
pub struct RoutePlan<'a> {
    pub name: String,
    pub port: u16,
    pub services: Vec<&'a Arc<Service>>,
}

/// What a filter chain does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainAction {
    /// HTTP connection manager fetching this route configuration.
    Http { route: String },
    /// tcp_proxy to one cluster, or weighted between several.
    Tcp { clusters: Vec<(String, u32)> },
}

/// One filter chain and when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPlan {
    pub name: String,
    /// ALPN values set by http_inspector (`http/1.1`, `h2c`).
    pub application_protocols: Vec<String>,
    /// SNI values (TLS).
    pub server_names: Vec<String>,
    /// Destination CIDRs (`destinationSubnets`).
    pub prefix_ranges: Vec<String>,
    pub action: ChainAction,
    /// The VirtualService the chain's rule is written in, as its `istio` metadata names it
    /// (`metadata::config_path`): set where istiod sets it (TLS rules; TCP rules matching any
    /// destination).
    pub config: Option<String>,
}

impl ChainPlan {
    fn key(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            self.application_protocols.clone(),
            self.server_names.clone(),
            self.prefix_ranges.clone(),
        )
    }
}

/// One outbound listener.
#[derive(Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Binds its address (no iptables capture); otherwise reached via `virtualOutbound`.
    pub bind: bool,
    pub chains: Vec<ChainPlan>,
    pub sniff_http: bool,
    pub inspect_tls: bool,
}

#[derive(Default)]
struct Entry<'a> {
    address: String,
    port: u16,
    bind: bool,
    route: Option<String>,
    /// Undeclared-protocol services: HTTP when sniffed, TCP otherwise.
    auto: Vec<&'a Arc<Service>>,
    tcp: Vec<&'a Arc<Service>>,
    tls: Vec<&'a Arc<Service>>,
    explicit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Http,
    Auto,
    Tcp,
    Tls,
}

fn class(p: Protocol) -> Class {
    match p {
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => Class::Http,
        Protocol::Unsupported => Class::Auto,
        Protocol::Https | Protocol::Tls => Class::Tls,
        Protocol::Tcp | Protocol::Udp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql => {
            Class::Tcp
        }
    }
}

/// The address a service's TCP and TLS listeners bind: the first of [`Scope::addresses`]
/// (CIDRs and ranges get no listener of their own).
fn vip(scope: &Scope, service: &Service) -> Option<String> {
    scope.addresses(service).into_iter().next()
}

/// Where unmatched outbound traffic goes.
pub fn fallback_cluster(scope: &Scope) -> &'static str {
    match scope.outbound_policy {
        OutboundTrafficPolicy::AllowAny => naming::PASSTHROUGH_CLUSTER,
        OutboundTrafficPolicy::RegistryOnly => naming::BLACKHOLE_CLUSTER,
    }
}

fn conflict(scope: &Scope, listener: &str, what: String) {
    scope.report(Diagnostic::about_proxy(
        Severity::Warning,
        &scope.proxy.namespace,
        format!("listener {listener}: {what}"),
    ));
}

/// Listeners and route configurations being planned.
#[derive(Default)]
struct Planner<'a> {
    entries: BTreeMap<String, Entry<'a>>,
    routes: BTreeMap<String, RoutePlan<'a>>,
    /// The hostnames each route configuration (by port) already routes.
    routed: HashSet<(u16, &'a str)>,
}

impl<'a> Planner<'a> {
    fn route(&mut self, port: u16) -> &mut RoutePlan<'a> {
        let name = naming::route_config(port);
        self.routes
            .entry(name.clone())
            .or_insert_with(|| RoutePlan {
                name,
                port,
                services: Vec::new(),
            })
    }

    /// Adds a service port to the entry of the listener it lands on.
    fn place(
        &mut self,
        egress: &Egress<'a>,
        address: String,
        port: u16,
        service: &'a Arc<Service>,
        class: Class,
    ) -> Result<(), String> {
        let explicit = egress.port.is_some();
        let name = naming::listener(&address, port);
        let entry = self.entries.entry(name).or_insert_with(|| Entry {
            address,
            port,
            bind: egress.binds,
            explicit,
            ..Default::default()
        });
        if entry.explicit && !explicit {
            return Err(format!(
                "port {port} of {} is taken by a Sidecar egress listener",
                service.hostname
            ));
        }
        match class {
            Class::Http => {}
            Class::Auto => entry.auto.push(service),
            Class::Tcp => entry.tcp.push(service),
            Class::Tls => entry.tls.push(service),
        }
        if matches!(class, Class::Http | Class::Auto) {
            entry.route = Some(naming::route_config(port));
            if self.routed.insert((port, service.hostname.as_str())) {
                self.route(port).services.push(service);
            } else {
                self.route(port);
            }
        }
        Ok(())
    }
}

/// The outbound listeners and route configurations of a proxy.
pub fn plan<'a>(scope: &Scope<'a>) -> (Vec<ListenerPlan>, Vec<RoutePlan<'a>>) {
    let mut planner = Planner::default();
    for egress in scope.egress.iter().filter(|e| e.port.is_some()) {
        let Some(port) = &egress.port else { continue };
        let address = egress.bind.clone().unwrap_or_else(|| WILDCARD.to_string());
        let name = naming::listener(&address, port.number);
        if planner.entries.contains_key(&name) {
            conflict(
                scope,
                &name,
                "defined twice by the Sidecar; the first wins".into(),
            );
            continue;
        }
        let egress_class = class(port.protocol);
        let mut entry = Entry {
            address: address.clone(),
            port: port.number,
            bind: egress.binds,
            explicit: true,
            ..Default::default()
        };
        if egress_class == Class::Http {
            // The route configuration exists even when no imported service has this port.
            entry.route = Some(planner.route(port.number).name.clone());
        }
        planner.entries.insert(name, entry);
        for service in egress.services.iter().copied() {
            if service.port(port.number).is_some() {
                // Cannot conflict: this listener is explicit.
                let _ = planner.place(egress, address.clone(), port.number, service, egress_class);
            }
        }
    }
    for egress in scope.egress.iter().filter(|e| e.port.is_none()) {
        for service in egress.services.iter().copied() {
            for port in &service.ports {
                let c = class(port.protocol);
                let address = match c {
                    Class::Http => WILDCARD.to_string(),
                    _ => vip(scope, service).unwrap_or_else(|| WILDCARD.to_string()),
                };
                let name = naming::listener(&address, port.number);
                if let Err(why) = planner.place(egress, address, port.number, service, c) {
                    conflict(scope, &name, why);
                }
            }
        }
    }
    let listeners = planner
        .entries
        .into_iter()
        .map(|(name, entry)| listener_plan(scope, name, entry))
        .collect();
    (listeners, planner.routes.into_values().collect())
}

fn listener_plan(scope: &Scope, name: String, entry: Entry) -> ListenerPlan {
    let mut chains: Vec<ChainPlan> = Vec::new();
    let l4_services: Vec<&Arc<Service>> =
        entry.tcp.iter().chain(entry.auto.iter()).copied().collect();
    let sniff_http = entry.route.is_some() && (!l4_services.is_empty() || !entry.tls.is_empty());
    if let Some(route) = &entry.route {
        chains.push(ChainPlan {
            name: format!("{name}_http"),
            application_protocols: if sniff_http {
                vec!["http/1.1".to_string(), "h2c".to_string()]
            } else {
                Vec::new()
            },
            server_names: Vec::new(),
            prefix_ranges: Vec::new(),
            action: ChainAction::Http {
                route: route.clone(),
            },
            config: None,
        });
    }
    let mut l4: Vec<ChainPlan> = Vec::new();
    for service in &l4_services {
        l4.extend(tcp_chains(scope, service, entry.port));
    }
    for service in &entry.tls {
        l4.extend(tls_chains(scope, service, entry.port));
    }
    let mut seen: BTreeSet<(Vec<String>, Vec<String>, Vec<String>)> =
        chains.iter().map(ChainPlan::key).collect();
    for chain in l4 {
        if seen.insert(chain.key()) {
            chains.push(chain);
        } else {
            conflict(
                scope,
                &name,
                format!(
                    "filter chain {} matches the same traffic as an earlier one; dropped",
                    chain.name
                ),
            );
        }
    }
    // Traffic no chain claims (plain TCP on a sniffed port, an unknown SNI or destination, a
    // Sidecar TCP port without a service) goes where unknown traffic goes.
    let has_default = chains.iter().any(|c| {
        c.application_protocols.is_empty()
            && c.server_names.is_empty()
            && c.prefix_ranges.is_empty()
    });
    if !has_default {
        chains.push(ChainPlan {
            name: format!("{name}_fallback"),
            application_protocols: Vec::new(),
            server_names: Vec::new(),
            prefix_ranges: Vec::new(),
            action: ChainAction::Tcp {
                clusters: vec![(fallback_cluster(scope).to_string(), 1)],
            },
            config: None,
        });
    }
    ListenerPlan {
        name,
        address: entry.address,
        port: entry.port,
        bind: entry.bind,
        chains,
        sniff_http,
        inspect_tls: !entry.tls.is_empty(),
    }
}

/// Weighted clusters of an L4 route's destinations (weight 0 dropped; a lone destination gets
/// all traffic).
pub(super) fn weighted(
    scope: &Scope,
    vs: &crate::model::Resource,
    route: &[networking::RouteDestination],
    port: u16,
) -> Vec<(String, u32)> {
    if route.len() == 1 {
        return vec![(
            scope.destination_cluster(vs, &route[0].destination, port),
            1,
        )];
    }
    route
        .iter()
        .filter(|d| d.weight > 0)
        .map(|d| {
            (
                scope.destination_cluster(vs, &d.destination, port),
                u32::try_from(d.weight).unwrap_or_default(),
            )
        })
        .collect()
}

fn applies(
    scope: &Scope,
    port: u16,
    match_port: Option<u32>,
    labels: &networking::Labels,
    namespace: Option<&String>,
    gateways: &[String],
) -> bool {
    match_port.is_none_or(|p| p == u32::from(port))
        && registry::selects(labels, &scope.proxy.labels)
        && namespace.is_none_or(|ns| *ns == scope.proxy.namespace)
        && (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
}

/// TCP chains for a service port: the VirtualService `tcp` rules, else straight to the service.
fn tcp_chains(scope: &Scope, service: &Service, port: u16) -> Vec<ChainPlan> {
    let mut out = Vec::new();
    for (vs_resource, vs) in scope.virtual_services(&service.hostname) {
        if vs.tcp.is_empty() {
            continue;
        }
        for (i, rule) in vs.tcp.iter().enumerate() {
            let clusters = weighted(scope, vs_resource, &rule.route, port);
            if clusters.is_empty() {
                continue;
            }
            let matches: Vec<&networking::L4MatchAttributes> = rule.match_.iter().collect();
            let subnets: Vec<Vec<String>> = if matches.is_empty() {
                vec![Vec::new()]
            } else {
                matches
                    .iter()
                    .filter(|m| {
                        applies(
                            scope,
                            port,
                            m.port,
                            &m.source_labels,
                            m.source_namespace.as_ref(),
                            &m.gateways,
                        )
                    })
                    .map(|m| m.destination_subnets.clone())
                    .collect()
            };
            for prefix_ranges in subnets {
                out.push(ChainPlan {
                    name: format!("{}|tcp[{i}]", vs_resource.key()),
                    application_protocols: Vec::new(),
                    server_names: Vec::new(),
                    config: prefix_ranges
                        .is_empty()
                        .then(|| metadata::config_path_of(vs_resource)),
                    prefix_ranges,
                    action: ChainAction::Tcp {
                        clusters: clusters.clone(),
                    },
                });
            }
        }
        // The oldest VirtualService with tcp rules for the host wins.
        return out;
    }
    // A service declared by CIDR (ServiceEntry `addresses`) claims those destinations only.
    let cidrs: Vec<String> = service
        .addresses
        .iter()
        .filter(|a| a.contains('/'))
        .cloned()
        .collect();
    vec![ChainPlan {
        name: naming::outbound_cluster(port, "", &service.hostname),
        application_protocols: Vec::new(),
        server_names: Vec::new(),
        prefix_ranges: cidrs,
        action: ChainAction::Tcp {
            clusters: vec![(naming::outbound_cluster(port, "", &service.hostname), 1)],
        },
        config: None,
    }]
}

/// TLS chains for a service port: the VirtualService `tls` rules by SNI, else the service's own
/// host name as SNI.
fn tls_chains(scope: &Scope, service: &Service, port: u16) -> Vec<ChainPlan> {
    let mut out = Vec::new();
    for (vs_resource, vs) in scope.virtual_services(&service.hostname) {
        if vs.tls.is_empty() {
            continue;
        }
        for (i, rule) in vs.tls.iter().enumerate() {
            let clusters = weighted(scope, vs_resource, &rule.route, port);
            if clusters.is_empty() {
                continue;
            }
            for m in rule.match_.iter().filter(|m| {
                applies(
                    scope,
                    port,
                    m.port,
                    &m.source_labels,
                    m.source_namespace.as_ref(),
                    &m.gateways,
                )
            }) {
                let mut server_names = m.sni_hosts.clone();
                server_names.sort();
                server_names.dedup();
                out.push(ChainPlan {
                    name: format!("{}|tls[{i}]", vs_resource.key()),
                    application_protocols: Vec::new(),
                    server_names,
                    prefix_ranges: m.destination_subnets.clone(),
                    action: ChainAction::Tcp {
                        clusters: clusters.clone(),
                    },
                    config: Some(metadata::config_path_of(vs_resource)),
                });
            }
        }
        return out;
    }
    let cluster = naming::outbound_cluster(port, "", &service.hostname);
    vec![ChainPlan {
        name: cluster.clone(),
        application_protocols: Vec::new(),
        server_names: vec![service.hostname.clone()],
        prefix_ranges: Vec::new(),
        action: ChainAction::Tcp {
            clusters: vec![(cluster, 1)],
        },
        config: None,
    }]
}
