//! A proxy's configuration is its outbound part, shared by every proxy whose labels agree on
//! the keys outbound configuration can depend on, plus its own inbound part. For every golden
//! case, and for the same proxy with labels added, changed or removed, the outbound part made
//! for the shared proxy (`translate::outbound_proxy`) and the inbound part made for the proxy
//! itself are, together, exactly what translating everything for the proxy gives, and share no
//! resource.

use crate::common;

use std::collections::BTreeMap;

use bowline::envoy;
use bowline::envoy::TypeSet;
use bowline::model::{Model, Proxy};
use bowline::translate::{self, Output, Part};

/// Every resource by type and name, as canonical JSON.
fn resources(out: &Output) -> BTreeMap<(usize, String), serde_json::Value> {
    let mut all = BTreeMap::new();
    let mut add = |t: usize, name: &str, any| {
        let json = envoy::any_to_json(&any).expect("renders");
        assert!(
            all.insert((t, name.to_string()), json).is_none(),
            "{name} generated twice"
        );
    };
    out.clusters
        .iter()
        .for_each(|c| add(0, &c.name, envoy::pack(c)));
    out.endpoints
        .iter()
        .for_each(|c| add(1, &c.cluster_name, envoy::pack(c)));
    out.listeners
        .iter()
        .for_each(|l| add(2, &l.name, envoy::pack(l)));
    out.routes
        .iter()
        .for_each(|r| add(3, &r.name, envoy::pack(r)));
    all
}

fn check(case: &str, model: &Model, proxy: &Proxy) {
    let whole = resources(&translate::generate(model, proxy, TypeSet::ALL));
    let shared = translate::outbound_proxy(model, proxy);
    let outbound = resources(&translate::generate_part(
        model,
        &shared,
        TypeSet::ALL,
        Part::Outbound,
    ));
    let inbound = resources(&translate::generate_part(
        model,
        proxy,
        TypeSet::ALL,
        Part::Inbound,
    ));
    for key in outbound.keys() {
        assert!(
            !inbound.contains_key(key),
            "{case}, labels {:?}: {key:?} is in both parts",
            proxy.labels
        );
    }
    let mut joined = outbound;
    joined.extend(inbound);
    let names =
        |m: &BTreeMap<(usize, String), serde_json::Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&joined),
        names(&whole),
        "{case}, labels {:?}: resource names",
        proxy.labels
    );
    for (key, want) in &whole {
        assert_eq!(
            &joined[key], want,
            "{case}, labels {:?} (shared outbound labels {:?}): {key:?} differs",
            proxy.labels, shared.labels
        );
    }
}

#[test]
fn outbound_and_inbound_parts_make_the_whole() {
    for case in common::cases::cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (model, proxy) = common::cases::load(&case);
        check(&name, &model, &proxy);
        // The same proxy with other labels: each of its labels changed or removed, and one
        // added; and, with every label key any selector of the case names, each set to values
        // that selectors use and do not use.
        let mut variants = Vec::new();
        for key in proxy.labels.keys() {
            let mut p = proxy.clone();
            p.labels.insert(key.clone(), "other".into());
            variants.push(p);
            let mut p = proxy.clone();
            p.labels.remove(key);
            variants.push(p);
        }
        let mut p = proxy.clone();
        p.labels.insert("unrelated".into(), "x".into());
        variants.push(p);
        let mut p = proxy.clone();
        p.labels.clear();
        variants.push(p);
        for p in &variants {
            check(&name, &model, p);
        }
    }
}
