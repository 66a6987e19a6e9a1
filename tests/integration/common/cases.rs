//! The translation cases of `testdata/translate/<case>/`: `config/` (input YAML), `proxy.yaml`
//! (the proxy asking) and optionally `mesh.yaml`, loaded into a model and a proxy. (Their
//! expected output, `expected/`, is the golden tests' own: `tests/integration/golden.rs`.)

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bowline::model::{MeshConfig, Model, Proxy};
use bowline::source::file::load_dir;

#[derive(serde::Deserialize)]
struct ProxyFile {
    id: String,
    #[serde(default)]
    metadata: serde_json::Value,
    /// The Envoy node's `locality` (`region/zone/subzone`), if it reports one.
    #[serde(default)]
    locality: Option<String>,
    /// The SPIFFE ID the proxy proved on the TLS port (it then holds a workload certificate).
    #[serde(default)]
    identity: Option<String>,
}

/// Every case directory, in name order.
pub fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translate");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata/translate exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("proxy.yaml").exists())
        .collect();
    out.sort();
    out
}

/// The case directories whose name starts with `prefix`, in name order; panics if there is none.
pub fn named(prefix: &str) -> Vec<PathBuf> {
    let out: Vec<PathBuf> = cases()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    assert!(!out.is_empty(), "no {prefix}* golden cases");
    out
}

/// The case's model and proxy.
pub fn load(case: &Path) -> (Model, Proxy) {
    let loaded = load_dir(&case.join("config")).expect("config dir loads");
    let mesh = match std::fs::read_to_string(case.join("mesh.yaml")) {
        Ok(text) => MeshConfig::from_yaml(&text).expect("mesh.yaml is valid"),
        Err(_) => MeshConfig::default(),
    };
    let model = Model::build(
        loaded.resources.into_iter().map(Arc::new).collect(),
        loaded.diagnostics,
        mesh,
    );
    let text = std::fs::read_to_string(case.join("proxy.yaml")).expect("proxy.yaml");
    let file: ProxyFile = serde_saphyr::from_str(&text).expect("proxy.yaml parses");
    let mut proxy = Proxy::parse(&file.id, &file.metadata).expect("proxy is valid");
    if let Some(l) = &file.locality {
        proxy.set_node_locality(bowline::model::proxy::Locality::parse(l));
    }
    if let Some(id) = &file.identity {
        proxy.identity = Some(bowline::model::Identity::parse(id).expect("identity parses"));
        proxy.workload_certificate = true;
    }
    (model, proxy)
}
