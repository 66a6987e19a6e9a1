//! Gateway injection: istiod's `gateway` template (`inject.istio.io/templates: gateway`) for
//! stock Envoy.
//!
//! Contract: a gateway pod declares a container named `istio-proxy` (usually `image: auto`);
//! injection fills it in as the gateway's Envoy and leaves everything else the pod has. What
//! differs from a sidecar:
//!
//! - no `istio-init` and no capture: the init container `istio-bootstrap` only writes the
//!   bootstrap (`bowline bootstrap --type=router`, the pod's labels passed as a sidecar's are),
//!   as the proxy's uid 1337 with no capabilities;
//! - `istio-proxy` is the container the pod declares, made from the sidecar's proxy container
//!   with the declared fields laid over it as istiod's strategic merge lays them: `image: auto`
//!   (or none) takes the proxy image, objects merge field by field, `env`, `ports` and
//!   `volumeMounts` merge by their keys (`name`, `containerPort`, `mountPath`), other lists and
//!   values replace ours. A pod that declares none gets ours last among its containers;
//! - the pod may bind ports below 1024 (`net.ipv4.ip_unprivileged_port_start=0`, istiod's
//!   default for gateways) unless it sets that sysctl itself;
//! - no `security.istio.io/tlsMode` label and no default-container annotations, as istiod's
//!   template; the capture annotations are not used (a warning names them).

use k8s_openapi::api::core::v1::Container;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use super::{
    BOOTSTRAP_CONTAINER, InjectError, Options, PROXY_CONTAINER, bootstrap_args, bootstrap_mounts,
    downward_env, proxy_security_context,
};

/// What a pod's `istio-proxy` sets to have the injector choose the image.
pub const AUTO_IMAGE: &str = "auto";
/// The sysctl that lets a non-root Envoy bind ports below 1024.
const LOW_PORTS_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";

/// The lists of a container strategic merge merges item by item, and the key of their items.
const MERGE_KEYS: [(&str, &str); 3] = [
    ("env", "name"),
    ("ports", "containerPort"),
    ("volumeMounts", "mountPath"),
];

/// Sidecar annotations a gateway has no use for: it captures nothing and is never native.
const UNUSED_ANNOTATIONS: [&str; 9] = [
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "status.sidecar.istio.io/port",
    "sidecar.istio.io/interceptionMode",
    "sidecar.istio.io/nativeSidecar",
];

/// `istio-bootstrap`: writes the gateway's bootstrap into the `istio-envoy` volume.
pub(super) fn bootstrap_container(opts: &Options) -> Container {
    Container {
        name: BOOTSTRAP_CONTAINER.into(),
        image: Some(opts.injector_image.clone()),
        args: Some(bootstrap_args(opts, ["--type=router".to_string()])),
        env: Some(downward_env()),
        security_context: Some(proxy_security_context()),
        volume_mounts: Some(bootstrap_mounts()),
        ..Default::default()
    }
}

/// Puts `proxy` where the pod's own `istio-proxy` is, with the pod's fields over it, or last.
pub(super) fn place_proxy(containers: &mut Vec<Value>, proxy: Value) {
    match containers.iter_mut().find(|c| c["name"] == PROXY_CONTAINER) {
        Some(declared) => *declared = merge_declared(proxy, declared),
        None => containers.push(proxy),
    }
}

/// The pod's declared container laid over the generated one (see the module contract).
fn merge_declared(mut generated: Value, declared: &Value) -> Value {
    let (Some(ours), Some(theirs)) = (generated.as_object_mut(), declared.as_object()) else {
        return generated;
    };
    for (field, value) in theirs {
        if field == "image" && value.as_str().is_none_or(|i| i == AUTO_IMAGE) {
            continue;
        }
        let key = MERGE_KEYS
            .iter()
            .find(|(list, _)| list == field)
            .map(|(_, key)| *key);
        let merged = match (ours.remove(field), key) {
            (Some(Value::Array(ours)), Some(key)) => merge_list(ours, value, key),
            (Some(ours @ Value::Object(_)), _) => merge_objects(ours, value),
            _ => value.clone(),
        };
        ours.insert(field.clone(), merged);
    }
    generated
}

/// `theirs` items replace ours of the same `key`; the others follow ours.
fn merge_list(mut ours: Vec<Value>, theirs: &Value, key: &str) -> Value {
    for item in theirs.as_array().into_iter().flatten() {
        match ours.iter_mut().find(|o| o.get(key) == item.get(key)) {
            Some(existing) => *existing = merge_objects(existing.take(), item),
            None => ours.push(item.clone()),
        }
    }
    Value::Array(ours)
}

/// Objects merge field by field (`null` removes one); anything else replaces.
fn merge_objects(ours: Value, theirs: &Value) -> Value {
    match (ours, theirs) {
        (Value::Object(mut ours), Value::Object(theirs)) => {
            for (k, v) in theirs {
                if v.is_null() {
                    ours.remove(k);
                    continue;
                }
                let merged = match ours.remove(k) {
                    Some(o) => merge_objects(o, v),
                    None => v.clone(),
                };
                ours.insert(k.clone(), merged);
            }
            Value::Object(ours)
        }
        (_, theirs) => theirs.clone(),
    }
}

/// Lets the pod's Envoy (uid 1337) bind ports below 1024, unless the pod sets the sysctl.
pub(super) fn allow_low_ports(spec: &mut Map<String, Value>) -> Result<(), InjectError> {
    let context = spec
        .entry("securityContext")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(InjectError::NotAnObject("spec.securityContext"))?;
    let sysctls = context
        .entry("sysctls")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or(InjectError::NotAnObject("spec.securityContext.sysctls"))?;
    if !sysctls.iter().any(|s| s["name"] == LOW_PORTS_SYSCTL) {
        sysctls.push(json!({"name": LOW_PORTS_SYSCTL, "value": "0"}));
    }
    Ok(())
}

/// A warning for each sidecar annotation the gateway pod sets in vain.
pub(super) fn unused_annotations(annotations: &BTreeMap<String, String>) -> Vec<String> {
    UNUSED_ANNOTATIONS
        .iter()
        .filter(|a| annotations.contains_key(**a))
        .map(|a| format!("annotation {a}: not used by a gateway (it captures no traffic)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Outcome, Skip, Template, inject_pod};
    use super::*;

    fn opts() -> Options {
        Options::new("istio-system")
    }

    /// istio's own gateway Deployment's pod: the template annotation and `image: auto`.
    fn gateway_pod() -> Value {
        json!({
            "metadata": {
                "name": "istio-ingressgateway-0",
                "namespace": "istio-system",
                "labels": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
                "annotations": {"inject.istio.io/templates": "gateway"}
            },
            "spec": {
                "serviceAccountName": "istio-ingressgateway",
                "containers": [{"name": "istio-proxy", "image": "auto", "imagePullPolicy": "IfNotPresent"}]
            }
        })
    }

    fn injected(pod: &Value) -> (Value, Vec<String>) {
        match inject_pod(pod, "istio-ingressgateway", &opts()).expect("injects") {
            Outcome::Injected { pod, warnings } => (pod, warnings),
            other => panic!("not injected: {other:?}"),
        }
    }

    fn args(c: &Value) -> Vec<&str> {
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect()
    }

    #[test]
    fn a_gateway_gets_a_router_bootstrap_and_no_capture() {
        let (out, warnings) = injected(&gateway_pod());
        assert!(warnings.is_empty(), "{warnings:?}");
        let spec = &out["spec"];
        let inits = spec["initContainers"].as_array().expect("init containers");
        assert_eq!(inits.len(), 1);
        let init = &inits[0];
        assert_eq!(init["name"], "istio-bootstrap");
        let a = args(init);
        assert_eq!(a[0], "bootstrap", "no istio-iptables: {a:?}");
        for want in [
            "--type=router",
            "--labels-file=/etc/istio/pod/labels",
            "--token-file=/var/run/secrets/tokens/istio-token",
            "--readiness-port=15021",
        ] {
            assert!(a.contains(&want), "{want} in {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("--interception-mode")));
        assert_eq!(init["securityContext"]["runAsUser"], 1337);
        assert!(init["securityContext"]["capabilities"].get("add").is_none());

        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "the declared container, filled in");
        let proxy = &containers[0];
        assert_eq!(proxy["image"], "envoyproxy/envoy:v1.40.0");
        assert_eq!(proxy["imagePullPolicy"], "IfNotPresent");
        assert_eq!(proxy["command"], json!(["envoy"]));
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        assert_eq!(
            spec["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
        );

        let labels = &out["metadata"]["labels"];
        assert!(labels.get("security.istio.io/tlsMode").is_none());
        assert_eq!(
            labels["service.istio.io/canonical-name"],
            "istio-ingressgateway"
        );
        let annotations = &out["metadata"]["annotations"];
        assert!(
            annotations
                .get("kubectl.kubernetes.io/default-container")
                .is_none()
        );
        assert_eq!(
            annotations["sidecar.istio.io/status"],
            r#"{"initContainers":["istio-bootstrap"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#
        );
        // Injected once: the status annotation says so.
        assert_eq!(
            inject_pod(&out, "istio-ingressgateway", &opts()),
            Ok(Outcome::Skipped(Skip::AlreadyInjected))
        );
    }

    #[test]
    fn the_declared_container_wins_field_by_field() {
        let mut pod = gateway_pod();
        pod["spec"]["containers"] = json!([
            {"name": "istio-proxy", "image": "registry.test/envoy:custom",
             "ports": [{"containerPort": 15090, "name": "metrics"}, {"containerPort": 8080}],
             "env": [{"name": "EXTRA", "value": "1"}],
             "resources": {"limits": {"memory": "1Gi"}},
             "securityContext": {"readOnlyRootFilesystem": false}},
            {"name": "helper", "image": "helper:1"}
        ]);
        pod["spec"]["securityContext"] = json!({"sysctls": [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}
        ]});
        let (out, _) = injected(&pod);
        let containers = out["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers[1]["name"], "helper", "order kept");
        let proxy = &containers[0];
        assert_eq!(proxy["image"], "registry.test/envoy:custom");
        assert_eq!(
            proxy["ports"],
            json!([
                {"containerPort": 15090, "name": "metrics", "protocol": "TCP"},
                {"containerPort": 8080}
            ])
        );
        assert_eq!(proxy["env"], json!([{"name": "EXTRA", "value": "1"}]));
        assert_eq!(proxy["resources"], json!({"limits": {"memory": "1Gi"}}));
        let security = &proxy["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], false);
        assert_eq!(security["runAsUser"], 1337, "the rest of ours stays");
        assert_eq!(
            out["spec"]["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]),
            "the pod's own setting stays"
        );
        // Without a declared container, ours comes last.
        let mut pod = gateway_pod();
        pod["spec"]["containers"] = json!([{"name": "app", "image": "app:1"}]);
        let (out, _) = injected(&pod);
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["app", "istio-proxy"]);
    }

    #[test]
    fn templates_are_chosen_as_istiod_chooses() {
        let of = |v: &str| {
            Template::of(&BTreeMap::from([(
                "inject.istio.io/templates".to_string(),
                v.to_string(),
            )]))
        };
        assert_eq!(Template::of(&BTreeMap::new()), Ok(Template::Sidecar));
        assert_eq!(of("gateway"), Ok(Template::Gateway));
        assert_eq!(of(" gateway, gateway"), Ok(Template::Gateway));
        assert_eq!(of("sidecar"), Ok(Template::Sidecar));
        assert_eq!(
            of("grpc-agent"),
            Err(InjectError::UnknownTemplate("grpc-agent".into()))
        );
        assert_eq!(of(""), Err(InjectError::UnknownTemplate("".into())));
        assert!(matches!(
            of("sidecar,gateway"),
            Err(InjectError::BadAnnotation { .. })
        ));
        // The message names the template and those there are, as istiod's does.
        let err = of("spire").expect_err("unknown").to_string();
        assert!(
            err.contains("\"spire\" not found; have sidecar, gateway"),
            "{err}"
        );
    }

    #[test]
    fn capture_annotations_are_checked_and_reported_unused() {
        let mut pod = gateway_pod();
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
            json!("22");
        pod["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] = json!("true");
        let (out, warnings) = injected(&pod);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            out["spec"]["containers"][0].get("restartPolicy").is_none(),
            "a gateway's proxy is never native"
        );
        // A malformed one still denies the pod, as on a sidecar.
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
            json!("ssh");
        assert!(matches!(
            inject_pod(&pod, "gw", &opts()),
            Err(InjectError::BadAnnotation { .. })
        ));
        // The proxy declared as an init container is not where the template fills it in.
        let mut pod = gateway_pod();
        pod["spec"]["initContainers"] = json!([{"name": "istio-proxy", "image": "auto"}]);
        assert!(matches!(
            inject_pod(&pod, "gw", &opts()),
            Err(InjectError::NameTaken { .. })
        ));
    }
}
