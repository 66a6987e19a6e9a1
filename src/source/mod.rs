//! Sources read the world and emit events: a full resync of everything a source holds, or the
//! apply/delete of one resource.
//!
//! Contract: a source never fails as a whole because of one bad document: what cannot be parsed
//! or validated is reported as a `Diagnostic` alongside the good resources. `Store` keeps the
//! newest state per source; a resync swaps a source's state atomically.

pub mod file;
pub mod kube;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Diagnostic, Kind, MeshConfig, Resource, ResourceKey};

/// Which source an event comes from. Each watched Kubernetes kind is a source of its own, so a
/// relist of one kind replaces only that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    File,
    Kube(Kind),
}

/// One object's current state in a source: the resource when it is valid, and what was found
/// wrong with it (an invalid object has diagnostics and no resource).
#[derive(Debug, Clone)]
pub struct Object {
    pub key: ResourceKey,
    pub resource: Option<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug)]
pub enum Event {
    /// Everything the source holds now; replaces its previous state.
    Resync {
        source: SourceId,
        resources: Vec<Arc<Resource>>,
        diagnostics: Vec<Diagnostic>,
    },
    Apply {
        source: SourceId,
        resource: Resource,
    },
    Delete {
        source: SourceId,
        key: ResourceKey,
    },
    /// Objects whose state replaces what the source held for their keys; with `relist`, the
    /// source's whole state (a completed list).
    Objects {
        source: SourceId,
        objects: Vec<Object>,
        relist: bool,
    },
    /// The mesh configuration a source found (`None`: it has none; the configured default
    /// applies).
    Mesh(Option<Box<MeshConfig>>),
}

#[derive(Debug, Default)]
struct SourceState {
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Diagnostics not tied to one object (a file's syntax error).
    diagnostics: Vec<Diagnostic>,
    /// Diagnostics of one object, replaced with the object.
    object_diagnostics: BTreeMap<ResourceKey, Vec<Diagnostic>>,
}

impl SourceState {
    fn set(&mut self, object: Object) {
        match object.resource {
            Some(r) => self.resources.insert(object.key.clone(), Arc::new(r)),
            None => self.resources.remove(&object.key),
        };
        if object.diagnostics.is_empty() {
            self.object_diagnostics.remove(&object.key);
        } else {
            self.object_diagnostics
                .insert(object.key, object.diagnostics);
        }
    }
}

/// The newest resources of every source.
#[derive(Debug, Default)]
pub struct Store {
    sources: BTreeMap<SourceId, SourceState>,
    mesh: Option<Box<MeshConfig>>,
}

impl Store {
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Resync {
                source,
                resources,
                diagnostics,
            } => {
                let state = self.sources.entry(source).or_default();
                state.resources = resources.into_iter().map(|r| (r.key(), r)).collect();
                state.diagnostics = diagnostics;
                state.object_diagnostics.clear();
            }
            Event::Apply { source, resource } => {
                self.sources
                    .entry(source)
                    .or_default()
                    .resources
                    .insert(resource.key(), Arc::new(resource));
            }
            Event::Delete { source, key } => {
                if let Some(state) = self.sources.get_mut(&source) {
                    state.resources.remove(&key);
                    state.object_diagnostics.remove(&key);
                }
            }
            Event::Objects {
                source,
                objects,
                relist,
            } => {
                let state = self.sources.entry(source).or_default();
                if relist {
                    *state = SourceState::default();
                }
                for object in objects {
                    state.set(object);
                }
            }
            Event::Mesh(mesh) => self.mesh = mesh,
        }
    }

    /// The mesh configuration a source provided, if any.
    pub fn mesh(&self) -> Option<&MeshConfig> {
        self.mesh.as_deref()
    }

    /// Whether `source` has delivered a state (a resync or a completed list).
    pub fn has(&self, source: SourceId) -> bool {
        self.sources.contains_key(&source)
    }

    /// Every resource; when two sources hold the same key, the first source wins.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        let mut merged: BTreeMap<&ResourceKey, &Arc<Resource>> = BTreeMap::new();
        for state in self.sources.values() {
            for (k, r) in &state.resources {
                merged.entry(k).or_insert(r);
            }
        }
        merged.into_values().cloned().collect()
    }

    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.sources
            .values()
            .flat_map(|s| {
                s.diagnostics
                    .iter()
                    .chain(s.object_diagnostics.values().flatten())
                    .cloned()
            })
            .collect()
    }
}
