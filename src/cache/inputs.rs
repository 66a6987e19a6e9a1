//! What one proxy class's generated configuration is a function of, so the cache can skip
//! classes a change cannot affect.
//!
//! Translation reads the attributed inputs through `translate::Scope`: the Sidecar
//! it picks (by namespace and labels) and the services each egress listener imports (from the
//! registry); the proxy's inbound ports (services selecting it, on the ports of its workload:
//! those ports are part of the cache's class key, so a Pod or WorkloadEntry whose ports change
//! moves its proxies to another class); the DestinationRule of each
//! imported service (matched by host); the VirtualServices of each imported hostname (matched
//! by host); and, for a VirtualService destination, the ports of the registry service of that
//! host. `ClassInputs` captures a superset of these for one class at one model: a rule is
//! kept when one of its hosts could name an imported service (a wildcard, or a dot-separated
//! prefix of the hostname — host resolution only ever appends a suffix), and a destination's
//! candidate services are every registry service named by any string in a kept
//! VirtualService. Equal inputs give equal output; unequal inputs say which types to
//! regenerate (VirtualServices and destinations: listeners and routes; endpoints of static
//! services: EDS; anything else: every type). DestinationRules are looked up for the
//! services the proxy imports and for those it serves (inbound policy).
//!
//! Rules, Sidecars and services are compared by revision: each model's index numbers every
//! distinct content once (carrying numbers over from the previous index for unchanged
//! content), so comparing a class's inputs is comparing numbers. The index also records what
//! changed since the generation before (`Delta`) when that is confined to endpoints and to
//! VirtualServices and DestinationRules with exact hosts: then a class whose imported and
//! served services are none of those the change reaches has the same inputs, and is not
//! looked at again (`ModelIndex::may_change`). When the change is confined to endpoints, a
//! class it does reach gets its new inputs from its old ones, with the imported services'
//! endpoint revisions moved forward (`ModelIndex::advance`), without a new `Scope`.
//!
//! A gateway (`router`) class keeps the revision of every VirtualService, since the hosts of
//! its Gateways need not name services, and is looked at again after every change.
//!
//! Only VirtualServices, DestinationRules, Sidecars and endpoints are attributed to classes.
//! Everything else translation reads (the mesh settings, the security policies, every other
//! kind, and the configuration of every service, service accounts of its endpoints included)
//! is one model-wide revision, `rest`: a change there regenerates every class. A new input
//! that translation starts to read is therefore safe unless it is one of the attributed kinds;
//! a translation change that reads those some other way must extend `ClassInputs` (the
//! cache's differential test, tests/cache_incremental.rs, compares skipped and full
//! regeneration on generated meshes). Secrets are not in `rest`: translation never reads
//! them (a gateway's listeners name its credentials, SDS serves their content, see
//! `xds::credentials`), so rotating a certificate regenerates no class; a translation that
//! starts reading Secrets must put them back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::envoy::{ResourceType, TypeSet};
use crate::model::proxy::ProxyType;
use crate::model::registry::{Resolution, Service};
use crate::model::{Model, Proxy, Resource, ResourceKey, Spec};
use crate::translate::Scope;

/// A number that identifies one content: equal revisions mean equal content.
type Revision = u64;

/// Revisions of a service as an imported service: its configuration (everything but the
/// endpoints) and its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServiceRevision {
    config: Revision,
    endpoints: Revision,
    /// Envoy resolves its endpoints by DNS: they are part of the cluster.
    dns: bool,
}

/// Per-model lookups shared by every class: built once per generation.
#[derive(Debug)]
pub struct ModelIndex {
    pub generation: u64,
    virtual_services: Vec<IndexedRule>,
    destination_rules: Vec<IndexedRule>,
    /// Per registry service: the rules (positions in the lists above) with a host that could
    /// name it; rules with a wildcard host could name any.
    virtual_services_by_service: Vec<Vec<usize>>,
    destination_rules_by_service: Vec<Vec<usize>>,
    wildcard_virtual_services: Vec<usize>,
    wildcard_destination_rules: Vec<usize>,
    /// Registry index by service address (`Arc::as_ptr`).
    by_address: HashMap<usize, usize, foldhash::fast::FixedState>,
    /// Per registry service (same index).
    services: Vec<ServiceRevision>,
    /// Sidecars, VirtualServices and DestinationRules: revision and content.
    rules: HashMap<ResourceKey, (Revision, Arc<Resource>)>,
    /// Services by (hostname, namespace): revisions and content.
    service_contents: HashMap<(String, String), (ServiceRevision, Arc<Service>)>,
    /// Registry services by (hostname, namespace), in registry order.
    service_keys: Vec<(String, String)>,
    /// What changed since the previous generation, when that can be said per service.
    delta: Option<Delta>,
    /// Everything else translation may read, as one revision: the mesh settings, every
    /// resource that is not a VirtualService, DestinationRule, Sidecar or pure endpoint source
    /// (EndpointSlice, WorkloadEntry, Pod), and the configuration of every service. A kind or field
    /// this index does not attribute to classes lands here, so a change to it regenerates
    /// every class: unknown inputs are safe by default, only slower.
    rest: (Revision, [u8; 32]),
}

/// A revision no content has: the input is unknown and counts as changed.
const UNKNOWN: Revision = Revision::MAX;

/// What changed from one generation to the next when the change is confined to endpoints
/// and to VirtualServices and DestinationRules with exact hosts: the registry services (at
/// the same positions in both models) a class must import, or serve, to be affected. A
/// class whose inputs name none of them has the same inputs at both generations.
#[derive(Debug)]
struct Delta {
    /// Services whose endpoints changed (their configuration did not).
    endpoints: Vec<usize>,
    /// Services a changed VirtualService (before or after the change) could name.
    virtual_services: Vec<usize>,
    /// Services a changed DestinationRule (before or after the change) could name.
    destination_rules: Vec<usize>,
}

/// Whether two sorted lists share an element.
fn intersect(a: &[usize], b: &[usize]) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().any(|x| large.binary_search(x).is_ok())
}

#[derive(Debug)]
struct IndexedRule {
    revision: Revision,
    hosts: Vec<String>,
    /// VirtualServices: registry services any string of the rule names.
    candidates: Vec<usize>,
}

impl ModelIndex {
    /// Indexes `model`, keeping the revisions `previous` gave to unchanged contents; new
    /// revisions come from `counter`, shared by every index of the cache.
    pub fn build(
        model: &Model,
        generation: u64,
        previous: Option<&ModelIndex>,
        counter: &AtomicU64,
    ) -> ModelIndex {
        let revision = || counter.fetch_add(1, Ordering::Relaxed);
        // Registry service indexes by every dot-separated prefix of their hostname (`a`,
        // `a.ns`, `a.ns.svc`, ..., the full name).
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        let mut services = Vec::with_capacity(model.registry.services.len());
        let mut service_contents = HashMap::new();
        let mut service_keys = Vec::with_capacity(model.registry.services.len());
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
            let key = (s.hostname.clone(), s.namespace.clone());
            service_keys.push(key.clone());
            let old = previous.and_then(|p| p.service_contents.get(&key));
            let config = match old {
                Some((r, o)) if same_config(o, s) => r.config,
                _ => revision(),
            };
            let endpoints = match old {
                Some((r, o)) if o.endpoints == s.endpoints => r.endpoints,
                _ => revision(),
            };
            let r = ServiceRevision {
                config,
                endpoints,
                dns: matches!(s.resolution, Resolution::Dns | Resolution::DnsRoundRobin),
            };
            services.push(r);
            service_contents.insert(key, (r, s.clone()));
        }
        let mut virtual_services = Vec::new();
        let mut destination_rules = Vec::new();
        let mut rules = HashMap::new();
        for r in &model.resources {
            if !matches!(
                r.spec,
                Spec::VirtualService(_) | Spec::DestinationRule(_) | Spec::Sidecar(_)
            ) {
                continue;
            }
            let key = r.key();
            let rev = match previous.and_then(|p| p.rules.get(&key)) {
                Some((rev, old)) if Arc::ptr_eq(old, r) || **old == **r => *rev,
                _ => revision(),
            };
            rules.insert(key, (rev, r.clone()));
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
                        revision: rev,
                        hosts: vs.hosts.clone(),
                        candidates,
                    });
                }
                Spec::DestinationRule(dr) => destination_rules.push(IndexedRule {
                    revision: rev,
                    hosts: vec![dr.host.clone()],
                    candidates: Vec::new(),
                }),
                _ => {}
            }
        }
        let n = model.registry.services.len();
        let mut virtual_services_by_service = vec![Vec::new(); n];
        let mut destination_rules_by_service = vec![Vec::new(); n];
        let mut wildcard_virtual_services = Vec::new();
        let mut wildcard_destination_rules = Vec::new();
        for (rules, by_service, wildcard) in [
            (
                &virtual_services,
                &mut virtual_services_by_service,
                &mut wildcard_virtual_services,
            ),
            (
                &destination_rules,
                &mut destination_rules_by_service,
                &mut wildcard_destination_rules,
            ),
        ] {
            for (position, rule) in rules.iter().enumerate() {
                // A delegate VirtualService has no hosts: it applies wherever its root does.
                if rule.hosts.is_empty() || rule.hosts.iter().any(|h| h.contains('*')) {
                    wildcard.push(position);
                    continue;
                }
                let mut named: Vec<usize> = rule
                    .hosts
                    .iter()
                    .filter_map(|h| by_prefix.get(h.as_str()))
                    .flatten()
                    .copied()
                    .collect();
                named.sort_unstable();
                named.dedup();
                for i in named {
                    by_service[i].push(position);
                }
            }
        }
        let rest_hash = rest_hash(model);
        let rest = match previous {
            Some(p) if p.rest.1 == rest_hash => p.rest,
            _ => (revision(), rest_hash),
        };
        let by_address = model
            .registry
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::as_ptr(s) as *const () as usize, i))
            .collect();
        let mut index = ModelIndex {
            generation,
            virtual_services,
            destination_rules,
            virtual_services_by_service,
            destination_rules_by_service,
            wildcard_virtual_services,
            wildcard_destination_rules,
            by_address,
            services,
            rules,
            service_contents,
            service_keys,
            delta: None,
            rest,
        };
        index.delta = previous.and_then(|p| index.delta_from(p, &by_prefix));
        index
    }

    /// What changed since `previous` (the index of the generation before), if it is confined
    /// to endpoints and to rules with exact hosts; `None` when any class may be affected (the
    /// mesh settings or any other kind, a service's configuration, the set of services, a
    /// Sidecar, or a rule with a wildcard host or none changed).
    fn delta_from(
        &self,
        previous: &ModelIndex,
        by_prefix: &HashMap<String, Vec<usize>>,
    ) -> Option<Delta> {
        if previous.generation + 1 != self.generation
            || previous.rest.0 != self.rest.0
            || previous.service_keys != self.service_keys
        {
            return None;
        }
        let mut endpoints = Vec::new();
        for (i, (old, new)) in previous.services.iter().zip(&self.services).enumerate() {
            if old.config != new.config || old.dns != new.dns {
                return None;
            }
            if old.endpoints != new.endpoints {
                endpoints.push(i);
            }
        }
        let mut virtual_services = Vec::new();
        let mut destination_rules = Vec::new();
        let gone = previous
            .rules
            .keys()
            .filter(|key| !self.rules.contains_key(*key));
        for key in self.rules.keys().chain(gone) {
            let (before, now) = (previous.rules.get(key), self.rules.get(key));
            if before.map(|(r, _)| r) == now.map(|(r, _)| r) {
                continue;
            }
            for (_, r) in before.into_iter().chain(now) {
                let (hosts, named): (Vec<&str>, &mut Vec<usize>) = match &r.spec {
                    Spec::VirtualService(vs) => (
                        vs.hosts.iter().map(String::as_str).collect(),
                        &mut virtual_services,
                    ),
                    Spec::DestinationRule(dr) => (vec![dr.host.as_str()], &mut destination_rules),
                    _ => return None,
                };
                if hosts.is_empty() || hosts.iter().any(|h| h.contains('*')) {
                    return None;
                }
                named.extend(
                    hosts
                        .iter()
                        .filter_map(|h| by_prefix.get(*h))
                        .flatten()
                        .copied(),
                );
            }
        }
        for list in [
            &mut endpoints,
            &mut virtual_services,
            &mut destination_rules,
        ] {
            list.sort_unstable();
            list.dedup();
        }
        Some(Delta {
            endpoints,
            virtual_services,
            destination_rules,
        })
    }

    /// Whether a class whose inputs were taken at the previous generation may have other
    /// inputs at this one (`false` only when this index knows what changed and the class
    /// imports or serves none of it).
    pub fn may_change(&self, inputs: &ClassInputs) -> bool {
        let Some(delta) = &self.delta else {
            return true;
        };
        inputs.unknown
            || inputs.gateway
            || inputs.sidecar == Some(UNKNOWN)
            || inputs.generation + 1 != self.generation
            || intersect(&inputs.imported, &delta.endpoints)
            || intersect(&inputs.imported, &delta.virtual_services)
            || intersect(&inputs.served, &delta.destination_rules)
    }

    /// The inputs at this generation of a class whose inputs were taken at the generation
    /// before, without looking at the model again, when the change between the two is confined
    /// to endpoints: then the services a class imports, the rules that apply and everything
    /// else it reads are the same, at the same registry positions, and only the imported
    /// services' endpoint revisions move. `None` when that cannot be said.
    pub fn advance(&self, inputs: &ClassInputs) -> Option<ClassInputs> {
        let delta = self.delta.as_ref()?;
        // A gateway's VirtualServices need not name services: the delta cannot tell whether
        // one changed.
        if !delta.virtual_services.is_empty()
            || !delta.destination_rules.is_empty()
            || inputs.gateway
            || inputs.unknown
            || inputs.sidecar == Some(UNKNOWN)
            || inputs.generation + 1 != self.generation
        {
            return None;
        }
        let mut next = inputs.clone();
        for ((_, services), positions) in next.egress.iter_mut().zip(&inputs.egress_positions) {
            for (service, position) in services.iter_mut().zip(positions) {
                *service = Some(*self.services.get((*position)?)?);
            }
        }
        next.generation = self.generation;
        Some(next)
    }

    /// The hostnames of the services whose endpoints changed since the generation before,
    /// when that is all that changed (the condition of [`ModelIndex::advance`]).
    pub fn endpoint_hosts(&self) -> Option<std::collections::HashSet<&str>> {
        let delta = self.delta.as_ref()?;
        if !delta.virtual_services.is_empty() || !delta.destination_rules.is_empty() {
            return None;
        }
        delta
            .endpoints
            .iter()
            .map(|p| self.service_keys.get(*p).map(|(host, _)| host.as_str()))
            .collect()
    }

    /// The registry index of a service of the indexed model.
    fn position(&self, s: &Arc<Service>) -> Option<usize> {
        self.by_address
            .get(&(Arc::as_ptr(s) as *const () as usize))
            .copied()
    }

    /// Positions (in model order) of the rules that could name one of `services`.
    fn rules_for(
        &self,
        services: &[usize],
        by_service: &[Vec<usize>],
        wildcard: &[usize],
    ) -> Vec<usize> {
        let mut out: Vec<usize> = services
            .iter()
            .filter_map(|i| by_service.get(*i))
            .flatten()
            .chain(wildcard)
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The hash behind `ModelIndex::rest`.
fn rest_hash(model: &Model) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&model.mesh).unwrap_or_default());
    for r in &model.resources {
        if matches!(
            r.spec,
            Spec::VirtualService(_)
                | Spec::DestinationRule(_)
                | Spec::Sidecar(_)
                | Spec::EndpointSlice(_)
                | Spec::WorkloadEntry(_)
                | Spec::Pod(_)
                | Spec::Secret(_)
        ) {
            continue;
        }
        h.update(serde_json::to_vec(r.as_ref()).unwrap_or_default());
        h.update([0]);
    }
    for s in &model.registry.services {
        let config = service_config(s);
        h.update(serde_json::to_vec(&config).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().into()
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Everything one class's output is a function of, at one model.
#[derive(Debug, Clone)]
pub struct ClassInputs {
    rest: Revision,
    sidecar: Option<Revision>,
    /// Per egress listener: its Debug form without the services, and the services.
    egress: Vec<(String, Vec<Option<ServiceRevision>>)>,
    /// Registry positions (at `generation`) of the services of each egress listener, as in
    /// `egress`.
    egress_positions: Vec<Vec<Option<usize>>>,
    inbound: String,
    virtual_services: Vec<Revision>,
    destination_rules: Vec<Revision>,
    /// Configuration revisions of the services VirtualService destinations may name.
    destinations: Vec<Revision>,
    /// Some imported service is not in the index: nothing can be skipped.
    unknown: bool,
    /// A gateway's inputs: every VirtualService, whatever its hosts.
    gateway: bool,
    /// The index generation these inputs were taken at (or found unchanged at).
    generation: u64,
    /// Registry positions (at `generation`) of the services imported, and of those imported
    /// or served (whose DestinationRules apply), sorted.
    imported: Vec<usize>,
    served: Vec<usize>,
}

impl ClassInputs {
    /// `inbound`: whether the inbound part is made from these inputs (the outbound part
    /// alone does not read the proxy's inbound ports, which also depend on its workload).
    pub fn of(model: &Model, index: &ModelIndex, proxy: &Proxy, inbound: bool) -> ClassInputs {
        let scope = Scope::new(model, proxy);
        let mut unknown = false;
        let mut imported = Vec::new();
        let mut egress_positions = Vec::with_capacity(scope.egress.len());
        let egress = scope
            .egress
            .iter()
            .map(|e| {
                let positions: Vec<Option<usize>> =
                    e.services.iter().map(|s| index.position(s)).collect();
                unknown |= positions.iter().any(Option::is_none);
                imported.extend(positions.iter().flatten());
                let services = positions
                    .iter()
                    .map(|p| p.and_then(|i| index.services.get(i).copied()))
                    .collect();
                egress_positions.push(positions);
                (format!("{:?} {:?} {:?}", e.port, e.bind, e.binds), services)
            })
            .collect();
        imported.sort_unstable();
        imported.dedup();
        // DestinationRules also apply to the services this proxy serves (inbound policy),
        // whether or not it imports them.
        let mut served = imported.clone();
        served.extend(
            model
                .index()
                .services_in(&proxy.namespace)
                .iter()
                .filter_map(|p| model.registry.services.get(*p))
                .filter(|s| {
                    s.namespace == proxy.namespace
                        && s.selector
                            .as_ref()
                            .is_some_and(|sel| crate::model::registry::selects(sel, &proxy.labels))
                })
                .filter_map(|s| index.position(s)),
        );
        served.sort_unstable();
        served.dedup();
        let mut virtual_services = Vec::new();
        let mut candidates = Vec::new();
        // A gateway routes the hosts of its Gateways, which need not be services: every
        // VirtualService may bind to it.
        let gateway = proxy.proxy_type == ProxyType::Router;
        let bound: Vec<usize> = if gateway {
            (0..index.virtual_services.len()).collect()
        } else {
            index.rules_for(
                &imported,
                &index.virtual_services_by_service,
                &index.wildcard_virtual_services,
            )
        };
        for p in bound {
            if let Some(rule) = index.virtual_services.get(p) {
                virtual_services.push(rule.revision);
                candidates.extend(rule.candidates.iter().copied());
            }
        }
        let mut destination_rules = Vec::new();
        for p in index.rules_for(
            &served,
            &index.destination_rules_by_service,
            &index.wildcard_destination_rules,
        ) {
            if let Some(rule) = index.destination_rules.get(p) {
                destination_rules.push(rule.revision);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let destinations = candidates
            .iter()
            .filter_map(|i| index.services.get(*i))
            .map(|r| r.config)
            .collect();
        let sidecar = scope
            .sidecar
            .map(|r| index.rules.get(&r.key()).map_or(UNKNOWN, |(rev, _)| *rev));
        ClassInputs {
            rest: index.rest.0,
            sidecar,
            egress,
            egress_positions,
            inbound: if inbound {
                format!("{:?}", scope.inbound())
            } else {
                String::new()
            },
            virtual_services,
            destination_rules,
            destinations,
            unknown,
            gateway,
            generation: index.generation,
            imported,
            served,
        }
    }

    /// Records that these inputs are unchanged at `generation` ([`ModelIndex::may_change`]).
    pub fn carry_to(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// The types whose output may differ between a class with inputs `self` and `new`.
    pub fn changed(&self, new: &ClassInputs) -> TypeSet {
        if self.unknown
            || new.unknown
            || self.rest != new.rest
            || self.sidecar != new.sidecar
            || self.sidecar == Some(UNKNOWN)
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
                let (Some(a), Some(b)) = (a, b) else {
                    return TypeSet::ALL;
                };
                if a.config != b.config {
                    return TypeSet::ALL;
                }
                if a.endpoints != b.endpoints {
                    if a.dns || b.dns {
                        return TypeSet::ALL;
                    }
                    types = types.union(TypeSet::only(ResourceType::Eds));
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
}

/// A service's configuration: everything but its endpoints, except the identities they run
/// as (clusters verify those). A new field of `Service` must be placed here or explicitly
/// left out.
fn service_config(s: &Service) -> impl PartialEq + serde::Serialize + '_ {
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
        endpoints: _,
    } = s;
    (
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
        s.service_accounts(),
    )
}

/// Whether two services are equal but for their endpoints.
fn same_config(a: &Service, b: &Service) -> bool {
    service_config(a) == service_config(b)
}
