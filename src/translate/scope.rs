//! What one proxy sees: its Sidecar, the services each egress listener imports, the
//! VirtualServices and DestinationRules that apply, and the proxy's own (inbound) ports.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::networking::{self, CaptureMode, OutboundTrafficPolicyMode};
use crate::model::proxy::InterceptionMode;
use crate::model::registry::{self, Protocol, Service};
use crate::model::{Diagnostic, Model, Proxy, Resource};

/// An outbound listener the proxy gets: a Sidecar egress listener, or the implicit catch-all.
#[derive(Debug)]
pub struct Egress<'a> {
    /// Explicit port (Sidecar `egress[].port`); `None` for the catch-all.
    pub port: Option<EgressPort>,
    /// Explicit bind address.
    pub bind: Option<String>,
    /// The listener binds its address itself (no iptables capture).
    pub binds: bool,
    /// Services this listener imports, by hostname.
    pub services: Vec<&'a Arc<Service>>,
}

#[derive(Debug, Clone)]
pub struct EgressPort {
    pub number: u16,
    pub protocol: Protocol,
    pub name: String,
}

/// One port the proxy's workload serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InboundPort {
    /// The workload's port (the cluster and filter chain key).
    pub port: u16,
    pub protocol: Protocol,
    /// Listener address for explicit (Sidecar ingress) listeners.
    pub bind: Option<String>,
    /// Where traffic goes: `None` = original destination; `Some` = a fixed endpoint.
    pub endpoint: Option<String>,
}

pub struct Scope<'a> {
    pub model: &'a Model,
    pub proxy: &'a Proxy,
    pub sidecar: Option<&'a Resource>,
    pub egress: Vec<Egress<'a>>,
    pub outbound_policy: OutboundTrafficPolicy,
    diagnostics: RefCell<Vec<Diagnostic>>,
}

/// Expands a short host name relative to a namespace, as istiod does: names without a dot
/// become `<name>.<namespace>.svc.<domain>`.
pub fn resolve_host(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

/// Host matching with Istio wildcards: `*` matches all, `*.example.com` any subdomain.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Whether a resource's `exportTo` lets a proxy in `namespace` see it.
pub fn exported_to(export_to: &[String], owner_namespace: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && owner_namespace == namespace))
}

impl<'a> Scope<'a> {
    pub fn new(model: &'a Model, proxy: &'a Proxy) -> Scope<'a> {
        let sidecar = find_sidecar(model, proxy);
        let spec = sidecar.and_then(|r| match &r.spec {
            crate::model::Spec::Sidecar(s) => Some(s.as_ref()),
            _ => None,
        });
        let outbound_policy = match spec
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
        {
            Some(OutboundTrafficPolicyMode::RegistryOnly) => OutboundTrafficPolicy::RegistryOnly,
            Some(OutboundTrafficPolicyMode::AllowAny) => OutboundTrafficPolicy::AllowAny,
            None => model.mesh.outbound_traffic_policy,
        };
        let visible: Vec<&Arc<Service>> = model
            .registry
            .services
            .iter()
            .filter(|s| s.visible_to(&proxy.namespace))
            .collect();
        let none_mode = proxy.interception_mode == InterceptionMode::None;
        let sidecar_ns = sidecar
            .map(|r| r.meta.namespace.as_str())
            .unwrap_or(&proxy.namespace);
        let egress = match spec.filter(|s| !s.egress.is_empty()) {
            Some(s) => s
                .egress
                .iter()
                .map(|e| Egress {
                    port: e.port.as_ref().and_then(|p| {
                        Some(EgressPort {
                            number: u16::try_from(p.number).ok().filter(|n| *n != 0)?,
                            protocol: p
                                .protocol
                                .as_deref()
                                .map(Protocol::parse)
                                .unwrap_or(Protocol::Unsupported),
                            name: p.name.clone().unwrap_or_default(),
                        })
                    }),
                    bind: e.bind.clone().filter(|b| !b.is_empty()),
                    binds: none_mode || e.capture_mode == Some(CaptureMode::None),
                    services: import(&visible, &e.hosts, sidecar_ns, &proxy.namespace),
                })
                .collect(),
            None => vec![Egress {
                port: None,
                bind: None,
                binds: none_mode,
                services: dedup_hostnames(visible.clone(), &proxy.namespace),
            }],
        };
        Scope {
            model,
            proxy,
            sidecar,
            egress,
            outbound_policy,
            diagnostics: RefCell::new(Vec::new()),
        }
    }

    pub fn report(&self, d: Diagnostic) {
        self.diagnostics.borrow_mut().push(d);
    }

    pub fn take_diagnostics(&self) -> Vec<Diagnostic> {
        let mut d = self.diagnostics.take();
        d.sort();
        d.dedup();
        d
    }

    pub fn domain_suffix(&self) -> &str {
        &self.model.mesh.domain_suffix
    }

    /// Every service any egress listener imports, once per hostname, by hostname.
    pub fn services(&self) -> Vec<&'a Arc<Service>> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<&Arc<Service>> = Vec::new();
        for e in &self.egress {
            for s in &e.services {
                if seen.insert(s.hostname.as_str()) {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        out
    }

    /// The DestinationRule for a host: the proxy's namespace first, then the service's, then the
    /// root namespace (istiod's lookup order); the oldest rule wins within a namespace.
    pub fn destination_rule(
        &self,
        service: &Service,
    ) -> Option<(&'a Resource, &'a networking::DestinationRule)> {
        let candidates: Vec<(&Resource, &networking::DestinationRule)> = self
            .model
            .destination_rules()
            .filter(|(r, dr)| {
                let host = resolve_host(&dr.host, &r.meta.namespace, self.domain_suffix());
                host_matches(&host, &service.hostname)
                    && exported_to(&dr.export_to, &r.meta.namespace, &self.proxy.namespace)
                    && dr.workload_selector.as_ref().is_none_or(|sel| {
                        r.meta.namespace == self.proxy.namespace
                            && registry::selects(&sel.match_labels, &self.proxy.labels)
                    })
            })
            .collect();
        let order = [
            self.proxy.namespace.as_str(),
            service.namespace.as_str(),
            self.model.mesh.root_namespace.as_str(),
        ];
        for ns in order {
            // Exact host beats wildcard within a namespace.
            let mut in_ns: Vec<&(&Resource, &networking::DestinationRule)> = candidates
                .iter()
                .filter(|(r, _)| r.meta.namespace == ns)
                .collect();
            in_ns.sort_by_key(|(r, dr)| {
                resolve_host(&dr.host, &r.meta.namespace, self.domain_suffix()) != service.hostname
            });
            if let Some((r, dr)) = in_ns.first() {
                return Some((*r, *dr));
            }
        }
        None
    }

    /// VirtualServices bound to the mesh that apply to a host and are visible to the proxy,
    /// oldest first.
    pub fn virtual_services(
        &self,
        hostname: &str,
    ) -> Vec<(&'a Resource, &'a networking::VirtualService)> {
        self.model
            .virtual_services()
            .filter(|(r, vs)| {
                (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
                    && exported_to(&vs.export_to, &r.meta.namespace, &self.proxy.namespace)
                    && vs.hosts.iter().any(|h| {
                        host_matches(
                            &resolve_host(h, &r.meta.namespace, self.domain_suffix()),
                            hostname,
                        )
                    })
            })
            .collect()
    }

    /// The cluster a VirtualService destination names: its host resolved relative to the
    /// VirtualService's namespace, then as [`Scope::qualified_destination_cluster`].
    pub fn destination_cluster(
        &self,
        virtual_service: &Resource,
        d: &networking::Destination,
        listener_port: u16,
    ) -> String {
        let host = resolve_host(
            &d.host,
            &virtual_service.meta.namespace,
            self.domain_suffix(),
        );
        self.cluster_for(&host, d, listener_port)
    }

    /// The cluster a destination names when its host is already fully qualified (delegated
    /// routes qualify hosts in the delegate's namespace): without a port, the service's only
    /// port, else the port the traffic arrived on.
    pub fn qualified_destination_cluster(
        &self,
        d: &networking::Destination,
        listener_port: u16,
    ) -> String {
        self.cluster_for(&d.host, d, listener_port)
    }

    fn cluster_for(&self, host: &str, d: &networking::Destination, listener_port: u16) -> String {
        let port = d
            .port
            .as_ref()
            .and_then(|p| u16::try_from(p.number).ok())
            .filter(|p| *p != 0)
            .unwrap_or_else(|| match self.model.registry.by_hostname(host).next() {
                Some(s) if s.ports.len() == 1 => s.ports[0].number,
                _ => listener_port,
            });
        super::naming::outbound_cluster(port, d.subset.as_deref().unwrap_or_default(), host)
    }

    /// The ports of the proxy's own workload: Sidecar ingress listeners if any, else the ports
    /// of the services that select the proxy.
    pub fn inbound(&self) -> Vec<InboundPort> {
        let spec = self.sidecar.and_then(|r| match &r.spec {
            crate::model::Spec::Sidecar(s) => Some(s.as_ref()),
            _ => None,
        });
        let mut out = Vec::new();
        if let Some(s) = spec.filter(|s| !s.ingress.is_empty()) {
            for ingress in &s.ingress {
                let Some(port) = u16::try_from(ingress.port.number).ok().filter(|n| *n != 0) else {
                    continue;
                };
                out.push(InboundPort {
                    port,
                    protocol: ingress
                        .port
                        .protocol
                        .as_deref()
                        .map(Protocol::parse)
                        .unwrap_or(Protocol::Unsupported),
                    bind: ingress.bind.clone().filter(|b| !b.is_empty()),
                    endpoint: ingress.default_endpoint.clone().filter(|e| !e.is_empty()),
                });
            }
        } else if self.proxy.interception_mode != InterceptionMode::None {
            for service in &self.model.registry.services {
                let Some(selector) = &service.selector else {
                    continue;
                };
                if service.namespace != self.proxy.namespace
                    || !registry::selects(selector, &self.proxy.labels)
                {
                    continue;
                }
                for p in &service.ports {
                    out.push(InboundPort {
                        port: p.target_port.unwrap_or(p.number),
                        protocol: p.protocol,
                        bind: None,
                        endpoint: None,
                    });
                }
            }
        }
        out.sort();
        // One listener chain per workload port; the first declaration's protocol wins.
        out.dedup_by_key(|p| p.port);
        out
    }
}

/// Keeps one service per hostname, preferring the proxy's own namespace, then the oldest
/// (first in registry order).
fn dedup_hostnames<'a>(services: Vec<&'a Arc<Service>>, namespace: &str) -> Vec<&'a Arc<Service>> {
    let mut out: Vec<&Arc<Service>> = Vec::new();
    for s in services {
        match out.iter_mut().find(|o| o.hostname == s.hostname) {
            Some(existing) => {
                if existing.namespace != namespace && s.namespace == namespace {
                    *existing = s;
                }
            }
            None => out.push(s),
        }
    }
    out
}

/// Services matched by Sidecar `hosts` entries (`namespace/dnsName`).
fn import<'a>(
    visible: &[&'a Arc<Service>],
    hosts: &[String],
    sidecar_namespace: &str,
    proxy_namespace: &str,
) -> Vec<&'a Arc<Service>> {
    let selected: Vec<&Arc<Service>> = visible
        .iter()
        .copied()
        .filter(|s| {
            hosts.iter().any(|h| {
                let (ns, host) = h.split_once('/').unwrap_or(("*", h.as_str()));
                let ns_ok = match ns {
                    "*" => true,
                    "." => s.namespace == sidecar_namespace,
                    "~" => false,
                    other => s.namespace == other,
                };
                ns_ok && host_matches(host, &s.hostname)
            })
        })
        .collect();
    dedup_hostnames(selected, proxy_namespace)
}

/// The Sidecar for a proxy: one in its namespace whose selector matches its labels, else its
/// namespace's default (no selector), else the root namespace's default.
fn find_sidecar<'a>(model: &'a Model, proxy: &Proxy) -> Option<&'a Resource> {
    let sidecars: Vec<(&Resource, &networking::Sidecar)> = model.sidecars().collect();
    sidecars
        .iter()
        .find(|(r, s)| {
            r.meta.namespace == proxy.namespace
                && s.workload_selector.as_ref().is_some_and(|w| {
                    !w.labels.is_empty() && registry::selects(&w.labels, &proxy.labels)
                })
        })
        .or_else(|| {
            sidecars.iter().find(|(r, s)| {
                r.meta.namespace == proxy.namespace
                    && s.workload_selector
                        .as_ref()
                        .is_none_or(|w| w.labels.is_empty())
            })
        })
        .or_else(|| {
            sidecars.iter().find(|(r, s)| {
                r.meta.namespace == model.mesh.root_namespace
                    && s.workload_selector
                        .as_ref()
                        .is_none_or(|w| w.labels.is_empty())
            })
        })
        .map(|(r, _)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            resolve_host("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(resolve_host("a.b", "default", "cluster.local"), "a.b");
        assert!(host_matches("*", "x"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("a.b", "a.b"));
    }

    #[test]
    fn export() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }
}
