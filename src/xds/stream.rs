//! One ADS stream, for both the state-of-the-world and the incremental (delta) protocol
//! variants: one loop serves either (`serve`), the variant deciding only how a request edits
//! the stream and what a response looks like (`AdsRequest`).
//!
//! Per the xDS protocol: every response carries a fresh nonce; a request whose `response_nonce`
//! is the type's last nonce is an ACK, or a NACK when it has `error_detail`; a request with an
//! older nonce is stale and ignored. A NACKed response is recorded and not sent again: the next
//! push of that type happens only when its content changes. Types are pushed in the order CDS,
//! EDS, LDS, RDS. What a stream asks for of each type, and what its client holds, is a
//! `Subscription`. A resource can be marked for sending again although the client holds its
//! version (`Watch::resend`): Envoy warms a cluster it receives until that cluster's endpoints
//! arrive, even when they did not change, so the assignments of the clusters a response
//! carried are sent after it, as istiod pushes EDS after CDS. A stream's certificate names the
//! trust domain of the configuration it is served, and is replaced when that changes; its
//! gateway credentials are those of the snapshot it follows, pushed when they change.
//! Every response of a type counts in istiod's push series (`push`: `pilot_xds_pushes`,
//! `pilot_xds_push_time`, `pilot_xds_send_time`, `pilot_xds_config_size_bytes`); every new
//! snapshot the stream takes up in `pilot_proxy_queue_time` (the wait since it was built), and
//! in `pilot_push_triggers` when it sends the proxy something; NACKs and stale nonces in
//! `pilot_total_xds_rejects` and `pilot_xds_expired_nonce`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::Shared;
use super::debug;
use super::sds::{self, Secrets};
use super::status::{Connection, Nack};
use super::subscription::{Held, Subscription};
use super::transport::{self, Outgoing, Requests};
use super::untrusted;
use crate::cache::{ProxyResources, Snapshot, TypedResources, Versioned};
use crate::envoy::{self, ResourceType};
use crate::model::{Proxy, SecretSource};
use crate::monitoring::Trigger;

/// Delivery state of one resource type on one stream.
#[derive(Debug, Default)]
pub struct Watch {
    pub subscription: Subscription,
    /// Nonce of the last response of this type.
    nonce: Option<String>,
    /// Change time behind the last response, until it is ACKed.
    pending_since: Option<Instant>,
    /// Version of the last response (state of the world) or of the full desired set (delta).
    sent_version: Option<String>,
    /// The resources the last response was computed from. When a push finds the same set
    /// (unchanged by the new snapshot) and the subscription did not change since, there is
    /// nothing to send and nothing is recomputed. Cleared when the subscription changes.
    seen: Option<Arc<TypedResources>>,
    /// Names the next response sends even if the client holds their version (the assignments
    /// of clusters Envoy is warming); taken by that response.
    resend: BTreeSet<String>,
}

impl Watch {
    /// Whether `resources` is the set the last response was computed from.
    fn unchanged(&self, resources: &Arc<TypedResources>) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, resources))
    }

    /// The version of what this watch selects (`items`, from `set`): the set's own for a
    /// wildcard watch, which selects all of it.
    fn version(&self, set: &TypedResources, items: &[&Arc<Versioned>]) -> String {
        if self.subscription.is_wildcard() {
            set.version.clone()
        } else {
            set_version(items)
        }
    }
}

/// Version string over a list of resources.
fn set_version(items: &[&Arc<Versioned>]) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        hasher.update(item.name.as_bytes());
        hasher.update([0]);
        hasher.update(item.version.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A delta response.
fn delta_message(
    t: ResourceType,
    version: &str,
    changed: &[&Arc<Versioned>],
    removed: Vec<String>,
    nonce: String,
) -> xds_discovery::DeltaDiscoveryResponse {
    xds_discovery::DeltaDiscoveryResponse {
        system_version_info: version.to_string(),
        resources: changed
            .iter()
            .map(|v| xds_discovery::Resource {
                name: v.name.clone(),
                version: v.version.clone(),
                resource: Some(v.body.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: t.type_url().to_string(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    }
}

/// What a request means for the type it names.
#[derive(Debug, PartialEq)]
pub enum Ack {
    /// First request for the type on this stream (or a request without a nonce).
    Initial,
    Ack,
    Nack(String),
    /// A reply to an older response; ignored.
    Stale,
}

/// What to answer a request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub t: ResourceType,
    /// Whether a response may be due.
    pub respond: bool,
    /// Send one even when the content did not change since the last response.
    pub force: bool,
    /// State of the world: the version the client says it holds on its first request for
    /// the type; when it is what would be sent, nothing is.
    pub holds: Option<String>,
}

/// State of one stream, shared by both protocol variants.
pub struct Stream {
    pub connection: Arc<Connection>,
    pub watches: std::collections::BTreeMap<ResourceType, Watch>,
    next_nonce: u64,
}

impl Stream {
    pub fn new(connection: Arc<Connection>) -> Stream {
        Stream {
            connection,
            watches: Default::default(),
            next_nonce: 0,
        }
    }

    fn nonce(&mut self) -> String {
        self.next_nonce += 1;
        format!("{}-{}", self.connection.id, self.next_nonce)
    }

    /// Classifies a request by its nonce, and records an ACK or NACK.
    pub fn acknowledge(
        &mut self,
        t: ResourceType,
        nonce: &str,
        version: &str,
        error: Option<&(i32, &str)>,
    ) -> Ack {
        let watch = self.watches.entry(t).or_default();
        if nonce.is_empty() {
            return Ack::Initial;
        }
        if watch.nonce.as_deref() != Some(nonce) {
            metrics::counter!("pilot_xds_expired_nonce", "type" => t.as_str()).increment(1);
            return Ack::Stale;
        }
        let pending = watch.pending_since.take();
        match error {
            Some(&(code, message)) => {
                let resources: Vec<String> = if watch.subscription.is_wildcard() {
                    vec!["*".to_string()]
                } else {
                    watch.subscription.names().iter().cloned().collect()
                };
                // Everything here but the type is the client's: escaped, bounded, and logged
                // at a bounded rate (the metric counts every NACK).
                if let Some(suppressed) = untrusted::may_log() {
                    tracing::warn!(
                        proxy = %untrusted::clip(&self.connection.proxy.id, untrusted::LOG_BYTES),
                        r#type = t.as_str(),
                        version = %untrusted::clip(version, untrusted::LOG_BYTES),
                        message = %untrusted::clip(message, untrusted::LOG_BYTES),
                        suppressed,
                        "proxy rejected configuration (NACK)"
                    );
                }
                record_reject(t, &self.connection.proxy.id, code);
                let sent = watch.sent_version.clone().unwrap_or_default();
                let message = untrusted::clip(message, untrusted::VIEW_BYTES);
                self.connection.update(t, |s| {
                    s.nack = Some(Nack {
                        message: message.clone(),
                        resources,
                        version: sent,
                    })
                });
                Ack::Nack(message)
            }
            None => {
                if let Some(since) = pending {
                    metrics::histogram!("pilot_proxy_convergence_time")
                        .record(since.elapsed().as_secs_f64());
                }
                let acked = watch.sent_version.clone();
                self.connection.update(t, |s| {
                    s.acked = acked;
                    s.nonce_acked = Some(nonce.to_string());
                    s.nack = None;
                });
                Ack::Ack
            }
        }
    }

    /// After clusters were sent: Envoy warms each one it receives until its endpoints arrive,
    /// even when they did not change (envoyproxy/envoy#13009), so their assignments are sent
    /// again after them.
    fn resend_assignments(&mut self, assignments: impl IntoIterator<Item = String>) {
        self.watches
            .entry(ResourceType::Eds)
            .or_default()
            .resend
            .extend(assignments);
    }

    /// The names of the secrets the stream asks for.
    pub fn secret_names(&self) -> Option<&BTreeSet<String>> {
        self.watches
            .get(&ResourceType::Sds)
            .map(|w| w.subscription.names())
    }

    fn record_push(&mut self, t: ResourceType, nonce: &str, version: &str, since: Option<Instant>) {
        let watch = self.watches.entry(t).or_default();
        watch.nonce = Some(nonce.to_string());
        watch.sent_version = Some(version.to_string());
        watch.pending_since = since;
        metrics::counter!("pilot_xds_pushes", "type" => t.as_str()).increment(1);
        self.connection.update(t, |s| {
            s.sent = Some(version.to_string());
            s.sent_at_unix = Some(super::status::unix_now());
            s.sent_at = Some(std::time::SystemTime::now());
            s.nonce_sent = Some(nonce.to_string());
            s.pushes += 1;
        });
    }

    /// Marks a type as in sync without sending (the client already holds this version).
    pub fn mark_synced(&mut self, t: ResourceType, version: &str) {
        let watch = self.watches.entry(t).or_default();
        watch.sent_version = Some(version.to_string());
        self.connection.update(t, |s| {
            s.sent = Some(version.to_string());
            s.sent_at_unix = Some(super::status::unix_now());
            s.sent_at = Some(std::time::SystemTime::now());
            s.acked = Some(version.to_string());
        });
    }

    /// State of the world: the response for `t` if its content differs from what was last
    /// sent (or always, with `force`).
    pub fn sotw_response(
        &mut self,
        t: ResourceType,
        resources: &Arc<TypedResources>,
        force: bool,
        since: Option<Instant>,
    ) -> Option<xds_discovery::DiscoveryResponse> {
        let watch = self.watches.get_mut(&t)?;
        if !watch.subscription.asks_for_anything() {
            return None;
        }
        // State of the world sends the whole selection: resending is sending at all.
        let resend = std::mem::take(&mut watch.resend)
            .iter()
            .any(|n| watch.subscription.wants(n));
        let force = force || resend;
        if !force && watch.unchanged(resources) {
            return None;
        }
        watch.seen = Some(resources.clone());
        let items = watch.subscription.select(resources);
        let version = watch.version(resources, &items);
        if !force && watch.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        let response = xds_discovery::DiscoveryResponse {
            version_info: version.clone(),
            resources: items.iter().map(|v| v.body.clone()).collect(),
            type_url: t.type_url().to_string(),
            nonce: self.nonce(),
            ..Default::default()
        };
        self.record_push(t, &response.nonce, &version, since);
        Some(response)
    }

    /// State of the world: the version the client would get now (to skip resending on
    /// reconnect).
    pub fn sotw_version(&self, t: ResourceType, resources: &TypedResources) -> Option<String> {
        let watch = self.watches.get(&t)?;
        Some(watch.version(resources, &watch.subscription.select(resources)))
    }

    /// Delta: the resources that changed since what the client holds, and those it holds that
    /// are gone. With `force`, a response is sent even when nothing changed (a first request
    /// must be answered).
    pub fn delta_response(
        &mut self,
        t: ResourceType,
        resources: &Arc<TypedResources>,
        force: bool,
        since: Option<Instant>,
    ) -> Option<xds_discovery::DeltaDiscoveryResponse> {
        let watch = self.watches.get_mut(&t)?;
        if !watch.subscription.is_active() {
            return None;
        }
        let resend: Vec<&Arc<Versioned>> = std::mem::take(&mut watch.resend)
            .iter()
            .filter(|n| watch.subscription.wants(n))
            .filter_map(|n| resources.items.get(n))
            .collect();
        if !force && resend.is_empty() && watch.unchanged(resources) {
            return None;
        }
        // The version of the whole set: the client's subset is told by the resources' own
        // versions.
        let version = resources.version.clone();
        let previous = watch.seen.replace(resources.clone());
        let subscription = &mut watch.subscription;
        // The client holds exactly what the last response was computed from (under the same
        // subscription, or `seen` would have been cleared): send what changed since, from
        // the difference every stream making this move shares.
        if !force
            && let Some(previous) = previous
            && subscription.held().is_exact()
        {
            let diff = resources.diff_from(&previous);
            let mut changed: Vec<&Arc<Versioned>> = diff
                .changed
                .iter()
                .filter(|v| subscription.wants(&v.name))
                .collect();
            for v in &resend {
                if !changed.iter().any(|c| c.name == v.name) {
                    changed.push(*v);
                }
            }
            let removed: Vec<String> = diff
                .removed
                .iter()
                .filter(|n| subscription.held().contains(n))
                .cloned()
                .collect();
            if changed.is_empty() && removed.is_empty() {
                return None;
            }
            if changed.len() + removed.len() > Held::EDIT_LIMIT {
                let items = subscription.select(resources);
                subscription.held_mut().replace(&items);
            } else {
                subscription.held_mut().apply(&changed, &removed);
            }
            let response = delta_message(t, &version, &changed, removed, self.nonce());
            self.record_push(t, &response.nonce, &version, since);
            return Some(response);
        }
        let items = subscription.select(resources);
        let changed: Vec<&Arc<Versioned>> = items
            .iter()
            .copied()
            .filter(|v| {
                subscription.held().version(&v.name) != Some(v.version.as_str())
                    || resend.iter().any(|r| r.name == v.name)
            })
            .collect();
        let present: BTreeSet<&str> = items.iter().map(|v| v.name.as_str()).collect();
        let mut removed: Vec<String> = subscription
            .held()
            .names()
            .filter(|n| !present.contains(n))
            .map(str::to_string)
            .collect();
        // Explicitly requested names that do not exist are reported as removed, once, so the
        // client stops waiting for them.
        if !subscription.is_wildcard() && force {
            for name in subscription.names() {
                if !present.contains(name.as_str())
                    && !subscription.held().contains(name)
                    && !removed.contains(name)
                {
                    removed.push(name.clone());
                }
            }
        }
        // The client holds what this response brings it to: exactly `items`.
        subscription.held_mut().replace(&items);
        if changed.is_empty() && removed.is_empty() && !force {
            return None;
        }
        let response = delta_message(t, &version, &changed, removed, self.nonce());
        self.record_push(t, &response.nonce, &version, since);
        Some(response)
    }
}

/// One of the two ADS request types: what its requests do to a stream and what its responses
/// are. The stream loop (`serve`) is the same for both.
pub trait AdsRequest: prost::Message + Default + Send + 'static {
    /// Incremental (delta) rather than state of the world.
    const DELTA: bool;
    type Response: prost::Message + Send;

    fn node(&self) -> Option<&xds_core::Node>;

    fn type_url(&self) -> &str;

    /// The nonce of the response this request answers; empty for a request of its own.
    fn response_nonce(&self) -> &str;

    /// The resource names the request asks for (newly, for delta).
    fn names(&self) -> &[String];

    /// A response outside the stream's resource types (a debug answer, or nothing for a type
    /// bowline does not serve): `resources` as (name, body).
    fn one_shot(
        type_url: &str,
        resources: Vec<(String, Any)>,
        control_plane: Option<xds_core::ControlPlane>,
        nonce: String,
    ) -> Self::Response;

    /// Applies the request for type `t` to the stream: its acknowledgement, then its
    /// subscription.
    fn receive(&self, stream: &mut Stream, t: ResourceType) -> Answer;

    /// The names of the resources a response of `set` carries.
    fn carried(response: &Self::Response, set: &TypedResources) -> Vec<String>;

    /// The response `t`'s set calls for, if any: for an answer to a request, or (`answer`
    /// `None`) for a push of new content that changed at `since`.
    fn respond(
        stream: &mut Stream,
        t: ResourceType,
        set: &Arc<TypedResources>,
        answer: Option<&Answer>,
        since: Option<Instant>,
    ) -> Option<Self::Response>;
}

impl AdsRequest for xds_discovery::DiscoveryRequest {
    const DELTA: bool = false;
    type Response = xds_discovery::DiscoveryResponse;

    fn node(&self) -> Option<&xds_core::Node> {
        self.node.as_ref()
    }

    fn type_url(&self) -> &str {
        &self.type_url
    }

    fn response_nonce(&self) -> &str {
        &self.response_nonce
    }

    fn names(&self) -> &[String] {
        &self.resource_names
    }

    fn one_shot(
        type_url: &str,
        resources: Vec<(String, Any)>,
        control_plane: Option<xds_core::ControlPlane>,
        nonce: String,
    ) -> Self::Response {
        xds_discovery::DiscoveryResponse {
            type_url: type_url.to_string(),
            resources: resources.into_iter().map(|(_, body)| body).collect(),
            control_plane,
            nonce,
            ..Default::default()
        }
    }

    fn carried(_: &Self::Response, set: &TypedResources) -> Vec<String> {
        // A state-of-the-world response carries the whole selection.
        set.items.keys().cloned().collect()
    }

    fn receive(&self, stream: &mut Stream, t: ResourceType) -> Answer {
        let error = self
            .error_detail
            .as_ref()
            .map(|s| (s.code, s.message.as_str()));
        let ack = stream.acknowledge(t, &self.response_nonce, &self.version_info, error.as_ref());
        if ack == Ack::Stale {
            // A reply to an older response: superseded by the newer one in flight.
            return Answer {
                t,
                respond: false,
                force: false,
                holds: None,
            };
        }
        let watch = stream.watches.entry(t).or_default();
        let change = watch.subscription.sotw(t, &self.resource_names);
        if change.changed {
            watch.seen = None;
        }
        Answer {
            t,
            respond: change.changed || ack == Ack::Initial,
            force: true,
            holds: (ack == Ack::Initial && !self.version_info.is_empty())
                .then(|| self.version_info.clone()),
        }
    }

    fn respond(
        stream: &mut Stream,
        t: ResourceType,
        set: &Arc<TypedResources>,
        answer: Option<&Answer>,
        since: Option<Instant>,
    ) -> Option<Self::Response> {
        let Some(answer) = answer else {
            return stream.sotw_response(t, set, false, since);
        };
        if let Some(held) = &answer.holds
            && stream.sotw_version(t, set).as_ref() == Some(held)
        {
            // Reconnected with exactly what we would send: nothing to do.
            stream.mark_synced(t, held);
            return None;
        }
        if !answer.respond {
            return None;
        }
        stream.sotw_response(t, set, answer.force, None)
    }
}

impl AdsRequest for xds_discovery::DeltaDiscoveryRequest {
    const DELTA: bool = true;
    type Response = xds_discovery::DeltaDiscoveryResponse;

    fn node(&self) -> Option<&xds_core::Node> {
        self.node.as_ref()
    }

    fn type_url(&self) -> &str {
        &self.type_url
    }

    fn response_nonce(&self) -> &str {
        &self.response_nonce
    }

    fn names(&self) -> &[String] {
        &self.resource_names_subscribe
    }

    fn one_shot(
        type_url: &str,
        resources: Vec<(String, Any)>,
        control_plane: Option<xds_core::ControlPlane>,
        nonce: String,
    ) -> Self::Response {
        xds_discovery::DeltaDiscoveryResponse {
            type_url: type_url.to_string(),
            resources: resources
                .into_iter()
                .map(|(name, body)| xds_discovery::Resource {
                    name,
                    resource: Some(body),
                    ..Default::default()
                })
                .collect(),
            control_plane,
            nonce,
            ..Default::default()
        }
    }

    fn carried(response: &Self::Response, _: &TypedResources) -> Vec<String> {
        response.resources.iter().map(|r| r.name.clone()).collect()
    }

    fn receive(&self, stream: &mut Stream, t: ResourceType) -> Answer {
        let error = self
            .error_detail
            .as_ref()
            .map(|s| (s.code, s.message.as_str()));
        let ack = stream.acknowledge(t, &self.response_nonce, "", error.as_ref());
        let watch = stream.watches.entry(t).or_default();
        let change = watch.subscription.delta(
            t,
            &self.resource_names_subscribe,
            &self.resource_names_unsubscribe,
            &self.initial_resource_versions,
        );
        if change.changed {
            // The subscription changed: the next response is computed afresh.
            watch.seen = None;
        }
        // Something newly asked for is always answered, even when the client already holds
        // it (it waits for a response, e.g. to finish initialising).
        Answer {
            t,
            respond: ack != Ack::Stale || change.added,
            force: change.added,
            holds: None,
        }
    }

    fn respond(
        stream: &mut Stream,
        t: ResourceType,
        set: &Arc<TypedResources>,
        answer: Option<&Answer>,
        since: Option<Instant>,
    ) -> Option<Self::Response> {
        match answer {
            None => stream.delta_response(t, set, false, since),
            Some(a) if a.respond => stream.delta_response(t, set, a.force, None),
            Some(_) => None,
        }
    }
}

/// Serves a stream whose first request was `first`, until the client goes or the stream fails:
/// answers requests, pushes each new snapshot's changes, and renews the stream's certificate.
pub async fn serve<Q: AdsRequest>(
    shared: &Shared,
    connection: Arc<Connection>,
    first: Q,
    mut requests: Requests<Q>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), Status> {
    let mut rx = shared.snapshots.clone();
    let (mut snapshot, mut resources) = current(shared, &mut rx, &connection).await?;
    let mut secrets = secrets_for(shared, &connection.proxy, &snapshot);
    // Built when the proxy first asks for it (pilot-agent's DNS proxy), then at each snapshot.
    let mut names: Option<Arc<TypedResources>> = None;
    let mut stream = Stream::new(connection.clone());
    let mut forced = shared.forced_pushes();
    let mut one_shots = OneShots::new("unserved");
    let mut next = Some(first);
    loop {
        if let Some(request) = next.take_if(|r| ResourceType::from_type_url(r.type_url()).is_none())
            && let Some(r) = one_shots.answer(shared, &connection.proxy, &request)?
        {
            send(tx, r).await?;
        }
        if let Some(request) = next.take()
            && let Some(t) = ResourceType::from_type_url(request.type_url())
        {
            let started = Instant::now();
            let answer = request.receive(&mut stream, t);
            if let Some(watch) = stream.watches.get(&t) {
                let watched = watch.subscription.names().iter().cloned().collect();
                connection.update(t, |s| s.watched = Some(watched));
            }
            if t == ResourceType::Sds {
                prepare_secrets(&mut secrets, &stream, &snapshot, &connection);
            }
            if t == ResourceType::Nds && names.is_none() {
                names = Some(name_table(&snapshot, &connection.proxy));
            }
            let set = set_of(t, &resources, &secrets, names.as_ref());
            if let Some(r) = Q::respond(&mut stream, t, set, Some(&answer), None) {
                let clusters =
                    (t == ResourceType::Cds).then(|| assignments(Q::carried(&r, set), set));
                push(tx, t, r, started).await?;
                if let Some(clusters) = clusters.filter(|c| !c.is_empty()) {
                    let started = Instant::now();
                    stream.resend_assignments(clusters);
                    let eds = resources.get(ResourceType::Eds);
                    if let Some(r) = Q::respond(&mut stream, ResourceType::Eds, eds, None, None) {
                        push(tx, ResourceType::Eds, r, started).await?;
                    }
                }
            }
        }
        tokio::select! {
            biased;
            () = shared.closed() => return Ok(()),
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
                let taken = Instant::now();
                (snapshot, resources) = current(shared, &mut rx, &connection).await?;
                metrics::histogram!("pilot_proxy_queue_time")
                    .record(taken.saturating_duration_since(snapshot.published_at).as_secs_f64());
                let mut pushed = false;
                for t in ResourceType::CONFIG {
                    let started = Instant::now();
                    let set = resources.get(t);
                    if let Some(r) = Q::respond(&mut stream, t, set, None, Some(snapshot.changed_at)) {
                        if t == ResourceType::Cds {
                            // EDS is next in CONFIG.
                            stream.resend_assignments(assignments(Q::carried(&r, set), set));
                        }
                        push(tx, t, r, started).await?;
                        pushed = true;
                    }
                }
                if names.is_some() {
                    let started = Instant::now();
                    let table = name_table(&snapshot, &connection.proxy);
                    if let Some(r) = Q::respond(&mut stream, ResourceType::Nds, &table, None, Some(snapshot.changed_at)) {
                        push(tx, ResourceType::Nds, r, started).await?;
                        pushed = true;
                    }
                    names = Some(table);
                }
                let started = Instant::now();
                let renewed = follow_trust_domain(&mut secrets, &snapshot, &connection);
                let rotated = refresh_credentials(&mut secrets, &stream, &snapshot, &connection);
                if (renewed || rotated)
                    && let Some(r) = Q::respond(&mut stream, ResourceType::Sds, secrets.resources(), None, None)
                {
                    push(tx, ResourceType::Sds, r, started).await?;
                    pushed = true;
                }
                if pushed {
                    let trigger = trigger(&snapshot);
                    metrics::counter!("pilot_push_triggers", "type" => trigger.as_str()).increment(1);
                }
            }
            Ok(()) = forced.changed() => {
                // A forced push: every type the proxy watches again, whatever it holds.
                tracing::debug!(proxy = %connection.proxy.id, "forced push");
                let mut pushed = false;
                for t in ResourceType::ALL {
                    let started = Instant::now();
                    let answer = Answer { t, respond: true, force: true, holds: None };
                    let set = set_of(t, &resources, &secrets, names.as_ref());
                    if let Some(r) = Q::respond(&mut stream, t, set, Some(&answer), None) {
                        push(tx, t, r, started).await?;
                        pushed = true;
                    }
                }
                if pushed {
                    metrics::counter!("pilot_push_triggers", "type" => Trigger::Debug.as_str()).increment(1);
                }
            }
            _ = renewal(&secrets) => {
                let started = Instant::now();
                if renew(&mut secrets, &connection)
                    && let Some(r) = Q::respond(&mut stream, ResourceType::Sds, secrets.resources(), None, None)
                {
                    push(tx, ResourceType::Sds, r, started).await?;
                }
            }
        }
    }
}

/// Counts a rejection (NACK) of a response of type `t` by `node`: `pilot_total_xds_rejects`,
/// and istiod's older per-type gauges `pilot_xds_{cds,eds,lds,rds}_reject{node,err}`, `err`
/// being the name of the gRPC code the proxy gave.
fn record_reject(t: ResourceType, node: &str, code: i32) {
    metrics::counter!("pilot_total_xds_rejects", "type" => t.as_str()).increment(1);
    let name = match t {
        ResourceType::Cds => "pilot_xds_cds_reject",
        ResourceType::Eds => "pilot_xds_eds_reject",
        ResourceType::Lds => "pilot_xds_lds_reject",
        ResourceType::Rds => "pilot_xds_rds_reject",
        ResourceType::Sds | ResourceType::Nds => return,
    };
    metrics::gauge!(name, "node" => node.to_string(), "err" => grpc_code_name(code)).increment(1.0);
}

/// A gRPC status code's name as Go's `codes.Code` prints it.
pub fn grpc_code_name(code: i32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("Code({code})"))
}

/// What caused a push of `snapshot` to a proxy, in istiod's terms: configuration, endpoints
/// alone, or (neither changed) the proxy's certificate or credentials.
fn trigger(snapshot: &Snapshot) -> Trigger {
    if snapshot.changed.iter().any(|t| t != ResourceType::Eds) {
        Trigger::Config
    } else if !snapshot.changed.is_empty() {
        Trigger::Endpoint
    } else {
        Trigger::Secret
    }
}

/// Serves a debug caller's stream (its first request asked for an Istio debug type): each
/// request is answered on its own, nothing is pushed, and the caller is no proxy.
pub async fn serve_debug<Q: AdsRequest>(
    shared: &Shared,
    caller: &Proxy,
    first: Q,
    mut requests: Requests<Q>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), Status> {
    let mut answers = OneShots::new("debug");
    let mut next = Some(first);
    while let Some(request) = next.take() {
        if let Some(r) = answers.answer(shared, caller, &request)? {
            send(tx, r).await?;
        }
        next = tokio::select! {
            () = shared.closed() => None,
            message = requests.message() => message?,
        };
    }
    Ok(())
}

/// Answers requests for types outside the stream's resources: Istio's debug types (see
/// `debug`), or, for any other type, an empty response, so that the client is not left
/// waiting. A request that ACKs (or NACKs) the last such response of its type gets nothing;
/// any other is answered, whatever nonce it carries (Istio's own client sends one on its
/// first request).
struct OneShots {
    prefix: &'static str,
    /// The nonce last sent, by type URL.
    sent: std::collections::BTreeMap<String, String>,
    next: u64,
}

impl OneShots {
    fn new(prefix: &'static str) -> OneShots {
        OneShots {
            prefix,
            sent: Default::default(),
            next: 0,
        }
    }

    fn answer<Q: AdsRequest>(
        &mut self,
        shared: &Shared,
        caller: &Proxy,
        request: &Q,
    ) -> Result<Option<Q::Response>, Status> {
        let type_url = request.type_url();
        if self
            .sent
            .get(type_url)
            .is_some_and(|n| n == request.response_nonce())
        {
            return Ok(None);
        }
        let (resources, control_plane) = if debug::is_debug(type_url) {
            let answer = debug::answer(shared, caller, type_url, request.names())?;
            (answer.resources, answer.control_plane)
        } else {
            tracing::debug!(proxy = %caller.id, type_url = %untrusted::clip(type_url, untrusted::LOG_BYTES), "request for an unserved type answered empty");
            (Vec::new(), None)
        };
        self.next += 1;
        let nonce = format!("{}-{}", self.prefix, self.next);
        self.sent.insert(type_url.to_string(), nonce.clone());
        Ok(Some(Q::one_shot(type_url, resources, control_plane, nonce)))
    }
}

/// The endpoint assignments the `clusters` of `set` read (an EDS cluster's `service_name`).
fn assignments(clusters: Vec<String>, set: &TypedResources) -> Vec<String> {
    clusters
        .iter()
        .filter_map(|c| set.items.get(c))
        .flat_map(|v| v.links(ResourceType::Cds).iter().cloned())
        .collect()
}

/// The proxy's resources at the newest snapshot.
async fn current(
    shared: &Shared,
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    connection: &Connection,
) -> Result<(Arc<Snapshot>, Arc<ProxyResources>), Status> {
    let snapshot = rx.borrow_and_update().clone();
    let resources = shared
        .resources(&snapshot, &connection.proxy)
        .await
        .inspect_err(|_| metrics::counter!("pilot_total_xds_internal_errors").increment(1))?;
    connection.set_resources(resources.clone());
    Ok((snapshot, resources))
}

/// Frames and queues a response, or ends the stream quietly when the client has gone.
async fn send<T: prost::Message>(tx: &mpsc::Sender<Outgoing>, message: T) -> Result<(), Status> {
    let framed = transport::frame(&message).inspect_err(|_| {
        metrics::counter!("pilot_total_xds_internal_errors").increment(1);
    })?;
    tx.send(Ok(framed))
        .await
        .map_err(|_| Status::cancelled("client went away"))
}

/// Sends a response of type `t` whose making began at `started`, recording istiod's push
/// series: its size, the time to hand it to the sender, and the time from `started`.
async fn push<T: prost::Message>(
    tx: &mpsc::Sender<Outgoing>,
    t: ResourceType,
    message: T,
    started: Instant,
) -> Result<(), Status> {
    metrics::histogram!("pilot_xds_config_size_bytes", "type" => t.type_url())
        .record(message.encoded_len() as f64);
    let sending = Instant::now();
    send(tx, message).await?;
    metrics::histogram!("pilot_xds_send_time").record(sending.elapsed().as_secs_f64());
    metrics::histogram!("pilot_xds_push_time", "type" => t.as_str())
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// The secrets of a stream: `default` only for a proxy that holds a workload certificate, in
/// the trust domain of the configuration it is served (`snapshot`).
fn secrets_for(shared: &Shared, proxy: &Proxy, snapshot: &Snapshot) -> Secrets {
    let ca = shared.security.as_ref().map(|s| s.ca.clone());
    // A proxy run by pilot-agent holds the agent's key and certificate; bowline never makes
    // one for it.
    let identity = proxy
        .identity
        .clone()
        .filter(|_| proxy.workload_certificate && proxy.secret_source == SecretSource::Ads);
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
    names: Option<&'a Arc<TypedResources>>,
) -> &'a Arc<TypedResources> {
    match (t, names) {
        (ResourceType::Sds, _) => secrets.resources(),
        (ResourceType::Nds, Some(names)) => names,
        _ => resources.get(t),
    }
}

/// The proxy's name table at `snapshot`: one resource without a name, as istiod sends it.
fn name_table(snapshot: &Snapshot, proxy: &Proxy) -> Arc<TypedResources> {
    let table = crate::translate::name_table::build(&snapshot.model, proxy);
    let body = envoy::pack(&table);
    let version = sds::version_of(&[&body.value]);
    let item = Arc::new(Versioned::new(String::new(), version, body));
    Arc::new(TypedResources::new([(String::new(), item)].into()))
}

/// Makes sure the secrets a watch names exist (issuing the first certificate, finding the
/// gateway credentials in `snapshot`), and records them for debug views.
fn prepare_secrets(
    secrets: &mut Secrets,
    stream: &Stream,
    snapshot: &Snapshot,
    connection: &Connection,
) {
    let Some(names) = stream.secret_names() else {
        return;
    };
    if let Err(e) = secrets.ensure(names) {
        tracing::error!(proxy = %connection.proxy.id, error = %e, "issuing a workload certificate failed");
    }
    refresh_credentials(secrets, stream, snapshot, connection);
    connection.set_secrets(secrets.dump.clone());
}

/// Recomputes the stream's gateway credentials at `snapshot` and records them for debug
/// views: `true` when what is served changed (a Secret rotated, appeared or went away, or a
/// Gateway now names another credential).
fn refresh_credentials(
    secrets: &mut Secrets,
    stream: &Stream,
    snapshot: &Snapshot,
    connection: &Connection,
) -> bool {
    let Some(names) = stream.secret_names() else {
        return false;
    };
    let changed = secrets.refresh_credentials(&snapshot.model, &connection.proxy, names);
    connection.set_refused_credentials(secrets.refused());
    if changed {
        connection.set_secrets(secrets.dump.clone());
    }
    changed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::Transport;

    fn stream() -> Stream {
        let proxy = Proxy::parse(
            "sidecar~1.1.1.1~a.ns~ns.svc.cluster.local",
            &serde_json::json!({}),
        )
        .unwrap();
        Stream::new(Arc::new(Connection::new(
            7,
            proxy,
            false,
            Transport::Plaintext,
        )))
    }

    fn versioned(name: &str, version: &str) -> Arc<Versioned> {
        Arc::new(Versioned::new(
            name.into(),
            version.into(),
            envoy_types::pb::google::protobuf::Any::default(),
        ))
    }

    fn set(items: &[(&str, &str)]) -> Arc<TypedResources> {
        Arc::new(TypedResources::new(
            items
                .iter()
                .map(|(n, v)| (n.to_string(), versioned(n, v)))
                .collect(),
        ))
    }

    fn delta_names(r: &xds_discovery::DeltaDiscoveryResponse) -> (Vec<&str>, Vec<&str>) {
        (
            r.resources.iter().map(|r| r.name.as_str()).collect(),
            r.removed_resources.iter().map(String::as_str).collect(),
        )
    }

    fn delta_request(
        t: ResourceType,
        subscribe: &[&str],
        unsubscribe: &[&str],
        declared: &[(&str, &str)],
    ) -> xds_discovery::DeltaDiscoveryRequest {
        xds_discovery::DeltaDiscoveryRequest {
            type_url: t.type_url().into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
            initial_resource_versions: declared
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn delta_sends_what_the_client_does_not_hold() {
        let mut s = stream();
        // Reconnected holding `a` at the current version, `b` at an old one, and `gone`.
        let first = delta_request(
            ResourceType::Cds,
            &[],
            &[],
            &[("a", "1"), ("b", "old"), ("gone", "1")],
        );
        let answer = first.receive(&mut s, ResourceType::Cds);
        assert!(answer.respond && answer.force);
        let set1 = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let r = xds_discovery::DeltaDiscoveryRequest::respond(
            &mut s,
            ResourceType::Cds,
            &set1,
            Some(&answer),
            None,
        )
        .unwrap();
        assert_eq!(delta_names(&r), (vec!["b", "c"], vec!["gone"]));
        let held = s.watches[&ResourceType::Cds].subscription.held();
        assert_eq!(held.version("b"), Some("1"));
        assert!(!held.contains("gone"));
        // Nothing changed: nothing to send.
        let same = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        assert!(
            s.delta_response(ResourceType::Cds, &same, false, None)
                .is_none()
        );
        // One changed, one removed.
        let next = set(&[("a", "2"), ("b", "1")]);
        let r = s
            .delta_response(ResourceType::Cds, &next, false, None)
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["a"], vec!["c"]));
        // The client leaves the wildcard for `a` alone: `b` is forgotten, and sent again when
        // it is subscribed again.
        delta_request(ResourceType::Cds, &["a"], &["*", "b"], &[])
            .receive(&mut s, ResourceType::Cds);
        assert!(
            !s.watches[&ResourceType::Cds]
                .subscription
                .held()
                .contains("b")
        );
        let answer =
            delta_request(ResourceType::Cds, &["b"], &[], &[]).receive(&mut s, ResourceType::Cds);
        let r = xds_discovery::DeltaDiscoveryRequest::respond(
            &mut s,
            ResourceType::Cds,
            &set(&[("a", "2"), ("b", "1")]),
            Some(&answer),
            None,
        )
        .unwrap();
        assert_eq!(delta_names(&r), (vec!["b"], vec![]));
    }

    #[test]
    fn delta_by_name_sends_only_subscribed_changes() {
        let mut s = stream();
        let answer = delta_request(ResourceType::Eds, &["a", "b"], &[], &[])
            .receive(&mut s, ResourceType::Eds);
        let r = xds_discovery::DeltaDiscoveryRequest::respond(
            &mut s,
            ResourceType::Eds,
            &set(&[("a", "1"), ("b", "1"), ("c", "1")]),
            Some(&answer),
            None,
        )
        .unwrap();
        assert_eq!(delta_names(&r), (vec!["a", "b"], vec![]));
        // A resource the client did not subscribe to changes: nothing to send.
        let r = s.delta_response(
            ResourceType::Eds,
            &set(&[("a", "1"), ("b", "1"), ("c", "2")]),
            false,
            None,
        );
        assert!(r.is_none());
        let r = s
            .delta_response(
                ResourceType::Eds,
                &set(&[("a", "2"), ("c", "2")]),
                false,
                None,
            )
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["a"], vec!["b"]));
        let held = s.watches[&ResourceType::Eds].subscription.held();
        assert_eq!(held.version("a"), Some("2"));
        assert!(!held.contains("b") && !held.contains("c"));
    }

    #[test]
    fn sotw_reconnect_holding_the_current_version_is_not_answered() {
        let mut s = stream();
        let current = set(&[("a", "1")]);
        let version = current.version.clone();
        let request = xds_discovery::DiscoveryRequest {
            type_url: ResourceType::Cds.type_url().into(),
            version_info: version.clone(),
            ..Default::default()
        };
        let answer = request.receive(&mut s, ResourceType::Cds);
        assert_eq!(answer.holds.as_deref(), Some(version.as_str()));
        let r = xds_discovery::DiscoveryRequest::respond(
            &mut s,
            ResourceType::Cds,
            &current,
            Some(&answer),
            None,
        );
        assert!(r.is_none());
        assert_eq!(
            s.connection.view().types[&ResourceType::Cds]
                .acked
                .as_deref(),
            Some(version.as_str())
        );
        // Holding an older version: answered.
        let mut s = stream();
        let request = xds_discovery::DiscoveryRequest {
            type_url: ResourceType::Cds.type_url().into(),
            version_info: "old".into(),
            ..Default::default()
        };
        let answer = request.receive(&mut s, ResourceType::Cds);
        let r = xds_discovery::DiscoveryRequest::respond(
            &mut s,
            ResourceType::Cds,
            &current,
            Some(&answer),
            None,
        )
        .unwrap();
        assert_eq!(r.version_info, version);
    }

    #[test]
    fn resend_sends_held_resources_again_once() {
        let mut s = stream();
        delta_request(ResourceType::Eds, &["a", "b"], &[], &[]).receive(&mut s, ResourceType::Eds);
        let held = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        assert!(
            s.delta_response(ResourceType::Eds, &held, true, None)
                .is_some()
        );
        assert!(
            s.delta_response(ResourceType::Eds, &held, false, None)
                .is_none()
        );
        // `c` is not subscribed, `d` does not exist: only `a` goes out again.
        s.resend_assignments(["a", "c", "d"].map(String::from));
        let r = s
            .delta_response(ResourceType::Eds, &held, false, None)
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["a"], vec![]));
        assert!(
            s.delta_response(ResourceType::Eds, &held, false, None)
                .is_none(),
            "resent once"
        );
        // Together with a change.
        s.resend_assignments(["a".to_string()]);
        let changed = set(&[("a", "1"), ("b", "2"), ("c", "1")]);
        let r = s
            .delta_response(ResourceType::Eds, &changed, false, None)
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["b", "a"], vec![]));

        // State of the world: the whole selection again.
        let mut s = stream();
        xds_discovery::DiscoveryRequest {
            type_url: ResourceType::Eds.type_url().into(),
            resource_names: vec!["a".into()],
            ..Default::default()
        }
        .receive(&mut s, ResourceType::Eds);
        assert!(
            s.sotw_response(ResourceType::Eds, &held, true, None)
                .is_some()
        );
        assert!(
            s.sotw_response(ResourceType::Eds, &held, false, None)
                .is_none()
        );
        s.resend_assignments(["a".to_string()]);
        let r = s
            .sotw_response(ResourceType::Eds, &held, false, None)
            .unwrap();
        assert_eq!(r.resources.len(), 1);
        assert!(
            s.sotw_response(ResourceType::Eds, &held, false, None)
                .is_none()
        );
    }

    #[test]
    fn nonce_classifies_requests() {
        let mut s = stream();
        assert_eq!(s.acknowledge(ResourceType::Cds, "", "", None), Ack::Initial);
        s.watches.get_mut(&ResourceType::Cds).unwrap().nonce = Some("7-3".into());
        s.watches.get_mut(&ResourceType::Cds).unwrap().sent_version = Some("v".into());
        assert_eq!(
            s.acknowledge(ResourceType::Cds, "7-2", "", None),
            Ack::Stale
        );
        assert_eq!(
            s.acknowledge(ResourceType::Cds, "7-3", "old", Some(&(3, "bad cluster"))),
            Ack::Nack("bad cluster".into())
        );
        let view = s.connection.view();
        let cds = &view.types[&ResourceType::Cds];
        assert_eq!(cds.nack.as_ref().unwrap().message, "bad cluster");
        assert_eq!(cds.nack.as_ref().unwrap().version, "v");
        assert_eq!(s.acknowledge(ResourceType::Cds, "7-3", "v", None), Ack::Ack);
        let view = s.connection.view();
        assert_eq!(view.types[&ResourceType::Cds].acked.as_deref(), Some("v"));
        assert!(view.types[&ResourceType::Cds].nack.is_none());
    }

    /// A NACK and a stale nonce count in istiod's series, with its labels.
    #[test]
    fn rejections_and_expired_nonces_are_counted() {
        let recorder = crate::monitoring::builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut s = stream();
            s.watches.entry(ResourceType::Lds).or_default().nonce = Some("7-3".into());
            s.acknowledge(ResourceType::Lds, "7-2", "", None);
            s.acknowledge(ResourceType::Lds, "7-3", "", Some(&(3, "bad listener")));
        });
        let text = handle.render();
        let node = &stream().connection.proxy.id;
        for line in [
            "pilot_xds_expired_nonce{type=\"lds\"} 1".to_string(),
            "pilot_total_xds_rejects{type=\"lds\"} 1".to_string(),
            format!("pilot_xds_lds_reject{{node=\"{node}\",err=\"InvalidArgument\"}} 1"),
        ] {
            assert!(text.contains(&line), "no {line} in:\n{text}");
        }
        assert_eq!(grpc_code_name(13), "Internal");
        assert_eq!(grpc_code_name(1), "Canceled");
        assert_eq!(grpc_code_name(99), "Code(99)");
    }
}
