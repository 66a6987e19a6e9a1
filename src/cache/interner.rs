//! Encoded resources shared by every class: a resource whose name and bytes were generated
//! before (for any class) is the same `Versioned`, so its content version is computed once and
//! one copy is held however many classes serve it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};

use envoy_types::pb::google::protobuf::Any;

use super::{Versioned, lock};
use crate::envoy::ResourceType;

type InternKey = (ResourceType, u64);

/// Encoded resources by (type, hash of name and bytes), shared by every class.
#[derive(Default)]
pub(super) struct Interner {
    items: Mutex<HashMap<InternKey, Vec<Weak<Versioned>>>>,
    hasher: foldhash::fast::FixedState,
}

impl Interner {
    pub(super) fn key(&self, t: ResourceType, name: &str, body: &Any) -> InternKey {
        (t, self.hasher.hash_one((name, body.value.as_slice())))
    }

    pub(super) fn get(&self, key: &InternKey, name: &str, body: &Any) -> Option<Arc<Versioned>> {
        lock(&self.items)
            .get(key)?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|v| v.name == name && v.body == *body)
    }

    /// Inserts `v` unless an equal resource got there first; returns the shared one.
    pub(super) fn insert(&self, key: InternKey, v: Arc<Versioned>) -> Arc<Versioned> {
        let mut items = lock(&self.items);
        let list = items.entry(key).or_default();
        if let Some(found) = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|o| o.name == v.name && o.body == v.body)
        {
            return found;
        }
        list.push(Arc::downgrade(&v));
        v
    }

    /// Forgets resources no class holds any more.
    pub(super) fn prune(&self) {
        lock(&self.items).retain(|_, list| {
            list.retain(|w| w.strong_count() > 0);
            !list.is_empty()
        });
    }
}
