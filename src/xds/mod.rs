//! The xDS protocol: Envoy's Aggregated Discovery Service, state of the world and delta, on the
//! plaintext port (istiod's 15010) and the TLS port (15012).
//!
//! Contract: every stream first authenticates its caller (see `ca::authn`): on the TLS port a
//! bowline token or client certificate is required; on the plaintext port an anonymous caller
//! gets configuration (as istiod's 15010 serves it) but a presented credential that does not
//! verify is refused. A proven identity must match the node metadata's NAMESPACE and
//! SERVICE_ACCOUNT, as istiod checks; a refusal is logged and the stream ends with an error
//! before any resource is sent. The stream then identifies its proxy from the first request's
//! node and receives the resources the cache generates for that proxy, pushed when a new model
//! snapshot changes them (only changed types; delta streams only changed resources), and its
//! secrets (`sds`): `ROOTCA` always, `default` only for an identity proven on the TLS port (it
//! carries a private key), renewed at half-life and replaced when the mesh's trust domain
//! changes (the certificate always names the trust domain of the configuration served). `push` turns source events into debounced
//! model snapshots; `status` records what each proxy was sent, ACKed and NACKed; `tls` is the
//! TLS port's transport; `transport` frames ADS requests and responses.
//!
//! Generating configuration is CPU work and never runs on the runtime's threads: a stream
//! that needs resources its class does not have yet waits (asynchronously) for one build per
//! class and generation, run on the blocking pool with at most one build per CPU at a time.
//! A slow proxy holds up only its own stream: each stream has a small response buffer and
//! always moves to the newest snapshot, skipping those it was too slow to see.

pub mod push;
pub mod sds;
pub mod status;
pub mod stream;
pub mod tls;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::google::protobuf as pb;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::ca::Ca;
use crate::ca::authn::{Authenticators, Caller};
use crate::cache::{Cache, ProxyResources, ResourceType, Snapshot, TypedResources};
use crate::model::{Identity, Proxy, ProxyClass};
use sds::Secrets;
use status::{Connection, Registry};
use stream::{Ack, Stream};
use transport::{Outgoing, Requests};

/// Per-stream response buffer: a slow proxy blocks only its own stream.
const STREAM_BUFFER: usize = 8;

/// The port a stream arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Plaintext,
    Tls,
}

/// The CA and the ways callers prove who they are.
#[derive(Clone)]
pub struct Security {
    pub ca: Arc<Ca>,
    pub authn: Authenticators,
}

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
    /// `None`: no CA; every caller is anonymous and no secret is served.
    pub security: Option<Security>,
    next_connection: AtomicU64,
    builds: Builds,
}

impl Shared {
    pub fn new(cache: Arc<Cache>, snapshots: watch::Receiver<Arc<Snapshot>>) -> Arc<Shared> {
        Shared::with_security(cache, snapshots, None)
    }

    pub fn with_security(
        cache: Arc<Cache>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        security: Option<Security>,
    ) -> Arc<Shared> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Shared {
            cache,
            snapshots,
            registry: Arc::new(Registry::default()),
            security,
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
                // Waiting for a CPU may have taken long enough for newer snapshots to
                // arrive: build the newest (the stream moves on to it anyway), never a
                // generation nobody needs any more.
                let newest = self.snapshots.borrow().clone();
                let snapshot = if newest.generation > snapshot.generation {
                    newest
                } else {
                    snapshot.clone()
                };
                let (cache, proxy) = (self.cache.clone(), proxy.clone());
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

/// The ADS gRPC service of one port.
#[derive(Clone)]
pub struct Ads {
    shared: Arc<Shared>,
    transport: Transport,
}

impl Ads {
    /// ADS on the plaintext port.
    pub fn new(shared: Arc<Shared>) -> Ads {
        Ads {
            shared,
            transport: Transport::Plaintext,
        }
    }

    /// ADS on the TLS port.
    pub fn tls(shared: Arc<Shared>) -> Ads {
        Ads {
            shared,
            transport: Transport::Tls,
        }
    }

    /// Who the caller is (see the module docs); `Err` refuses the stream.
    async fn authenticate(&self, caller: &Caller) -> Result<Option<Identity>, Status> {
        let remote = caller
            .remote
            .map(|r| r.to_string())
            .unwrap_or_else(|| "unknown".into());
        let result = match &self.shared.security {
            Some(security) => security.authn.authenticate(caller).await,
            None => Ok(None),
        };
        match result {
            Ok(Some(id)) => Ok(Some(id)),
            Ok(None) if self.transport == Transport::Tls => {
                tracing::warn!(%remote, "xDS stream refused: no token or client certificate on the TLS port");
                metrics::counter!("pilot_xds_auth_failures").increment(1);
                Err(Status::unauthenticated(
                    "authenticate with a bowline token (authorization: Bearer) or a client certificate",
                ))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(%remote, error = %e, "xDS stream refused: authentication failed");
                metrics::counter!("pilot_xds_auth_failures").increment(1);
                Err(Status::unauthenticated(format!(
                    "authentication failed: {e}"
                )))
            }
        }
    }

    /// The proxy of a first request, checked against the proven identity.
    fn admit(
        &self,
        node: Option<&xds_core::Node>,
        identity: Option<Identity>,
    ) -> Result<Proxy, Status> {
        let mut proxy = proxy_from_node(node)?;
        if let Some(id) = &identity {
            if let Err(e) = proxy.check_identity(id) {
                tracing::warn!(node = %proxy.id, error = %e, "xDS stream refused: identity does not match the node");
                metrics::counter!("pilot_xds_auth_failures").increment(1);
                return Err(Status::permission_denied(e.to_string()));
            }
            proxy.workload_certificate =
                self.transport == Transport::Tls && self.shared.security.is_some();
        }
        proxy.identity = identity;
        Ok(proxy)
    }

    /// The gRPC service to add to a tonic server (see `transport`).
    pub fn into_service(self) -> transport::AdsService {
        transport::AdsService::new(self)
    }
}

/// The two ADS request types, one per protocol variant.
pub trait AdsRequest: prost::Message + Default + Send + 'static {
    /// Incremental (delta) rather than state of the world.
    const DELTA: bool;

    fn node(&self) -> Option<&xds_core::Node>;

    /// Serves a stream whose first request was `first`, until the client goes or the stream
    /// fails.
    fn serve(
        shared: Arc<Shared>,
        connection: Arc<Connection>,
        first: Self,
        requests: Requests<Self>,
        tx: mpsc::Sender<Outgoing>,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

impl AdsRequest for xds_discovery::DiscoveryRequest {
    const DELTA: bool = false;

    fn node(&self) -> Option<&xds_core::Node> {
        self.node.as_ref()
    }

    async fn serve(
        shared: Arc<Shared>,
        connection: Arc<Connection>,
        first: Self,
        requests: Requests<Self>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<(), Status> {
        sotw(&shared, connection, first, requests, &tx).await
    }
}

impl AdsRequest for xds_discovery::DeltaDiscoveryRequest {
    const DELTA: bool = true;

    fn node(&self) -> Option<&xds_core::Node> {
        self.node.as_ref()
    }

    async fn serve(
        shared: Arc<Shared>,
        connection: Arc<Connection>,
        first: Self,
        requests: Requests<Self>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<(), Status> {
        delta(&shared, connection, first, requests, &tx).await
    }
}

impl Ads {
    /// Opens an ADS stream (either variant) for an authenticated caller: the responses are
    /// returned at once; the first request (which names the node) is read by the stream's
    /// task, which then serves the stream.
    pub async fn open<Q: AdsRequest>(
        &self,
        caller: Caller,
        mut requests: Requests<Q>,
    ) -> Result<mpsc::Receiver<Outgoing>, Status> {
        let identity = self.authenticate(&caller).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shared = self.shared.clone();
        let ads = self.clone();
        tokio::spawn(async move {
            let first = match requests.message().await {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(Box::new(status))).await;
                    return;
                }
            };
            let proxy = match ads.admit(first.node(), identity) {
                Ok(p) => p,
                Err(status) => {
                    let _ = tx.send(Err(Box::new(status))).await;
                    return;
                }
            };
            let connection = shared.connect(proxy, Q::DELTA, ads.transport);
            let result = Q::serve(
                shared.clone(),
                connection.clone(),
                first,
                requests,
                tx.clone(),
            )
            .await;
            shared.registry.remove(connection.id);
            match &result {
                Ok(()) => {
                    tracing::info!(proxy = %connection.proxy.id, connection = connection.id, "proxy disconnected")
                }
                Err(status) => {
                    tracing::info!(proxy = %connection.proxy.id, connection = connection.id, code = ?status.code(), message = status.message(), "proxy stream ended")
                }
            }
            if let Err(status) = result {
                let _ = tx.send(Err(Box::new(status))).await;
            }
        });
        Ok(rx)
    }
}

impl Shared {
    fn connect(&self, proxy: Proxy, delta: bool, transport: Transport) -> Arc<Connection> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            proxy = %proxy.id,
            connection = id,
            delta,
            ?transport,
            identity = proxy.identity.as_ref().map(|i| i.spiffe_id()).unwrap_or_default(),
            "proxy connected"
        );
        let connection = Arc::new(Connection::new(id, proxy, delta, transport));
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
    let mut proxy = Proxy::parse(&node.id, &metadata).map_err(|e| {
        tracing::warn!(node = %node.id, error = %e, "rejected proxy");
        Status::invalid_argument(e.to_string())
    })?;
    if let Some(l) = &node.locality {
        proxy.set_node_locality(crate::model::proxy::Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            subzone: l.sub_zone.clone(),
        });
    }
    Ok(proxy)
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

/// Frames and queues a response, or ends the stream quietly when the client has gone.
async fn send<T: prost::Message>(tx: &mpsc::Sender<Outgoing>, message: T) -> Result<(), Status> {
    let framed = transport::frame(&message)?;
    tx.send(Ok(framed))
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

/// The secrets of a stream: `default` only for a proxy that holds a workload certificate, in
/// the trust domain of the configuration it is served (`snapshot`).
fn secrets_for(shared: &Shared, proxy: &Proxy, snapshot: &Snapshot) -> Secrets {
    let ca = shared.security.as_ref().map(|s| s.ca.clone());
    let identity = proxy
        .identity
        .clone()
        .filter(|_| proxy.workload_certificate);
    let mut secrets = Secrets::new(ca, identity);
    secrets.follow_trust_domain(&snapshot.model.mesh.trust_domain);
    secrets
}

/// After a new snapshot: when the mesh's trust domain changed, the stream's identity moves to
/// it and a held certificate is replaced at once, so the proxy's certificate and the SAN
/// matchers and principals of its configuration name the same trust domain. `true` when the
/// secrets changed.
fn follow_trust_domain(
    secrets: &mut Secrets,
    snapshot: &Snapshot,
    connection: &Connection,
) -> bool {
    let trust_domain = &snapshot.model.mesh.trust_domain;
    if !secrets.follow_trust_domain(trust_domain) {
        return false;
    }
    tracing::info!(proxy = %connection.proxy.id, %trust_domain, "the mesh's trust domain changed: replacing the workload certificate");
    renew(secrets, connection)
}

/// The set a type's responses are made from.
fn set_of<'a>(
    t: ResourceType,
    resources: &'a ProxyResources,
    secrets: &'a Secrets,
) -> &'a Arc<TypedResources> {
    if t == ResourceType::Sds {
        secrets.resources()
    } else {
        resources.get(t)
    }
}

/// After clusters were sent: Envoy warms each one it receives until its endpoints arrive, even
/// when they did not change (envoyproxy/envoy#13009), so their assignments are sent again
/// after them, as istiod pushes EDS after CDS.
fn resend_assignments(stream: &mut Stream, clusters: impl IntoIterator<Item = String>) {
    stream
        .watches
        .entry(ResourceType::Eds)
        .or_default()
        .resend
        .extend(clusters);
}

/// Makes sure the secrets a watch names exist (issuing the first certificate), and records
/// them for debug views.
fn prepare_secrets(secrets: &mut Secrets, stream: &Stream, connection: &Connection) {
    let Some(watch) = stream.watches.get(&ResourceType::Sds) else {
        return;
    };
    if let Err(e) = secrets.ensure(&watch.names) {
        tracing::error!(proxy = %connection.proxy.id, error = %e, "issuing a workload certificate failed");
    }
    connection.set_secrets(secrets.dump.clone());
}

/// Sleeps until the stream's certificate is due for renewal (forever without one).
async fn renewal(secrets: &Secrets) {
    match secrets.renew_in() {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Renews the stream's certificate; on failure retries in 10 s (the old one stays valid until
/// its expiry).
fn renew(secrets: &mut Secrets, connection: &Connection) -> bool {
    match secrets.renew() {
        Ok(()) => {
            connection.set_secrets(secrets.dump.clone());
            true
        }
        Err(e) => {
            tracing::error!(proxy = %connection.proxy.id, error = %e, "renewing a workload certificate failed");
            false
        }
    }
}

async fn sotw(
    shared: &Shared,
    connection: Arc<Connection>,
    first: xds_discovery::DiscoveryRequest,
    mut requests: Requests<xds_discovery::DiscoveryRequest>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), Status> {
    let mut rx = shared.snapshots.clone();
    let (snapshot, mut resources) = current(shared, &mut rx, &connection.proxy).await?;
    let mut secrets = secrets_for(shared, &connection.proxy, &snapshot);
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
                if t == ResourceType::Sds {
                    prepare_secrets(&mut secrets, &stream, &connection);
                }
                let set = set_of(t, &resources, &secrets);
                if ack == Ack::Initial
                    && !request.version_info.is_empty()
                    && stream.sotw_version(t, set).as_deref() == Some(request.version_info.as_str())
                {
                    // Reconnected with exactly what we would send: nothing to do.
                    stream.mark_synced(t, &request.version_info);
                } else if (changed || ack == Ack::Initial)
                    && let Some(r) = stream.sotw_response(t, set, true, None)
                {
                    send(tx, r).await?;
                    if t == ResourceType::Cds {
                        resend_assignments(&mut stream, set.items.keys().cloned());
                        let eds = resources.get(ResourceType::Eds);
                        if let Some(r) = stream.sotw_response(ResourceType::Eds, eds, false, None) {
                            send(tx, r).await?;
                        }
                    }
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
                for t in ResourceType::CONFIG {
                    if let Some(r) = stream.sotw_response(t, resources.get(t), false, Some(snapshot.changed_at)) {
                        send(tx, r).await?;
                        if t == ResourceType::Cds {
                            // EDS is next in CONFIG.
                            resend_assignments(&mut stream, resources.get(t).items.keys().cloned());
                        }
                    }
                }
                if follow_trust_domain(&mut secrets, &snapshot, &connection)
                    && let Some(r) = stream.sotw_response(ResourceType::Sds, secrets.resources(), false, None)
                {
                    send(tx, r).await?;
                }
            }
            _ = renewal(&secrets) => {
                if renew(&mut secrets, &connection)
                    && let Some(r) = stream.sotw_response(ResourceType::Sds, secrets.resources(), false, None)
                {
                    send(tx, r).await?;
                }
            }
        }
    }
}

async fn delta(
    shared: &Shared,
    connection: Arc<Connection>,
    first: xds_discovery::DeltaDiscoveryRequest,
    mut requests: Requests<xds_discovery::DeltaDiscoveryRequest>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), Status> {
    let mut rx = shared.snapshots.clone();
    let (snapshot, mut resources) = current(shared, &mut rx, &connection.proxy).await?;
    let mut secrets = secrets_for(shared, &connection.proxy, &snapshot);
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
                    watch.known.declare(name.clone(), version.clone());
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
                    watch.known.forget(name);
                }
            }
            if t == ResourceType::Sds {
                prepare_secrets(&mut secrets, &stream, &connection);
            }
            if ack != Ack::Stale || force {
                let since = None;
                // A first request is always answered, even when the client already holds
                // everything (it waits for a response to finish initialising).
                if let Some(r) =
                    stream.delta_response(t, set_of(t, &resources, &secrets), force, since)
                {
                    let clusters: Vec<String> = if t == ResourceType::Cds {
                        r.resources.iter().map(|c| c.name.clone()).collect()
                    } else {
                        Vec::new()
                    };
                    send(tx, r).await?;
                    if !clusters.is_empty() {
                        resend_assignments(&mut stream, clusters);
                        let eds = resources.get(ResourceType::Eds);
                        if let Some(r) = stream.delta_response(ResourceType::Eds, eds, false, None)
                        {
                            send(tx, r).await?;
                        }
                    }
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
                for t in ResourceType::CONFIG {
                    if let Some(r) = stream.delta_response(t, resources.get(t), false, Some(snapshot.changed_at)) {
                        if t == ResourceType::Cds {
                            // EDS is next in CONFIG.
                            resend_assignments(&mut stream, r.resources.iter().map(|c| c.name.clone()));
                        }
                        send(tx, r).await?;
                    }
                }
                if follow_trust_domain(&mut secrets, &snapshot, &connection)
                    && let Some(r) = stream.delta_response(ResourceType::Sds, secrets.resources(), false, None)
                {
                    send(tx, r).await?;
                }
            }
            _ = renewal(&secrets) => {
                if renew(&mut secrets, &connection)
                    && let Some(r) = stream.delta_response(ResourceType::Sds, secrets.resources(), false, None)
                {
                    send(tx, r).await?;
                }
            }
        }
    }
}
