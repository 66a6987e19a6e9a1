//! The cache: generated resources per proxy class, versioned per resource by content hash.
//!
//! Contract: for a model snapshot and a proxy, `Cache::resources` returns that proxy's
//! resources as `Any`, each with a content version, grouped by type with a version per type.
//! Proxies of one class (`ClassKey`: the proxy's `ProxyClass` and the ports of its workload in
//! the model) share one generated copy; after a change only the types the change
//! affects are regenerated, and a resource whose content did not change keeps its version, so it
//! is never re-sent. A generated set is checked for consistency (every EDS name is an EDS
//! cluster, every route configuration is referenced by a listener) before it is handed out; a
//! class whose new set fails the check keeps its last good set, and its next generation is
//! combined afresh against the parts that good set was made from (never against the rejected
//! ones). A part that cannot be encoded keeps its earlier resources as a fallback, and the
//! next generation makes all of its types again. What translation reports is kept per type,
//! so a type carried forward keeps its diagnostics and a regenerated one gets new ones;
//! diagnostics about the generated configuration itself name no pod (they are shared by the
//! class) until shown for one proxy.
//!
//! A class's resources are two parts (`translate::Part`). The outbound part (clusters,
//! endpoints, listeners and routes for calling services) is made for the proxy with only the
//! labels outbound configuration can depend on (`translate::outbound_proxy`), so it is shared
//! by every class whose proxies agree on those labels (in a mesh without workload-selected
//! rules, by a namespace's workloads); the inbound part (the workload's own clusters and
//! listener) is made per class. A type whose parts are unchanged keeps its combined set.
//!
//! After a change a class, and a shared outbound part, is regenerated only if its inputs
//! changed (`inputs`: the Sidecar, imported services, inbound ports and the rules that can
//! apply to it), and only the types those inputs feed. When the change from the generation
//! before is confined to endpoints and to rules with exact hosts, the per-model index says
//! which services it reaches, and a class that imports or serves none of them is carried
//! forward as it is, without computing its inputs (on the stream's own task: no generation is
//! scheduled for it). When the change is confined to endpoints, a class it reaches moves its
//! inputs forward without a new scope, and an outbound part makes only the changed services'
//! endpoint assignments again. Translation looks rules up in the model's own index (built once
//! per model and shared by every class; the newest few generations' are kept). Encoded
//! resources are interned: a resource whose name and bytes were generated before (for any
//! class) is the same shared `Versioned`, so its content version is computed once, and its
//! references (for the consistency check) are decoded once. A set of one type remembers its
//! difference from the sets streams moved to it from, so streams making the same move share
//! one comparison.
//!
//! Files: this one holds the cache (classes, parts, building and combining them);
//! `resources` the versioned sets it hands out; `interner` the shared encoded resources;
//! `consistency` the check a set passes before it is served; `inputs` what a class was made
//! from and the per-model index that says what a change can reach.

mod consistency;
mod inputs;
mod interner;
mod resources;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::envoy::{self, ResourceType, TypeSet};
use crate::model::workload::WorkloadPorts;
use crate::model::{Diagnostic, Model, Proxy, ProxyClass, Severity};
use crate::translate::{self, Output, Part};
use consistency::check;
use inputs::{ClassInputs, ModelIndex};
use interner::Interner;
pub use resources::{SetDiff, TypedResources, Versioned, content_version};

/// A model snapshot as published by the push loop.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub model: Arc<Model>,
    /// Types affected since the previous generation.
    pub changed: TypeSet,
    /// When the first change that led to this snapshot was seen.
    pub changed_at: Instant,
    /// When its model was built (the cache indexes it next, then the streams take it).
    pub published_at: Instant,
}

/// What one proxy class is served at one generation.
#[derive(Debug)]
pub struct ProxyResources {
    pub generation: u64,
    types: [Arc<TypedResources>; 4],
    /// What translation reported while generating each type (in `ResourceType::CONFIG`
    /// order): a type kept from an earlier generation keeps its own.
    diagnostics: [Arc<[Diagnostic]>; 4],
    /// Why the set as generated was not used (it failed to encode or failed the consistency
    /// check); some types are then an earlier generation's.
    rejected: Option<Diagnostic>,
}

impl ProxyResources {
    /// The resources of a config type; secrets are not cached here (an empty set).
    pub fn get(&self, t: ResourceType) -> &Arc<TypedResources> {
        static EMPTY: std::sync::OnceLock<Arc<TypedResources>> = std::sync::OnceLock::new();
        self.types
            .get(t.index())
            .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    /// Problems found while generating (resources skipped, a rejected set), sorted, as shown
    /// for the proxy `name` (diagnostics about generated configuration name it).
    pub fn diagnostics_for(&self, name: &str) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self
            .diagnostics
            .iter()
            .flat_map(|d| d.iter())
            .chain(&self.rejected)
            .map(|d| d.clone().for_proxy(name))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Whether the set is not what the newest inputs generate (see `rejected`): the next
    /// generation makes every type again rather than building on it.
    fn is_fallback(&self) -> bool {
        self.rejected.is_some()
    }

    /// The same resources at a later generation.
    fn carried_to(&self, generation: u64) -> ProxyResources {
        ProxyResources {
            generation,
            types: self.types.clone(),
            diagnostics: self.diagnostics.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("generated {0} resource {1:?} could not be versioned: {2}")]
    Version(&'static str, String, envoy::RenderError),
    #[error("endpoint assignment {0:?} has no EDS cluster")]
    DanglingEndpoints(String),
    #[error("route configuration {0:?} is not referenced by any listener")]
    UnreferencedRoute(String),
    #[error("listener {0:?} references route configuration {1:?}, which was not generated")]
    MissingRoute(String, String),
    #[error("cluster {0:?} uses EDS but has no endpoint assignment")]
    MissingEndpoints(String),
}

/// A proxy class's resources, or a shared outbound part.
struct ClassEntry {
    resources: Arc<ProxyResources>,
    /// What the resources were generated from.
    inputs: ClassInputs,
    /// Model generation this entry was last requested at (for eviction).
    last_used: u64,
    /// A class's parts (`None` for an outbound part).
    parts: Option<ClassParts>,
}

/// A class's outbound and inbound parts.
type Parts = (Arc<ProxyResources>, Arc<ProxyResources>);

struct ClassParts {
    /// The newest parts, made from the entry's `inputs`.
    built: Parts,
    /// The parts the served `resources` were combined from: the same as `built` unless their
    /// combination was rejected (the class then serves an older combination), `None` when no
    /// combination was ever accepted.
    served: Option<Parts>,
}

type Slot = Arc<Mutex<Option<ClassEntry>>>;

/// How many generations of change sets are kept to bring a stale class entry forward without
/// regenerating every type.
const CHANGE_LOG_LEN: usize = 64;
/// How many generations' indexes are kept.
const INDEXES_KEPT: usize = 4;
/// A class not requested for this many generations is dropped.
const EVICT_AFTER: u64 = 16;

/// Proxies that share one generated configuration: equal classes, and equal ports of their
/// workloads in the model (their inbound ports are the workload ports their services deliver
/// to; replicas of one workload have the same).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassKey {
    class: ProxyClass,
    workload: WorkloadPorts,
}

impl ClassKey {
    pub fn of(model: &Model, proxy: &Proxy) -> ClassKey {
        ClassKey {
            class: proxy.class(),
            workload: WorkloadPorts::of(model, proxy),
        }
    }
}

#[derive(Default)]
struct Inner {
    classes: HashMap<ClassKey, Slot>,
    /// Outbound parts, by the class of the proxy they are made for
    /// (`translate::outbound_proxy`): shared by every class whose proxies agree on the labels
    /// outbound configuration can depend on.
    outbound: HashMap<ProxyClass, Slot>,
    changes: VecDeque<(u64, TypeSet)>,
}

/// How parts are made: the generator (translation), and the interner their resources are
/// shared through.
struct Builder {
    generate: Generate,
    interner: Interner,
}

/// Makes the requested types of one part of a proxy's configuration.
type Generate = fn(&Model, &Proxy, TypeSet, Part) -> Output;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            generate: translate::generate_part,
            interner: Interner::default(),
        }
    }
}

/// Shared generated resources for every proxy class.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
    /// The indexes of the newest generations, oldest first.
    indexes: Mutex<VecDeque<Arc<ModelIndex>>>,
    /// Source of the indexes' content revisions (never reused).
    revisions: std::sync::atomic::AtomicU64,
    builder: Builder,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Records a new snapshot's change set; drops classes not used for a while.
    pub fn observe(&self, snapshot: &Snapshot) {
        let mut inner = lock(&self.inner);
        inner
            .changes
            .push_back((snapshot.generation, snapshot.changed));
        while inner.changes.len() > CHANGE_LOG_LEN {
            inner.changes.pop_front();
        }
        let generation = snapshot.generation;
        let in_use = |slot: &mut Slot| {
            // A slot being built is in use.
            slot.try_lock()
                .map(|e| {
                    e.as_ref()
                        .is_none_or(|e| e.last_used + EVICT_AFTER >= generation)
                })
                .unwrap_or(true)
        };
        inner.classes.retain(|_, slot| in_use(slot));
        inner.outbound.retain(|_, slot| in_use(slot));
        drop(inner);
        self.builder.interner.prune();
        // Indexed now, so streams can bring unaffected classes forward without generating.
        self.index(snapshot);
    }

    /// The index of `generation` if it is built.
    fn built_index(&self, generation: u64) -> Option<Arc<ModelIndex>> {
        lock(&self.indexes)
            .iter()
            .find(|i| i.generation == generation)
            .cloned()
    }

    /// The per-model index for a snapshot, built once per generation. The newest few are
    /// kept: a stream that is a generation or two behind finds its index built.
    fn index(&self, snapshot: &Snapshot) -> Arc<ModelIndex> {
        let mut indexes = lock(&self.indexes);
        if let Some(i) = indexes.iter().find(|i| i.generation == snapshot.generation) {
            return i.clone();
        }
        // Revisions carry over from the closest older index (the one before, when it is
        // kept, which also lets the index say what changed).
        let previous = indexes
            .iter()
            .rev()
            .find(|i| i.generation < snapshot.generation)
            .or(indexes.back());
        let built = Arc::new(ModelIndex::build(
            &snapshot.model,
            snapshot.generation,
            previous.map(|p| p.as_ref()),
            &self.revisions,
        ));
        let at = indexes.partition_point(|i| i.generation < snapshot.generation);
        indexes.insert(at, built.clone());
        while indexes.len() > INDEXES_KEPT {
            indexes.pop_front();
        }
        built
    }

    /// The resources for `proxy` at `snapshot` if they are ready (or the class's are those of
    /// the generation before and the change does not reach it), without generating and
    /// without waiting for a generation in progress.
    pub fn ready(&self, snapshot: &Snapshot, proxy: &Proxy) -> Option<Arc<ProxyResources>> {
        let class = ClassKey::of(&snapshot.model, proxy);
        let slot = lock(&self.inner).classes.get(&class)?.clone();
        let mut entry = slot.try_lock().ok()?;
        let e = entry.as_mut()?;
        if e.resources.generation < snapshot.generation {
            let index = self.built_index(snapshot.generation)?;
            if !carry(e, &index) {
                return None;
            }
        }
        e.last_used = e.last_used.max(snapshot.generation);
        Some(e.resources.clone())
    }

    /// Types that changed after `from` up to and including `to`, or every type when the log
    /// does not reach back that far.
    fn changed_between(&self, from: u64, to: u64) -> TypeSet {
        let inner = lock(&self.inner);
        let Some((oldest, _)) = inner.changes.front() else {
            return TypeSet::ALL;
        };
        if from + 1 < *oldest {
            return TypeSet::ALL;
        }
        inner
            .changes
            .iter()
            .filter(|(g, _)| *g > from && *g <= to)
            .fold(TypeSet::NONE, |acc, (_, t)| acc.union(*t))
    }

    /// The resources for `proxy` at `snapshot`: shared with every proxy of the same class,
    /// generated at most once per class and generation.
    pub fn resources(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources> {
        let class = ClassKey::of(&snapshot.model, proxy);
        let slot = {
            let mut inner = lock(&self.inner);
            inner.classes.entry(class).or_default().clone()
        };
        let mut entry = lock(&slot);
        let index = self.index(snapshot);
        if let Some(e) = entry.as_mut() {
            e.last_used = e.last_used.max(snapshot.generation);
            if e.resources.generation >= snapshot.generation || carry(e, &index) {
                return e.resources.clone();
            }
        }
        let inputs = entry
            .as_ref()
            .and_then(|e| index.advance(&e.inputs))
            .unwrap_or_else(|| ClassInputs::of(&snapshot.model, &index, proxy, true));
        let (previous, types) = match entry.as_ref() {
            Some(e) => (
                Some(e),
                self.changed_between(e.resources.generation, snapshot.generation)
                    .intersection(e.inputs.changed(&inputs)),
            ),
            None => (None, TypeSet::ALL),
        };
        let outbound = self.outbound_part(snapshot, &index, proxy);
        // The inbound part has clusters and listeners only.
        let inbound_types = types
            .intersection(TypeSet::only(ResourceType::Cds).union(TypeSet::only(ResourceType::Lds)));
        let previous_parts = previous.and_then(|e| e.parts.as_ref());
        let inbound = match previous_parts {
            Some(ClassParts {
                built: (_, inbound),
                ..
            }) if inbound_types.is_empty() && !inbound.is_fallback() => inbound.clone(),
            _ => Arc::new(build_part(
                &snapshot.model,
                snapshot.generation,
                proxy,
                Part::Inbound,
                previous_parts.map(|p| p.built.1.as_ref()),
                inbound_types,
                &self.builder,
            )),
        };
        let served = previous.and_then(|e| {
            let parts = e.parts.as_ref()?.served.as_ref()?;
            Some((e.resources.as_ref(), parts))
        });
        let (resources, accepted) =
            combine(snapshot.generation, proxy, (&outbound, &inbound), served);
        let resources = Arc::new(resources);
        let built = (outbound, inbound);
        let served = if accepted {
            Some(built.clone())
        } else {
            previous_parts.and_then(|p| p.served.clone())
        };
        *entry = Some(ClassEntry {
            resources: resources.clone(),
            inputs,
            last_used: snapshot.generation,
            parts: Some(ClassParts { built, served }),
        });
        resources
    }

    /// The outbound part for `proxy` at `snapshot`: made for the proxy whose labels are only
    /// those outbound configuration can depend on, once per such proxy class and generation,
    /// and brought forward as classes are.
    fn outbound_part(
        &self,
        snapshot: &Snapshot,
        index: &ModelIndex,
        proxy: &Proxy,
    ) -> Arc<ProxyResources> {
        let shared = translate::outbound_proxy(&snapshot.model, proxy);
        let slot = {
            let mut inner = lock(&self.inner);
            inner.outbound.entry(shared.class()).or_default().clone()
        };
        let mut entry = lock(&slot);
        if let Some(e) = entry.as_mut() {
            e.last_used = e.last_used.max(snapshot.generation);
            if e.resources.generation >= snapshot.generation || carry(e, index) {
                return e.resources.clone();
            }
        }
        let advanced = entry.as_ref().and_then(|e| index.advance(&e.inputs));
        let endpoints_only = advanced.is_some();
        let inputs =
            advanced.unwrap_or_else(|| ClassInputs::of(&snapshot.model, index, &shared, false));
        let (previous, types) = match entry.as_ref() {
            Some(e) => (
                Some(e.resources.clone()),
                self.changed_between(e.resources.generation, snapshot.generation)
                    .intersection(e.inputs.changed(&inputs)),
            ),
            None => (None, TypeSet::ALL),
        };
        // Only some services' endpoints changed: only their assignments are made again.
        let changed_hosts = index
            .endpoint_hosts()
            .filter(|_| endpoints_only && types == TypeSet::only(ResourceType::Eds));
        let resources = match (previous, changed_hosts) {
            (Some(p), _) if types.is_empty() && !p.is_fallback() => {
                Arc::new(p.carried_to(snapshot.generation))
            }
            (Some(p), Some(hosts)) if !p.is_fallback() => Arc::new(update_endpoints(
                &snapshot.model,
                snapshot.generation,
                &shared,
                &p,
                &hosts,
                &self.builder,
            )),
            (previous, _) => Arc::new(build_part(
                &snapshot.model,
                snapshot.generation,
                &shared,
                Part::Outbound,
                previous.as_deref(),
                types,
                &self.builder,
            )),
        };
        *entry = Some(ClassEntry {
            resources: resources.clone(),
            inputs,
            last_used: snapshot.generation,
            parts: None,
        });
        resources
    }
}

/// Brings a class entry of the generation before `index`'s forward unchanged when the change
/// cannot reach its inputs; whether it did. An entry serving a fallback is made again instead.
fn carry(e: &mut ClassEntry, index: &ModelIndex) -> bool {
    if e.resources.generation + 1 != index.generation
        || e.resources.is_fallback()
        || index.may_change(&e.inputs)
    {
        return false;
    }
    e.resources = Arc::new(e.resources.carried_to(index.generation));
    e.inputs.carry_to(index.generation);
    e.last_used = e.last_used.max(index.generation);
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Generates the `types` of one part that changed and reuses the rest from `previous` (every
/// type when there is none, or when it is a fallback). A part is not checked on its own: its
/// references may point into the other part. A part that fails to encode keeps `previous`'s
/// resources, marked as a fallback, so that the next generation makes every type again.
fn build_part(
    model: &Model,
    generation: u64,
    proxy: &Proxy,
    part: Part,
    previous: Option<&ProxyResources>,
    types: TypeSet,
    builder: &Builder,
) -> ProxyResources {
    let previous = previous.filter(|p| !p.is_fallback());
    let types = if previous.is_none() {
        TypeSet::ALL
    } else {
        types
    };
    let output = (builder.generate)(model, proxy, types, part);
    let kept = |t: ResourceType| match previous {
        Some(p) => (p.get(t).clone(), p.diagnostics[t.index()].clone()),
        None => (Arc::default(), Arc::from(Vec::new())),
    };
    let fresh_diagnostics =
        |t: ResourceType| Arc::from(output.diagnostics_by_type[t.index()].as_slice());
    match encode(&output, types, &builder.interner) {
        Ok(fresh) => {
            let mut diagnostics: [Arc<[Diagnostic]>; 4] = ResourceType::CONFIG.map(|t| kept(t).1);
            let types = ResourceType::CONFIG.map(|t| {
                if types.contains(t) {
                    log_new(proxy, &kept(t).1, &fresh_diagnostics(t));
                    diagnostics[t.index()] = fresh_diagnostics(t);
                    fresh[t.index()].clone()
                } else {
                    kept(t).0
                }
            });
            ProxyResources {
                generation,
                types,
                diagnostics,
                rejected: None,
            }
        }
        Err(e) => {
            tracing::error!(proxy = %proxy.id, error = %e, "generated configuration rejected; keeping the last good one");
            ProxyResources {
                generation,
                types: ResourceType::CONFIG.map(|t| kept(t).0),
                diagnostics: ResourceType::CONFIG.map(fresh_diagnostics),
                rejected: Some(rejected(proxy, &e)),
            }
        }
    }
}

/// Logs a gateway's diagnostics of a generated type that were not raised the generation
/// before (a class is built once per change, so each problem is logged once, when it
/// appears). Gateways are few; a sidecar's diagnostics, shared by many classes, are shown on
/// `/debug/syncz` and `/debug/diagnosticz` only.
fn log_new(proxy: &Proxy, before: &[Diagnostic], now: &[Diagnostic]) {
    if proxy.proxy_type != crate::model::proxy::ProxyType::Router {
        return;
    }
    for d in now.iter().filter(|d| !before.contains(d)) {
        tracing::warn!(gateway = %proxy.id, "{d}");
    }
}

/// An outbound part whose only change is the endpoints of the services named by `hosts`:
/// their assignments are made again and replace those of `previous`; everything else is
/// reused. When endpoint assignments raise diagnostics (before or now), the part's every
/// assignment is made again instead, so the diagnostics are those of the new endpoints.
fn update_endpoints(
    model: &Model,
    generation: u64,
    proxy: &Proxy,
    previous: &ProxyResources,
    hosts: &std::collections::HashSet<&str>,
    builder: &Builder,
) -> ProxyResources {
    let eds = ResourceType::Eds.index();
    let output =
        translate::generate_endpoints(model, proxy, &|s| hosts.contains(s.hostname.as_str()));
    let fresh = match encode(&output, TypeSet::only(ResourceType::Eds), &builder.interner) {
        Ok(fresh) if output.diagnostics.is_empty() && previous.diagnostics[eds].is_empty() => fresh,
        // Rejected, or diagnostics that may concern other services: the whole part's
        // assignments are made again (which reports a rejection).
        _ => {
            return build_part(
                model,
                generation,
                proxy,
                Part::Outbound,
                Some(previous),
                TypeSet::only(ResourceType::Eds),
                builder,
            );
        }
    };
    // An outbound cluster's name ends with its service's hostname.
    let mut items = previous.types[eds].items.clone();
    items.retain(|name, _| !name.rsplit('|').next().is_some_and(|h| hosts.contains(h)));
    items.extend(
        fresh[eds]
            .items
            .iter()
            .map(|(name, v)| (name.clone(), v.clone())),
    );
    let mut types = previous.types.clone();
    types[eds] = Arc::new(TypedResources::new(items));
    ProxyResources {
        generation,
        types,
        diagnostics: previous.diagnostics.clone(),
        rejected: None,
    }
}

/// Why a generated set was not used, about the proxies that share it.
fn rejected(proxy: &Proxy, e: &CacheError) -> Diagnostic {
    Diagnostic::about_proxy(
        Severity::Error,
        &proxy.namespace,
        format!("generated configuration rejected: {e}"),
    )
}

/// A class's resources: its outbound and inbound parts together, checked for consistency; and
/// whether they were accepted. A type whose parts are those the `served` set was combined from
/// is reused. A combination that fails the check is not served: the class keeps serving the
/// `served` set (nothing before its first accepted combination), with the rejection as a
/// diagnostic.
fn combine(
    generation: u64,
    proxy: &Proxy,
    (outbound, inbound): (&ProxyResources, &ProxyResources),
    served: Option<(&ProxyResources, &Parts)>,
) -> (ProxyResources, bool) {
    let candidate: [Arc<TypedResources>; 4] = ResourceType::CONFIG.map(|t| {
        if let Some((combined, (was_outbound, was_inbound))) = served
            && was_outbound.get(t).version == outbound.get(t).version
            && was_inbound.get(t).version == inbound.get(t).version
        {
            return combined.get(t).clone();
        }
        let inbound_items = &inbound.get(t).items;
        if inbound_items.is_empty() {
            return outbound.get(t).clone();
        }
        let mut items = outbound.get(t).items.clone();
        // The inbound part's resource wins a name both parts have, as when one proxy's
        // resources are generated together.
        items.extend(inbound_items.iter().map(|(n, v)| (n.clone(), v.clone())));
        Arc::new(TypedResources::new(items))
    });
    let diagnostics = ResourceType::CONFIG.map(|t| {
        let (o, i) = (
            &outbound.diagnostics[t.index()],
            &inbound.diagnostics[t.index()],
        );
        if i.is_empty() {
            o.clone()
        } else if o.is_empty() {
            i.clone()
        } else {
            o.iter().chain(i.iter()).cloned().collect()
        }
    });
    // A part that failed to encode is not combined: the class keeps what it served.
    let failed = outbound
        .rejected
        .as_ref()
        .or(inbound.rejected.as_ref())
        .cloned();
    let checked = match failed {
        Some(d) => Err(d),
        None => check(&candidate, served.map(|(p, _)| &p.types)).map_err(|e| {
            tracing::error!(proxy = %proxy.id, error = %e, "generated configuration rejected; keeping the last good one");
            rejected(proxy, &e)
        }),
    };
    match checked {
        Ok(()) => (
            ProxyResources {
                generation,
                types: candidate,
                diagnostics,
                rejected: None,
            },
            true,
        ),
        Err(d) => (
            ProxyResources {
                generation,
                types: match served {
                    Some((p, _)) => p.types.clone(),
                    None => Default::default(),
                },
                diagnostics,
                rejected: Some(d),
            },
            false,
        ),
    }
}

/// Encodes the generated types, each resource with its content version. A resource already
/// interned (same name and bytes) is shared, version included.
fn encode(
    output: &Output,
    types: TypeSet,
    interner: &Interner,
) -> Result<[Arc<TypedResources>; 4], CacheError> {
    let set = |t: ResourceType,
               label: &'static str,
               items: Vec<(&str, Any)>|
     -> Result<Arc<TypedResources>, CacheError> {
        // A type not generated is an empty set (the caller keeps its earlier one).
        if !types.contains(t) {
            return Ok(Arc::default());
        }
        let mut map = BTreeMap::new();
        for (name, body) in items {
            let key = interner.key(t, name, &body);
            let versioned = match interner.get(&key, name, &body) {
                Some(v) => v,
                None => {
                    let version = content_version(&body)
                        .map_err(|e| CacheError::Version(label, name.to_string(), e))?;
                    interner.insert(
                        key,
                        Arc::new(Versioned::new(name.to_string(), version, body)),
                    )
                }
            };
            map.insert(name.to_string(), versioned);
        }
        Ok(Arc::new(TypedResources::new(map)))
    };
    fn packed<T: Message + Name>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<(&str, Any)> {
        items.iter().map(|i| (name(i), envoy::pack(i))).collect()
    }
    Ok([
        set(
            ResourceType::Cds,
            "cluster",
            packed(&output.clusters, |c| &c.name),
        )?,
        set(
            ResourceType::Eds,
            "endpoint",
            packed(&output.endpoints, |c| &c.cluster_name),
        )?,
        set(
            ResourceType::Lds,
            "listener",
            packed(&output.listeners, |l| &l.name),
        )?,
        set(
            ResourceType::Rds,
            "route",
            packed(&output.routes, |r| &r.name),
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    use envoy_types::pb::envoy::config::listener::v3 as xds_listener;

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec:
  selector: {app: a}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a-1, namespace: ns}
spec: {address: 10.0.0.1, labels: {app: a}}
"#;

    fn snapshot(generation: u64, yaml: &str, changed: TypeSet) -> Snapshot {
        Snapshot {
            generation,
            model: Arc::new(crate::model::testing::model(yaml)),
            changed,
            changed_at: Instant::now(),
            published_at: Instant::now(),
        }
    }

    fn proxy(ip: &str) -> Proxy {
        Proxy::parse(
            &format!("sidecar~{ip}~p.ns~ns.svc.cluster.local"),
            &serde_json::json!({"LABELS": {"app": "client"}}),
        )
        .unwrap()
    }

    #[test]
    fn proxies_of_one_class_share_resources() {
        let cache = Cache::new();
        let s = snapshot(1, MESH, TypeSet::ALL);
        cache.observe(&s);
        let a = cache.resources(&s, &proxy("10.1.0.1"));
        let b = cache.resources(&s, &proxy("10.1.0.2"));
        assert!(
            Arc::ptr_eq(&a, &b),
            "replicas differing only by IP share one copy"
        );
        assert!(
            a.get(ResourceType::Cds)
                .items
                .contains_key("outbound|80||a.ns.svc.cluster.local")
        );
    }

    #[test]
    fn only_changed_types_are_regenerated() {
        let cache = Cache::new();
        let s1 = snapshot(1, MESH, TypeSet::ALL);
        cache.observe(&s1);
        let p = proxy("10.1.0.1");
        let first = cache.resources(&s1, &p);
        let moved = MESH.replace("10.0.0.1", "10.0.0.2");
        let s2 = snapshot(2, &moved, TypeSet::only(ResourceType::Eds));
        cache.observe(&s2);
        let second = cache.resources(&s2, &p);
        for t in [ResourceType::Cds, ResourceType::Lds, ResourceType::Rds] {
            assert!(Arc::ptr_eq(first.get(t), second.get(t)), "{t:?} reused");
        }
        assert_ne!(
            first.get(ResourceType::Eds).version,
            second.get(ResourceType::Eds).version
        );
        // Unchanged resources keep their versions across generations.
        let s3 = snapshot(3, &moved, TypeSet::ALL);
        cache.observe(&s3);
        let third = cache.resources(&s3, &p);
        assert_eq!(
            second.get(ResourceType::Cds).version,
            third.get(ResourceType::Cds).version
        );
    }

    #[test]
    fn a_secret_change_regenerates_no_class() {
        let with_secret = |value: &str| {
            format!(
                "{MESH}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: front, namespace: ns}}\nstringData: {{cert: {value}, key: k}}\n"
            )
        };
        let cache = Cache::new();
        let s1 = snapshot(1, &with_secret("one"), TypeSet::ALL);
        cache.observe(&s1);
        let p = proxy("10.1.0.1");
        let first = cache.resources(&s1, &p);
        let s2 = snapshot(2, &with_secret("two"), TypeSet::NONE);
        let change = s2.model.change_from(&s1.model);
        assert_eq!(
            (change.config, change.endpoints, change.secrets),
            (false, false, true)
        );
        cache.observe(&s2);
        let second = cache
            .ready(&s2, &p)
            .expect("carried forward without generating");
        for t in ResourceType::CONFIG {
            assert!(Arc::ptr_eq(first.get(t), second.get(t)), "{t:?} reused");
        }
    }

    /// A fault the test generator adds to what translation makes, per thread (the cache
    /// generates on the calling thread).
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// Route configurations go missing: listeners name routes that do not exist.
        DropRoutes,
        /// A listener holds a filter of an unknown type: the part cannot be encoded.
        Unencodable,
    }

    thread_local! {
        static FAULT: std::cell::Cell<Fault> = const { std::cell::Cell::new(Fault::None) };
    }

    fn faulty_generate(model: &Model, proxy: &Proxy, types: TypeSet, part: Part) -> Output {
        let mut out = translate::generate_part(model, proxy, types, part);
        match FAULT.get() {
            Fault::None => {}
            Fault::DropRoutes => out.routes.clear(),
            Fault::Unencodable => out.listeners.push(xds_listener::Listener {
                name: "unencodable".into(),
                filter_chains: vec![xds_listener::FilterChain {
                    filters: vec![xds_listener::Filter {
                        name: "unknown".into(),
                        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(Any {
                            type_url: "type.googleapis.com/no.such.Type".into(),
                            value: vec![8, 1],
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
        out
    }

    fn faulty_cache() -> Cache {
        Cache {
            builder: Builder {
                generate: faulty_generate,
                interner: Interner::default(),
            },
            ..Cache::default()
        }
    }

    /// `MESH` plus service `b` on port 81 with one workload.
    fn with_b(mesh: &str) -> String {
        format!(
            "{mesh}---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: ns}}
spec:
  selector: {{app: b}}
  ports: [{{name: http, port: 81}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: b-1, namespace: ns}}
spec: {{address: 10.0.0.9, labels: {{app: b}}}}
"
        )
    }

    fn names(r: &ProxyResources, t: ResourceType) -> Vec<String> {
        r.get(t).items.keys().cloned().collect()
    }

    /// The resources generated for `p` at a new generation while `fault` is in force; they
    /// must be rejected once.
    fn rejected_at(
        cache: &Cache,
        generation: u64,
        yaml: &str,
        p: &Proxy,
        fault: Fault,
    ) -> Arc<ProxyResources> {
        FAULT.set(fault);
        let s = snapshot(generation, yaml, TypeSet::ALL);
        cache.observe(&s);
        let got = cache.resources(&s, p);
        FAULT.set(Fault::None);
        assert_eq!(rejections(&got).len(), 1, "{:?}", got.diagnostics_for("p"));
        got
    }

    fn rejections(r: &ProxyResources) -> Vec<String> {
        r.diagnostics_for("p")
            .iter()
            .map(ToString::to_string)
            .filter(|d| d.contains("rejected"))
            .collect()
    }

    #[test]
    fn a_consistent_generation_after_a_rejected_one_is_served_whole() {
        let cache = faulty_cache();
        let p = proxy("10.1.0.1");
        let s1 = snapshot(1, MESH, TypeSet::ALL);
        cache.observe(&s1);
        let first = cache.resources(&s1, &p);
        assert!(rejections(&first).is_empty());

        // Service b arrives, but the set made for it names routes that were not made.
        let second = rejected_at(&cache, 2, &with_b(MESH), &p, Fault::DropRoutes);
        for t in ResourceType::CONFIG {
            assert_eq!(
                names(&second, t),
                names(&first, t),
                "{t:?}: the last good set"
            );
        }
        assert!(
            second.diagnostics_for("p")[0]
                .to_string()
                .starts_with("Proxy/ns/p: "),
            "names the proxy it is shown for"
        );

        // A later change to b's routes makes a consistent set: all of it is served, listeners
        // included, although they are the same as in the rejected set.
        let vs = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: ns}
spec:
  hosts: [b]
  http: [{timeout: 3s, route: [{destination: {host: b}}]}]
";
        let s3 = snapshot(3, &format!("{}{vs}", with_b(MESH)), TypeSet::ALL);
        cache.observe(&s3);
        let third = cache.resources(&s3, &p);
        assert!(
            rejections(&third).is_empty(),
            "{:?}",
            third.diagnostics_for("p")
        );
        let fresh = translate::generate(&s3.model, &p, TypeSet::ALL);
        assert_eq!(
            names(&third, ResourceType::Lds),
            fresh
                .listeners
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            names(&third, ResourceType::Rds),
            fresh
                .routes
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        );
        assert!(names(&third, ResourceType::Rds).contains(&"81".to_string()));
    }

    #[test]
    fn a_part_that_failed_to_encode_is_made_whole_again() {
        let cache = faulty_cache();
        let p = proxy("10.1.0.1");
        let s1 = snapshot(1, MESH, TypeSet::ALL);
        cache.observe(&s1);
        let first = cache.resources(&s1, &p);

        let second = rejected_at(&cache, 2, &with_b(MESH), &p, Fault::Unencodable);
        assert_eq!(
            names(&second, ResourceType::Lds),
            names(&first, ResourceType::Lds)
        );

        // Only a's endpoints change next: every type of the failed part is made again.
        let moved = with_b(&MESH.replace("10.0.0.1", "10.0.0.2"));
        let s3 = snapshot(3, &moved, TypeSet::only(ResourceType::Eds));
        cache.observe(&s3);
        let third = cache.resources(&s3, &p);
        assert!(
            rejections(&third).is_empty(),
            "{:?}",
            third.diagnostics_for("p")
        );
        let fresh = translate::generate(&s3.model, &p, TypeSet::ALL);
        for (t, want) in [
            (
                ResourceType::Cds,
                fresh
                    .clusters
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                ResourceType::Lds,
                fresh.listeners.iter().map(|l| l.name.clone()).collect(),
            ),
            (
                ResourceType::Rds,
                fresh.routes.iter().map(|r| r.name.clone()).collect(),
            ),
        ] {
            assert_eq!(names(&third, t), want, "{t:?}");
        }
    }
}
