//! One ADS stream: subscriptions per type, nonces, ACK/NACK, and pushes, for both the
//! state-of-the-world and the incremental (delta) protocol variants.
//!
//! Per the xDS protocol: every response carries a fresh nonce; a request whose `response_nonce`
//! is the type's last nonce is an ACK, or a NACK when it has `error_detail`; a request with an
//! older nonce is stale and ignored. A NACKed response is recorded and not sent again: the next
//! push of that type happens only when its content changes. Types are pushed in the order CDS,
//! EDS, LDS, RDS. A resource can be marked for sending again although the client holds its
//! version (`Watch::resend`): Envoy warms a cluster it receives until that cluster's endpoints
//! arrive, even when they did not change, so the assignments of the clusters a response
//! carried are sent after it, as istiod pushes EDS after CDS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use sha2::{Digest, Sha256};

use super::status::{Connection, Nack};
use crate::cache::{ResourceType, TypedResources, Versioned};

/// Subscription and delivery state of one resource type on one stream.
#[derive(Debug, Default)]
pub struct Watch {
    pub subscribed: bool,
    pub wildcard: bool,
    pub names: BTreeSet<String>,
    /// Nonce of the last response of this type.
    pub nonce: Option<String>,
    /// Change time behind the last response, until it is ACKed.
    pub pending_since: Option<Instant>,
    /// Version of the last response (state of the world) or of the full desired set (delta).
    pub sent_version: Option<String>,
    /// Delta: what the client holds.
    pub known: Known,
    /// The resources the last response was computed from. When a push finds the same set
    /// (unchanged by the new snapshot) and the subscription did not change since, there is
    /// nothing to send and nothing is recomputed. Cleared when the subscription changes.
    pub seen: Option<Arc<TypedResources>>,
    /// Names the next response sends even if the client holds their version (the assignments
    /// of clusters Envoy is warming); taken by that response.
    pub resend: BTreeSet<String>,
}

impl Watch {
    /// Whether `resources` is the set the last response was computed from.
    fn unchanged(&self, resources: &Arc<TypedResources>) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, resources))
    }
}

impl Watch {
    /// The version of what this watch selects (`items`, from `set`): the set's own for a
    /// wildcard watch, which selects all of it.
    fn version(&self, set: &TypedResources, items: &[&Arc<Versioned>]) -> String {
        if self.wildcard {
            set.version.clone()
        } else {
            set_version(items)
        }
    }

    /// The resources this watch selects, in name order.
    fn desired<'a>(&self, set: &'a TypedResources) -> Vec<&'a Arc<Versioned>> {
        if self.wildcard {
            set.items.values().collect()
        } else {
            self.names.iter().filter_map(|n| set.items.get(n)).collect()
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

/// Delta: the resources a client holds of one type. After every response the client holds
/// exactly the resources the response was computed from, so those are kept as the shared
/// `Versioned` items themselves (a pointer each, not a copy of every name and version);
/// versions a client declared when it (re)connected, for resources not sent on this stream,
/// are kept by name until the first response reconciles them.
#[derive(Debug, Default)]
pub struct Known {
    /// Sent on this stream, sorted by name.
    sent: Vec<Arc<Versioned>>,
    /// Declared by the client (`initial_resource_versions`): name → version.
    declared: BTreeMap<String, String>,
}

impl Known {
    /// The version the client holds of `name`.
    pub fn version(&self, name: &str) -> Option<&str> {
        match self.sent.binary_search_by(|v| v.name.as_str().cmp(name)) {
            Ok(i) => Some(self.sent[i].version.as_str()),
            Err(_) => self.declared.get(name).map(String::as_str),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.version(name).is_some()
    }

    /// Records a version the client says it holds.
    pub fn declare(&mut self, name: String, version: String) {
        self.forget(&name);
        self.declared.insert(name, version);
    }

    /// The client no longer holds `name`.
    pub fn forget(&mut self, name: &str) {
        if let Ok(i) = self.sent.binary_search_by(|v| v.name.as_str().cmp(name)) {
            self.sent.remove(i);
        }
        self.declared.remove(name);
    }

    /// Every name the client holds, in order.
    fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self
            .sent
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.declared.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.into_iter()
    }

    /// Above this many edits the held list is made afresh rather than edited in place.
    const EDIT_LIMIT: usize = 32;

    /// Whether every resource the client holds was sent on this stream.
    fn is_exact(&self) -> bool {
        self.declared.is_empty()
    }

    /// The client now holds `changed` too (replacing what it held under those names) and no
    /// longer holds `removed`.
    fn apply(&mut self, changed: &[&Arc<Versioned>], removed: &[String]) {
        for v in changed {
            match self.sent.binary_search_by(|h| h.name.cmp(&v.name)) {
                Ok(i) => self.sent[i] = Arc::clone(v),
                Err(i) => self.sent.insert(i, Arc::clone(v)),
            }
        }
        for name in removed {
            self.forget(name);
        }
    }

    /// The client now holds exactly `items` (in name order).
    fn replace(&mut self, items: &[&Arc<Versioned>]) {
        self.sent = items.iter().map(|v| Arc::clone(v)).collect();
        self.sent.shrink_to_fit();
        self.declared = BTreeMap::new();
    }
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

/// State of one stream, shared by both protocol variants.
pub struct Stream {
    pub connection: Arc<Connection>,
    pub watches: BTreeMap<ResourceType, Watch>,
    next_nonce: u64,
}

impl Stream {
    pub fn new(connection: Arc<Connection>) -> Stream {
        Stream {
            connection,
            watches: BTreeMap::new(),
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
        error: Option<&str>,
    ) -> Ack {
        let watch = self.watches.entry(t).or_default();
        if nonce.is_empty() {
            return Ack::Initial;
        }
        if watch.nonce.as_deref() != Some(nonce) {
            return Ack::Stale;
        }
        let pending = watch.pending_since.take();
        match error {
            Some(message) => {
                let resources: Vec<String> = if watch.wildcard {
                    vec!["*".to_string()]
                } else {
                    watch.names.iter().cloned().collect()
                };
                tracing::warn!(
                    proxy = %self.connection.proxy.id,
                    r#type = t.as_str(),
                    version,
                    message,
                    "proxy rejected configuration (NACK)"
                );
                metrics::counter!("pilot_total_xds_rejects", "type" => t.as_str()).increment(1);
                let sent = watch.sent_version.clone().unwrap_or_default();
                self.connection.update(t, |s| {
                    s.nack = Some(Nack {
                        message: message.to_string(),
                        resources,
                        version: sent,
                    })
                });
                Ack::Nack(message.to_string())
            }
            None => {
                if let Some(since) = pending {
                    metrics::histogram!("pilot_proxy_convergence_time")
                        .record(since.elapsed().as_secs_f64());
                }
                let acked = watch.sent_version.clone();
                self.connection.update(t, |s| {
                    s.acked = acked;
                    s.nack = None;
                });
                Ack::Ack
            }
        }
    }

    fn record_push(&mut self, t: ResourceType, nonce: &str, version: &str, since: Option<Instant>) {
        let watch = self.watches.entry(t).or_default();
        watch.nonce = Some(nonce.to_string());
        watch.sent_version = Some(version.to_string());
        watch.pending_since = since;
        metrics::counter!("pilot_xds_pushes", "type" => t.as_str()).increment(1);
        self.connection.update(t, |s| {
            s.sent = Some(version.to_string());
            s.pushes += 1;
        });
    }

    /// Marks a type as in sync without sending (the client already holds this version).
    pub fn mark_synced(&mut self, t: ResourceType, version: &str) {
        let watch = self.watches.entry(t).or_default();
        watch.sent_version = Some(version.to_string());
        self.connection.update(t, |s| {
            s.sent = Some(version.to_string());
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
        if !watch.subscribed {
            return None;
        }
        if !watch.wildcard && watch.names.is_empty() {
            return None;
        }
        // State of the world sends the whole selection: resending is sending at all.
        let resend = std::mem::take(&mut watch.resend)
            .iter()
            .any(|n| watch.wildcard || watch.names.contains(n));
        let force = force || resend;
        if !force && watch.unchanged(resources) {
            return None;
        }
        watch.seen = Some(resources.clone());
        let items = watch.desired(resources);
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
        Some(watch.version(resources, &watch.desired(resources)))
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
        if !watch.subscribed {
            return None;
        }
        let resend: Vec<&Arc<Versioned>> = std::mem::take(&mut watch.resend)
            .iter()
            .filter(|n| watch.wildcard || watch.names.contains(*n))
            .filter_map(|n| resources.items.get(n))
            .collect();
        if !force && resend.is_empty() && watch.unchanged(resources) {
            return None;
        }
        // The version of the whole set: the client's subset is told by the resources' own
        // versions.
        let version = resources.version.clone();
        let previous = watch.seen.replace(resources.clone());
        // The client holds exactly what the last response was computed from (under the same
        // subscription, or `seen` would have been cleared): send what changed since, from
        // the difference every stream making this move shares.
        if !force
            && let Some(previous) = previous
            && watch.known.is_exact()
        {
            let diff = resources.diff_from(&previous);
            let mut changed: Vec<&Arc<Versioned>> = diff
                .changed
                .iter()
                .filter(|v| watch.wildcard || watch.names.contains(&v.name))
                .collect();
            for v in &resend {
                if !changed.iter().any(|c| c.name == v.name) {
                    changed.push(*v);
                }
            }
            let removed: Vec<String> = diff
                .removed
                .iter()
                .filter(|n| watch.known.contains(n))
                .cloned()
                .collect();
            if changed.is_empty() && removed.is_empty() {
                return None;
            }
            if changed.len() + removed.len() > Known::EDIT_LIMIT {
                let items = watch.desired(resources);
                watch.known.replace(&items);
            } else {
                watch.known.apply(&changed, &removed);
            }
            let response = delta_message(t, &version, &changed, removed, self.nonce());
            self.record_push(t, &response.nonce, &version, since);
            return Some(response);
        }
        let items = watch.desired(resources);
        let changed: Vec<&Arc<Versioned>> = items
            .iter()
            .copied()
            .filter(|v| {
                watch.known.version(&v.name) != Some(v.version.as_str())
                    || resend.iter().any(|r| r.name == v.name)
            })
            .collect();
        let present: BTreeSet<&str> = items.iter().map(|v| v.name.as_str()).collect();
        let mut removed: Vec<String> = watch
            .known
            .names()
            .filter(|n| !present.contains(n))
            .map(str::to_string)
            .collect();
        // Explicitly requested names that do not exist are reported as removed, once, so the
        // client stops waiting for them.
        if !watch.wildcard && force {
            for name in &watch.names {
                if !present.contains(name.as_str())
                    && !watch.known.contains(name)
                    && !removed.contains(name)
                {
                    removed.push(name.clone());
                }
            }
        }
        // The client holds what this response brings it to: exactly `items`.
        watch.known.replace(&items);
        if changed.is_empty() && removed.is_empty() && !force {
            return None;
        }
        let response = delta_message(t, &version, &changed, removed, self.nonce());
        self.record_push(t, &response.nonce, &version, since);
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proxy;
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

    #[test]
    fn delta_sends_what_the_client_does_not_hold() {
        let mut s = stream();
        let watch = s.watches.entry(ResourceType::Cds).or_default();
        watch.subscribed = true;
        watch.wildcard = true;
        // Reconnected holding `a` at the current version, `b` at an old one, and `gone`.
        watch.known.declare("a".into(), "1".into());
        watch.known.declare("b".into(), "old".into());
        watch.known.declare("gone".into(), "1".into());
        let first = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let r = s
            .delta_response(ResourceType::Cds, &first, true, None)
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["b", "c"], vec!["gone"]));
        let known = &s.watches[&ResourceType::Cds].known;
        assert_eq!(known.version("b"), Some("1"));
        assert!(!known.contains("gone"));
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
        // The client unsubscribes from `b` (as the stream records it: forgotten, and the
        // next response computed afresh): it is sent again when subscribed again.
        let watch = s.watches.get_mut(&ResourceType::Cds).unwrap();
        watch.known.forget("b");
        watch.seen = None;
        let r = s
            .delta_response(
                ResourceType::Cds,
                &set(&[("a", "2"), ("b", "1")]),
                false,
                None,
            )
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["b"], vec![]));
    }

    #[test]
    fn delta_by_name_sends_only_subscribed_changes() {
        let mut s = stream();
        let watch = s.watches.entry(ResourceType::Eds).or_default();
        watch.subscribed = true;
        watch.names = ["a".to_string(), "b".to_string()].into();
        let r = s
            .delta_response(
                ResourceType::Eds,
                &set(&[("a", "1"), ("b", "1"), ("c", "1")]),
                true,
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
        let known = &s.watches[&ResourceType::Eds].known;
        assert_eq!(known.version("a"), Some("2"));
        assert!(!known.contains("b") && !known.contains("c"));
    }

    #[test]
    fn resend_sends_held_resources_again_once() {
        let mut s = stream();
        let watch = s.watches.entry(ResourceType::Eds).or_default();
        watch.subscribed = true;
        watch.names = ["a".to_string(), "b".to_string()].into();
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
        s.watches.get_mut(&ResourceType::Eds).unwrap().resend =
            ["a", "c", "d"].map(String::from).into();
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
        s.watches.get_mut(&ResourceType::Eds).unwrap().resend = ["a".to_string()].into();
        let changed = set(&[("a", "1"), ("b", "2"), ("c", "1")]);
        let r = s
            .delta_response(ResourceType::Eds, &changed, false, None)
            .unwrap();
        assert_eq!(delta_names(&r), (vec!["b", "a"], vec![]));

        // State of the world: the whole selection again.
        let mut s = stream();
        let watch = s.watches.entry(ResourceType::Eds).or_default();
        watch.subscribed = true;
        watch.names = ["a".to_string()].into();
        assert!(
            s.sotw_response(ResourceType::Eds, &held, true, None)
                .is_some()
        );
        assert!(
            s.sotw_response(ResourceType::Eds, &held, false, None)
                .is_none()
        );
        s.watches.get_mut(&ResourceType::Eds).unwrap().resend = ["a".to_string()].into();
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
            s.acknowledge(ResourceType::Cds, "7-3", "old", Some("bad cluster")),
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
}
