//! The versioned sets the cache hands out: one resource as sent (`Versioned`: name, content
//! version, encoded body, and the names it makes a proxy fetch), every resource of one type for
//! a proxy class (`TypedResources`, with a version over the set and the differences streams
//! moving between sets share), and the content version itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sha2::{Digest, Sha256};

use super::lock;
use crate::envoy::{self, ResourceType, rds_names};

/// One resource as sent: its name, content version and encoded body.
#[derive(Debug)]
pub struct Versioned {
    pub name: String,
    pub version: String,
    pub body: Any,
    /// The names this resource makes the proxy fetch (`links`), decoded once.
    links: std::sync::OnceLock<Vec<String>>,
}

impl PartialEq for Versioned {
    fn eq(&self, other: &Versioned) -> bool {
        self.name == other.name && self.version == other.version && self.body == other.body
    }
}

impl Versioned {
    pub fn new(name: String, version: String, body: Any) -> Versioned {
        Versioned {
            name,
            version,
            body,
            links: std::sync::OnceLock::new(),
        }
    }

    /// What the resource, of type `t`, makes the proxy fetch by name: a cluster that uses EDS
    /// its endpoint assignment, a listener its route configurations. Decoded on first use and
    /// kept (resources are shared by every class that generates them).
    pub fn links(&self, t: ResourceType) -> &[String] {
        self.links.get_or_init(|| match t {
            // An EDS cluster names the assignment it reads: its `service_name`, or its own
            // name (clusters may share one assignment).
            ResourceType::Cds => xds_cluster::Cluster::decode(self.body.value.as_slice())
                .ok()
                .filter(|c| {
                    matches!(
                        c.cluster_discovery_type,
                        Some(xds_cluster::cluster::ClusterDiscoveryType::Type(t))
                            if t == xds_cluster::cluster::DiscoveryType::Eds as i32
                    )
                })
                .map(|c| {
                    let service = c
                        .eds_cluster_config
                        .map(|e| e.service_name)
                        .filter(|s| !s.is_empty());
                    vec![service.unwrap_or_else(|| self.name.clone())]
                })
                .unwrap_or_default(),
            ResourceType::Lds => xds_listener::Listener::decode(self.body.value.as_slice())
                .map(|l| rds_names(&l))
                .unwrap_or_default(),
            ResourceType::Eds | ResourceType::Rds | ResourceType::Sds | ResourceType::Nds => {
                Vec::new()
            }
        })
    }
}

/// Every resource of one type for one proxy class.
#[derive(Debug, Default)]
pub struct TypedResources {
    /// A hash over every (name, version): equal sets have equal versions.
    pub version: String,
    pub items: BTreeMap<String, Arc<Versioned>>,
    /// A hash over the names alone: sets with equal names have equal name versions.
    pub(super) names_version: [u8; 8],
    /// What changed from sets streams moved to this one from, each computed once and shared
    /// by every stream making the same move.
    diffs: Mutex<Vec<(Weak<TypedResources>, Arc<SetDiff>)>>,
}

impl PartialEq for TypedResources {
    fn eq(&self, other: &TypedResources) -> bool {
        self.version == other.version && self.items == other.items
    }
}

/// The difference between two sets of one type: resources new or with another version, and
/// names gone.
#[derive(Debug, Default)]
pub struct SetDiff {
    pub changed: Vec<Arc<Versioned>>,
    pub removed: Vec<String>,
}

/// How many sets' differences a set remembers.
const DIFFS_KEPT: usize = 4;

impl TypedResources {
    pub fn new(items: BTreeMap<String, Arc<Versioned>>) -> TypedResources {
        let mut hasher = Sha256::new();
        let mut names = Sha256::new();
        for (name, item) in &items {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(item.version.as_bytes());
            hasher.update([0]);
            names.update(name.as_bytes());
            names.update([0]);
        }
        let mut names_version = [0; 8];
        names_version.copy_from_slice(&names.finalize()[..8]);
        TypedResources {
            version: short_hex(&hasher.finalize()),
            items,
            names_version,
            diffs: Mutex::default(),
        }
    }

    /// What changed from `old` to this set, in name order.
    pub fn diff_from(&self, old: &Arc<TypedResources>) -> Arc<SetDiff> {
        let mut diffs = lock(&self.diffs);
        if let Some((_, d)) = diffs
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(old)) && w.strong_count() > 0)
        {
            return d.clone();
        }
        let mut diff = SetDiff::default();
        let (mut a, mut b) = (old.items.iter().peekable(), self.items.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((name, _)), None) => {
                    diff.removed.push((*name).clone());
                    a.next();
                }
                (None, Some((_, v))) => {
                    diff.changed.push((*v).clone());
                    b.next();
                }
                (Some((old_name, old_v)), Some((name, v))) => match old_name.cmp(name) {
                    std::cmp::Ordering::Less => {
                        diff.removed.push((*old_name).clone());
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        diff.changed.push((*v).clone());
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(old_v, v) && old_v.version != v.version {
                            diff.changed.push((*v).clone());
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        let diff = Arc::new(diff);
        diffs.retain(|(w, _)| w.strong_count() > 0);
        if diffs.len() >= DIFFS_KEPT {
            diffs.remove(0);
        }
        diffs.push((Arc::downgrade(old), diff.clone()));
        diff
    }
}

/// A content hash over the canonical JSON form (protobuf map fields encode in hash-map order,
/// so raw bytes are not stable across equal messages).
pub fn content_version(body: &Any) -> Result<String, envoy::RenderError> {
    let json = envoy::any_to_json(body)?;
    let mut hasher = Sha256::new();
    hasher.update(json.to_string().as_bytes());
    Ok(short_hex(&hasher.finalize()))
}

fn short_hex(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_differences_are_computed_once() {
        let v = |n: &str, version: &str| {
            Arc::new(Versioned::new(n.into(), version.into(), Any::default()))
        };
        let set = |items: Vec<Arc<Versioned>>| {
            Arc::new(TypedResources::new(
                items.into_iter().map(|i| (i.name.clone(), i)).collect(),
            ))
        };
        let (a, b, c) = (v("a", "1"), v("b", "1"), v("c", "1"));
        let old = set(vec![a.clone(), b.clone(), c.clone()]);
        let new = set(vec![v("a", "2"), b.clone(), v("d", "1")]);
        let diff = new.diff_from(&old);
        let changed: Vec<&str> = diff.changed.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(changed, ["a", "d"]);
        assert_eq!(diff.removed, ["c"]);
        assert!(Arc::ptr_eq(&diff, &new.diff_from(&old)), "shared");
        // The same content under another version string counts as unchanged only by version.
        let same = set(vec![v("a", "1"), b, c]);
        assert!(same.diff_from(&old).changed.is_empty());
    }
}
