//! Lookups over one model, built once per model on first use: resources by kind, the
//! DestinationRules of each namespace and the mesh-bound VirtualServices by resolved host,
//! ServiceEntries by name, registry services by namespace, WorkloadEntries by address, and Pods
//! and Secrets by name.
//!
//! The index only finds candidates; which of them apply (exportTo, root namespace, precedence)
//! is decided by the caller, exactly as it would over a scan of every resource. Positions are
//! indexes into `Model::resources` (or `Registry::services`) and every list is in model order,
//! so a caller that keeps the order sees what a scan would have seen.

use std::collections::{BTreeSet, HashMap};

use super::config::Model;
use super::networking::{Labels, LoadBalancerSettings, TrafficPolicy};
use super::resource::{Kind, Spec};

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

/// Rules keyed by their resolved hosts.
#[derive(Debug, Default)]
pub struct HostIndex {
    /// Every resolved host (wildcards included, as strings) → positions, in model order.
    exact: HashMap<String, Vec<usize>>,
    /// Resolved hosts starting with `*`, with their positions, in model order.
    wildcard: Vec<(String, usize)>,
}

impl HostIndex {
    fn add(&mut self, host: String, position: usize) {
        if host.starts_with('*') {
            self.wildcard.push((host.clone(), position));
        }
        let positions = self.exact.entry(host).or_default();
        if positions.last() != Some(&position) {
            positions.push(position);
        }
    }

    /// Positions of the rules with a resolved host equal to `host`, in model order.
    pub fn exact(&self, host: &str) -> &[usize] {
        self.exact.get(host).map(Vec::as_slice).unwrap_or_default()
    }

    /// Resolved wildcard hosts (starting with `*`) and their rules' positions, in model order.
    pub fn wildcards(&self) -> &[(String, usize)] {
        &self.wildcard
    }

    /// Positions, in model order and once each, of the rules with a host that
    /// [`host_matches`] `hostname`.
    pub fn matching(&self, hostname: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self.exact(hostname).to_vec();
        out.extend(
            self.wildcard
                .iter()
                .filter(|(h, _)| host_matches(h, hostname))
                .map(|(_, p)| *p),
        );
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The index of one model (see the module documentation).
#[derive(Debug, Default)]
pub struct Index {
    /// Positions of the resources of each kind (by `Kind as usize`), in model order.
    by_kind: Vec<Vec<usize>>,
    /// DestinationRules by their namespace, keyed by host resolved in that namespace.
    destination_rules: HashMap<String, HostIndex>,
    /// VirtualServices bound to the mesh (no `gateways`, or `mesh` among them), by resolved
    /// host.
    mesh_virtual_services: HostIndex,
    /// VirtualServices by (namespace, name), in model order.
    virtual_services_by_name: HashMap<(String, String), Vec<usize>>,
    /// ServiceEntries by (namespace, name), in model order.
    service_entries: HashMap<(String, String), Vec<usize>>,
    /// Registry services (positions in `registry.services`) by namespace, in registry order.
    services_by_namespace: HashMap<String, Vec<usize>>,
    /// WorkloadEntries by address, in model order.
    workload_entries_by_address: HashMap<String, Vec<usize>>,
    /// Pods by (namespace, name).
    pods: HashMap<(String, String), usize>,
    /// Secrets by (namespace, name).
    secrets: HashMap<(String, String), usize>,
    /// The label keys a proxy's outbound configuration can depend on; `None`: all of them.
    outbound_label_keys: Option<BTreeSet<String>>,
    /// Automatically allocated addresses by (namespace, hostname) (see `auto_address`).
    auto_addresses: HashMap<(String, String), std::net::Ipv4Addr>,
}

static NO_POSITIONS: Vec<usize> = Vec::new();

impl Index {
    pub fn build(model: &Model) -> Index {
        let domain = model.mesh.domain_suffix.as_str();
        let mut index = Index {
            by_kind: vec![Vec::new(); Kind::ALL.len()],
            ..Index::default()
        };
        for (position, r) in model.resources.iter().enumerate() {
            if let Some(list) = index.by_kind.get_mut(r.spec.kind() as usize) {
                list.push(position);
            }
            let ns = r.meta.namespace.as_str();
            match &r.spec {
                Spec::DestinationRule(dr) => {
                    index
                        .destination_rules
                        .entry(ns.to_string())
                        .or_default()
                        .add(resolve_host(&dr.host, ns, domain), position);
                }
                Spec::VirtualService(vs) => {
                    index
                        .virtual_services_by_name
                        .entry((ns.to_string(), r.meta.name.clone()))
                        .or_default()
                        .push(position);
                    if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") {
                        for h in &vs.hosts {
                            index
                                .mesh_virtual_services
                                .add(resolve_host(h, ns, domain), position);
                        }
                    }
                }
                Spec::ServiceEntry(_) => {
                    index
                        .service_entries
                        .entry((ns.to_string(), r.meta.name.clone()))
                        .or_default()
                        .push(position);
                }
                Spec::WorkloadEntry(we) => {
                    index
                        .workload_entries_by_address
                        .entry(we.address.clone())
                        .or_default()
                        .push(position);
                }
                Spec::Pod(_) => {
                    index
                        .pods
                        .insert((ns.to_string(), r.meta.name.clone()), position);
                }
                Spec::Secret(_) => {
                    index
                        .secrets
                        .insert((ns.to_string(), r.meta.name.clone()), position);
                }
                _ => {}
            }
        }
        index.outbound_label_keys = outbound_label_keys(model);
        for (position, s) in model.registry.services.iter().enumerate() {
            index
                .services_by_namespace
                .entry(s.namespace.clone())
                .or_default()
                .push(position);
        }
        index.auto_addresses =
            super::auto_address::allocate(model.registry.services.iter().map(|s| s.as_ref()));
        index
    }

    /// The address allocated to a ServiceEntry host that declares none (see `auto_address`).
    pub fn auto_address(&self, namespace: &str, hostname: &str) -> Option<std::net::Ipv4Addr> {
        self.auto_addresses
            .get(&(namespace.to_string(), hostname.to_string()))
            .copied()
    }

    /// Positions of every resource whose spec is of a kind, in model order.
    pub fn of_kind(&self, kind: Kind) -> &[usize] {
        self.by_kind.get(kind as usize).unwrap_or(&NO_POSITIONS)
    }

    /// The DestinationRules of a namespace by resolved host.
    pub fn destination_rules_in(&self, namespace: &str) -> Option<&HostIndex> {
        self.destination_rules.get(namespace)
    }

    /// VirtualServices bound to the mesh, by resolved host.
    pub fn mesh_virtual_services(&self) -> &HostIndex {
        &self.mesh_virtual_services
    }

    /// Positions of the VirtualServices named `namespace/name`, in model order.
    pub fn virtual_services_named(&self, namespace: &str, name: &str) -> &[usize] {
        self.virtual_services_by_name
            .get(&(namespace.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Positions of the ServiceEntries named `namespace/name`, in model order.
    pub fn service_entries_named(&self, namespace: &str, name: &str) -> &[usize] {
        self.service_entries
            .get(&(namespace.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The label keys of a proxy that its outbound configuration (outbound clusters,
    /// endpoints, listeners and routes) can depend on: those of Sidecar and DestinationRule
    /// workload selectors and of VirtualService `sourceLabels` matches. `None` when any label
    /// may matter: a DestinationRule sets `failoverPriority` (which compares the proxy's
    /// labels, and treats a proxy without labels apart).
    pub fn outbound_label_keys(&self) -> Option<&BTreeSet<String>> {
        self.outbound_label_keys.as_ref()
    }

    /// Positions of the WorkloadEntries with this address, in model order.
    pub fn workload_entries_at(&self, address: &str) -> &[usize] {
        self.workload_entries_by_address
            .get(address)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Position of the Pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<usize> {
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// Position of the Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<usize> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// Positions in `registry.services` of the services of a namespace, in registry order.
    pub fn services_in(&self, namespace: &str) -> &[usize] {
        self.services_by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// See [`Index::outbound_label_keys`].
fn outbound_label_keys(model: &Model) -> Option<BTreeSet<String>> {
    fn failover_priority(lb: Option<&LoadBalancerSettings>) -> bool {
        lb.and_then(|lb| lb.locality_lb_setting.as_ref())
            .is_some_and(|l| !l.failover_priority.is_empty())
    }
    fn policy_uses_labels(tp: Option<&TrafficPolicy>) -> bool {
        tp.is_some_and(|tp| {
            failover_priority(tp.load_balancer.as_ref())
                || tp
                    .port_level_settings
                    .iter()
                    .any(|p| failover_priority(p.load_balancer.as_ref()))
        })
    }
    let mut keys = BTreeSet::new();
    let mut add = |labels: &Labels| keys.extend(labels.keys().cloned());
    for r in &model.resources {
        match &r.spec {
            Spec::Sidecar(s) => {
                if let Some(w) = &s.workload_selector {
                    add(&w.labels);
                }
            }
            Spec::DestinationRule(dr) => {
                if policy_uses_labels(dr.traffic_policy.as_ref())
                    || dr
                        .subsets
                        .iter()
                        .any(|s| policy_uses_labels(s.traffic_policy.as_ref()))
                {
                    return None;
                }
                if let Some(w) = &dr.workload_selector {
                    add(&w.match_labels);
                }
            }
            Spec::VirtualService(vs) => {
                for m in vs.http.iter().flat_map(|h| &h.match_) {
                    add(&m.source_labels);
                }
                for m in vs.tcp.iter().flat_map(|t| &t.match_) {
                    add(&m.source_labels);
                }
                for m in vs.tls.iter().flat_map(|t| &t.match_) {
                    add(&m.source_labels);
                }
            }
            _ => {}
        }
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_hosts() {
        let mut h = HostIndex::default();
        h.add("a.example.com".into(), 0);
        h.add("*.example.com".into(), 1);
        h.add("*".into(), 2);
        h.add("b.example.com".into(), 3);
        h.add("a.example.com".into(), 4);
        assert_eq!(h.matching("a.example.com"), vec![0, 1, 2, 4]);
        assert_eq!(h.matching("c.example.com"), vec![1, 2]);
        assert_eq!(h.matching("*.example.com"), vec![1, 2]);
        assert_eq!(h.matching("other.org"), vec![2]);
        assert_eq!(h.exact("*.example.com"), &[1]);
    }
}
