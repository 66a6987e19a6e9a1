//! One ADS stream: subscriptions per type, nonces, ACK/NACK, and pushes, for both the
//! state-of-the-world and the incremental (delta) protocol variants.
//!
//! Per the xDS protocol: every response carries a fresh nonce; a request whose `response_nonce`
//! is the type's last nonce is an ACK, or a NACK when it has `error_detail`; a request with an
//! older nonce is stale and ignored. A NACKed response is recorded and not sent again: the next
//! push of that type happens only when its content changes. Types are pushed in the order CDS,
//! EDS, LDS, RDS.

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
    /// Delta: what the client holds, name → version.
    pub known: BTreeMap<String, String>,
    /// The resources the last response was computed from. When a push finds the same set
    /// (unchanged by the new snapshot) and the subscription did not change since, there is
    /// nothing to send and nothing is recomputed. Cleared when the subscription changes.
    pub seen: Option<Arc<TypedResources>>,
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
        if !force && watch.unchanged(resources) {
            return None;
        }
        watch.seen = Some(resources.clone());
        let items = watch.desired(resources);
        let version = set_version(&items);
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
        Some(set_version(&watch.desired(resources)))
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
        if !force && watch.unchanged(resources) {
            return None;
        }
        watch.seen = Some(resources.clone());
        let items = watch.desired(resources);
        let version = set_version(&items);
        let changed: Vec<&Arc<Versioned>> = items
            .iter()
            .copied()
            .filter(|v| watch.known.get(&v.name) != Some(&v.version))
            .collect();
        let present: BTreeSet<&str> = items.iter().map(|v| v.name.as_str()).collect();
        let mut removed: Vec<String> = watch
            .known
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        // Explicitly requested names that do not exist are reported as removed, once, so the
        // client stops waiting for them.
        if !watch.wildcard {
            for name in &watch.names {
                if !present.contains(name.as_str())
                    && !watch.known.contains_key(name)
                    && force
                    && !removed.contains(name)
                {
                    removed.push(name.clone());
                }
            }
        }
        if changed.is_empty() && removed.is_empty() && !force {
            return None;
        }
        let response = xds_discovery::DeltaDiscoveryResponse {
            system_version_info: version.clone(),
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
            removed_resources: removed.clone(),
            nonce: self.nonce(),
            ..Default::default()
        };
        let watch = self.watches.entry(t).or_default();
        for v in &changed {
            watch.known.insert(v.name.clone(), v.version.clone());
        }
        for name in &removed {
            watch.known.remove(name);
        }
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
