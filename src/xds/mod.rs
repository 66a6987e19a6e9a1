//! The xDS protocol: Envoy's Aggregated Discovery Service, state of the world and delta, on one
//! gRPC port.
//!
//! Contract: every stream identifies its proxy from the first request's node, then receives the
//! resources the cache generates for that proxy, pushed when a new model snapshot changes them
//! (only changed types; delta streams only changed resources). `push` turns source events into
//! debounced model snapshots; `status` records what each proxy was sent, ACKed and NACKed.
//!
//! Generating configuration is CPU work and never runs on the runtime's threads: a stream
//! that needs resources its class does not have yet waits (asynchronously) for one build per
//! class and generation, run on the blocking pool with at most one build per CPU at a time.
//! A slow proxy holds up only its own stream: each stream has a small response buffer and
//! always moves to the newest snapshot, skipping those it was too slow to see.

pub mod push;
pub mod status;
pub mod stream;
pub mod transport;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::google::protobuf as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::{Cache, ProxyResources, ResourceType, Snapshot};
use crate::model::{Proxy, ProxyClass};
use status::{Connection, Registry};
use stream::{Ack, Stream};

/// Per-stream response buffer: a slow proxy blocks only its own stream.
const STREAM_BUFFER: usize = 8;

type Build = Arc<tokio::sync::OnceCell<Arc<ProxyResources>>>;

/// Builds in progress or done, one per class and generation, and the CPUs they may use.
struct Builds {
    permits: tokio::sync::Semaphore,
    cells: Mutex<HashMap<(ProxyClass, u64), Build>>,
    /// Newest generation seen; older cells are dropped when it advances.
    newest: AtomicU64,
}

/// Everything the streams share.
pub struct Shared {
    pub cache: Arc<Cache>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub registry: Arc<Registry>,
    next_connection: AtomicU64,
    builds: Builds,
}

impl Shared {
    pub fn new(cache: Arc<Cache>, snapshots: watch::Receiver<Arc<Snapshot>>) -> Arc<Shared> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Shared {
            cache,
            snapshots,
            registry: Arc::new(Registry::default()),
            next_connection: AtomicU64::new(1),
            builds: Builds {
                permits: tokio::sync::Semaphore::new(cpus),
                cells: Mutex::new(HashMap::new()),
                newest: AtomicU64::new(0),
            },
        })
    }

    /// The proxy's resources at `snapshot`: from the cache when its class is up to date,
    /// else from the one build of its class at this generation (started here if none is).
    async fn resources(
        &self,
        snapshot: &Arc<Snapshot>,
        proxy: &Proxy,
    ) -> Result<Arc<ProxyResources>, Status> {
        if let Some(r) = self.cache.ready(snapshot, proxy) {
            return Ok(r);
        }
        let generation = snapshot.generation;
        let cell = {
            let mut cells = self.builds.cells.lock().unwrap_or_else(|p| p.into_inner());
            if self.builds.newest.fetch_max(generation, Ordering::Relaxed) < generation {
                cells.retain(|(_, g), _| *g + 1 >= generation);
            }
            cells
                .entry((proxy.class(), generation))
                .or_default()
                .clone()
        };
        let resources = cell
            .get_or_try_init(|| async {
                let _permit = self
                    .builds
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| Status::unavailable("shutting down"))?;
                let (cache, snapshot, proxy) =
                    (self.cache.clone(), snapshot.clone(), proxy.clone());
                tokio::task::spawn_blocking(move || cache.resources(&snapshot, &proxy))
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "generating configuration failed");
                        Status::internal("generating configuration failed")
                    })
            })
            .await?;
        Ok(resources.clone())
    }
}

/// The ADS gRPC service.
#[derive(Clone)]
pub struct Ads {
    shared: Arc<Shared>,
}

impl Ads {
    pub fn new(shared: Arc<Shared>) -> Ads {
        Ads { shared }
    }

    /// The gRPC service to add to a tonic server (see `transport`).
    pub fn into_service(self) -> transport::AdsService {
        transport::AdsService::new(self)
    }
}

type ResponseStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<xds_discovery::DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<xds_discovery::DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<xds_discovery::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shared = self.shared.clone();
        // The response stream is returned at once; the first request (which names the node) is
        // read by the stream's task.
        tokio::spawn(async move {
            let first = match requests.message().await {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let proxy = match proxy_from_node(first.node.as_ref()) {
                Ok(p) => p,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let connection = shared.connect(proxy, false);
            let result = sotw(&shared, connection.clone(), first, requests, &tx).await;
            shared.registry.remove(connection.id);
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as Self::StreamAggregatedResourcesStream
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<xds_discovery::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shared = self.shared.clone();
        // The response stream is returned at once; the first request (which names the node) is
        // read by the stream's task.
        tokio::spawn(async move {
            let first = match requests.message().await {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let proxy = match proxy_from_node(first.node.as_ref()) {
                Ok(p) => p,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let connection = shared.connect(proxy, true);
            let result = delta(&shared, connection.clone(), first, requests, &tx).await;
            shared.registry.remove(connection.id);
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as Self::DeltaAggregatedResourcesStream
        ))
    }
}

impl Shared {
    fn connect(&self, proxy: Proxy, delta: bool) -> Arc<Connection> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        tracing::info!(proxy = %proxy.id, connection = id, delta, "proxy connected");
        let connection = Arc::new(Connection::new(id, proxy, delta));
        self.registry.insert(connection.clone());
        connection
    }
}

/// Parses the node of a first request into a `Proxy`.
fn proxy_from_node(node: Option<&xds_core::Node>) -> Result<Proxy, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("first request has no node"))?;
    let metadata = node
        .metadata
        .as_ref()
        .map(struct_to_json)
        .unwrap_or(serde_json::Value::Null);
    Proxy::parse(&node.id, &metadata).map_err(|e| {
        tracing::warn!(node = %node.id, error = %e, "rejected proxy");
        Status::invalid_argument(e.to_string())
    })
}

/// google.protobuf.Struct → JSON.
pub fn struct_to_json(s: &pb::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &pb::Value) -> serde_json::Value {
    use pb::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

/// JSON → google.protobuf.Struct (for bootstrap metadata and tests).
pub fn json_to_struct(value: &serde_json::Map<String, serde_json::Value>) -> pb::Struct {
    pb::Struct {
        fields: value
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(pb::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    pb::Value { kind: Some(kind) }
}

/// The proxy's resources at the newest snapshot.
async fn current(
    shared: &Shared,
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    proxy: &Proxy,
) -> Result<(Arc<Snapshot>, Arc<ProxyResources>), Status> {
    let snapshot = rx.borrow_and_update().clone();
    let resources = shared.resources(&snapshot, proxy).await?;
    Ok((snapshot, resources))
}

/// Sends, or ends the stream quietly when the client has gone.
async fn send<T>(tx: &mpsc::Sender<Result<T, Status>>, message: T) -> Result<(), Status> {
    tx.send(Ok(message))
        .await
        .map_err(|_| Status::cancelled("client went away"))
}

fn type_of(url: &str, connection: &Connection) -> Option<ResourceType> {
    let t = ResourceType::from_type_url(url);
    if t.is_none() {
        tracing::debug!(proxy = %connection.proxy.id, type_url = url, "request for an unserved type ignored");
    }
    t
}

async fn sotw(
    shared: &Shared,
    connection: Arc<Connection>,
    first: xds_discovery::DiscoveryRequest,
    mut requests: Streaming<xds_discovery::DiscoveryRequest>,
    tx: &mpsc::Sender<Result<xds_discovery::DiscoveryResponse, Status>>,
) -> Result<(), Status> {
    let mut rx = shared.snapshots.clone();
    let (_, mut resources) = current(shared, &mut rx, &connection.proxy).await?;
    let mut stream = Stream::new(connection.clone());
    let mut next = Some(first);
    loop {
        if let Some(request) = next.take() {
            let Some(t) = type_of(&request.type_url, &connection) else {
                next = requests.message().await?;
                if next.is_none() {
                    return Ok(());
                }
                continue;
            };
            let error = request.error_detail.as_ref().map(|s| s.message.as_str());
            let ack = stream.acknowledge(t, &request.response_nonce, &request.version_info, error);
            if ack == Ack::Stale {
                // A reply to an older response: superseded by the newer one in flight.
            } else {
                let names: std::collections::BTreeSet<String> =
                    request.resource_names.iter().cloned().collect();
                let wildcard = (names.is_empty() && t.is_wildcard_type()) || names.contains("*");
                let watch = stream.watches.entry(t).or_default();
                let changed =
                    !watch.subscribed || watch.wildcard != wildcard || watch.names != names;
                if changed {
                    watch.seen = None;
                }
                watch.subscribed = true;
                watch.wildcard = wildcard;
                watch.names = names.into_iter().filter(|n| n != "*").collect();
                if ack == Ack::Initial
                    && !request.version_info.is_empty()
                    && stream.sotw_version(t, &resources).as_deref()
                        == Some(request.version_info.as_str())
                {
                    // Reconnected with exactly what we would send: nothing to do.
                    stream.mark_synced(t, &request.version_info);
                } else if (changed || ack == Ack::Initial)
                    && let Some(r) = stream.sotw_response(t, &resources, true, None)
                {
                    send(tx, r).await?;
                }
            }
        }
        tokio::select! {
            biased;
            message = requests.message() => {
                match message? {
                    Some(r) => next = Some(r),
                    None => return Ok(()),
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let (snapshot, latest) = current(shared, &mut rx, &connection.proxy).await?;
                resources = latest;
                for t in ResourceType::ALL {
                    if let Some(r) = stream.sotw_response(t, &resources, false, Some(snapshot.changed_at)) {
                        send(tx, r).await?;
                    }
                }
            }
        }
    }
}

async fn delta(
    shared: &Shared,
    connection: Arc<Connection>,
    first: xds_discovery::DeltaDiscoveryRequest,
    mut requests: Streaming<xds_discovery::DeltaDiscoveryRequest>,
    tx: &mpsc::Sender<Result<xds_discovery::DeltaDiscoveryResponse, Status>>,
) -> Result<(), Status> {
    let mut rx = shared.snapshots.clone();
    let (_, mut resources) = current(shared, &mut rx, &connection.proxy).await?;
    let mut stream = Stream::new(connection.clone());
    let mut next = Some(first);
    loop {
        if let Some(request) = next.take()
            && let Some(t) = type_of(&request.type_url, &connection)
        {
            let error = request.error_detail.as_ref().map(|s| s.message.as_str());
            let ack = stream.acknowledge(t, &request.response_nonce, "", error);
            let watch = stream.watches.entry(t).or_default();
            let first_for_type = !watch.subscribed;
            if first_for_type
                || !request.resource_names_subscribe.is_empty()
                || !request.resource_names_unsubscribe.is_empty()
            {
                // The subscription changes: the next response is computed afresh.
                watch.seen = None;
            }
            let mut force = false;
            if first_for_type {
                watch.subscribed = true;
                // Legacy wildcard: the first request for CDS/LDS names nothing.
                watch.wildcard =
                    t.is_wildcard_type() && request.resource_names_subscribe.is_empty();
                for (name, version) in &request.initial_resource_versions {
                    watch.known.insert(name.clone(), version.clone());
                }
                force = true;
            }
            for name in &request.resource_names_subscribe {
                if name == "*" {
                    force |= !watch.wildcard;
                    watch.wildcard = true;
                } else if watch.names.insert(name.clone()) {
                    force = true;
                }
            }
            for name in &request.resource_names_unsubscribe {
                if name == "*" {
                    watch.wildcard = false;
                } else {
                    watch.names.remove(name);
                }
                if !watch.wildcard {
                    watch.known.remove(name);
                }
            }
            if ack != Ack::Stale || force {
                let since = None;
                // A first request is always answered, even when the client already holds
                // everything (it waits for a response to finish initialising).
                if let Some(r) = stream.delta_response(t, &resources, force, since) {
                    send(tx, r).await?;
                }
            }
        }
        tokio::select! {
            biased;
            message = requests.message() => {
                match message? {
                    Some(r) => next = Some(r),
                    None => return Ok(()),
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let (snapshot, latest) = current(shared, &mut rx, &connection.proxy).await?;
                resources = latest;
                for t in ResourceType::ALL {
                    if let Some(r) = stream.delta_response(t, &resources, false, Some(snapshot.changed_at)) {
                        send(tx, r).await?;
                    }
                }
            }
        }
    }
}
