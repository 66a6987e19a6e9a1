//! The Kubernetes source: watches the API server for the Istio kinds bowline models and for
//! Services, EndpointSlices, Pods, Namespaces and Secrets, and for the mesh ConfigMap (`istio` in the
//! system namespace, key `mesh`), which start-up also reads once ([`read_mesh`]) before the CA
//! is made.
//!
//! Contract: one kube-rs watcher per kind (each kind is a `SourceId` of its own). A watcher
//! lists, then watches; a relist (at start, after a `410 Gone` or a lost watch) is buffered
//! and handed over as one `Objects { relist: true }` event, so the store swaps that kind's
//! state atomically; errors back off (kube-rs' default backoff) and never end the source.
//! Every object goes through the same parse and validation as a file document: an invalid
//! object is skipped and reported as a diagnostic of its own, the rest of its list is used.
//! An Istio kind is watched in the first version the API server serves of those bowline reads
//! (`v1`, then the older ones): the server converts between versions, so one watch sees every
//! object. A kind whose CRD is not installed counts as empty and is looked for again every
//! `CRD_RETRY`. Secrets are watched as istiod watches them, without the types no credential
//! is read from (service-account tokens, Helm releases), excluded by the API server.
//! Each object added, updated (a new resource version) or deleted counts once in
//! `pilot_k8s_reg_events` or `pilot_k8s_cfg_events` (see [`event_series`]), a relist by its
//! difference from what the watcher held.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use super::{Event, Object, SourceId};
use crate::model::resource::parse_value;
use crate::model::{Diagnostic, Kind, MeshConfig, ResourceKey};
use crate::monitoring::KubeEvent;

/// How often a kind whose CRD is missing is looked for again.
const CRD_RETRY: Duration = Duration::from_secs(10);

/// The kinds watched, each a source of its own.
pub const KINDS: [Kind; 14] = Kind::ALL;

/// Where the mesh configuration lives.
#[derive(Debug, Clone)]
pub struct MeshConfigMap {
    pub namespace: String,
    pub name: String,
}

impl Default for MeshConfigMap {
    fn default() -> Self {
        MeshConfigMap {
            namespace: "istio-system".into(),
            name: "istio".into(),
        }
    }
}

/// Errors connecting to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no Kubernetes configuration: {0}")]
    Infer(String),
    #[error("Kubernetes client: {0}")]
    Client(String),
}

/// A client from a kubeconfig file, or (without one) from the pod's service account or the
/// `KUBECONFIG` environment.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let fail = |message: String| KubeError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Infer(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// Starts a watcher per kind and one for the mesh ConfigMap; they run until `events` closes.
pub fn start(
    client: kube::Client,
    mesh: MeshConfigMap,
    events: mpsc::Sender<Event>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = KINDS
        .into_iter()
        .map(|kind| tokio::spawn(watch_kind(client.clone(), kind, events.clone())))
        .collect();
    tasks.push(tokio::spawn(watch_mesh(client, mesh, events)));
    tasks
}

/// The API resource of `kind` in the first version the server serves, if any.
async fn discover(client: &kube::Client, kind: Kind) -> Result<Option<ApiResource>, kube::Error> {
    let (group, versions) = kind.group_versions();
    for version in versions {
        let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
        match kube::discovery::oneshot::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => return Ok(Some(resource)),
            // Not served (no such group/version, or the kind is not in it).
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(kube::Error::Discovery(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

async fn watch_kind(client: kube::Client, kind: Kind, events: mpsc::Sender<Event>) {
    let source = SourceId::Kube(kind);
    let resource = loop {
        match discover(&client, kind).await {
            Ok(Some(r)) => break r,
            Ok(None) => {
                tracing::warn!(%kind, "not served by the API server (CRD not installed?); watching again in {CRD_RETRY:?}");
                let empty = Event::Objects {
                    source,
                    objects: Vec::new(),
                    relist: true,
                };
                if events.send(empty).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(%kind, error = %e, "discovering the API resource"),
        }
        tokio::time::sleep(CRD_RETRY).await;
    };
    tracing::info!(%kind, api_version = %resource.api_version, "watching");
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher(api, watcher_config(kind)).default_backoff().boxed();
    let mut listing: Option<(Vec<Object>, Versions)> = None;
    let mut known = Versions::new();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(watcher::Event::Init) => {
                listing = Some(Default::default());
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                let (objects, versions) = listing.get_or_insert_with(Default::default);
                versions.insert(name_of(&o), version_of(&o));
                objects.push(object(kind, &resource, o));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let (objects, versions) = listing.take().unwrap_or_default();
                for event in relist_events(&known, &versions) {
                    record_event(kind, event);
                }
                known = versions;
                Event::Objects {
                    source,
                    objects,
                    relist: true,
                }
            }
            Ok(watcher::Event::Apply(o)) => {
                let version = version_of(&o);
                match known.insert(name_of(&o), version.clone()) {
                    None => record_event(kind, KubeEvent::Add),
                    Some(v) if v != version => record_event(kind, KubeEvent::Update),
                    Some(_) => {}
                }
                Event::Objects {
                    source,
                    objects: vec![object(kind, &resource, o)],
                    relist: false,
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if known.remove(&name_of(&o)).is_some() {
                    record_event(kind, KubeEvent::Delete);
                }
                Event::Delete {
                    source,
                    key: key(kind, &o),
                }
            }
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying");
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// The resource version of each object a watcher holds, by namespace and name.
type Versions = HashMap<(String, String), String>;

fn name_of(o: &DynamicObject) -> (String, String) {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

fn version_of(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap_or_default()
}

/// The events a relist stands for, against what the watcher held before: objects new to it
/// are added, those with another resource version updated, those gone deleted (as an
/// informer's resync reports them).
fn relist_events(before: &Versions, after: &Versions) -> Vec<KubeEvent> {
    let mut events = Vec::new();
    for (name, version) in after {
        match before.get(name) {
            None => events.push(KubeEvent::Add),
            Some(v) if v != version => events.push(KubeEvent::Update),
            Some(_) => {}
        }
    }
    events.extend(
        before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|_| KubeEvent::Delete),
    );
    events
}

/// The series and `type` label an event of `kind` counts in, as istiod's: the service
/// registry's kinds in `pilot_k8s_reg_events` (under its informers' names), the Istio kinds in
/// `pilot_k8s_cfg_events` (under the kind); Secrets (credentials) in neither.
pub fn event_series(kind: Kind) -> Option<(&'static str, &'static str)> {
    const REG: &str = "pilot_k8s_reg_events";
    const CFG: &str = "pilot_k8s_cfg_events";
    match kind {
        Kind::Service => Some((REG, "Services")),
        Kind::EndpointSlice => Some((REG, "EndpointSlice")),
        Kind::Pod => Some((REG, "Pods")),
        Kind::Namespace => Some((REG, "Namespaces")),
        Kind::Secret => None,
        Kind::VirtualService
        | Kind::DestinationRule
        | Kind::ServiceEntry
        | Kind::WorkloadEntry
        | Kind::Sidecar
        | Kind::Gateway
        | Kind::AuthorizationPolicy
        | Kind::PeerAuthentication
        | Kind::RequestAuthentication => Some((CFG, kind.as_str())),
    }
}

fn record_event(kind: Kind, event: KubeEvent) {
    if let Some((name, kind)) = event_series(kind) {
        metrics::counter!(name, "type" => kind, "event" => event.as_str()).increment(1);
    }
}

/// Secrets of these types are not watched: they hold no credential, and they are many.
const UNWATCHED_SECRET_TYPES: [&str; 2] =
    ["kubernetes.io/service-account-token", "helm.sh/release.v1"];

/// What the API server sends of a kind: every object, or for Secrets those of the types a
/// credential can be read from.
fn watcher_config(kind: Kind) -> watcher::Config {
    match kind {
        Kind::Secret => watcher::Config::default().fields(
            &UNWATCHED_SECRET_TYPES
                .map(|t| format!("type!={t}"))
                .join(","),
        ),
        _ => watcher::Config::default(),
    }
}

fn key(kind: Kind, o: &DynamicObject) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
    }
}

/// Parses and validates one object as a file document would be.
fn object(kind: Kind, resource: &ApiResource, o: DynamicObject) -> Object {
    let key = key(kind, &o);
    let mut value = match serde_json::to_value(&o) {
        Ok(v) => v,
        Err(e) => {
            return Object {
                diagnostics: vec![Diagnostic::error(
                    kind.as_str(),
                    &key.namespace,
                    &key.name,
                    "",
                    format!("object does not serialize: {e}"),
                )],
                key,
                resource: None,
            };
        }
    };
    if let Some(map) = value.as_object_mut() {
        // List items carry no type fields.
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            // What the server adds and bowline does not read.
            meta.remove("managedFields");
        }
    }
    let origin = format!("kubernetes:{}", key);
    let parsed = parse_value(value, Some(&origin));
    Object {
        key,
        resource: parsed.resource,
        diagnostics: parsed.diagnostics,
    }
}

/// The mesh configuration of a ConfigMap's `mesh` key; `None` (logged) when it is invalid.
fn parse_mesh(at: &MeshConfigMap, cm: &ConfigMap) -> Option<MeshConfig> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .map(String::as_str)
        .unwrap_or_default();
    match MeshConfig::from_yaml(text) {
        Ok(m) => {
            // A bad provider spoils only itself: the rest of the mesh is used.
            for problem in &m.provider_problems {
                tracing::warn!(
                    configmap = %format!("{}/{}", at.namespace, at.name),
                    "{problem}"
                );
            }
            Some(m)
        }
        Err(e) => {
            tracing::error!(
                configmap = %format!("{}/{}", at.namespace, at.name),
                error = %e,
                "mesh configuration (key `mesh`) is invalid; keeping the previous one"
            );
            None
        }
    }
}

/// The mesh configuration the ConfigMap holds now, for start-up (istiod reads its mesh
/// configuration before it makes its CA). `None`: there is no such ConfigMap, or its `mesh`
/// key is invalid (logged), as the watcher then reports nothing either.
pub async fn read_mesh(
    client: kube::Client,
    at: &MeshConfigMap,
) -> Result<Option<MeshConfig>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, &at.namespace);
    Ok(api
        .get_opt(&at.name)
        .await?
        .and_then(|cm| parse_mesh(at, &cm)))
}

async fn watch_mesh(client: kube::Client, mesh: MeshConfigMap, events: mpsc::Sender<Event>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &mesh.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", mesh.name));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut found = false;
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(watcher::Event::Init) => {
                found = false;
                continue;
            }
            Ok(watcher::Event::InitApply(cm)) | Ok(watcher::Event::Apply(cm)) => {
                found = true;
                match parse_mesh(&mesh, &cm) {
                    Some(m) => Some(Box::new(m)),
                    None => continue,
                }
            }
            Ok(watcher::Event::InitDone) if found => continue,
            Ok(watcher::Event::InitDone) | Ok(watcher::Event::Delete(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "watching the mesh ConfigMap failed; retrying");
                continue;
            }
        };
        if events.send(Event::Mesh(update)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(items: &[(&str, &str)]) -> Versions {
        items
            .iter()
            .map(|(name, v)| (("ns".to_string(), name.to_string()), v.to_string()))
            .collect()
    }

    #[test]
    fn a_relist_counts_its_difference_from_what_was_held() {
        let before = versions(&[("kept", "1"), ("changed", "1"), ("gone", "1")]);
        let after = versions(&[("kept", "1"), ("changed", "2"), ("new", "1")]);
        let mut events: Vec<&str> = relist_events(&before, &after)
            .into_iter()
            .map(KubeEvent::as_str)
            .collect();
        events.sort();
        assert_eq!(events, ["add", "delete", "update"]);
        // The first list adds everything.
        assert_eq!(relist_events(&Versions::new(), &after), [KubeEvent::Add; 3]);
    }

    #[test]
    fn events_count_under_istiods_series_and_types() {
        assert_eq!(
            event_series(Kind::Service),
            Some(("pilot_k8s_reg_events", "Services"))
        );
        assert_eq!(
            event_series(Kind::EndpointSlice),
            Some(("pilot_k8s_reg_events", "EndpointSlice"))
        );
        assert_eq!(
            event_series(Kind::Pod),
            Some(("pilot_k8s_reg_events", "Pods"))
        );
        assert_eq!(
            event_series(Kind::VirtualService),
            Some(("pilot_k8s_cfg_events", "VirtualService"))
        );
        assert_eq!(event_series(Kind::Secret), None);
    }

    fn endpoint_slice(json: serde_json::Value) -> Object {
        let gvk = GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice");
        let resource = ApiResource::from_gvk(&gvk);
        let o: DynamicObject = serde_json::from_value(json).expect("a DynamicObject");
        object(Kind::EndpointSlice, &resource, o)
    }

    /// A Service without ready pods: the API server lists its slice with `endpoints: null`.
    #[test]
    fn endpoint_slice_without_endpoints_is_accepted() {
        let o = endpoint_slice(serde_json::json!({
            "metadata": {
                "name": "idle-abcde",
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "idle"},
            },
            "addressType": "IPv4",
            "endpoints": null,
            "ports": null,
        }));
        assert!(o.diagnostics.is_empty(), "{:?}", o.diagnostics);
        let Some(r) = o.resource else {
            panic!("the slice is kept")
        };
        let crate::model::Spec::EndpointSlice(slice) = &r.spec else {
            panic!("an EndpointSlice: {:?}", r.spec)
        };
        assert!(slice.endpoints.is_empty());
        assert_eq!(slice.ports, None);
    }

    #[test]
    fn endpoint_slice_with_endpoints_keeps_them() {
        let o = endpoint_slice(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "shop"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": null}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }));
        assert!(o.diagnostics.is_empty(), "{:?}", o.diagnostics);
        let Some(crate::model::Spec::EndpointSlice(slice)) = o.resource.as_ref().map(|r| &r.spec)
        else {
            panic!("an EndpointSlice")
        };
        assert_eq!(slice.endpoints.len(), 1);
        assert_eq!(slice.endpoints[0].addresses, vec!["10.0.0.1"]);
        assert_eq!(slice.endpoints[0].conditions.ready, Some(true));
    }
}
