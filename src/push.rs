//! The push loop: source events → debounced model snapshots. It joins the pipeline's stages:
//! it reads the sources (`source`), builds the `model`, has the `cache` index it, and publishes
//! the snapshot every `xds` stream follows.
//!
//! Events are gathered until the input has been quiet for `quiet` (100 ms, like istiod's
//! PILOT_DEBOUNCE_AFTER) or `max` has passed since the first one (10 s, PILOT_DEBOUNCE_MAX);
//! then a new `Model` is built and, if it differs from the last one, published as a snapshot
//! whose change set names the affected types: an endpoint-only change affects EDS only, a
//! change confined to Secrets none (streams follow it for their gateway credentials). The
//! model and the cache's index of it are built on the blocking pool, never on the threads that
//! serve streams. It records the time from the first event to publication
//! (`pilot_debounce_time`), the model's build (`pilot_pushcontext_init_seconds`) and its size
//! (`pilot_services`, `pilot_virt_services`), and counts the events it receives
//! (`pilot_inbound_updates`).
//!
//! The mesh configuration in force (a source's, i.e. the cluster's ConfigMap, else the
//! configured one) is chosen in one place, [`mesh_in_force`], which also sets the shared
//! [`TrustDomain`] the CA side reads: the model and the certificates follow the same value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::ca::TrustDomain;
use crate::cache::{Cache, Snapshot};
use crate::envoy::{ResourceType, TypeSet};
use crate::model::{Change, Diagnostic, Kind, MeshConfig, Model, Resource};
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

/// The mesh configuration in force: a source's (the cluster's ConfigMap) over the configured
/// one. Sets `trust_domain` to its trust domain, logging a change.
pub fn mesh_in_force(
    store: &Store,
    configured: &MeshConfig,
    trust_domain: &TrustDomain,
) -> MeshConfig {
    let mesh = store.mesh().unwrap_or(configured).clone();
    if let Some(previous) = trust_domain.set(&mesh.trust_domain) {
        tracing::warn!(
            from = %previous,
            to = %mesh.trust_domain,
            aliases = ?mesh.trust_domain_aliases,
            "the mesh's trust domain changed: new certificates, token checks, SAN matchers and principals use the new one; connected proxies get a certificate in it; peers and tokens of the old one are refused unless it is in trustDomainAliases"
        );
    }
    mesh
}

/// Builds the first snapshot from the store's current state, on the blocking pool, and has
/// the cache observe it.
pub async fn initial(
    store: &Store,
    mesh: &MeshConfig,
    trust_domain: &TrustDomain,
    cache: &Arc<Cache>,
) -> Result<Arc<Snapshot>, tokio::task::JoinError> {
    let (resources, diagnostics, mesh) = (
        store.resources(),
        store.diagnostics(),
        mesh_in_force(store, mesh, trust_domain),
    );
    let cache = cache.clone();
    let build = move || {
        let started = Instant::now();
        let snapshot = Arc::new(Snapshot {
            generation: 1,
            model: Arc::new(Model::build(resources, diagnostics, mesh)),
            changed: TypeSet::ALL,
            changed_at: started,
            published_at: Instant::now(),
        });
        cache.observe(&snapshot);
        record_model(&snapshot.model, started);
        snapshot
    };
    tokio::task::spawn_blocking(build).await
}

/// Runs until the event channel closes.
pub async fn run(
    mut events: mpsc::Receiver<Event>,
    mut store: Store,
    mesh: MeshConfig,
    trust_domain: TrustDomain,
    cache: Arc<Cache>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    debounce: Debounce,
) {
    while let Some(event) = events.recv().await {
        let first = Instant::now();
        record_inbound(&event);
        store.apply(event);
        let deadline = first + debounce.max;
        loop {
            let quiet_until = (Instant::now() + debounce.quiet).min(deadline);
            tokio::select! {
                more = events.recv() => match more {
                    Some(e) => {
                        record_inbound(&e);
                        store.apply(e);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(quiet_until.into()) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let previous = snapshots.borrow().clone();
        let inputs = (
            store.resources(),
            store.diagnostics(),
            mesh_in_force(&store, &mesh, &trust_domain),
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
        metrics::histogram!("pilot_debounce_time").record(first.elapsed().as_secs_f64());
    }
}

/// Counts a source event in `pilot_inbound_updates{type}`: one per object it carries (one for
/// a whole resync, or the mesh configuration).
fn record_inbound(event: &Event) {
    let count = |t: &'static str| {
        metrics::counter!("pilot_inbound_updates", "type" => t).increment(1);
    };
    match event {
        Event::Resync { .. } | Event::Mesh(_) => count("config"),
        Event::Apply { resource, .. } => count(inbound_type(resource.kind, false)),
        Event::Delete { key, .. } => count(inbound_type(key.kind, true)),
        Event::Objects { objects, .. } => {
            for o in objects {
                count(inbound_type(o.key.kind, false));
            }
        }
    }
}

/// istiod's kinds of inbound update: `eds` (endpoints), `svc` and `svcdelete` (services),
/// `config` (everything else).
pub fn inbound_type(kind: Kind, delete: bool) -> &'static str {
    match kind {
        Kind::EndpointSlice => "eds",
        Kind::Service if delete => "svcdelete",
        Kind::Service => "svc",
        _ => "config",
    }
}

/// The model's series: the time it took to build and index (`started` is when the build
/// began), and what it holds.
fn record_model(model: &Model, started: Instant) {
    metrics::histogram!("pilot_pushcontext_init_seconds").record(started.elapsed().as_secs_f64());
    metrics::gauge!("pilot_services").set(model.registry.services.len() as f64);
    metrics::gauge!("pilot_virt_services").set(model.of_kind(Kind::VirtualService).count() as f64);
}

/// The types a change between two models affects: every type, EDS alone for a change confined
/// to endpoints, or none.
pub fn changed_types(change: Change) -> TypeSet {
    if change.config {
        TypeSet::ALL
    } else if change.endpoints {
        TypeSet::only(ResourceType::Eds)
    } else {
        TypeSet::NONE
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
    let started = Instant::now();
    let model = Model::build(resources, diagnostics, mesh);
    let change = model.change_from(&previous.model);
    let changed = changed_types(change);
    let diagnostics_changed = model.diagnostics != previous.model.diagnostics;
    if changed.is_empty() && !change.secrets && !diagnostics_changed {
        return None;
    }
    let snapshot = Arc::new(Snapshot {
        generation: previous.generation + 1,
        model: Arc::new(model),
        changed,
        changed_at: first,
        published_at: Instant::now(),
    });
    tracing::info!(
        generation = snapshot.generation,
        changed = ?snapshot.changed.iter().map(ResourceType::as_str).collect::<Vec<_>>(),
        secrets = change.secrets,
        resources = snapshot.model.resources.len(),
        services = snapshot.model.registry.services.len(),
        rejected = snapshot.model.diagnostics.iter().filter(|d| d.is_error()).count(),
        "configuration changed"
    );
    cache.observe(&snapshot);
    record_model(&snapshot.model, started);
    Some(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::authn::{Authenticator, Caller, TokenAuthenticator};
    use crate::ca::{Ca, CaOptions, DEFAULT_WORKLOAD_TTL};
    use crate::model::Identity;

    fn mesh(yaml: &str) -> Event {
        Event::Mesh(Some(Box::new(MeshConfig::from_yaml(yaml).unwrap())))
    }

    /// Whether the CA side accepts a bowline token for `mesh/a` in `td`, and the SAN of the
    /// certificate it then issues.
    async fn ca_side(ca: &Ca, authn: &TokenAuthenticator, td: &str) -> Option<Vec<String>> {
        let id = Identity::new(td, "mesh", "a").unwrap();
        let token = ca
            .token_key()
            .unwrap()
            .sign(&id, Duration::from_secs(60))
            .unwrap();
        let caller = Caller {
            bearer: Some(token),
            ..Default::default()
        };
        let proven = authn.authenticate(&caller).await.ok().flatten()?;
        let cert = ca.issue(&proven).unwrap();
        let der = crate::ca::pem::parse(&cert.chain_pem).unwrap()[0]
            .der
            .clone();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        Some(
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::prelude::GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect(),
        )
    }

    #[test]
    fn inbound_updates_are_typed_as_istiods() {
        assert_eq!(inbound_type(Kind::Service, false), "svc");
        assert_eq!(inbound_type(Kind::Service, true), "svcdelete");
        assert_eq!(inbound_type(Kind::EndpointSlice, true), "eds");
        assert_eq!(inbound_type(Kind::VirtualService, true), "config");
        assert_eq!(inbound_type(Kind::Namespace, false), "config");
    }

    /// The mesh ConfigMap (a source's mesh) is the one source of the trust domain: at start-up
    /// and after a change, the model translation reads and the CA side (token check, issued
    /// SAN) name the same trust domain, whatever `--mesh-config` said.
    #[tokio::test]
    async fn the_mesh_in_force_sets_the_trust_domain_of_the_model_and_the_ca() {
        let configured = MeshConfig::default();
        let ca = Ca::load(&CaOptions {
            dir: None,
            trust_domain: configured.trust_domain.clone(),
            workload_ttl: DEFAULT_WORKLOAD_TTL,
        })
        .unwrap();
        let trust_domain = ca.trust_domain_source().clone();
        let authn = TokenAuthenticator::new(ca.token_key().unwrap().clone(), trust_domain.clone());
        let mut store = Store::default();
        store.apply(mesh("trustDomain: example.org\n"));

        let cache = Arc::new(Cache::new());
        let first = initial(&store, &configured, &trust_domain, &cache)
            .await
            .unwrap();
        assert_eq!(first.model.mesh.trust_domain, "example.org");
        assert_eq!(ca.trust_domain(), "example.org");
        assert_eq!(
            ca_side(&ca, &authn, "example.org").await,
            Some(vec!["spiffe://example.org/ns/mesh/sa/a".to_string()])
        );
        assert_eq!(ca_side(&ca, &authn, "cluster.local").await, None);

        // The ConfigMap changes at run time: the next snapshot and the CA side move together.
        let (tx, rx) = mpsc::channel(4);
        let (snapshots_tx, mut snapshots) = watch::channel(first);
        let pusher = tokio::spawn(run(
            rx,
            store,
            configured.clone(),
            trust_domain.clone(),
            cache,
            snapshots_tx,
            Debounce {
                quiet: Duration::from_millis(1),
                max: Duration::from_millis(10),
            },
        ));
        tx.send(mesh(
            "trustDomain: example.com\ntrustDomainAliases: [example.org]\n",
        ))
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), snapshots.changed())
            .await
            .expect("a new snapshot")
            .unwrap();
        assert_eq!(snapshots.borrow().model.mesh.trust_domain, "example.com");
        assert_eq!(ca.trust_domain(), "example.com");
        assert_eq!(
            ca_side(&ca, &authn, "example.com").await,
            Some(vec!["spiffe://example.com/ns/mesh/sa/a".to_string()])
        );
        assert_eq!(ca_side(&ca, &authn, "example.org").await, None);

        // The ConfigMap goes away: --mesh-config applies again, everywhere.
        tx.send(Event::Mesh(None)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), snapshots.changed())
            .await
            .expect("a new snapshot")
            .unwrap();
        assert_eq!(snapshots.borrow().model.mesh.trust_domain, "cluster.local");
        assert_eq!(ca.trust_domain(), "cluster.local");
        drop(tx);
        pusher.await.unwrap();
    }
}
