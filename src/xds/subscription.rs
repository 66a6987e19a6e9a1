//! What a stream has asked for of one resource type, and what its client holds: the xDS
//! subscription rules of both protocol variants in one type.
//!
//! Contract (Envoy's xDS protocol, "How the client specifies what resources to return"):
//! - **Wildcard**: every resource of the type. A client asks for it with the name `*`, or, for
//!   the types Envoy subscribes to as a whole (CDS, LDS), with a first request that names
//!   nothing ("legacy wildcard").
//! - **State of the world**: each request's `resource_names` replaces the subscription. A
//!   legacy wildcard stays while requests keep naming nothing, and ends when one names
//!   resources without `*`; an empty list for any other subscription asks for nothing.
//! - **Delta**: `resource_names_subscribe` and `resource_names_unsubscribe` edit the
//!   subscription; `*` in either turns the wildcard on or off, and a legacy wildcard lasts
//!   until `*` is unsubscribed. A name unsubscribed while not under a wildcard is forgotten:
//!   the client no longer holds it, and subscribing again sends it again.
//! - **Versions held** (delta): what the client holds of the type, by name — what this stream
//!   sent it, and the `initial_resource_versions` it declared on (re)connecting, which stand
//!   until the first response reconciles them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cache::Versioned;
use crate::envoy::ResourceType;

/// What a request changed in a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// The set of resources asked for is different (the next response is computed afresh).
    pub changed: bool,
    /// Something is asked for that was not before (a delta stream must answer even when the
    /// client already holds it all, so that it stops waiting).
    pub added: bool,
}

/// One resource type's subscription on one stream.
#[derive(Debug, Default)]
pub struct Subscription {
    /// A request for the type has been seen.
    active: bool,
    wildcard: bool,
    /// The wildcard comes from a first request that named nothing.
    legacy: bool,
    names: BTreeSet<String>,
    held: Held,
}

impl Subscription {
    /// Whether any request for the type has been seen.
    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The names asked for by name (beside a wildcard, if any).
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Whether the subscription selects the resource `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Whether a state-of-the-world response is due at all: something is asked for.
    pub fn asks_for_anything(&self) -> bool {
        self.active && (self.wildcard || !self.names.is_empty())
    }

    /// What the client holds.
    pub fn held(&self) -> &Held {
        &self.held
    }

    pub fn held_mut(&mut self) -> &mut Held {
        &mut self.held
    }

    /// A state-of-the-world request for type `t` naming `names`.
    pub fn sotw(&mut self, t: ResourceType, names: &[String]) -> Change {
        let first = !self.active;
        self.active = true;
        let star = names.iter().any(|n| n == "*");
        let named: BTreeSet<String> = names.iter().filter(|n| *n != "*").cloned().collect();
        let (wildcard, legacy) = if star {
            (true, false)
        } else if named.is_empty() && t.is_wildcard_type() && (first || self.legacy) {
            (true, true)
        } else {
            (false, false)
        };
        let changed = first || wildcard != self.wildcard || named != self.names;
        let added = (wildcard && !self.wildcard) || named.iter().any(|n| !self.names.contains(n));
        self.wildcard = wildcard;
        self.legacy = legacy;
        self.names = named;
        Change { changed, added }
    }

    /// A delta request for type `t`. `initial` are the versions the client says it holds (read
    /// on the type's first request only).
    pub fn delta(
        &mut self,
        t: ResourceType,
        subscribe: &[String],
        unsubscribe: &[String],
        initial: &std::collections::HashMap<String, String>,
    ) -> Change {
        let first = !self.active;
        let mut change = Change {
            changed: first || !subscribe.is_empty() || !unsubscribe.is_empty(),
            added: first,
        };
        if first {
            self.active = true;
            self.wildcard = t.is_wildcard_type() && subscribe.is_empty();
            self.legacy = self.wildcard;
            for (name, version) in initial {
                self.held.declare(name.clone(), version.clone());
            }
        }
        for name in subscribe {
            if name == "*" {
                change.added |= !self.wildcard;
                self.wildcard = true;
                self.legacy = false;
            } else if self.names.insert(name.clone()) {
                change.added = true;
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
                self.legacy = false;
            } else {
                self.names.remove(name);
            }
            if !self.wildcard {
                self.held.forget(name);
            }
        }
        change
    }

    /// The resources this subscription selects from `set`, in name order.
    pub fn select<'a>(&self, set: &'a crate::cache::TypedResources) -> Vec<&'a Arc<Versioned>> {
        if self.wildcard {
            set.items.values().collect()
        } else {
            self.names.iter().filter_map(|n| set.items.get(n)).collect()
        }
    }
}

/// Delta: the resources a client holds of one type. After every response the client holds
/// exactly the resources the response was computed from, so those are kept as the shared
/// `Versioned` items themselves (a pointer each, not a copy of every name and version);
/// versions a client declared when it (re)connected, for resources not sent on this stream,
/// are kept by name until the first response reconciles them.
#[derive(Debug, Default)]
pub struct Held {
    /// Sent on this stream, sorted by name.
    sent: Vec<Arc<Versioned>>,
    /// Declared by the client (`initial_resource_versions`): name → version.
    declared: BTreeMap<String, String>,
}

impl Held {
    /// Above this many edits the held list is made afresh rather than edited in place.
    pub const EDIT_LIMIT: usize = 32;

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
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self
            .sent
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.declared.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.into_iter()
    }

    /// Whether every resource the client holds was sent on this stream.
    pub fn is_exact(&self) -> bool {
        self.declared.is_empty()
    }

    /// The client now holds `changed` too (replacing what it held under those names) and no
    /// longer holds `removed`.
    pub fn apply(&mut self, changed: &[&Arc<Versioned>], removed: &[String]) {
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
    pub fn replace(&mut self, items: &[&Arc<Versioned>]) {
        self.sent = items.iter().map(|v| Arc::clone(v)).collect();
        self.sent.shrink_to_fit();
        self.declared = BTreeMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// One request of a table: state of the world (names) or delta (subscribe, unsubscribe).
    enum Req<'a> {
        Sotw(&'a [&'a str]),
        Delta(&'a [&'a str], &'a [&'a str]),
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn apply(s: &mut Subscription, t: ResourceType, r: &Req) -> Change {
        match r {
            Req::Sotw(names) => s.sotw(t, &strings(names)),
            Req::Delta(sub, unsub) => s.delta(t, &strings(sub), &strings(unsub), &HashMap::new()),
        }
    }

    #[test]
    fn subscription_rules() {
        use ResourceType::{Cds, Eds};
        // (case, type, requests, then: wildcard, names, last change (changed, added))
        #[allow(clippy::type_complexity)]
        let table: &[(&str, ResourceType, &[Req], bool, &[&str], (bool, bool))] = &[
            (
                "sotw legacy wildcard",
                Cds,
                &[Req::Sotw(&[])],
                true,
                &[],
                (true, true),
            ),
            (
                "sotw legacy wildcard stays",
                Cds,
                &[Req::Sotw(&[]), Req::Sotw(&[])],
                true,
                &[],
                (false, false),
            ),
            (
                "sotw names end a legacy wildcard",
                Cds,
                &[Req::Sotw(&[]), Req::Sotw(&["a"])],
                false,
                &["a"],
                (true, true),
            ),
            (
                "sotw empty after names is nothing",
                Cds,
                &[Req::Sotw(&["a"]), Req::Sotw(&[])],
                false,
                &[],
                (true, false),
            ),
            (
                "sotw explicit wildcard with names",
                Cds,
                &[Req::Sotw(&["*", "a"])],
                true,
                &["a"],
                (true, true),
            ),
            (
                "sotw explicit wildcard dropped",
                Cds,
                &[Req::Sotw(&["*"]), Req::Sotw(&["a"])],
                false,
                &["a"],
                (true, true),
            ),
            (
                "sotw by-name type asks for nothing",
                Eds,
                &[Req::Sotw(&[])],
                false,
                &[],
                (true, false),
            ),
            (
                "sotw by name",
                Eds,
                &[Req::Sotw(&["a", "b"]), Req::Sotw(&["b", "c"])],
                false,
                &["b", "c"],
                (true, true),
            ),
            (
                "sotw same names again",
                Eds,
                &[Req::Sotw(&["a"]), Req::Sotw(&["a"])],
                false,
                &["a"],
                (false, false),
            ),
            (
                "sotw fewer names",
                Eds,
                &[Req::Sotw(&["a", "b"]), Req::Sotw(&["a"])],
                false,
                &["a"],
                (true, false),
            ),
            (
                "delta legacy wildcard",
                Cds,
                &[Req::Delta(&[], &[])],
                true,
                &[],
                (true, true),
            ),
            (
                "delta legacy wildcard survives names",
                Cds,
                &[Req::Delta(&[], &[]), Req::Delta(&["a"], &[])],
                true,
                &["a"],
                (true, true),
            ),
            (
                "delta unsubscribe wildcard",
                Cds,
                &[Req::Delta(&[], &[]), Req::Delta(&[], &["*"])],
                false,
                &[],
                (true, false),
            ),
            (
                "delta names on a wildcard type",
                Cds,
                &[Req::Delta(&["a"], &[])],
                false,
                &["a"],
                (true, true),
            ),
            (
                "delta explicit wildcard",
                Eds,
                &[Req::Delta(&["a"], &[]), Req::Delta(&["*"], &[])],
                true,
                &["a"],
                (true, true),
            ),
            (
                "delta by-name type names nothing",
                Eds,
                &[Req::Delta(&[], &[])],
                false,
                &[],
                (true, true),
            ),
            (
                "delta subscribe and unsubscribe",
                Eds,
                &[Req::Delta(&["a", "b"], &[]), Req::Delta(&["c"], &["a"])],
                false,
                &["b", "c"],
                (true, true),
            ),
            (
                "delta subscribed again",
                Eds,
                &[Req::Delta(&["a"], &[]), Req::Delta(&["a"], &[])],
                false,
                &["a"],
                (true, false),
            ),
            (
                "delta ack",
                Eds,
                &[Req::Delta(&["a"], &[]), Req::Delta(&[], &[])],
                false,
                &["a"],
                (false, false),
            ),
        ];
        for (case, t, requests, wildcard, names, (changed, added)) in table {
            let mut s = Subscription::default();
            let mut last = Change::default();
            for r in *requests {
                last = apply(&mut s, *t, r);
            }
            assert_eq!(s.is_wildcard(), *wildcard, "{case}: wildcard");
            assert_eq!(
                s.names().iter().map(String::as_str).collect::<Vec<_>>(),
                *names,
                "{case}: names"
            );
            assert_eq!(
                last,
                Change {
                    changed: *changed,
                    added: *added
                },
                "{case}: change"
            );
        }
    }

    fn versioned(name: &str, version: &str) -> Arc<Versioned> {
        Arc::new(Versioned::new(
            name.into(),
            version.into(),
            envoy_types::pb::google::protobuf::Any::default(),
        ))
    }

    #[test]
    fn versions_held() {
        let mut s = Subscription::default();
        let declared: HashMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "1".to_string()),
        ]
        .into();
        s.delta(ResourceType::Eds, &strings(&["a", "b"]), &[], &declared);
        assert_eq!(s.held().version("a"), Some("1"));
        assert!(
            !s.held().is_exact(),
            "declared versions stand until reconciled"
        );
        // Declared versions are read on the first request only.
        let later: HashMap<String, String> = [("c".to_string(), "9".to_string())].into();
        s.delta(ResourceType::Eds, &strings(&["c"]), &[], &later);
        assert!(!s.held().contains("c"));
        // A response reconciles them: the client holds exactly what was sent.
        let a2 = versioned("a", "2");
        s.held_mut().replace(&[&a2]);
        assert!(s.held().is_exact());
        assert_eq!(s.held().version("a"), Some("2"));
        assert!(!s.held().contains("b"));
        // Unsubscribing forgets a name; under a wildcard it stays held.
        s.delta(ResourceType::Eds, &[], &strings(&["a"]), &HashMap::new());
        assert!(!s.held().contains("a"));
        let mut w = Subscription::default();
        w.delta(ResourceType::Cds, &[], &[], &HashMap::new());
        w.held_mut().replace(&[&a2]);
        w.delta(ResourceType::Cds, &[], &strings(&["a"]), &HashMap::new());
        assert!(w.held().contains("a"), "still selected by the wildcard");
        // Edits in place keep the list sorted.
        let (b, c) = (versioned("b", "1"), versioned("c", "1"));
        w.held_mut().apply(&[&c, &b], &["a".to_string()]);
        assert_eq!(w.held().names().collect::<Vec<_>>(), ["b", "c"]);
    }
}
