//! Sidecar injection against a real kube-apiserver (hack/kube-env.sh): bowline serves `/inject`
//! on its webhook port and the API server calls it through the MutatingWebhookConfiguration of
//! manifests/bowline.yaml (its two webhooks and selectors, pointed at bowline by URL).
//!
//! - a Deployment's Pod, created by the real ReplicaSet controller in a namespace labelled
//!   `istio-injection=enabled`, and a Pod applied with kubectl, come out of the API server with
//!   what `bowline inject` adds to the same manifests (containers, init containers, volumes,
//!   labels, annotations; the API server only adds its defaults);
//! - a gateway pod (`inject.istio.io/templates: gateway`, its own `istio-proxy` with
//!   `image: auto`) comes out as `bowline inject` makes it, and an unknown template is denied;
//! - pods opted out by label or annotation are not injected; in a namespace without the
//!   label, only pods labelled `sidecar.istio.io/inject: "true"` are;
//! - injecting an injected pod again (with `bowline inject`, or by creating a copy through the
//!   webhook) changes nothing;
//! - the injected pod works as a kubelet would run it: its `istio-init` command, run in a
//!   network namespace of its own, installs the capture there and writes the bootstrap from a
//!   pod-bound `istio-ca` token and the `istio-ca-root-cert` ConfigMap bowline published; its
//!   `istio-proxy` command, a stock Envoy, connects to bowline, gets its workload certificate
//!   and serves readiness and Prometheus stats.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::kube::KubeEnv;
use common::{BOWLINE, Bowline, Net, Proc, TempDir};
use serde_json::{Value, json};

const NS: &str = "inj";
const PLAIN: &str = "plain";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: inj}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v1}
      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"}
    spec:
      containers:
      - {name: web, image: web:1, ports: [{containerPort: 8080}]}
";

fn pod_yaml(ns: &str, name: &str, labels: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}{labels}}}, annotations: {{{annotations}}}}}\n\
         spec:\n  containers: [{{name: app, image: app:1, ports: [{{containerPort: 9080}}]}}]\n"
    )
}

/// `bowline inject` with `flags`, on `input`; the documents it prints.
pub(crate) fn bowline_inject(flags: &[String], input: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(BOWLINE)
        .args(["inject", "-f", "-"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bowline inject");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to bowline inject");
    let out = child.wait_with_output().expect("bowline inject output");
    assert!(
        out.status.success(),
        "bowline inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("YAML output")
}

/// Whether every field of `want` is in `got` with the same value (objects: a subset of keys;
/// arrays: element by element, `got` may be longer): what the API server returns after adding
/// its defaults to what was created.
pub(crate) fn contains(got: &Value, want: &Value, path: &str) -> Result<(), String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                let gv = g.get(k).ok_or_else(|| format!("{p}: missing"))?;
                contains(gv, wv, &p)?;
            }
            Ok(())
        }
        (Value::Array(g), Value::Array(w)) => {
            if g.len() < w.len() {
                return Err(format!(
                    "{path}: {} items, want at least {}",
                    g.len(),
                    w.len()
                ));
            }
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                contains(gv, wv, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if got == want => Ok(()),
        _ => Err(format!("{path}: got {got}, want {want}")),
    }
}

fn by_name<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|c| c["name"] == name)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

const INJECTED_LABELS: &[&str] = &[
    "security.istio.io/tlsMode",
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
];
const INJECTED_ANNOTATIONS: &[&str] = &[
    "sidecar.istio.io/status",
    "kubectl.kubernetes.io/default-container",
    "kubectl.kubernetes.io/default-logs-container",
];
const INJECTED_VOLUMES: &[&str] = &[
    "istio-envoy",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

/// What the webhook did to `pod` (from the API server) is what `bowline inject` did to the
/// same manifest (`want`: a Pod or a pod template).
fn same_injection(pod: &Value, want: &Value) -> Result<(), String> {
    let spec = &pod["spec"];
    let want_spec = &want["spec"];
    if names(&spec["initContainers"]).first().map(String::as_str) != Some("istio-init") {
        return Err(format!(
            "init containers {:?}",
            names(&spec["initContainers"])
        ));
    }
    if names(&spec["containers"]).last().map(String::as_str) != Some("istio-proxy") {
        return Err(format!("containers {:?}", names(&spec["containers"])));
    }
    for (list, name) in [
        ("initContainers", "istio-init"),
        ("containers", "istio-proxy"),
    ] {
        let got = by_name(&spec[list], name).ok_or(format!("no {name}"))?;
        let w = by_name(&want_spec[list], name).ok_or(format!("bowline inject: no {name}"))?;
        contains(got, w, name)?;
    }
    for v in INJECTED_VOLUMES {
        let got = by_name(&spec["volumes"], v).ok_or(format!("no volume {v}"))?;
        let w = by_name(&want_spec["volumes"], v).ok_or(format!("bowline inject: no {v}"))?;
        contains(got, w, &format!("volume {v}"))?;
    }
    for (field, keys) in [
        ("labels", INJECTED_LABELS),
        ("annotations", INJECTED_ANNOTATIONS),
    ] {
        for k in keys {
            let (g, w) = (&pod["metadata"][field][k], &want["metadata"][field][k]);
            if g.is_null() || g != w {
                return Err(format!("{field} {k}: got {g}, want {w}"));
            }
        }
    }
    Ok(())
}

fn injected(pod: &Value) -> bool {
    names(&pod["spec"]["containers"]).contains(&"istio-proxy".to_string())
        || !pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_null()
}

fn get_pod(kube: &KubeEnv, ns: &str, name: &str) -> Value {
    serde_json::from_str(&kube.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]))
        .expect("pod JSON")
}

/// `kubectl create --dry-run=server`: the object as admission (the webhooks) leaves it.
fn dry_run_create(kube: &KubeEnv, object: &Value) -> Result<Value, String> {
    let out = kube.kubectl_raw(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&object.to_string()),
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// manifests/bowline.yaml's injector configuration, its webhooks pointed at `url` with
/// `ca_bundle`, failing closed so a broken webhook shows.
pub(crate) fn injector_config(url: &str, ca_bundle: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/bowline.yaml"
    ))
    .expect("manifests/bowline.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("manifest YAML");
    let mut config = docs
        .into_iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("a MutatingWebhookConfiguration in manifests/bowline.yaml");
    assert_eq!(config["metadata"]["name"], "istio-sidecar-injector");
    let webhooks = config["webhooks"].as_array_mut().expect("webhooks");
    assert_eq!(webhooks.len(), 2, "istiod's two webhooks");
    for w in webhooks {
        assert_eq!(w["clientConfig"]["service"]["path"], "/inject");
        w["clientConfig"] = json!({"url": url, "caBundle": ca_bundle});
        w["failurePolicy"] = json!("Fail");
    }
    config
}

#[test]
fn injection_webhook_with_the_api_server() {
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    // bowline's system namespace: where it takes the Lease that lets it publish its root.
    kube.kubectl(&["create", "namespace", "istio-system"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    let webhook = net.addr(1, 15017);
    // The injected bootstrap reaches bowline's TLS port by IP (an IP SAN of its certificate).
    let flags: Vec<String> = [
        "--injector-image=registry.test/bowline:dev".to_string(),
        format!("--discovery-address={}", bowline.xds_tls_addr),
    ]
    .to_vec();
    bowline.extra_args = vec![
        "--kubeconfig".into(),
        kube.kubeconfig.display().to_string(),
        "--webhook-addr".into(),
        webhook.to_string(),
    ];
    bowline.extra_args.extend(flags.iter().cloned());
    rt.block_on(bowline.start());
    let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&root);
    kube.apply(&injector_config(&format!("https://{webhook}/inject"), &ca_bundle).to_string());
    kube.kubectl(&["create", "namespace", NS]);
    kube.kubectl(&["label", "namespace", NS, "istio-injection=enabled"]);
    kube.kubectl(&["create", "namespace", PLAIN]);
    for ns in [NS, PLAIN] {
        assert!(
            kube.wait_for(
                &["get", "serviceaccount", "default", "-n", ns],
                Duration::from_secs(30),
                |_| true
            ),
            "the default service account of {ns}"
        );
    }
    // The API server picks the webhook configuration up a moment after it is created.
    let probe: Value = serde_saphyr::from_str(&pod_yaml(NS, "probe", "", "")).expect("probe pod");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match dry_run_create(&kube, &probe) {
            Ok(p) if injected(&p) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the webhook never injected a probe pod: {other:?}\n{}",
                bowline.log_tail()
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // A Deployment's Pod, made by the ReplicaSet controller.
    kube.apply(DEPLOYMENT);
    let listed = kube.wait_for(
        &["get", "pods", "-n", NS, "-l", "app=web", "-o", "name"],
        Duration::from_secs(60),
        |out| !out.trim().is_empty(),
    );
    assert!(
        listed,
        "the ReplicaSet controller creates the pod: {}\n{}",
        kube.kubectl(&["get", "events", "-n", NS]),
        bowline.log_tail()
    );
    let name = kube.kubectl(&["get", "pods", "-n", NS, "-l", "app=web", "-o", "name"]);
    let name = name.trim().trim_start_matches("pod/").to_string();
    let pod = get_pod(&kube, NS, &name);
    let want = bowline_inject(&flags, DEPLOYMENT);
    let template = want[0].pointer("/spec/template").expect("template");
    if let Err(e) = same_injection(&pod, template) {
        panic!("the Deployment's pod differs from bowline inject: {e}\n{pod:#}");
    }
    assert_eq!(
        pod["metadata"]["labels"]["service.istio.io/canonical-name"],
        "web"
    );

    // A Pod applied directly.
    let direct = pod_yaml(NS, "direct", ", version: v3", "");
    kube.apply(&direct);
    let pod = get_pod(&kube, NS, "direct");
    let want = bowline_inject(&flags, &direct);
    if let Err(e) = same_injection(&pod, &want[0]) {
        panic!("the direct pod differs from bowline inject: {e}\n{pod:#}");
    }

    // A gateway pod (istiod's `gateway` template): its declared istio-proxy is filled in as
    // `bowline inject` fills it, and the API server admits the result (the pod's sysctl, the
    // non-root bootstrap container). A template bowline does not have is denied, named.
    let gateway = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: gw, namespace: {NS}, labels: {{istio: ingressgateway}}, \
         annotations: {{inject.istio.io/templates: gateway}}}}\n\
         spec:\n  containers: [{{name: istio-proxy, image: auto}}]\n"
    );
    kube.apply(&gateway);
    let pod = get_pod(&kube, NS, "gw");
    let want = &bowline_inject(&flags, &gateway)[0];
    // (The API server's own service-account volume comes before the injected ones.)
    let at = |v: &Value, field: &str| match field.strip_prefix("volume ") {
        Some(name) => by_name(&v["spec"]["volumes"], name).cloned(),
        None => v.pointer(field).cloned(),
    };
    let volumes = INJECTED_VOLUMES.iter().map(|v| format!("volume {v}"));
    let fields = [
        "/spec/initContainers",
        "/spec/containers",
        "/spec/securityContext",
        "/metadata/labels",
        "/metadata/annotations",
    ];
    for field in fields.into_iter().map(String::from).chain(volumes) {
        let (got, w) = (at(&pod, &field), at(want, &field));
        assert!(w.is_some(), "bowline inject: no {field}");
        if let Err(e) = contains(&got.unwrap_or_default(), &w.unwrap_or_default(), &field) {
            panic!("the gateway pod differs from bowline inject: {e}\n{pod:#}");
        }
    }
    assert_eq!(names(&pod["spec"]["initContainers"]), ["istio-bootstrap"]);
    let mut waypoint: Value = serde_saphyr::from_str(&gateway).expect("gateway pod");
    waypoint["metadata"]["name"] = json!("waypoint");
    waypoint["metadata"]["annotations"]["inject.istio.io/templates"] = json!("waypoint");
    let denied = dry_run_create(&kube, &waypoint).expect_err("an unknown template is denied");
    assert!(
        denied.contains("requested template \"waypoint\" not found"),
        "{denied}"
    );

    // Opted out by label (the webhook is not even called) or by annotation (it declines).
    kube.apply(&pod_yaml(
        NS,
        "out-label",
        ", sidecar.istio.io/inject: \"false\"",
        "",
    ));
    kube.apply(&pod_yaml(
        NS,
        "out-annotation",
        "",
        "sidecar.istio.io/inject: \"false\"",
    ));
    for name in ["out-label", "out-annotation"] {
        let p = get_pod(&kube, NS, name);
        assert!(!injected(&p), "{name} is not injected: {p:#}");
        assert_eq!(names(&p["spec"]["containers"]), ["app"]);
    }
    // Without the namespace label only pods that ask are injected.
    kube.apply(&pod_yaml(
        PLAIN,
        "chosen",
        ", sidecar.istio.io/inject: \"true\"",
        "",
    ));
    kube.apply(&pod_yaml(PLAIN, "ignored", "", ""));
    assert!(injected(&get_pod(&kube, PLAIN, "chosen")));
    assert!(!injected(&get_pod(&kube, PLAIN, "ignored")));

    // Injecting again changes nothing: offline...
    let pod = get_pod(&kube, NS, "direct");
    let again = bowline_inject(&flags, &pod.to_string());
    assert_eq!(
        again,
        vec![pod.clone()],
        "bowline inject of an injected pod"
    );
    // ...and through the webhook, for a copy of the injected pod.
    let mut copy = pod.clone();
    copy["metadata"] = json!({
        "name": "direct-copy",
        "namespace": NS,
        "labels": pod["metadata"]["labels"],
        "annotations": pod["metadata"]["annotations"],
    });
    copy.as_object_mut().expect("pod").remove("status");
    let created = dry_run_create(&kube, &copy).expect("the copy is admitted");
    for list in ["initContainers", "containers"] {
        assert_eq!(
            names(&created["spec"][list]),
            names(&pod["spec"][list]),
            "{list} of a re-injected pod"
        );
    }

    // The injected pod runs as a kubelet would run it.
    run_like_a_kubelet(&kube, &bowline, &rt, &get_pod(&kube, NS, "direct"));
}

/// Downward-API `metadata.labels` file content (Go's `%q` quoting, sorted keys).
fn labels_file(labels: &Value) -> String {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}\n",
                Value::String(v.as_str().unwrap_or_default().into())
            )
        })
        .collect()
}

/// Runs `istio-init`'s and `istio-proxy`'s commands of the injected `pod` the way a kubelet
/// would: downward-API values substituted, the volumes as directories (the projected token is
/// a pod-bound `istio-ca` token, the root-cert ConfigMap what bowline published), istio-init
/// in a network namespace of its own (when this machine can make one), Envoy on this host so
/// it reaches bowline. Ports that would clash on a shared host are moved.
fn run_like_a_kubelet(
    kube: &KubeEnv,
    bowline: &Bowline,
    rt: &tokio::runtime::Runtime,
    pod: &Value,
) {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .expect("service account")
        .to_string();
    let dir = TempDir::new("kubelet");
    let volume = |v: &str| {
        let d = dir.path().join(v);
        std::fs::create_dir_all(&d).expect("volume dir");
        d.display().to_string()
    };
    let (envoy_dir, podinfo, tokens, root) = (
        volume("istio-envoy"),
        volume("istio-podinfo"),
        volume("istio-token"),
        volume("istiod-ca-cert"),
    );
    let token = kube.kubectl(&[
        "create",
        "token",
        &sa,
        "-n",
        NS,
        "--audience",
        "istio-ca",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        &name,
        "--duration",
        "1h",
    ]);
    std::fs::write(format!("{tokens}/istio-token"), token.trim()).expect("token");
    let configmap = [
        "get",
        "configmap",
        "istio-ca-root-cert",
        "-n",
        NS,
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ];
    assert!(
        kube.wait_for(&configmap, Duration::from_secs(45), |out| out
            .contains("BEGIN CERTIFICATE")),
        "bowline publishes istio-ca-root-cert in {NS}"
    );
    std::fs::write(format!("{root}/root-cert.pem"), kube.kubectl(&configmap)).expect("root");
    std::fs::write(
        format!("{podinfo}/labels"),
        labels_file(&pod["metadata"]["labels"]),
    )
    .expect("labels");

    let (admin, prom, ready) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let ip = "10.244.7.7";
    let subst = |a: &str| {
        a.replace("$(POD_NAME)", &name)
            .replace("$(POD_NAMESPACE)", NS)
            .replace("$(INSTANCE_IP)", ip)
            .replace("$(SERVICE_ACCOUNT)", &sa)
            .replace("/etc/istio/proxy", &envoy_dir)
            .replace("/etc/istio/pod", &podinfo)
            .replace("/var/run/secrets/tokens", &tokens)
            .replace("/var/run/secrets/istio", &root)
            .replace(
                "--prometheus-port=15090",
                &format!("--prometheus-port={prom}"),
            )
            .replace(
                "--readiness-port=15021",
                &format!("--readiness-port={ready}"),
            )
    };
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "istio-init");
    let mut args: Vec<String> = init["args"]
        .as_array()
        .expect("istio-init args")
        .iter()
        .map(|a| subst(a.as_str().expect("string arg")))
        .collect();
    args.push(format!("--admin-port={admin}"));
    match common::netns::Netns::create("inject", &[ip]) {
        Some(ns) => {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, BOWLINE])
                .args(&args)
                .output()
                .expect("run istio-init's command");
            assert!(
                out.status.success(),
                "istio-init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rules = Command::new("ip")
                .args(["netns", "exec", &ns.name, "iptables-save", "-t", "nat"])
                .output()
                .expect("iptables-save");
            let rules = String::from_utf8_lossy(&rules.stdout);
            for rule in [
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
                "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            ] {
                assert!(
                    rules.contains(rule),
                    "{rule} in the pod's namespace:\n{rules}"
                );
            }
        }
        None => {
            // No network namespace here: only the bootstrap half of istio-init.
            let dash = args.iter().position(|a| a == "--").expect("--");
            let out = Command::new(BOWLINE)
                .args(&args[dash + 1..])
                .output()
                .expect("run bowline bootstrap");
            assert!(
                out.status.success(),
                "bootstrap: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let proxy = by_name(&pod["spec"]["containers"], "istio-proxy").expect("istio-proxy");
    assert_eq!(proxy["command"], json!(["envoy"]));
    let envoy_args: Vec<String> = proxy["args"]
        .as_array()
        .expect("istio-proxy args")
        .iter()
        .map(|a| subst(a.as_str().expect("string arg")))
        .collect();
    let mut envoy = Proc::spawn(
        "istio-proxy",
        Command::new(&envoy_bin).args(&envoy_args),
        &dir.path().join("envoy.log"),
    );
    let spiffe = format!("spiffe://cluster.local/ns/{NS}/sa/{sa}");
    let certified = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        common::envoy_admin_get(admin, "/certs")
            .await
            .unwrap_or_default()
            .contains(&spiffe)
    }));
    if let Err(e) = envoy.check_running() {
        panic!("{e}");
    }
    assert!(
        certified,
        "the injected Envoy holds {spiffe}\n{}",
        bowline.log_tail()
    );
    rt.block_on(bowline.wait_synced(&format!("{name}.{NS}"), Duration::from_secs(30)))
        .expect("the injected Envoy is synced");
    let ready_ok = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        common::envoy_admin_get(ready, "/healthz/ready")
            .await
            .is_ok()
    }));
    assert!(ready_ok, "readiness on the injected readiness port");
    let stats = rt
        .block_on(common::envoy_admin_get(prom, "/stats/prometheus"))
        .expect("Prometheus stats");
    assert!(
        stats.contains("envoy_server_live"),
        "{}",
        &stats[..stats.len().min(500)]
    );
    assert!(
        rt.block_on(common::envoy_admin_get(prom, "/config_dump"))
            .is_err(),
        "the stats port serves nothing else of the admin API"
    );
}
