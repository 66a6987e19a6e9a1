//! Per-connection protocol status: what each proxy was sent, what it ACKed, its last NACK,
//! whether it holds a workload certificate, and the gateway credentials it was refused. Read
//! by `/debug/syncz` and by the metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use envoy_types::pb::google::protobuf::Any;

use super::Transport;
use crate::cache::ProxyResources;
use crate::envoy::ResourceType;
use crate::model::{Diagnostic, Proxy};

/// A rejected push as Envoy reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nack {
    pub message: String,
    /// Resource names in the rejected response.
    pub resources: Vec<String>,
    /// Version of the rejected response.
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    pub sent: Option<String>,
    pub acked: Option<String>,
    pub nack: Option<Nack>,
    /// Number of responses sent for this type on this connection.
    pub pushes: u64,
    /// When the version `sent` was sent (or found to be held already), Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at_unix: Option<u64>,
    /// When the version `sent` was sent (or found to be held already).
    #[serde(skip)]
    pub sent_at: Option<SystemTime>,
    /// The nonce of the last response of this type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce_sent: Option<String>,
    /// The nonce of the last response the proxy ACKed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce_acked: Option<String>,
    /// The resource names the proxy asks for by name (empty for a wildcard subscription).
    #[serde(skip)]
    pub watched: Option<Vec<String>>,
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Status of one connected proxy.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    pub proxy: Proxy,
    pub delta: bool,
    pub transport: Transport,
    pub connected_at: SystemTime,
    /// The proxy's address as the stream saw it, when known.
    pub peer: Option<SocketAddr>,
    types: Mutex<BTreeMap<ResourceType, TypeStatus>>,
    /// The secrets last sent, private keys redacted (for config dumps).
    secrets: Mutex<BTreeMap<String, Any>>,
    /// The configuration the stream serves now (for its diagnostics).
    resources: Mutex<Option<Arc<ProxyResources>>>,
    /// Credentials asked for and refused, with why.
    refused_credentials: Mutex<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub proxy: String,
    pub node_id: String,
    pub connection: u64,
    pub delta: bool,
    pub transport: Transport,
    /// The SPIFFE ID the proxy proved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Whether the proxy is served a workload certificate (it proved its identity on the TLS
    /// port). Without one, the mutual TLS its configuration asks for fails closed; the
    /// diagnostics say where.
    pub workload_certificate: bool,
    pub connected_at_unix: u64,
    pub types: BTreeMap<ResourceType, TypeStatus>,
    /// What went wrong generating the proxy's configuration: resources skipped, a set
    /// rejected (the proxy then keeps its last good configuration).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// Gateway credentials the proxy asked for and may not receive, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused_credentials: BTreeMap<String, String>,
}

impl Connection {
    pub fn new(id: u64, proxy: Proxy, delta: bool, transport: Transport) -> Connection {
        Connection {
            id,
            proxy,
            delta,
            transport,
            connected_at: SystemTime::now(),
            peer: None,
            types: Mutex::new(BTreeMap::new()),
            secrets: Mutex::new(BTreeMap::new()),
            resources: Mutex::new(None),
            refused_credentials: Mutex::new(BTreeMap::new()),
        }
    }

    /// The connection, with the proxy's address as the stream saw it.
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Connection {
        self.peer = peer;
        self
    }

    /// The configuration the stream serves now.
    pub fn resources(&self) -> Option<Arc<ProxyResources>> {
        self.resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Each type's protocol status.
    pub fn types(&self) -> BTreeMap<ResourceType, TypeStatus> {
        self.types.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the configuration the stream serves now.
    pub fn set_resources(&self, resources: Arc<ProxyResources>) {
        *self.resources.lock().unwrap_or_else(|p| p.into_inner()) = Some(resources);
    }

    /// Records the (redacted) secrets sent.
    pub fn set_secrets(&self, secrets: BTreeMap<String, Any>) {
        *self.secrets.lock().unwrap_or_else(|p| p.into_inner()) = secrets;
    }

    /// Records the credentials refused to the stream.
    pub fn set_refused_credentials(&self, refused: BTreeMap<String, String>) {
        *self
            .refused_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = refused;
    }

    /// The secrets last sent, private keys redacted.
    pub fn secrets(&self) -> BTreeMap<String, Any> {
        self.secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update(&self, t: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        let mut types = self.types.lock().unwrap_or_else(|p| p.into_inner());
        f(types.entry(t).or_default());
    }

    /// What went wrong generating the configuration the stream serves now.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.diagnostics_for(&self.proxy.name))
            .unwrap_or_default()
    }

    pub fn view(&self) -> ConnectionView {
        ConnectionView {
            proxy: self.proxy.short_id(),
            node_id: self.proxy.id.clone(),
            connection: self.id,
            delta: self.delta,
            transport: self.transport,
            identity: self.proxy.identity.as_ref().map(|i| i.spiffe_id()),
            workload_certificate: self.proxy.workload_certificate,
            connected_at_unix: self
                .connected_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            types: self.types.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            diagnostics: self.diagnostics(),
            refused_credentials: self
                .refused_credentials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Every live connection (proxies only: debug callers are not registered). `pilot_xds` counts
/// them by the Istio version the proxy reports (its `ISTIO_VERSION`; empty when it reports
/// none), as istiod.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    /// Live connections by proxy version; changed under the `connections` lock.
    versions: Mutex<BTreeMap<String, u64>>,
}

impl Registry {
    pub fn insert(&self, c: Arc<Connection>) {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        self.count(&c, true);
        map.insert(c.id, c);
    }

    pub fn remove(&self, id: u64) {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.remove(&id) {
            self.count(&c, false);
        }
    }

    fn count(&self, c: &Connection, connected: bool) {
        let version = c.proxy.istio_version.clone().unwrap_or_default();
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let n = versions.entry(version.clone()).or_default();
        *n = if connected {
            *n + 1
        } else {
            n.saturating_sub(1)
        };
        metrics::gauge!("pilot_xds", "version" => version).set(*n as f64);
    }

    /// The newest live connection of a proxy, by `<pod>.<namespace>` or full node id.
    pub fn connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .rev()
            .find(|c| c.proxy.short_id() == id || c.proxy.id == id)
            .cloned()
    }

    pub fn views(&self) -> Vec<ConnectionView> {
        self.connections().iter().map(|c| c.view()).collect()
    }

    /// Every live connection, oldest first.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
