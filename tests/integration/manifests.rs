//! bowline's manifests: its CRDs (manifests/crds.yaml) serve exactly the groups, kinds, versions
//! and storage versions of Istio's own CRDs (../shared/istio/crds), so every Istio config that
//! applies to istiod's CRDs applies to bowline's. (Installing the manifests on a real API server
//! is in tests/kube.rs.)

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

/// (group, kind) → (plural, scope, [(version, served, storage)]).
type Crds = BTreeMap<(String, String), (String, String, Vec<(String, bool, bool)>)>;

fn crds(path: &Path) -> Crds {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| {
            let s = &d["spec"];
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let mut versions: Vec<(String, bool, bool)> = s["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    (
                        text(&v["name"]),
                        v["served"].as_bool().unwrap_or(false),
                        v["storage"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            versions.sort();
            (
                (text(&s["group"]), text(&s["names"]["kind"])),
                (text(&s["names"]["plural"]), text(&s["scope"]), versions),
            )
        })
        .collect()
}

#[test]
fn crds_serve_what_istio_serves() {
    let Some(corpus) = common::istio_corpus() else {
        return;
    };
    let ours = crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crds.yaml"));
    let istio = crds(&corpus.join("crds/customresourcedefinitions.gen.yaml"));
    assert!(!istio.is_empty());
    assert_eq!(ours, istio);
}
