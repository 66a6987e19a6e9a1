//! Sources read the world and emit events: a full resync of everything a source holds, or the
//! apply/delete of one resource.
//!
//! Contract: a source never fails as a whole because of one bad document: what cannot be parsed
//! or validated is reported as a `Diagnostic` alongside the good resources. `Store` keeps the
//! newest state per source; a resync swaps a source's state atomically.

pub mod file;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Diagnostic, Resource, ResourceKey};

/// Which source an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    File,
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
}

#[derive(Debug, Default)]
struct SourceState {
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
    diagnostics: Vec<Diagnostic>,
}

/// The newest resources of every source.
#[derive(Debug, Default)]
pub struct Store {
    sources: BTreeMap<SourceId, SourceState>,
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
                }
            }
        }
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
            .flat_map(|s| s.diagnostics.iter().cloned())
            .collect()
    }
}
