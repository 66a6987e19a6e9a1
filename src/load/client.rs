//! One simulated proxy: an ADS client that subscribes and ACKs as Envoy does.
//!
//! Envoy's order is followed: a wildcard CDS request (carrying the node) first; on each CDS
//! response the EDS subscription becomes the EDS clusters' names; the first LDS request goes
//! out once the clusters are warm (the first EDS response, or the CDS response when no cluster
//! uses EDS); on each LDS response the RDS subscription becomes the route configurations the
//! listeners' HTTP connection managers name. Every response is ACKed — never NACKed; a
//! resource that does not decode is counted as an error. State of the world sends the full
//! subscription with every request; delta sends subscribe/unsubscribe differences. After a
//! lost stream the proxy reconnects with jittered exponential backoff (Envoy's, with
//! bowline's bootstrap settings: 200 ms base, 2 s cap) and, like Envoy, resends every
//! subscription with what it holds (SotW: the last accepted version; delta: the resource
//! versions).
//!
//! After each ACK the proxy checks the active expectations (what a converged proxy holds) and
//! records the ACK time of the first one that satisfies each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::decode::{Body, Decoder, Info};
use super::mesh::{Applies, ProxyIdentity};
use super::scenario::XdsMode;
use crate::envoy::ResourceType;

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Connection attempts one proxy makes in a run, at most.
const MAX_ATTEMPTS: u32 = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

const CDS: usize = 0;
const EDS: usize = 1;
const LDS: usize = 2;
const RDS: usize = 3;

/// The state slot of a configuration type; secrets and name tables are never requested.
fn index(t: ResourceType) -> Option<usize> {
    match t {
        ResourceType::Cds => Some(CDS),
        ResourceType::Eds => Some(EDS),
        ResourceType::Lds => Some(LDS),
        ResourceType::Rds => Some(RDS),
        ResourceType::Sds | ResourceType::Nds => None,
    }
}

/// A check a converged proxy passes.
#[derive(Debug, Clone)]
pub enum Check {
    /// Some route configuration contains the marker with this id.
    RouteMarker(u32),
    Cluster(String),
    Endpoint {
        cluster: String,
        address: String,
        present: bool,
    },
}

/// One change's expectation, and when each proxy met it.
#[derive(Debug)]
pub struct Expectation {
    pub description: String,
    pub t0: Instant,
    pub applies: Applies,
    pub checks: Vec<Check>,
    /// Per proxy: the ACK time at which the checks first held.
    pub met: Vec<OnceLock<Instant>>,
    pub met_count: AtomicU64,
}

impl Expectation {
    pub fn new(
        description: String,
        t0: Instant,
        applies: Applies,
        checks: Vec<Check>,
        proxies: usize,
    ) -> Expectation {
        Expectation {
            description,
            t0,
            applies,
            checks,
            met: (0..proxies).map(|_| OnceLock::new()).collect(),
            met_count: AtomicU64::new(0),
        }
    }
}

/// Everything the proxies of one run share.
pub struct Shared {
    /// `http://host:port` of the xDS server.
    pub uri: String,
    pub mode: XdsMode,
    pub decoder: Decoder,
    pub active: RwLock<Arc<Vec<Arc<Expectation>>>>,
    pub epoch: Instant,
    /// Nanoseconds after `epoch` of the newest response any proxy received.
    pub last_response: AtomicU64,
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    fn note_response(&self, at: Instant) {
        let ns = at.duration_since(self.epoch).as_nanos() as u64;
        self.last_response.fetch_max(ns, Ordering::Relaxed);
    }

    /// Time since any proxy last received a response.
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_nanos(self.last_response.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Counters of one proxy.
#[derive(Debug, Default)]
pub struct Stats {
    pub responses: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub acks: AtomicU64,
    pub streams: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
}

/// Connection progress of one proxy.
#[derive(Debug, Default, Clone)]
pub struct Status {
    /// When the proxy first started connecting.
    pub started_at: Option<Instant>,
    /// When its first stream opened.
    pub connected_at: Option<Instant>,
    /// When it first held a response of every type it subscribes to.
    pub synced_at: Option<Instant>,
    /// Current stream: when it opened (its initial requests sent).
    pub stream_opened_at: Option<Instant>,
    /// Current stream: the newest ACK.
    pub stream_last_ack: Option<Instant>,
    /// Current stream: every requested type answered since its newest subscription change.
    pub stream_in_sync: bool,
    pub last_error: Option<String>,
}

/// A simulated proxy as the driver sees it.
pub struct Proxy {
    pub identity: ProxyIdentity,
    /// Stops reading responses once in sync (see `ProxySpec::stalled`).
    pub stalled: bool,
    pub stats: Stats,
    pub status: Mutex<Status>,
    node: xds_core::Node,
}

impl Proxy {
    pub fn new(identity: ProxyIdentity, stalled: bool) -> Proxy {
        let node = xds_core::Node {
            id: identity.node_id.clone(),
            cluster: format!("{}.{}", identity.app, identity.namespace),
            metadata: Some(crate::envoy::json_to_struct(&identity.metadata)),
            user_agent_name: "envoy".into(),
            ..Default::default()
        };
        Proxy {
            identity,
            stalled,
            stats: Stats::default(),
            status: Mutex::new(Status::default()),
            node,
        }
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A resource the proxy holds.
#[derive(Debug, Clone)]
struct Held {
    /// Delta: the resource version; state of the world: empty.
    version: String,
    body: Arc<Body>,
}

#[derive(Debug, Default)]
struct TypeState {
    items: BTreeMap<Arc<str>, Held>,
    /// EDS/RDS: the subscribed names.
    names: BTreeSet<String>,
    /// A request for the type was sent (on any stream).
    requested: bool,
    /// SotW: the last accepted version and the newest nonce.
    version_info: String,
    nonce: String,
    /// A request that expects an answer is outstanding on the current stream.
    pending: bool,
    /// Answered on the current stream.
    answered: bool,
}

/// What a proxy holds, kept across reconnects (as Envoy keeps its config).
#[derive(Debug, Default)]
struct State {
    types: [TypeState; 4],
}

impl State {
    /// The subscription that follows from a response of type `i` (EDS names from clusters, RDS
    /// names from listeners), if it differs from the current one.
    fn follow(&self, i: usize) -> Option<(usize, BTreeSet<String>)> {
        let (j, names) = match i {
            CDS => (EDS, self.eds_names()),
            LDS => (RDS, self.rds_names()),
            _ => return None,
        };
        (names != self.types[j].names).then_some((j, names))
    }

    /// Whether listeners are to be requested after a response of type `i`: once the clusters
    /// are warm (their endpoints arrived, or none use EDS), as Envoy does. Marks them requested.
    fn listeners_due(&mut self, i: usize) -> bool {
        let warm = i == EDS || (i == CDS && self.types[EDS].names.is_empty());
        let lds = &mut self.types[LDS];
        if lds.requested || !warm {
            return false;
        }
        lds.requested = true;
        lds.pending = true;
        true
    }

    fn eds_names(&self) -> BTreeSet<String> {
        self.types[CDS]
            .items
            .values()
            .filter_map(|h| match &h.body.info {
                Info::Cluster { eds } => eds.clone(),
                _ => None,
            })
            .collect()
    }

    fn rds_names(&self) -> BTreeSet<String> {
        self.types[LDS]
            .items
            .values()
            .flat_map(|h| match &h.body.info {
                Info::Listener { routes } => routes.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn holds(&self, check: &Check) -> bool {
        match check {
            Check::RouteMarker(id) => self.types[RDS]
                .items
                .values()
                .any(|h| h.body.markers.contains(id)),
            Check::Cluster(name) => self.types[CDS].items.contains_key(name.as_str()),
            Check::Endpoint {
                cluster,
                address,
                present,
            } => {
                let has = self.types[EDS]
                    .items
                    .get(cluster.as_str())
                    .is_some_and(|h| match &h.body.info {
                        Info::Endpoints { addresses } => addresses.binary_search(address).is_ok(),
                        _ => false,
                    });
                has == *present
            }
        }
    }

    /// Every requested type has been answered since its newest subscription change.
    fn in_sync(&self) -> bool {
        self.types[CDS].requested
            && self.types[LDS].requested
            && self
                .types
                .iter()
                .all(|t| !t.requested || (t.answered && !t.pending))
    }
}

/// Why a stream ended.
enum End {
    Stopped,
    Lost(String),
}

type Client = AggregatedDiscoveryServiceClient<Channel>;

/// Runs one proxy until the run stops.
pub async fn run(shared: Arc<Shared>, proxy: Arc<Proxy>) {
    let mut stop = shared.stop.clone();
    let mut state = State::default();
    let mut rng = (proxy.identity.index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut failures: u32 = 0;
    proxy.update(|s| s.started_at = Some(Instant::now()));
    for attempt in 0..MAX_ATTEMPTS {
        if *stop.borrow() {
            return;
        }
        if attempt > 0 {
            // Envoy's jittered exponential backoff: uniform in [0, min(base * 2^n, max)).
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << failures.min(16))
                .min(BACKOFF_MAX);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let wait = ceiling.mul_f64((rng % 10_000) as f64 / 10_000.0);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
        let client = match connect(&shared.uri).await {
            Ok(c) => c,
            Err(e) => {
                proxy.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                proxy.update(|s| s.last_error = Some(e));
                failures += 1;
                continue;
            }
        };
        let end = match shared.mode {
            XdsMode::Sotw => sotw(&shared, &proxy, &mut state, client, &mut stop).await,
            XdsMode::Delta => delta(&shared, &proxy, &mut state, client, &mut stop).await,
        };
        match end {
            End::Stopped => return,
            End::Lost(why) => {
                proxy.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                proxy.update(|s| {
                    s.last_error = Some(why);
                    s.stream_in_sync = false;
                });
                // A stream that worked resets the backoff, as in Envoy.
                failures = 1;
            }
        }
    }
}

async fn connect(uri: &str) -> Result<Client, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(uri.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Marks the start of a stream: every type is unanswered on it.
fn open_stream(proxy: &Proxy, state: &mut State) {
    for t in &mut state.types {
        t.answered = false;
        t.pending = t.requested;
        t.nonce.clear();
    }
    proxy.stats.streams.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    proxy.update(|s| {
        s.connected_at.get_or_insert(now);
        s.stream_opened_at = Some(now);
        s.stream_last_ack = None;
        s.stream_in_sync = false;
    });
}

/// Bookkeeping after an ACK: counters, sync state, expectations.
fn after_ack(shared: &Shared, proxy: &Proxy, state: &State, acked_at: Instant) {
    proxy.stats.acks.fetch_add(1, Ordering::Relaxed);
    let in_sync = state.in_sync();
    proxy.update(|s| {
        s.stream_last_ack = Some(acked_at);
        s.stream_in_sync = in_sync;
        if in_sync && s.synced_at.is_none() {
            s.synced_at = Some(acked_at);
        }
    });
    let active = shared
        .active
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let me = proxy.identity.index;
    for e in active.iter() {
        let Some(slot) = e.met.get(me) else { continue };
        if slot.get().is_some() || !e.applies.includes(&proxy.identity.namespace) {
            continue;
        }
        if e.checks.iter().all(|c| state.holds(c)) && slot.set(acked_at).is_ok() {
            e.met_count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Decodes a response's resources; counts what fails.
fn decode_all(
    shared: &Shared,
    proxy: &Proxy,
    t: ResourceType,
    resources: Vec<envoy_types::pb::google::protobuf::Any>,
) -> Vec<Arc<Body>> {
    let mut out = Vec::with_capacity(resources.len());
    for any in resources {
        match shared.decoder.intern(t, any) {
            Ok(b) => out.push(b),
            Err(e) => {
                proxy.stats.errors.fetch_add(1, Ordering::Relaxed);
                proxy.update(|s| s.last_error = Some(e.to_string()));
            }
        }
    }
    out
}

/// The requests that open a stream: CDS (with the node), then every other type the proxy
/// subscribed to before.
fn first_requests<R>(state: &mut State, request: impl Fn(&State, usize, bool) -> R) -> Vec<R> {
    state.types[CDS].requested = true;
    let mut initial = vec![request(state, CDS, true)];
    for i in [EDS, LDS, RDS] {
        if state.types[i].requested {
            initial.push(request(state, i, false));
        }
    }
    initial
}

/// Counts a response in the statistics; its type and state slot, or `None` (counted as a
/// protocol error) for a type the proxy never requested.
fn count_response(
    shared: &Shared,
    proxy: &Proxy,
    received: Instant,
    encoded_len: usize,
    type_url: &str,
) -> Option<(ResourceType, usize)> {
    shared.note_response(received);
    proxy.stats.responses.fetch_add(1, Ordering::Relaxed);
    proxy
        .stats
        .bytes
        .fetch_add(encoded_len as u64, Ordering::Relaxed);
    let found = ResourceType::from_type_url(type_url).and_then(|t| Some((t, index(t)?)));
    if found.is_none() {
        protocol_error(proxy, format!("response of unrequested type {type_url}"));
    }
    found
}

fn protocol_error(proxy: &Proxy, message: String) {
    proxy.stats.errors.fetch_add(1, Ordering::Relaxed);
    proxy.update(|s| s.last_error = Some(message));
}

async fn next_message<T>(
    proxy: &Proxy,
    responses: &mut tonic::Streaming<T>,
    stop: &mut watch::Receiver<bool>,
) -> Result<T, End> {
    if proxy.stalled && proxy.status().synced_at.is_some() {
        // Stuck: the stream stays open and nothing more is read from it, so the server's
        // sends to it stop at HTTP/2 flow control.
        let _ = stop.changed().await;
        return Err(End::Stopped);
    }
    tokio::select! {
        biased;
        _ = stop.changed() => Err(End::Stopped),
        m = responses.message() => match m {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(End::Lost("stream closed by the server".into())),
            Err(status) => Err(End::Lost(format!("stream error: {status}"))),
        },
    }
}

async fn open<Req, Resp, F, Fut>(
    proxy: &Proxy,
    state: &mut State,
    initial: Vec<Req>,
    call: F,
) -> Result<(mpsc::Sender<Req>, tonic::Streaming<Resp>), End>
where
    F: FnOnce(ReceiverStream<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
{
    let (tx, rx) = mpsc::channel(64);
    for r in initial {
        tx.send(r)
            .await
            .map_err(|_| End::Lost("request channel closed".into()))?;
    }
    let response = tokio::time::timeout(CONNECT_TIMEOUT, call(ReceiverStream::new(rx)))
        .await
        .map_err(|_| End::Lost("no response headers within 10s".into()))?
        .map_err(|s| End::Lost(format!("stream refused: {s}")))?;
    open_stream(proxy, state);
    Ok((tx, response.into_inner()))
}

async fn send<T>(tx: &mpsc::Sender<T>, r: T) -> Result<(), End> {
    tx.send(r)
        .await
        .map_err(|_| End::Lost("request channel closed".into()))
}

async fn sotw(
    shared: &Shared,
    proxy: &Proxy,
    state: &mut State,
    mut client: Client,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let request = |state: &State, i: usize, node: bool| xds_discovery::DiscoveryRequest {
        node: node.then(|| proxy.node.clone()),
        type_url: ResourceType::CONFIG[i].type_url().to_string(),
        version_info: state.types[i].version_info.clone(),
        response_nonce: state.types[i].nonce.clone(),
        resource_names: state.types[i].names.iter().cloned().collect(),
        ..Default::default()
    };
    // A new stream: CDS first (with the node), then every other subscription the proxy had.
    for t in &mut state.types {
        t.nonce.clear();
    }
    let initial = first_requests(state, request);
    let (tx, mut responses) = match open(proxy, state, initial, |rx| {
        client.stream_aggregated_resources(rx)
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return e,
    };
    loop {
        let response = match next_message(proxy, &mut responses, stop).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let received = Instant::now();
        let Some((t, i)) = count_response(
            shared,
            proxy,
            received,
            response.encoded_len(),
            &response.type_url,
        ) else {
            continue;
        };
        let bodies = decode_all(shared, proxy, t, response.resources);
        let ts = &mut state.types[i];
        if t.is_wildcard_type() {
            ts.items.clear();
        }
        for body in bodies {
            ts.items.insert(
                body.name.clone(),
                Held {
                    version: String::new(),
                    body,
                },
            );
        }
        if !t.is_wildcard_type() {
            let names = &ts.names;
            ts.items.retain(|n, _| names.contains(&**n));
        }
        ts.version_info = response.version_info;
        ts.nonce = response.nonce;
        ts.answered = true;
        ts.pending = false;
        // The ACK.
        if let Err(e) = send(&tx, request(state, i, false)).await {
            return e;
        }
        // Subscriptions that follow from what arrived.
        if let Some((j, names)) = state.follow(i) {
            let tj = &mut state.types[j];
            tj.items.retain(|n, _| names.contains(&**n));
            tj.names = names;
            if !tj.names.is_empty() || tj.requested {
                tj.requested = true;
                tj.pending = !tj.names.is_empty();
                if let Err(e) = send(&tx, request(state, j, false)).await {
                    return e;
                }
            }
        }
        // Listeners are requested once the clusters are warm.
        // Listeners are requested once the clusters are warm.
        if state.listeners_due(i)
            && let Err(e) = send(&tx, request(state, LDS, false)).await
        {
            return e;
        }
        after_ack(shared, proxy, state, Instant::now());
    }
}

async fn delta(
    shared: &Shared,
    proxy: &Proxy,
    state: &mut State,
    mut client: Client,
    stop: &mut watch::Receiver<bool>,
) -> End {
    // A new stream: each subscription again, with the versions held.
    let initial_request = |state: &State, i: usize, node: bool| {
        let ts = &state.types[i];
        xds_discovery::DeltaDiscoveryRequest {
            node: node.then(|| proxy.node.clone()),
            type_url: ResourceType::CONFIG[i].type_url().to_string(),
            resource_names_subscribe: ts.names.iter().cloned().collect(),
            initial_resource_versions: ts
                .items
                .iter()
                .map(|(n, h)| (n.to_string(), h.version.clone()))
                .collect(),
            ..Default::default()
        }
    };
    let initial = first_requests(state, initial_request);
    let (tx, mut responses) = match open(proxy, state, initial, |rx| {
        client.delta_aggregated_resources(rx)
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return e,
    };
    loop {
        let response = match next_message(proxy, &mut responses, stop).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let received = Instant::now();
        let Some((t, i)) = count_response(
            shared,
            proxy,
            received,
            response.encoded_len(),
            &response.type_url,
        ) else {
            continue;
        };
        let mut versions = Vec::with_capacity(response.resources.len());
        let mut anys = Vec::with_capacity(response.resources.len());
        for r in response.resources {
            match r.resource {
                Some(any) => {
                    versions.push((r.name, r.version));
                    anys.push(any);
                }
                None => protocol_error(
                    proxy,
                    format!("{} resource {:?} without a body", t.as_str(), r.name),
                ),
            }
        }
        // Decode one by one so names and versions stay paired even when one fails.
        for ((name, version), any) in versions.into_iter().zip(anys) {
            let Some(body) = decode_all(shared, proxy, t, vec![any]).pop() else {
                continue;
            };
            let key: Arc<str> = if name.is_empty() || *body.name == name {
                body.name.clone()
            } else {
                name.into()
            };
            state.types[i].items.insert(key, Held { version, body });
        }
        let ts = &mut state.types[i];
        for name in &response.removed_resources {
            ts.items.remove(name.as_str());
        }
        ts.answered = true;
        ts.pending = false;
        let ack = xds_discovery::DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            ..Default::default()
        };
        if let Err(e) = send(&tx, ack).await {
            return e;
        }
        if let Some((j, names)) = state.follow(i) {
            let tj = &mut state.types[j];
            let subscribe: Vec<String> = names.difference(&tj.names).cloned().collect();
            let unsubscribe: Vec<String> = tj.names.difference(&names).cloned().collect();
            tj.items.retain(|n, _| names.contains(&**n));
            tj.names = names;
            if !subscribe.is_empty() || (tj.requested && !unsubscribe.is_empty()) {
                tj.requested = true;
                // Only new names are answered; an unsubscription alone is not.
                tj.pending |= !subscribe.is_empty();
                let request = xds_discovery::DeltaDiscoveryRequest {
                    type_url: ResourceType::CONFIG[j].type_url().to_string(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                };
                if let Err(e) = send(&tx, request).await {
                    return e;
                }
            }
        }
        // Listeners are requested once the clusters are warm.
        if state.listeners_due(i)
            && let Err(e) = send(&tx, initial_request(state, LDS, false)).await
        {
            return e;
        }
        after_ack(shared, proxy, state, Instant::now());
    }
}
