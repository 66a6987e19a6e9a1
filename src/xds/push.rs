//! The push loop: source events → debounced model snapshots.
//!
//! Events are gathered until the input has been quiet for `quiet` (100 ms, like istiod's
//! PILOT_DEBOUNCE_AFTER) or `max` has passed since the first one (10 s, PILOT_DEBOUNCE_MAX);
//! then a new `Model` is built and, if it differs from the last one, published as a snapshot
//! whose change set names the affected types: an endpoint-only change affects EDS only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cache::{Cache, ResourceType, Snapshot, TypeSet};
use crate::model::{MeshConfig, Model};
use crate::source::{Event, Store};

#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Builds the first snapshot from the store's current state.
pub fn initial(store: &Store, mesh: &MeshConfig) -> Arc<Snapshot> {
    let model = Model::build(
        store.resources(),
        store.diagnostics(),
        store.mesh().unwrap_or(mesh).clone(),
    );
    Arc::new(Snapshot {
        generation: 1,
        model: Arc::new(model),
        changed: TypeSet::ALL,
        changed_at: Instant::now(),
    })
}

/// Runs until the event channel closes.
pub async fn run(
    mut events: mpsc::Receiver<Event>,
    mut store: Store,
    mesh: MeshConfig,
    cache: Arc<Cache>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    debounce: Debounce,
) {
    while let Some(event) = events.recv().await {
        let first = Instant::now();
        store.apply(event);
        let deadline = first + debounce.max;
        loop {
            let quiet_until = (Instant::now() + debounce.quiet).min(deadline);
            tokio::select! {
                more = events.recv() => match more {
                    Some(e) => store.apply(e),
                    None => break,
                },
                _ = tokio::time::sleep_until(quiet_until.into()) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let previous = snapshots.borrow().clone();
        // A source's mesh configuration (the cluster's ConfigMap) wins over the configured one.
        let model = Model::build(
            store.resources(),
            store.diagnostics(),
            store.mesh().unwrap_or(&mesh).clone(),
        );
        let change = model.change_from(&previous.model);
        let changed = if change.config {
            TypeSet::ALL
        } else if change.endpoints {
            TypeSet::only(ResourceType::Eds)
        } else {
            TypeSet::NONE
        };
        let diagnostics_changed = model.diagnostics != previous.model.diagnostics;
        if changed.is_empty() && !diagnostics_changed {
            tracing::debug!("configuration unchanged; nothing to push");
            continue;
        }
        let snapshot = Arc::new(Snapshot {
            generation: previous.generation + 1,
            model: Arc::new(model),
            changed,
            changed_at: first,
        });
        tracing::info!(
            generation = snapshot.generation,
            changed = ?snapshot.changed.iter().map(ResourceType::as_str).collect::<Vec<_>>(),
            resources = snapshot.model.resources.len(),
            services = snapshot.model.registry.services.len(),
            rejected = snapshot.model.diagnostics.iter().filter(|d| d.is_error()).count(),
            "configuration changed"
        );
        cache.observe(&snapshot);
        snapshots.send_replace(snapshot);
    }
}
