//! What one proxy sees: its Sidecar, the services each egress listener imports, the
//! VirtualServices and DestinationRules that apply, and the proxy's own (inbound) ports.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::networking::{self, CaptureMode, OutboundTrafficPolicyMode};
use crate::model::proxy::InterceptionMode;
use crate::model::registry::{self, Protocol, Service};
use crate::model::{Diagnostic, Model, Proxy, Resource, Spec};

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
    /// The port gets a listener of its own that binds its address, rather than a chain of
    /// `virtualInbound`: the proxy captures no traffic, or its Sidecar ingress listener says
    /// `captureMode: NONE` (the listener's own mode wins over the proxy's unless DEFAULT).
    pub binds: bool,
}

pub struct Scope<'a> {
    pub model: &'a Model,
    pub proxy: &'a Proxy,
    pub sidecar: Option<&'a Resource>,
    pub egress: Vec<Egress<'a>>,
    pub outbound_policy: OutboundTrafficPolicy,
    diagnostics: RefCell<Vec<Diagnostic>>,
    /// DestinationRule lookups by (hostname, service namespace, outbound).
    rule_cache: RefCell<RuleCache<'a>>,
    /// The ports of the proxy's workload, looked up once.
    workload: std::cell::OnceCell<crate::model::workload::WorkloadPorts>,
}

type RuleCache<'a> = BTreeMap<(String, String, bool), Option<Rule<'a>>>;

/// The DestinationRule in force for one host and proxy: one rule, or istiod's merge of several
/// rules for the same host in one namespace. Each part keeps the resource it came from, so
/// diagnostics name the right rule and field.
#[derive(Debug, Clone)]
pub struct Rule<'a> {
    /// The rule the merge started from (the one with a workload selector, else the oldest).
    pub resource: &'a Resource,
    /// The top-level `trafficPolicy` in force: the first merged rule's that has one.
    pub traffic_policy: Option<(&'a Resource, &'a networking::TrafficPolicy)>,
    /// Subsets of every merged rule; a name already taken by an earlier rule is dropped.
    pub subsets: Vec<RuleSubset<'a>>,
    /// Whether the rule in force has a `workloadSelector`.
    pub has_selector: bool,
}

/// A subset of a (possibly merged) DestinationRule.
#[derive(Debug, Clone, Copy)]
pub struct RuleSubset<'a> {
    pub resource: &'a Resource,
    /// Position in its rule's `spec.subsets`, for field paths.
    pub index: usize,
    pub subset: &'a networking::Subset,
}

impl<'a> Rule<'a> {
    pub fn subset(&self, name: &str) -> Option<&RuleSubset<'a>> {
        self.subsets.iter().find(|s| s.subset.name == name)
    }
}

/// istiod's DestinationRule indexes per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleIndex {
    /// Rules visible in their own namespace (`exportTo` empty, `*`, `.` or the namespace).
    NamespaceLocal,
    /// Rules exported beyond their namespace.
    Exported,
    /// Rules of the root namespace private to it.
    RootLocal,
}

/// A rule after istiod's per-namespace merge.
#[derive(Debug, Clone)]
struct Consolidated<'a> {
    resource: &'a Resource,
    selector: Option<&'a networking::Labels>,
    export_to: BTreeSet<&'a str>,
    traffic_policy: Option<(&'a Resource, &'a networking::TrafficPolicy)>,
    subsets: Vec<RuleSubset<'a>>,
}

impl<'a> Consolidated<'a> {
    fn new(resource: &'a Resource, dr: &'a networking::DestinationRule) -> Consolidated<'a> {
        Consolidated {
            resource,
            selector: dr.workload_selector.as_ref().map(|w| &w.match_labels),
            export_to: export_set(dr),
            traffic_policy: dr.traffic_policy.as_ref().map(|tp| (resource, tp)),
            subsets: dr
                .subsets
                .iter()
                .enumerate()
                .map(|(index, subset)| RuleSubset {
                    resource,
                    index,
                    subset,
                })
                .collect(),
        }
    }

    fn into_rule(self) -> Rule<'a> {
        Rule {
            resource: self.resource,
            traffic_policy: self.traffic_policy,
            subsets: self.subsets,
            has_selector: self.selector.is_some(),
        }
    }
}

/// The `exportTo` set istiod indexes a rule by: rules with a workload selector are private.
fn export_set(dr: &networking::DestinationRule) -> BTreeSet<&str> {
    if dr.workload_selector.is_some() {
        return BTreeSet::from(["."]);
    }
    dr.export_to.iter().map(String::as_str).collect()
}

/// Adds a rule to the merged rules of its host in one index, as istiod's
/// `mergeDestinationRule` does (with `ENABLE_ENHANCED_DESTINATIONRULE_MERGE`, the default):
/// rules with equal `exportTo` merge into the earlier one (its subsets gain the new rule's
/// subsets with new names; its traffic policy is kept unless it has none); rules whose
/// selectors differ stay separate.
fn merge_rule<'a>(
    merged: &mut Vec<Consolidated<'a>>,
    resource: &'a Resource,
    dr: &'a networking::DestinationRule,
) {
    let incoming = Consolidated::new(resource, dr);
    if merged.is_empty() {
        merged.push(incoming);
        return;
    }
    let mut append_separately = true;
    for existing in merged.iter_mut() {
        if incoming.export_to == existing.export_to {
            append_separately = false;
        } else if !existing.export_to.is_empty()
            && incoming.export_to.is_superset(&existing.export_to)
        {
            append_separately = true;
        } else {
            append_separately = true;
            continue;
        }
        let both_without = incoming.selector.is_none() && existing.selector.is_none();
        let both_with = incoming.selector.is_some() && existing.selector.is_some();
        let selectors_match = incoming.selector.map(|s| s.iter().collect::<Vec<_>>())
            == existing.selector.map(|s| s.iter().collect::<Vec<_>>());
        if both_with && !selectors_match {
            append_separately = true;
            continue;
        }
        if both_without || (both_with && selectors_match) {
            append_separately = false;
        }
        for s in &incoming.subsets {
            if !existing
                .subsets
                .iter()
                .any(|e| e.subset.name == s.subset.name)
            {
                existing.subsets.push(*s);
            }
        }
        if existing.traffic_policy.is_none() {
            existing.traffic_policy = incoming.traffic_policy;
        }
    }
    if append_separately {
        merged.push(incoming);
    }
}

/// istiod's `MostSpecificHostMatch`: an exact (non-wildcard) host first, else the most specific
/// wildcard whose suffix matches (longest, then alphabetical). A wildcard `needle` (a
/// ServiceEntry host such as `*.example.com`) matches the same wildcard exactly, else wider ones.
fn most_specific_host<'h>(needle: &str, hosts: impl Iterator<Item = &'h str>) -> Option<&'h str> {
    let hosts: Vec<&str> = hosts.collect();
    if let Some(exact) = hosts.iter().find(|h| **h == needle) {
        return Some(exact);
    }
    let suffix_of = needle.strip_prefix('*').unwrap_or(needle);
    let mut best: Option<&str> = None;
    for h in hosts.iter().filter(|h| h.starts_with('*')) {
        if !suffix_of.ends_with(&h[1..]) {
            continue;
        }
        best = match best {
            None => Some(h),
            Some(b) if h.len() > b.len() || (h.len() == b.len() && *h < b) => Some(h),
            Some(b) => Some(b),
        };
    }
    best
}

pub use crate::model::index::{host_matches, resolve_host};

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
            rule_cache: RefCell::new(BTreeMap::new()),
            workload: std::cell::OnceCell::new(),
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

    /// The service's addresses as this proxy reaches them: its single IPs (CIDRs and the
    /// unspecified address left out), else, for a proxy whose agent answers DNS, the address
    /// allocated to a ServiceEntry host without any (`model::auto_address`), which its name
    /// table gives the application. Listeners, virtual host domains and name tables use these.
    pub fn addresses(&self, service: &Service) -> Vec<String> {
        let own: Vec<String> = service
            .addresses
            .iter()
            .filter(|a| {
                a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| !ip.is_unspecified())
            })
            .cloned()
            .collect();
        if !own.is_empty() || !self.proxy.dns_capture {
            return own;
        }
        self.model
            .index()
            .auto_address(&service.namespace, &service.hostname)
            .map(|ip| vec![ip.to_string()])
            .unwrap_or_default()
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

    /// The DestinationRule in force for outbound traffic to a service (istiod's
    /// `SidecarScope.DestinationRule`): the rules that most specifically match the host in the
    /// proxy's namespace, else those the service's namespace exports to it, else those the root
    /// namespace exports to it; rules for the same host in one namespace merge (subsets
    /// concatenated, the oldest top-level `trafficPolicy` wins). Among the result, a rule whose
    /// `workloadSelector` selects the proxy wins, else the rule without a selector.
    pub fn destination_rule(&self, service: &Service) -> Option<Rule<'a>> {
        self.select_rule(service, true)
    }

    /// The DestinationRule whose connection pool applies to the proxy's own inbound cluster for
    /// a service it implements: as for outbound, but rules with a `workloadSelector` are
    /// ignored (istiod honours selectors for outbound traffic only).
    pub fn inbound_destination_rule(&self, service: &Service) -> Option<Rule<'a>> {
        self.select_rule(service, false)
    }

    fn select_rule(&self, service: &Service, outbound: bool) -> Option<Rule<'a>> {
        let key = (
            service.hostname.clone(),
            service.namespace.clone(),
            outbound,
        );
        if let Some(hit) = self.rule_cache.borrow().get(&key) {
            return hit.clone();
        }
        let found = self.lookup_rule(service, outbound);
        self.rule_cache.borrow_mut().insert(key, found.clone());
        found
    }

    fn lookup_rule(&self, service: &Service, outbound: bool) -> Option<Rule<'a>> {
        let proxy_ns = self.proxy.namespace.as_str();
        let root = self.model.mesh.root_namespace.as_str();
        let host = service.hostname.as_str();
        let mut list = if proxy_ns != root {
            self.rules_in(proxy_ns, RuleIndex::NamespaceLocal, host)
        } else {
            self.rules_in(root, RuleIndex::RootLocal, host)
        };
        if list.is_empty() {
            list = self.exported_rules(&service.namespace, host);
        }
        if list.is_empty() {
            list = self.exported_rules(root, host);
        }
        let mut catch_all = None;
        for c in list {
            match c.selector {
                None => catch_all = Some(c),
                Some(sel) => {
                    if outbound
                        && c.resource.meta.namespace == proxy_ns
                        && registry::selects(sel, &self.proxy.labels)
                    {
                        return Some(c.into_rule());
                    }
                }
            }
        }
        catch_all.map(Consolidated::into_rule)
    }

    /// Rules a namespace exports, for the most specific host matching `host`, keeping those
    /// visible from the proxy's namespace.
    fn exported_rules(&self, namespace: &str, host: &str) -> Vec<Consolidated<'a>> {
        let proxy_ns = self.proxy.namespace.as_str();
        self.rules_in(namespace, RuleIndex::Exported, host)
            .into_iter()
            .filter(|c| {
                c.export_to.is_empty()
                    || c.export_to.contains("*")
                    || c.export_to.contains(proxy_ns)
            })
            .collect()
    }

    /// The merged rules of one of istiod's per-namespace indexes for the most specific host
    /// that matches `host`.
    fn rules_in(&self, namespace: &str, index: RuleIndex, host: &str) -> Vec<Consolidated<'a>> {
        let model: &'a Model = self.model;
        let Some(by_host) = model.index().destination_rules_in(namespace) else {
            return Vec::new();
        };
        let root = model.mesh.root_namespace.as_str();
        // The rule at a position, if it belongs to `index`.
        let indexed = |position: usize| -> Option<(&'a Resource, &'a networking::DestinationRule)> {
            let r = model.resources.get(position)?;
            let Spec::DestinationRule(dr) = &r.spec else {
                return None;
            };
            let export = export_set(dr);
            let ns = r.meta.namespace.as_str();
            let private_only = export.len() == 1 && (export.contains(".") || export.contains(ns));
            let belongs = match index {
                RuleIndex::NamespaceLocal => {
                    export.is_empty()
                        || export.contains("*")
                        || export.contains(".")
                        || export.contains(ns)
                }
                RuleIndex::Exported => !private_only,
                RuleIndex::RootLocal => private_only && ns == root,
            };
            belongs.then_some((r.as_ref(), dr.as_ref()))
        };
        // Hosts of the index's rules that can match: the host itself, and wildcards.
        let exact = by_host
            .exact(host)
            .iter()
            .filter(|p| indexed(**p).is_some())
            .map(|_| host);
        let wildcards = by_host
            .wildcards()
            .iter()
            .filter(|(_, p)| indexed(*p).is_some())
            .map(|(h, _)| h.as_str());
        let Some(best) = most_specific_host(host, exact.chain(wildcards)) else {
            return Vec::new();
        };
        let mut rules: Vec<(&'a Resource, &'a networking::DestinationRule)> = by_host
            .exact(best)
            .iter()
            .filter_map(|p| indexed(*p))
            .collect();
        // istiod's order: rules with a workload selector first, then by creation time, name and
        // namespace.
        rules.sort_by(|(a, adr), (b, bdr)| {
            (
                adr.workload_selector.is_none(),
                a.meta.creation_timestamp.as_deref().unwrap_or_default(),
                &a.meta.name,
                &a.meta.namespace,
            )
                .cmp(&(
                    bdr.workload_selector.is_none(),
                    b.meta.creation_timestamp.as_deref().unwrap_or_default(),
                    &b.meta.name,
                    &b.meta.namespace,
                ))
        });
        let mut out: Vec<Consolidated<'a>> = Vec::new();
        for (r, dr) in rules {
            merge_rule(&mut out, r, dr);
        }
        out
    }

    /// VirtualServices bound to the mesh that apply to a host and are visible to the proxy,
    /// oldest first.
    pub fn virtual_services(
        &self,
        hostname: &str,
    ) -> Vec<(&'a Resource, &'a networking::VirtualService)> {
        let model: &'a Model = self.model;
        model
            .index()
            .mesh_virtual_services()
            .matching(hostname)
            .into_iter()
            .filter_map(|p| {
                let r = model.resources.get(p)?;
                let Spec::VirtualService(vs) = &r.spec else {
                    return None;
                };
                exported_to(&vs.export_to, &r.meta.namespace, &self.proxy.namespace)
                    .then_some((r.as_ref(), vs.as_ref()))
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

    /// The services that select the proxy (in its namespace, by its labels), in registry order,
    /// with each port and the workload port it delivers to; a port whose named `targetPort` the
    /// workload has no port for is left out (istiod's service targets).
    pub fn served_ports(&self) -> Vec<(&'a Arc<Service>, &'a registry::Port, u16)> {
        let model: &'a Model = self.model;
        let services = &model.registry.services;
        let workload = self
            .workload
            .get_or_init(|| crate::model::workload::WorkloadPorts::of(model, self.proxy));
        let mut out = Vec::new();
        for service in model
            .index()
            .services_in(&self.proxy.namespace)
            .iter()
            .filter_map(|p| services.get(*p))
        {
            let Some(selector) = &service.selector else {
                continue;
            };
            if service.namespace != self.proxy.namespace
                || !registry::selects(selector, &self.proxy.labels)
            {
                continue;
            }
            for p in &service.ports {
                if let Some(target) = workload.target(p) {
                    out.push((service, p, target));
                }
            }
        }
        out
    }

    /// The Sidecar whose `ingress` listeners define the proxy's inbound ports, if they do.
    pub fn sidecar_ingress(&self) -> Option<&'a Resource> {
        self.sidecar
            .filter(|r| matches!(&r.spec, crate::model::Spec::Sidecar(s) if !s.ingress.is_empty()))
    }

    /// The ports of the proxy's own workload: Sidecar ingress listeners if any, else the
    /// workload ports of the services that select the proxy ([`Scope::served_ports`]).
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
                    binds: self.proxy.interception_mode == InterceptionMode::None
                        || ingress.capture_mode == Some(CaptureMode::None),
                });
            }
        } else if self.proxy.interception_mode != InterceptionMode::None {
            for (_, p, port) in self.served_ports() {
                out.push(InboundPort {
                    port,
                    protocol: p.protocol,
                    bind: None,
                    endpoint: None,
                    binds: false,
                });
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
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(services.len());
    for s in services {
        match position.get(s.hostname.as_str()) {
            Some(&i) => {
                let existing = &mut out[i];
                if existing.namespace != namespace && s.namespace == namespace {
                    *existing = s;
                }
            }
            None => {
                position.insert(s.hostname.as_str(), out.len());
                out.push(s);
            }
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
/// The Sidecar resource of a sidecar proxy (none applies to gateways).
fn find_sidecar<'a>(model: &'a Model, proxy: &Proxy) -> Option<&'a Resource> {
    if proxy.proxy_type != crate::model::proxy::ProxyType::Sidecar {
        return None;
    }
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
    fn most_specific_host_match() {
        let hosts = [
            "*.com",
            "*.example.com",
            "a.example.com",
            "*",
            "*.b.example.com",
        ];
        let best = |needle| most_specific_host(needle, hosts.iter().copied());
        assert_eq!(best("a.example.com"), Some("a.example.com"));
        assert_eq!(best("x.b.example.com"), Some("*.b.example.com"));
        assert_eq!(best("c.example.com"), Some("*.example.com"));
        assert_eq!(best("other.org"), Some("*"));
        assert_eq!(best("*.example.com"), Some("*.example.com"));
        assert_eq!(best("*.z.example.com"), Some("*.example.com"));
        assert_eq!(most_specific_host("a.org", ["*.com"].into_iter()), None);
    }

    fn rule(
        name: &str,
        export_to: &[&str],
        selector: Option<(&str, &str)>,
        subsets: &[&str],
        with_policy: bool,
    ) -> Resource {
        use crate::model::{Kind, ObjectMeta, Spec};
        let dr = networking::DestinationRule {
            host: "h".into(),
            export_to: export_to.iter().map(|s| s.to_string()).collect(),
            workload_selector: selector.map(|(k, v)| networking::TypeWorkloadSelector {
                match_labels: [(k.to_string(), v.to_string())].into(),
            }),
            subsets: subsets
                .iter()
                .map(|n| networking::Subset {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            traffic_policy: with_policy.then(networking::TrafficPolicy::default),
        };
        Resource {
            kind: Kind::DestinationRule,
            api_version: "networking.istio.io/v1".into(),
            meta: ObjectMeta {
                name: name.into(),
                namespace: "ns".into(),
                ..Default::default()
            },
            spec: Spec::DestinationRule(Box::new(dr)),
            origin: None,
        }
    }

    fn merged(rules: &[Resource]) -> Vec<(String, Vec<String>, Option<String>)> {
        let mut out = Vec::new();
        for r in rules {
            let crate::model::Spec::DestinationRule(dr) = &r.spec else {
                unreachable!()
            };
            merge_rule(&mut out, r, dr);
        }
        out.into_iter()
            .map(|c| {
                (
                    c.resource.meta.name.clone(),
                    c.subsets.iter().map(|s| s.subset.name.clone()).collect(),
                    c.traffic_policy.map(|(r, _)| r.meta.name.clone()),
                )
            })
            .collect()
    }

    #[test]
    fn rules_merge_as_istiod() {
        // Same exportTo, no selectors: one rule, subsets concatenated, first policy kept.
        let rules = [
            rule("a", &[], None, &["v1"], false),
            rule("b", &[], None, &["v1", "v2"], true),
        ];
        assert_eq!(
            merged(&rules),
            vec![("a".into(), vec!["v1".into(), "v2".into()], Some("b".into()))]
        );
        // Different exportTo: kept apart.
        let rules = [
            rule("a", &["*"], None, &["v1"], true),
            rule("b", &["."], None, &["v2"], true),
        ];
        assert_eq!(merged(&rules).len(), 2);
        // A selector rule (private) and a plain rule private to the namespace merge into the
        // selector rule, and the plain one is not kept separately.
        let rules = [
            rule("sel", &[], Some(("app", "x")), &["v1"], true),
            rule("plain", &["."], None, &["v2"], true),
        ];
        assert_eq!(
            merged(&rules),
            vec![(
                "sel".into(),
                vec!["v1".into(), "v2".into()],
                Some("sel".into())
            )]
        );
        // Different selectors: separate.
        let rules = [
            rule("x", &[], Some(("app", "x")), &[], true),
            rule("y", &[], Some(("app", "y")), &[], true),
        ];
        assert_eq!(merged(&rules).len(), 2);
    }

    #[test]
    fn export() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }

    /// The rules of one index for a host as the model was scanned before it had an index:
    /// every DestinationRule, filtered, hosts resolved on the way.
    fn scanned_rules_in<'a>(
        scope: &Scope<'a>,
        namespace: &str,
        index: RuleIndex,
        host: &str,
    ) -> Vec<Consolidated<'a>> {
        let root = scope.model.mesh.root_namespace.as_str();
        let mut rules: Vec<(&'a Resource, &'a networking::DestinationRule, String)> = scope
            .model
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(dr) => Some((r.as_ref(), dr.as_ref())),
                _ => None,
            })
            .filter(|(r, _)| r.meta.namespace == namespace)
            .filter(|(r, dr)| {
                let export = export_set(dr);
                let ns = r.meta.namespace.as_str();
                let private_only =
                    export.len() == 1 && (export.contains(".") || export.contains(ns));
                match index {
                    RuleIndex::NamespaceLocal => {
                        export.is_empty()
                            || export.contains("*")
                            || export.contains(".")
                            || export.contains(ns)
                    }
                    RuleIndex::Exported => !private_only,
                    RuleIndex::RootLocal => private_only && ns == root,
                }
            })
            .map(|(r, dr)| {
                (
                    r,
                    dr,
                    resolve_host(&dr.host, &r.meta.namespace, scope.domain_suffix()),
                )
            })
            .collect();
        let Some(best) = most_specific_host(host, rules.iter().map(|(_, _, h)| h.as_str())) else {
            return Vec::new();
        };
        let best = best.to_string();
        rules.retain(|(_, _, h)| *h == best);
        rules.sort_by(|(a, adr, _), (b, bdr, _)| {
            (
                adr.workload_selector.is_none(),
                a.meta.creation_timestamp.as_deref().unwrap_or_default(),
                &a.meta.name,
                &a.meta.namespace,
            )
                .cmp(&(
                    bdr.workload_selector.is_none(),
                    b.meta.creation_timestamp.as_deref().unwrap_or_default(),
                    &b.meta.name,
                    &b.meta.namespace,
                ))
        });
        let mut out = Vec::new();
        for (r, dr, _) in rules {
            merge_rule(&mut out, r, dr);
        }
        out
    }

    fn scanned_virtual_services<'a>(scope: &Scope<'a>, hostname: &str) -> Vec<&'a Resource> {
        scope
            .model
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some((r.as_ref(), vs.as_ref())),
                _ => None,
            })
            .filter(|(r, vs)| {
                (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
                    && exported_to(&vs.export_to, &r.meta.namespace, &scope.proxy.namespace)
                    && vs.hosts.iter().any(|h| {
                        host_matches(
                            &resolve_host(h, &r.meta.namespace, scope.domain_suffix()),
                            hostname,
                        )
                    })
            })
            .map(|(r, _)| r)
            .collect()
    }

    /// What a rule lookup decided, by resource key.
    fn decided(c: &Consolidated) -> String {
        format!(
            "{} policy={:?} subsets={:?} selector={:?} export={:?}",
            c.resource.key(),
            c.traffic_policy.map(|(r, _)| r.key()),
            c.subsets
                .iter()
                .map(|s| format!("{}#{}", s.resource.key(), s.index))
                .collect::<Vec<_>>(),
            c.selector,
            c.export_to
        )
    }

    /// A small deterministic generator (xorshift).
    struct Pick(u64);

    impl Pick {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn one<'s>(&mut self, from: &[&'s str]) -> &'s str {
            from[(self.next() % from.len() as u64) as usize]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// The per-model index finds exactly the rules a scan of every resource found: random
    /// DestinationRules and VirtualServices (short, qualified and wildcard hosts, every kind of
    /// `exportTo`, selectors, gateways, equal creation times), every namespace and labels.
    #[test]
    fn indexed_lookups_equal_scans() {
        use crate::model::MeshConfig;
        use crate::model::resource::parse_yaml;
        let namespaces = ["istio-system", "a", "b", "c"];
        let hosts = [
            "svc1",
            "svc2",
            "svc1.a.svc.cluster.local",
            "svc2.b.svc.cluster.local",
            "*.a.svc.cluster.local",
            "*.svc.cluster.local",
            "*.cluster.local",
            "*",
            "api.example.com",
            "*.example.com",
            "*.api.example.com",
        ];
        let exports: [&[&str]; 7] = [
            &[],
            &["*"],
            &["."],
            &["a"],
            &[".", "b"],
            &["b", "c"],
            &["~"],
        ];
        let times = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", ""];
        for seed in 1..=40u64 {
            let mut pick = Pick(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let mut yaml = String::new();
            for i in 0..(8 + pick.next() % 16) {
                let ns = pick.one(&namespaces);
                let time = pick.one(&times);
                let export = exports[(pick.next() % exports.len() as u64) as usize];
                let mut meta = format!("  name: r{i}\n  namespace: {ns}\n");
                if !time.is_empty() {
                    meta.push_str(&format!("  creationTimestamp: \"{time}\"\n"));
                }
                let export_to = if export.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  exportTo: [{}]\n",
                        export
                            .iter()
                            .map(|e| format!("\"{e}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                if pick.chance(50) {
                    let selector = if pick.chance(30) {
                        format!(
                            "  workloadSelector:\n    matchLabels: {{app: {}}}\n",
                            pick.one(&["x", "y"])
                        )
                    } else {
                        String::new()
                    };
                    let policy = if pick.chance(50) {
                        "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 3}\n"
                    } else {
                        ""
                    };
                    let subsets = ["v1", "v2", "v3"]
                        .iter()
                        .filter(|_| pick.chance(40))
                        .map(|v| format!("  - name: {v}\n    labels: {{version: {v}}}\n"))
                        .collect::<String>();
                    let subsets = if subsets.is_empty() {
                        String::new()
                    } else {
                        format!("  subsets:\n{subsets}")
                    };
                    yaml.push_str(&format!(
                        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n{meta}spec:\n  host: \"{}\"\n{export_to}{selector}{policy}{subsets}",
                        pick.one(&hosts)
                    ));
                } else {
                    let mut vs_hosts = vec![pick.one(&hosts)];
                    if pick.chance(30) {
                        vs_hosts.push(pick.one(&hosts));
                    }
                    vs_hosts.dedup();
                    let gateways = match pick.next() % 4 {
                        0 => "",
                        1 => "  gateways: [mesh]\n",
                        2 => "  gateways: [gw]\n",
                        _ => "  gateways: [gw, mesh]\n",
                    };
                    yaml.push_str(&format!(
                        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n{meta}spec:\n  hosts: [{}]\n{export_to}{gateways}  http:\n  - route:\n    - destination:\n        host: svc1\n",
                        vs_hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let resources: Vec<Arc<Resource>> = parse_yaml(&yaml, "random.yaml")
                .into_iter()
                .filter_map(|p| p.resource)
                .map(Arc::new)
                .collect();
            assert!(resources.len() > 4, "seed {seed}: too few valid resources");
            let model = Model::build(resources, Vec::new(), MeshConfig::default());
            let wanted = [
                ("svc1.a.svc.cluster.local", "a"),
                ("svc2.b.svc.cluster.local", "b"),
                ("svc1.c.svc.cluster.local", "c"),
                ("api.example.com", "istio-system"),
                ("x.api.example.com", "b"),
                ("*.example.com", "a"),
                ("other.org", "c"),
            ];
            for ns in namespaces {
                for app in ["x", "y", "z"] {
                    let proxy = Proxy::parse(
                        &format!("sidecar~10.0.0.1~p.{ns}~{ns}.svc.cluster.local"),
                        &serde_json::json!({"NAMESPACE": ns, "LABELS": {"app": app}}),
                    )
                    .expect("proxy");
                    let scope = Scope::new(&model, &proxy);
                    for (host, service_ns) in wanted {
                        for index in [
                            RuleIndex::NamespaceLocal,
                            RuleIndex::Exported,
                            RuleIndex::RootLocal,
                        ] {
                            for rules_ns in namespaces {
                                let indexed: Vec<String> = scope
                                    .rules_in(rules_ns, index, host)
                                    .iter()
                                    .map(decided)
                                    .collect();
                                let scanned: Vec<String> =
                                    scanned_rules_in(&scope, rules_ns, index, host)
                                        .iter()
                                        .map(decided)
                                        .collect();
                                assert_eq!(
                                    indexed, scanned,
                                    "seed {seed}: rules of {rules_ns} ({index:?}) for {host}\n{yaml}"
                                );
                            }
                        }
                        let service = Service {
                            hostname: host.to_string(),
                            namespace: service_ns.to_string(),
                            name: "s".into(),
                            origin: crate::model::Kind::ServiceEntry,
                            ports: Vec::new(),
                            addresses: Vec::new(),
                            resolution: registry::Resolution::Static,
                            mesh_external: false,
                            export_to: Vec::new(),
                            selector: None,
                            endpoints: Default::default(),
                        };
                        // The whole lookup runs on the index; its parts were compared above.
                        let _ = scope.destination_rule(&service);
                        let _ = scope.inbound_destination_rule(&service);
                        let indexed: Vec<&Resource> = scope
                            .virtual_services(host)
                            .into_iter()
                            .map(|(r, _)| r)
                            .collect();
                        assert_eq!(
                            indexed.iter().map(|r| r.key()).collect::<Vec<_>>(),
                            scanned_virtual_services(&scope, host)
                                .iter()
                                .map(|r| r.key())
                                .collect::<Vec<_>>(),
                            "seed {seed}: VirtualServices for {host} from {ns}\n{yaml}"
                        );
                    }
                }
            }
        }
    }

    // --- Inbound ports: a Service's named targetPort -------------------------------------

    const NAMED_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-web}
  - {name: tcp-admin, port: 81, targetPort: 9901}
"#;

    /// The inbound ports (and protocols) a captured `web` proxy at `ip` gets.
    fn inbound_ports(
        yaml: &str,
        pod: &str,
        ip: &str,
        pod_ports: Option<&str>,
    ) -> Vec<(u16, Protocol)> {
        let model = crate::model::testing::model(yaml);
        let mut metadata = serde_json::json!({
            "NAMESPACE": "shop",
            "LABELS": {"app": "web"},
            "INTERCEPTION_MODE": "REDIRECT",
        });
        if let Some(p) = pod_ports {
            metadata["POD_PORTS"] = p.into();
        }
        let proxy = Proxy::parse(
            &format!("sidecar~{ip}~{pod}.shop~shop.svc.cluster.local"),
            &metadata,
        )
        .expect("a valid proxy");
        Scope::new(&model, &proxy)
            .inbound()
            .into_iter()
            .map(|p| (p.port, p.protocol))
            .collect()
    }

    fn pod(name: &str, ports: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\n\
             spec:\n  containers:\n  - {{name: app, image: app, ports: {ports}}}\n"
        )
    }

    #[test]
    fn named_target_port_is_the_pods_container_port() {
        let yaml = format!(
            "{NAMED_SERVICE}{}{}",
            pod(
                "web-0",
                "[{name: http-web, containerPort: 8080}, {name: metrics, containerPort: 9090}]"
            ),
            pod("web-1", "[{name: http-web, containerPort: 7070}]"),
        );
        // The proxy's own Pod (named by the node id) decides, not another of the Service's.
        assert_eq!(
            inbound_ports(&yaml, "web-0", "10.0.0.1", None),
            vec![(8080, Protocol::Http), (9901, Protocol::Tcp)]
        );
        assert_eq!(
            inbound_ports(&yaml, "web-1", "10.0.0.2", None),
            vec![(7070, Protocol::Http), (9901, Protocol::Tcp)]
        );
        // A native sidecar's port counts; a UDP port of that name does not serve a TCP port.
        let sidecar = format!(
            "{NAMED_SERVICE}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-2, namespace: shop}}\n\
             spec:\n  containers: [{{name: app, image: app, ports: [{{name: http-web, containerPort: 53, protocol: UDP}}]}}]\n  \
             initContainers: [{{name: side, image: side, restartPolicy: Always, ports: [{{name: http-web, containerPort: 6060}}]}}]\n"
        );
        assert_eq!(
            inbound_ports(&sidecar, "web-2", "10.0.0.3", None),
            vec![(6060, Protocol::Http), (9901, Protocol::Tcp)]
        );
    }

    #[test]
    fn named_target_port_without_the_port_is_not_served() {
        // The Pod has no port of that name; an unknown workload has none either. The service
        // port is never taken for the workload port.
        let yaml = format!(
            "{NAMED_SERVICE}{}",
            pod("web-0", "[{name: other, containerPort: 8080}]")
        );
        assert_eq!(
            inbound_ports(&yaml, "web-0", "10.0.0.1", None),
            vec![(9901, Protocol::Tcp)]
        );
        assert_eq!(
            inbound_ports(NAMED_SERVICE, "web-9", "10.0.0.9", None),
            vec![(9901, Protocol::Tcp)]
        );
    }

    #[test]
    fn named_target_port_from_pod_ports_metadata() {
        // The Pod is not known (yet): the ports the proxy reports stand in for it.
        let pod_ports = r#"[{"name":"http-web","containerPort":8080,"protocol":"TCP"}]"#;
        assert_eq!(
            inbound_ports(NAMED_SERVICE, "web-0", "10.0.0.1", Some(pod_ports)),
            vec![(8080, Protocol::Http), (9901, Protocol::Tcp)]
        );
        // A known Pod wins over the metadata.
        let yaml = format!(
            "{NAMED_SERVICE}{}",
            pod("web-0", "[{name: http-web, containerPort: 7070}]")
        );
        assert_eq!(
            inbound_ports(&yaml, "web-0", "10.0.0.1", Some(pod_ports)),
            vec![(7070, Protocol::Http), (9901, Protocol::Tcp)]
        );
    }

    #[test]
    fn named_target_port_is_the_workload_entrys_port() {
        // The WorkloadEntry with the proxy's address; its port named like a service port also
        // wins over a numeric targetPort, as for its endpoints.
        let yaml = format!(
            "{NAMED_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: {{name: vm-0, namespace: shop}}\n\
             spec: {{address: 10.0.0.5, labels: {{app: web}}, ports: {{http-web: 8080, tcp-admin: 9911}}}}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: {{name: vm-1, namespace: shop}}\n\
             spec: {{address: 10.0.0.6, labels: {{app: web}}}}\n"
        );
        assert_eq!(
            inbound_ports(&yaml, "vm-0", "10.0.0.5", None),
            vec![(8080, Protocol::Http), (9911, Protocol::Tcp)]
        );
        // An entry without the named port does not serve that service port.
        assert_eq!(
            inbound_ports(&yaml, "vm-1", "10.0.0.6", None),
            vec![(9901, Protocol::Tcp)]
        );
    }
}
