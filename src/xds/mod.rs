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
//! changes (the certificate always names the trust domain of the configuration served), and
//! for a gateway proven on the TLS port the credentials its own namespace's Gateways name for
//! it (`credentials`), following the Secrets as they change.
//! A stream whose first request asks for one of Istio's debug types (`debug`: what `istioctl
//! proxy-status` asks for) is a debug caller, answered request by request and never a proxy.
//! `stream` is the one loop that serves a stream of either protocol variant; `subscription`
//! what a stream asks for of each type and what its client holds; `status` records what each
//! proxy was sent, ACKed and NACKed; `transport` frames ADS requests and responses. The
//! snapshots streams follow come from the push loop (`crate::push`); the TLS port's transport
//! is `crate::ca::serving`.
//!
//! Generating configuration is CPU work and never runs on the runtime's threads: a stream
//! that needs resources its class does not have yet waits (asynchronously) for one build per
//! class and generation, run on the blocking pool with at most one build per CPU at a time.
//! A slow proxy holds up only its own stream: each stream has a small response buffer and
//! always moves to the newest snapshot, skipping those it was too slow to see.

pub mod credentials;
pub mod debug;
pub mod sds;
pub mod status;
pub mod stream;
pub mod subscription;
pub mod transport;
pub mod untrusted;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::ca::Ca;
use crate::ca::authn::{Authenticators, Caller};
use crate::cache::{Cache, ClassKey, ProxyResources, Snapshot};
use crate::envoy::struct_to_json;
use crate::model::{Identity, Proxy, SecretSource};
use status::{Connection, Registry};
pub use stream::AdsRequest;
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
    cells: Mutex<HashMap<(ClassKey, u64), Build>>,
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
    /// Istio's debug views, for `istio.io/debug` requests (installed by the admin stage).
    pub debug_views: std::sync::OnceLock<Arc<dyn debug::DebugViews>>,
    /// Counts forced pushes: each stream resends everything it serves when it changes.
    forced_pushes: watch::Sender<u64>,
    next_connection: AtomicU64,
    builds: Builds,
    /// Set when the server shuts down: every stream then ends cleanly.
    closing: watch::Sender<bool>,
}

impl Shared {
    /// Has every connected proxy sent all of its configuration and secrets again, changed or
    /// not (istiod's forced push of `/debug/adsz?push=true`); returns how many streams there
    /// are to do it.
    pub fn push_all(&self) -> usize {
        self.forced_pushes.send_modify(|n| *n += 1);
        self.registry.connections().len()
    }

    /// Notified of each [`Shared::push_all`].
    pub fn forced_pushes(&self) -> watch::Receiver<u64> {
        self.forced_pushes.subscribe()
    }

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
            debug_views: std::sync::OnceLock::new(),
            forced_pushes: watch::Sender::new(0),
            next_connection: AtomicU64::new(1),
            builds: Builds {
                permits: tokio::sync::Semaphore::new(cpus),
                cells: Mutex::new(HashMap::new()),
                newest: AtomicU64::new(0),
            },
            closing: watch::channel(false).0,
        })
    }

    /// Ends every stream with status OK (the proxies reconnect at once, to another replica
    /// behind the same address), as the server stops.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Shared::close_streams`] was called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// The proxy's resources at `snapshot`: from the cache when its class is up to date,
    /// else from the one build of its class at this generation (started here if none is).
    pub async fn resources(
        &self,
        snapshot: &Arc<Snapshot>,
        proxy: &Proxy,
    ) -> Result<Arc<ProxyResources>, Status> {
        if let Some(r) = self.cache.ready(snapshot, proxy) {
            return Ok(r);
        }
        let generation = snapshot.generation;
        let class = ClassKey::of(&snapshot.model, proxy);
        let cell = {
            let mut cells = self.builds.cells.lock().unwrap_or_else(|p| p.into_inner());
            if self.builds.newest.fetch_max(generation, Ordering::Relaxed) < generation {
                cells.retain(|(_, g), _| *g + 1 >= generation);
            }
            cells
                .entry((class.clone(), generation))
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
                // The proxies waiting on this build are of one class at `snapshot`; the newest
                // is built only if they still are (their workloads' ports may have changed).
                let newest = self.snapshots.borrow().clone();
                let snapshot = if newest.generation > snapshot.generation
                    && ClassKey::of(&newest.model, proxy) == class
                {
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
        // pilot-agent holds a certificate of its own whichever port its xDS proxy uses, and
        // serves it to its Envoy: mutual TLS is configured as istiod configures it (a proxy
        // whose agent has none fails its handshakes rather than falling back to plaintext).
        if proxy.secret_source == SecretSource::Agent {
            proxy.workload_certificate = true;
        }
        proxy.identity = identity;
        Ok(proxy)
    }

    /// The gRPC service to add to a tonic server (see `transport`).
    pub fn into_service(self) -> transport::AdsService {
        transport::AdsService::new(self)
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
        let peer = caller.remote;
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
            if debug::is_debug(first.type_url()) {
                tracing::debug!(caller = %proxy.id, "debug caller connected");
                if let Err(status) =
                    stream::serve_debug(&shared, &proxy, first, requests, &tx).await
                {
                    let _ = tx.send(Err(Box::new(status))).await;
                }
                return;
            }
            let connection = shared.connect(proxy, Q::DELTA, ads.transport, peer);
            let result = stream::serve(&shared, connection.clone(), first, requests, &tx).await;
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
    fn connect(
        &self,
        proxy: Proxy,
        delta: bool,
        transport: Transport,
        peer: Option<std::net::SocketAddr>,
    ) -> Arc<Connection> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            proxy = %proxy.id,
            connection = id,
            delta,
            ?transport,
            identity = proxy.identity.as_ref().map(|i| i.spiffe_id()).unwrap_or_default(),
            "proxy connected"
        );
        let connection = Arc::new(Connection::new(id, proxy, delta, transport).with_peer(peer));
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
        tracing::warn!(node = %untrusted::clip(&node.id, untrusted::LOG_BYTES), error = %e, "rejected proxy");
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
