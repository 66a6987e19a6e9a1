//! The servers of every Gateway selecting a gateway proxy, merged by listener port as istiod
//! merges them: plaintext HTTP servers on one port share the route configuration
//! `http.<port>`; TLS servers on one port become filter chains told apart by SNI, each
//! terminating HTTPS server with its own route configuration
//! `https.<port>.<portName>.<gateway>.<namespace>`. What cannot share a port (a plaintext and a
//! TLS server, TCP and HTTP, the same TLS host twice) is skipped with a diagnostic naming both
//! servers, so Envoy is never sent a listener it would reject. A host two plaintext HTTP
//! servers of a port both name is kept, with a warning: their routes merge, as in istiod.

use std::collections::BTreeMap;

use crate::model::Resource;
use crate::model::networking::{Server, ServerTlsMode};
use crate::model::registry::Protocol;

use super::super::IntoWarning;
use super::super::scope::Scope;

/// One server of one Gateway, as the proxy serves it.
#[derive(Debug, Clone)]
pub struct GatewayServer<'a> {
    pub gateway: &'a Resource,
    /// `namespace/name` of the Gateway: what VirtualServices bind to.
    pub gateway_name: String,
    /// The server's field path in the Gateway, for diagnostics.
    pub field: String,
    pub server: &'a Server,
    pub protocol: Protocol,
    /// The port the listener binds (the server's port, or the target port of the proxy's own
    /// service port of that number).
    pub port: u16,
    /// Hosts as `(namespace, host)`: `*` for any namespace, `./host` resolved to the
    /// Gateway's namespace.
    pub hosts: Vec<(String, String)>,
    /// The route configuration of an HTTP server (plaintext, or HTTPS terminated here).
    pub route_name: Option<String>,
}

impl GatewayServer<'_> {
    pub fn tls_mode(&self) -> Option<ServerTlsMode> {
        self.server
            .tls
            .as_ref()
            .map(|t| t.mode.unwrap_or(ServerTlsMode::Passthrough))
    }

    /// TLS is terminated or passed through here (not an HTTP server that only redirects).
    pub fn is_tls(&self) -> bool {
        self.server.tls.is_some() && !self.protocol.is_http()
    }

    pub fn is_passthrough(&self) -> bool {
        matches!(
            self.tls_mode(),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        ) && self.server.tls.is_some()
    }

    /// The server's host names without their namespaces (its SNI names).
    pub fn host_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.hosts.iter().map(|(_, h)| h.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    fn describe(&self) -> String {
        format!(
            "Gateway {} {} (port {} {})",
            self.gateway_name, self.field, self.port, self.server.port.protocol
        )
    }
}

/// The servers of one listener.
#[derive(Debug, Clone)]
pub struct MergedPort<'a> {
    pub port: u16,
    pub bind: Option<String>,
    /// Plaintext servers (HTTP sharing `http.<port>`, or one TCP server); else TLS servers.
    pub plaintext: bool,
    pub servers: Vec<GatewayServer<'a>>,
}

impl MergedPort<'_> {
    /// istiod's listener name: `<bind>_<port>`, `0.0.0.0_<port>` without a bind.
    pub fn listener_name(&self) -> String {
        crate::translate::naming::listener(self.bind.as_deref().unwrap_or("0.0.0.0"), self.port)
    }
}

/// Every listener of a gateway proxy, by (port, bind).
#[derive(Debug, Default)]
pub struct Merged<'a> {
    pub ports: Vec<MergedPort<'a>>,
}

impl<'a> Merged<'a> {
    /// The servers of each HTTP route configuration, by name.
    pub fn routes(&self) -> BTreeMap<String, Vec<&GatewayServer<'a>>> {
        let mut out: BTreeMap<String, Vec<&GatewayServer<'a>>> = BTreeMap::new();
        for p in &self.ports {
            for s in &p.servers {
                if let Some(r) = &s.route_name {
                    out.entry(r.clone()).or_default().push(s);
                }
            }
        }
        out
    }
}

/// A server's hosts as `(namespace, host)`.
fn sanitize_hosts(hosts: &[String], gateway_namespace: &str) -> Vec<(String, String)> {
    hosts
        .iter()
        .map(|h| match h.split_once('/') {
            Some((".", host)) => (gateway_namespace.to_string(), host.to_string()),
            Some((ns, host)) => (ns.to_string(), host.to_string()),
            None => ("*".to_string(), h.clone()),
        })
        .collect()
}

/// The port a server listens on: a Gateway selecting by labels names the port of the proxy's
/// own Service, whose target port the listener binds; with no such Service port, the number
/// as written.
fn resolve_port(scope: &Scope, number: u16) -> u16 {
    scope
        .served_ports()
        .into_iter()
        .find(|(_, port, _)| port.number == number)
        .map_or(number, |(_, _, target)| target)
}

fn route_name(
    protocol: Protocol,
    server: &Server,
    passthrough: bool,
    port: u16,
    gateway: &Resource,
) -> Option<String> {
    let bind = server
        .bind
        .as_deref()
        .map(|b| format!(".{b}"))
        .unwrap_or_default();
    if protocol.is_http() {
        Some(format!("http.{port}{bind}"))
    } else if protocol == Protocol::Https && !passthrough {
        Some(format!(
            "https.{}.{}.{}.{}{bind}",
            server.port.number, server.port.name, gateway.meta.name, gateway.meta.namespace
        ))
    } else {
        None
    }
}

/// Merges the servers of the Gateways selecting the proxy. `report`: raise the conflicts as
/// diagnostics (once per generation: the listeners' builder reports, the routes' does not).
pub fn merge<'a>(scope: &Scope<'a>, report: bool) -> Merged<'a> {
    let mut merged = Merged::default();
    // TLS hosts already served, by (port, bind): the server that serves them.
    let mut tls_hosts: BTreeMap<(u16, Option<String>), BTreeMap<String, String>> = BTreeMap::new();
    // Plaintext HTTP hosts already served, by (port, bind): the server that serves them.
    let mut http_hosts: BTreeMap<(u16, Option<String>), BTreeMap<String, String>> = BTreeMap::new();
    let conflict = |skipped: &GatewayServer, message: String| {
        if report {
            scope.report(
                skipped
                    .gateway
                    .diagnostic(&skipped.field, message)
                    .into_warning(),
            );
        }
    };
    for (resource, gateway) in crate::model::gateway::selecting(scope.model, scope.proxy) {
        let gateway_name = format!("{}/{}", resource.meta.namespace, resource.meta.name);
        for (i, server) in gateway.servers.iter().enumerate() {
            let Some(number) = u16::try_from(server.port.number).ok().filter(|n| *n != 0) else {
                continue;
            };
            let protocol = Protocol::parse(&server.port.protocol);
            let port = resolve_port(scope, number);
            let mut s = GatewayServer {
                gateway: resource,
                gateway_name: gateway_name.clone(),
                field: format!("spec.servers[{i}]"),
                server,
                protocol,
                port,
                hosts: sanitize_hosts(&server.hosts, &resource.meta.namespace),
                route_name: None,
            };
            s.route_name = route_name(protocol, server, s.is_passthrough(), port, resource);
            if server.tls.is_some() {
                let known = tls_hosts.entry((port, server.bind.clone())).or_default();
                let duplicates: Vec<(&String, &String)> = s
                    .host_names()
                    .into_iter()
                    .filter_map(|h| known.get_key_value(&h))
                    .collect();
                if let Some((host, other)) = duplicates.first() {
                    let message = format!(
                        "host {host} on port {port} is already served by {other}; server skipped"
                    );
                    conflict(&s, message);
                    continue;
                }
                let me = s.describe();
                for h in s.host_names() {
                    known.insert(h, me.clone());
                }
            }
            let plain = (server.tls.is_none() && protocol.is_http()).then(|| s.clone());
            if place(&mut merged, s, &conflict)
                && let Some(s) = plain
            {
                warn_shared_hosts(&s, &mut http_hosts, report.then_some(scope));
            }
        }
    }
    merged
        .ports
        .sort_by(|a, b| (a.port, &a.bind).cmp(&(b.port, &b.bind)));
    merged
}

/// A plaintext HTTP server naming a host another server on its port already names: both
/// are kept (their routes share the virtual host, as in istiod), with a warning naming both.
fn warn_shared_hosts(
    s: &GatewayServer,
    known: &mut BTreeMap<(u16, Option<String>), BTreeMap<String, String>>,
    scope: Option<&Scope>,
) {
    let known = known.entry((s.port, s.server.bind.clone())).or_default();
    let me = s.describe();
    for host in s.host_names() {
        match known.get(&host) {
            Some(other) if *other != me => {
                if let Some(scope) = scope {
                    scope.report(
                        s.gateway
                            .diagnostic(
                                &s.field,
                                format!(
                                    "host {host} on port {} is also served by {other}; the routes of both are merged",
                                    s.port
                                ),
                            )
                            .into_warning(),
                    );
                }
            }
            Some(_) => {}
            None => {
                known.insert(host, me.clone());
            }
        }
    }
}

/// Adds a server to the listener of its port, or skips it when the two cannot share it
/// (`false`, with a diagnostic).
fn place<'a>(
    merged: &mut Merged<'a>,
    s: GatewayServer<'a>,
    conflict: &dyn Fn(&GatewayServer, String),
) -> bool {
    let plaintext = !s.is_tls();
    let Some(existing) = merged
        .ports
        .iter_mut()
        .find(|p| p.port == s.port && p.bind == s.server.bind)
    else {
        merged.ports.push(MergedPort {
            port: s.port,
            bind: s.server.bind.clone(),
            plaintext,
            servers: vec![s],
        });
        return true;
    };
    let first = &existing.servers[0];
    if existing.plaintext != plaintext {
        let message = format!(
            "a plaintext and a TLS server cannot share port {}: {} is served there; server skipped",
            s.port,
            first.describe()
        );
        conflict(&s, message);
        return false;
    }
    if plaintext && !(s.protocol.is_http() && first.protocol.is_http()) {
        let message = format!(
            "only HTTP servers can share port {}: {} is served there; server skipped",
            s.port,
            first.describe()
        );
        conflict(&s, message);
        return false;
    }
    if !plaintext
        && let Some(route) = &s.route_name
        && let Some(other) = existing
            .servers
            .iter()
            .find(|o| o.route_name.as_ref() == Some(route))
    {
        let message = format!(
            "HTTPS servers on one port need distinct port names: {} has port name {}; server skipped",
            other.describe(),
            s.server.port.name
        );
        conflict(&s, message);
        return false;
    }
    existing.servers.push(s);
    true
}
