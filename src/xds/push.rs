//! The push loop: source events → debounced model snapshots.
//!
//! Events are gathered until the input has been quiet for `quiet` (100 ms, like istiod's
//! PILOT_DEBOUNCE_AFTER) or `max` has passed since the first one (10 s, PILOT_DEBOUNCE_MAX);
//! then a new `Model` is built and, if it differs from the last one, published as a snapshot
//! whose change set names the affected types: an endpoint-only change affects EDS only. The
//! model and the cache's index of it are built on the blocking pool, never on the threads that
//! serve streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cache::{Cache, ResourceType, Snapshot, TypeSet};
use crate::model::{Diagnostic, MeshConfig, Model, Resource};
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

/// Builds the first snapshot from the store's current state, on the blocking pool, and has
/// the cache observe it.
pub async fn initial(
    store: &Store,
    mesh: &MeshConfig,
    cache: &Arc<Cache>,
) -> Result<Arc<Snapshot>, tokio::task::JoinError> {
    let (resources, diagnostics, mesh) = (
        store.resources(),
        store.diagnostics(),
        store.mesh().unwrap_or(mesh).clone(),
    );
    let cache = cache.clone();
    let build = move || {
        let snapshot = Arc::new(Snapshot {
            generation: 1,
            model: Arc::new(Model::build(resources, diagnostics, mesh)),
            changed: TypeSet::ALL,
            changed_at: Instant::now(),
        });
        cache.observe(&snapshot);
        snapshot
    };
    tokio::task::spawn_blocking(build).await
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
        let inputs = (
            store.resources(),
            store.diagnostics(),
            store.mesh().unwrap_or(&mesh).clone(),
        );
        // Building the model and its index is CPU work: it runs on the blocking pool, off the
        // threads that serve the streams.
        let cache_for_build = cache.clone();
        let built = tokio::task::spawn_blocking(move || {
            next_snapshot(&previous, inputs, first, &cache_for_build)
        })
        .await;
        let snapshot = match built {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                tracing::debug!("configuration unchanged; nothing to push");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "building the model failed; keeping the last one");
                continue;
            }
        };
        snapshots.send_replace(snapshot);
    }
}

/// The snapshot after `previous` for the store's state (`resources`, `diagnostics`, `mesh`),
/// observed by the cache; `None` when nothing a proxy or a debug view sees changed.
fn next_snapshot(
    previous: &Snapshot,
    (resources, diagnostics, mesh): (Vec<Arc<Resource>>, Vec<Diagnostic>, MeshConfig),
    first: Instant,
    cache: &Cache,
) -> Option<Arc<Snapshot>> {
    let model = Model::build(resources, diagnostics, mesh);
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
        return None;
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
    Some(snapshot)
}
