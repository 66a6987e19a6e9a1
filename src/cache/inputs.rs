//! What one proxy class's generated configuration is a function of, so the cache can skip
//! classes a change cannot affect and hand translation only the rules that can apply.
//!
//! Translation reads the model through `translate::Scope` only: the mesh settings; the Sidecar
//! it picks (by namespace and labels) and the services each egress listener imports (from the
//! registry); the proxy's inbound ports (services selecting it); the DestinationRule of each
//! imported service (matched by host); the VirtualServices of each imported hostname (matched
//! by host); and, for a VirtualService destination, the ports of the registry service of that
//! host. `ClassInputs` captures a superset of these for one class at one model: a rule is
//! kept when one of its hosts could name an imported service (a wildcard, or a dot-separated
//! prefix of the hostname — host resolution only ever appends a suffix), and a destination's
//! candidate services are every registry service named by any string in a kept
//! VirtualService. Equal inputs give equal output; unequal inputs say which types to
//! regenerate (VirtualServices and destinations: listeners and routes; endpoints of static
//! services: EDS; anything else: every type).
//!
//! A translation change that reads the model some other way must extend `ClassInputs` (the
//! cache's differential test compares skipped and full regeneration on generated meshes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cache::{ResourceType, TypeSet};
use crate::model::registry::{Port, Resolution, Service};
use crate::model::{MeshConfig, Model, Proxy, Resource, Spec};
use crate::translate::Scope;

/// Per-model lookups shared by every class: built once per generation.
#[derive(Debug)]
pub struct ModelIndex {
    pub generation: u64,
    /// Registry service indexes by every dot-separated prefix of their hostname
    /// (`a`, `a.ns`, `a.ns.svc`, ..., the full name).
    by_prefix: HashMap<String, Vec<usize>>,
    virtual_services: Vec<IndexedRule>,
    destination_rules: Vec<IndexedRule>,
}

#[derive(Debug)]
struct IndexedRule {
    /// Index in `model.resources`.
    resource: usize,
    hosts: Vec<String>,
    /// VirtualServices: registry services any string of the rule names.
    candidates: Vec<usize>,
}

impl ModelIndex {
    pub fn build(model: &Model, generation: u64) -> ModelIndex {
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in model.registry.services.iter().enumerate() {
            let mut end = 0;
            loop {
                let next = s.hostname[end..].find('.').map(|p| end + p);
                let prefix = &s.hostname[..next.unwrap_or(s.hostname.len())];
                by_prefix.entry(prefix.to_string()).or_default().push(i);
                match next {
                    Some(dot) => end = dot + 1,
                    None => break,
                }
            }
        }
        let mut virtual_services = Vec::new();
        let mut destination_rules = Vec::new();
        for (i, r) in model.resources.iter().enumerate() {
            match &r.spec {
                Spec::VirtualService(vs) => {
                    let mut strings = Vec::new();
                    if let Ok(value) = serde_json::to_value(vs.as_ref()) {
                        collect_strings(&value, &mut strings);
                    }
                    let mut candidates: Vec<usize> = strings
                        .iter()
                        .filter_map(|s| by_prefix.get(s.as_str()))
                        .flatten()
                        .copied()
                        .collect();
                    candidates.sort_unstable();
                    candidates.dedup();
                    virtual_services.push(IndexedRule {
                        resource: i,
                        hosts: vs.hosts.clone(),
                        candidates,
                    });
                }
                Spec::DestinationRule(dr) => destination_rules.push(IndexedRule {
                    resource: i,
                    hosts: vec![dr.host.clone()],
                    candidates: Vec::new(),
                }),
                _ => {}
            }
        }
        ModelIndex {
            generation,
            by_prefix,
            virtual_services,
            destination_rules,
        }
    }

    /// Whether a rule host could match one of `hostnames` after resolution.
    fn could_match(&self, model: &Model, host: &str, hostnames: &HashSet<&str>) -> bool {
        if host.contains('*') {
            return true;
        }
        self.by_prefix.get(host).is_some_and(|ids| {
            ids.iter().any(|i| {
                model
                    .registry
                    .services
                    .get(*i)
                    .is_some_and(|s| hostnames.contains(s.hostname.as_str()))
            })
        })
    }
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// A registry service as a VirtualService destination sees it.
#[derive(Debug, Clone, PartialEq)]
struct DestinationView {
    hostname: String,
    namespace: String,
    ports: Vec<Port>,
}

/// Everything one class's output is a function of, at one model.
#[derive(Debug)]
pub struct ClassInputs {
    mesh: MeshConfig,
    sidecar: Option<Resource>,
    /// Per egress listener: its Debug form without the services, and the services.
    egress: Vec<(String, Vec<Arc<Service>>)>,
    inbound: String,
    virtual_services: Vec<Arc<Resource>>,
    destination_rules: Vec<Arc<Resource>>,
    destinations: Vec<DestinationView>,
    /// Indexes (in `model.resources`) of the rules above, to build the reduced model.
    rule_indexes: HashSet<usize>,
}

impl ClassInputs {
    pub fn of(model: &Model, index: &ModelIndex, proxy: &Proxy) -> ClassInputs {
        let scope = Scope::new(model, proxy);
        let egress: Vec<(String, Vec<Arc<Service>>)> = scope
            .egress
            .iter()
            .map(|e| {
                (
                    format!("{:?} {:?} {:?}", e.port, e.bind, e.binds),
                    e.services.iter().map(|s| Arc::clone(s)).collect(),
                )
            })
            .collect();
        let hostnames: HashSet<&str> = scope
            .egress
            .iter()
            .flat_map(|e| e.services.iter().map(|s| s.hostname.as_str()))
            .collect();
        let mut rule_indexes = HashSet::new();
        let mut virtual_services = Vec::new();
        let mut candidates = Vec::new();
        for rule in &index.virtual_services {
            if rule
                .hosts
                .iter()
                .any(|h| index.could_match(model, h, &hostnames))
                && let Some(r) = model.resources.get(rule.resource)
            {
                rule_indexes.insert(rule.resource);
                virtual_services.push(r.clone());
                candidates.extend(rule.candidates.iter().copied());
            }
        }
        let mut destination_rules = Vec::new();
        for rule in &index.destination_rules {
            if rule
                .hosts
                .iter()
                .any(|h| index.could_match(model, h, &hostnames))
                && let Some(r) = model.resources.get(rule.resource)
            {
                rule_indexes.insert(rule.resource);
                destination_rules.push(r.clone());
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let destinations = candidates
            .iter()
            .filter_map(|i| model.registry.services.get(*i))
            .map(|s| DestinationView {
                hostname: s.hostname.clone(),
                namespace: s.namespace.clone(),
                ports: s.ports.clone(),
            })
            .collect();
        ClassInputs {
            mesh: model.mesh.clone(),
            sidecar: scope.sidecar.cloned(),
            egress,
            inbound: format!("{:?}", scope.inbound()),
            virtual_services,
            destination_rules,
            destinations,
            rule_indexes,
        }
    }

    /// The types whose output may differ between a class with inputs `self` and `new`.
    pub fn changed(&self, new: &ClassInputs) -> TypeSet {
        if self.mesh != new.mesh
            || self.sidecar != new.sidecar
            || self.inbound != new.inbound
            || self.destination_rules != new.destination_rules
            || self.egress.len() != new.egress.len()
        {
            return TypeSet::ALL;
        }
        let mut types = TypeSet::NONE;
        for ((old_listener, old), (new_listener, new)) in self.egress.iter().zip(&new.egress) {
            if old_listener != new_listener || old.len() != new.len() {
                return TypeSet::ALL;
            }
            for (a, b) in old.iter().zip(new) {
                match service_change(a, b) {
                    ServiceChange::None => {}
                    ServiceChange::Endpoints => {
                        types = types.union(TypeSet::only(ResourceType::Eds))
                    }
                    ServiceChange::Config => return TypeSet::ALL,
                }
            }
        }
        if self.virtual_services != new.virtual_services || self.destinations != new.destinations {
            types = types
                .union(TypeSet::only(ResourceType::Lds))
                .union(TypeSet::only(ResourceType::Rds));
        }
        types
    }

    /// The model translation needs for this class: the same, without the VirtualServices and
    /// DestinationRules that cannot apply to it (translation looks rules up by host, so fewer
    /// rules make every lookup cheaper without changing its result).
    pub fn reduced(&self, model: &Model) -> Model {
        let mut reduced = Model::default();
        reduced.mesh = model.mesh.clone();
        reduced.registry = model.registry.clone();
        reduced.resources = model
            .resources
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                !matches!(r.spec, Spec::VirtualService(_) | Spec::DestinationRule(_))
                    || self.rule_indexes.contains(i)
            })
            .map(|(_, r)| r.clone())
            .collect();
        reduced
    }
}

enum ServiceChange {
    None,
    Endpoints,
    Config,
}

/// How a service differs as an imported service. Endpoints of services Envoy resolves by DNS
/// live in the cluster, so they count as configuration.
fn service_change(a: &Service, b: &Service) -> ServiceChange {
    let Service {
        hostname,
        namespace,
        name,
        origin,
        ports,
        addresses,
        resolution,
        mesh_external,
        export_to,
        selector,
        endpoints,
    } = a;
    let config_equal = *hostname == b.hostname
        && *namespace == b.namespace
        && *name == b.name
        && *origin == b.origin
        && *ports == b.ports
        && *addresses == b.addresses
        && *resolution == b.resolution
        && *mesh_external == b.mesh_external
        && *export_to == b.export_to
        && *selector == b.selector;
    if !config_equal {
        return ServiceChange::Config;
    }
    if *endpoints == b.endpoints {
        ServiceChange::None
    } else if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
        ServiceChange::Config
    } else {
        ServiceChange::Endpoints
    }
}
