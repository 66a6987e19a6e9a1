//! bowline's manifests: its CRDs (manifests/crds.yaml) serve exactly the groups, kinds, versions
//! and storage versions of Istio's own CRDs (../shared/istio/crds), so every Istio config that
//! applies to istiod's CRDs applies to bowline's. The ingress gateway
//! (manifests/ingressgateway.yaml) is Istio's `istio-ingressgateway`, and its pod is what gateway
//! injection makes. (Installing the manifests on a real API server is in tests/kube.rs.)

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

/// The documents of a manifest file.
fn manifest(name: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect()
}

/// manifests/ingressgateway.yaml is Istio's `istio-ingressgateway`: its ServiceAccount (no API
/// token, no role: the gateway proves itself with its projected `istio-ca` token), a
/// Deployment of stock Envoy bootstrapped as a `router` with the gateway's labels, ready on
/// 15021, and a LoadBalancer Service 80→8080, 443→8443 and 15021 selecting it.
#[test]
fn ingress_gateway_objects() {
    let docs = manifest("ingressgateway.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "Deployment", "Service"],
        "no RBAC"
    );
    let [account, deployment, service] = &docs[..] else {
        unreachable!()
    };
    for d in &docs {
        assert_eq!(d["metadata"]["name"], "istio-ingressgateway");
        assert_eq!(d["metadata"]["namespace"], "istio-system");
    }
    assert_eq!(account["automountServiceAccountToken"], false);

    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["istio"], "ingressgateway");
    assert_eq!(labels["app"], "istio-ingressgateway");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app": "istio-ingressgateway", "istio": "ingressgateway"})
    );
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], "istio-ingressgateway");
    assert_eq!(spec["initContainers"][0]["name"], "istio-bootstrap");
    let args = strings(&spec["initContainers"][0]["args"]);
    assert_eq!(args[0], "bootstrap", "no capture: {args:?}");
    for want in [
        "--type=router",
        "--labels-file=/etc/istio/pod/labels",
        "--token-file=/var/run/secrets/tokens/istio-token",
        "--readiness-port=15021",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    let proxy = &spec["containers"][0];
    assert_eq!(proxy["name"], "istio-proxy");
    assert_eq!(proxy["command"], serde_json::json!(["envoy"]));
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);

    assert_eq!(service["spec"]["type"], "LoadBalancer");
    let selector = service["spec"]["selector"].as_object().expect("selector");
    assert!(
        selector.iter().all(|(k, v)| &labels[k] == v),
        "{selector:?}"
    );
    let ports: Vec<(u64, u64)> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().expect("port"),
                p["targetPort"].as_u64().expect("targetPort"),
            )
        })
        .collect();
    assert_eq!(ports, [(15021, 15021), (80, 8080), (443, 8443)]);
}

/// The gateway's pod is exactly what gateway injection makes of a pod that declares only
/// `istio-proxy` with `image: auto`, so the manifest and the injector cannot drift apart.
#[test]
fn ingress_gateway_pod_is_gateway_injection() {
    use bowline::webhook::inject::{Options, Outcome, inject_pod};
    let docs = manifest("ingressgateway.yaml");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the Deployment");
    let template = &deployment["spec"]["template"];
    let mut declared = template.clone();
    declared["metadata"]["annotations"] =
        serde_json::json!({"inject.istio.io/templates": "gateway"});
    // The manifest's pod opts out of the webhook: it is injected already.
    let labels = declared["metadata"]["labels"]
        .as_object_mut()
        .expect("labels");
    assert_eq!(
        labels.remove("sidecar.istio.io/inject"),
        Some("false".into())
    );
    let spec = declared["spec"].as_object_mut().expect("spec");
    for injected in ["initContainers", "volumes", "securityContext"] {
        spec.remove(injected);
    }
    spec.insert(
        "containers".into(),
        serde_json::json!([{"name": "istio-proxy", "image": "auto"}]),
    );
    let outcome = inject_pod(
        &declared,
        "istio-ingressgateway",
        &Options::new("istio-system"),
    );
    let Ok(Outcome::Injected { mut pod, .. }) = outcome else {
        panic!("the declared gateway pod is injected: {outcome:?}");
    };
    assert_eq!(pod["spec"], template["spec"]);
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "false".into();
    assert_eq!(pod["metadata"]["labels"], template["metadata"]["labels"]);
}
