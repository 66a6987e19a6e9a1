//! Istio's own command-line client against bowline: `istioctl`, built from istio.io/istio by
//! hack/istio-tools.sh (`$ISTIO_TOOLS_BIN`), run as a user runs it.
//!
//! - `/version` on the admin port answers as istiod's does, and istioctl's reading of it (the
//!   version, the git revision and the tree state, split at the last two dashes) gives bowline's
//!   version. `istioctl version` itself reaches `/version` only through a port-forward to the
//!   istiod pod, which needs a kubelet that the test API server does not have; `istioctl x
//!   version --xds-address` asks over xDS for `istio.io/debug/syncz` and prints bowline's;
//! - `istioctl proxy-status --xds-address` (TLS, a client certificate of bowline's CA) lists
//!   every connected proxy and its sync state (a NACKed type as ERROR), and with a proxy and
//!   `--file` compares bowline's config dump of it with the Envoy's;
//! - `istioctl x internal-debug <view>` asks over xDS for `istio.io/debug` naming the view and
//!   prints bowline's answer (`syncz`, `adsz`, `config_dump?proxyID=`, `--list`); an unknown
//!   view gets the list, a caller outside the root namespace only its own namespace's config
//!   dumps, and the plaintext port nothing;
//! - `istioctl kube-inject` finds bowline's injector as it finds istiod's, through the
//!   MutatingWebhookConfiguration of manifests/bowline.yaml (label `istio.io/rev: default`) in a
//!   real API server, posts its review of each workload's pod template to bowline's webhook and
//!   prints what `bowline inject` makes of the same manifest.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::kube::KubeEnv;
use common::{Bowline, Net, TempDir};
use serde_json::Value;

use crate::inject::{bowline_inject, contains, injector_config};

fn istioctl(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("istioctl"))
        .args(args)
        // No user configuration of the machine's: only what the test passes.
        .env("HOME", bin)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run istioctl")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// istioctl's reading of istiod's `/version` text (pkg/kube: the version, then the revision
/// and the build status after the last two dashes, a `-dirty` revision kept whole).
fn istioctl_reading(text: &str) -> (String, String, String) {
    let parts: Vec<&str> = text.split('-').collect();
    assert!(
        parts.len() >= 3,
        "{text:?}: want <version>-<revision>-<status>"
    );
    let n = parts.len();
    let (mut version, mut revision) = (parts[..n - 2].join("-"), parts[n - 2].to_string());
    if revision == "dirty" {
        revision = format!("{}-dirty", parts[n - 3]);
        version = parts[..n - 3].join("-");
    }
    (version, revision, parts[n - 1].to_string())
}

#[test]
fn istioctl_version() {
    let Some(bin) = common::istio_tools_bin() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    rt.block_on(bowline.start());

    let response = rt
        .block_on(common::admin_get(bowline.admin_addr, "/version"))
        .expect("/version");
    assert_eq!(response.status, 200);
    let text = response.text();
    let (version, revision, status) = istioctl_reading(&text);
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "{text:?}");
    assert!(
        revision == "unknown"
            || (revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "{text:?}: revision {revision:?}"
    );
    assert!(["Clean", "Modified"].contains(&status.as_str()), "{text:?}");

    // The client: the pinned build of Istio.
    let out = ok(
        &istioctl(&bin, &["version", "--remote=false", "-o", "json"]),
        "istioctl version --remote=false",
    );
    let client: Value = serde_json::from_str(&out).expect("istioctl version JSON");
    let client_version = client["clientVersion"]["version"]
        .as_str()
        .expect("clientVersion.version");
    assert!(client_version.ends_with("-dev"), "{out}");

    // Over xDS: istioctl opens an ADS stream to bowline's TLS port with a client certificate
    // and asks for istio.io/debug/syncz; the answer's control-plane identifier is the mesh's
    // version.
    let certs = cert_dir(&rt, &bowline);
    let args = xds_args(&bowline, &certs);
    let mut cmd: Vec<&str> = vec!["x", "version", "-o", "json"];
    cmd.extend(args.iter().map(String::as_str));
    let out = ok(&istioctl(&bin, &cmd), "istioctl x version --xds-address");
    let answer: Value = serde_json::from_str(&out).expect("istioctl x version JSON");
    assert_eq!(answer["clientVersion"]["version"], client_version, "{out}");
    assert_eq!(
        answer["meshVersion"][0]["Info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the control plane's version as istioctl reads it: {out}"
    );
}

/// A directory as `--cert-dir` wants it (`cert-chain.pem`, `key.pem`, `root-cert.pem`): a
/// certificate bowline's CA issued for `istio-system/default`, the identity istioctl's node
/// claims.
pub(crate) fn cert_dir(rt: &tokio::runtime::Runtime, bowline: &Bowline) -> TempDir {
    cert_dir_for(rt, bowline, "istio-system", "default")
}

/// A `--cert-dir` with a certificate for `namespace/service_account`.
fn cert_dir_for(
    rt: &tokio::runtime::Runtime,
    bowline: &Bowline,
    namespace: &str,
    service_account: &str,
) -> TempDir {
    let dir = TempDir::new("istioctl-certs");
    let token = bowline.token(namespace, service_account);
    let (chain, key) = rt
        .block_on(common::tls::create_certificate(bowline.xds_addr, &token))
        .expect("a certificate for istioctl");
    std::fs::write(dir.path().join("cert-chain.pem"), chain.concat()).expect("chain");
    std::fs::write(dir.path().join("key.pem"), key).expect("key");
    std::fs::copy(
        bowline.ca_dir.join("root-cert.pem"),
        dir.path().join("root-cert.pem"),
    )
    .expect("root");
    dir
}

/// istioctl's flags for bowline's TLS xDS port with that certificate.
pub(crate) fn xds_args(bowline: &Bowline, certs: &TempDir) -> Vec<String> {
    vec![
        "--xds-address".into(),
        bowline.xds_tls_addr.to_string(),
        "--cert-dir".into(),
        certs.path().display().to_string(),
        "--authority".into(),
        "istiod.istio-system.svc".into(),
        "--timeout".into(),
        "10s".into(),
    ]
}

/// A bowline serving `config`, and a real Envoy sidecar (`client-0.default`) in sync with it.
fn synced_proxy(
    rt: &tokio::runtime::Runtime,
    net: &Net,
    envoy_bin: &Path,
    config: &str,
) -> (Bowline, common::Envoy) {
    let mut bowline = Bowline::new(net);
    bowline.write("config.yaml", config);
    rt.block_on(bowline.start());
    let envoy = rt.block_on(common::Envoy::start(
        envoy_bin,
        &bowline,
        common::ProxySpec::sidecar("client-0", "default", net.ip(10)),
    ));
    rt.block_on(bowline.wait_synced(&envoy.proxy_id(), std::time::Duration::from_secs(20)))
        .expect("synced");
    (bowline, envoy)
}

/// What the proxy-status tests share: istioctl, an API server (istioctl reads its kubeconfig
/// first), and a bowline with one service and a real Envoy (`client-0.default`) in sync with it.
struct Served {
    bin: std::path::PathBuf,
    kube: KubeEnv,
    rt: tokio::runtime::Runtime,
    /// Kept for the addresses bowline and the Envoy use.
    _net: Net,
    bowline: Bowline,
    envoy: common::Envoy,
}

/// [`Served`], or `None` when a tool is missing outside CI.
fn served_web() -> Option<Served> {
    let bin = common::istio_tools_bin()?;
    let envoy_bin = common::envoy_bin()?;
    let kube = KubeEnv::start()?;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    // A service, so that the proxy subscribes to endpoints and routes too.
    let config = common::fixtures::docs(&[
        &common::fixtures::service("web", "default").port_to(80, "http", 8080),
        &common::fixtures::workload_entry("web-0", "default", net.ip(20)).label("app", "web"),
    ]);
    let (bowline, envoy) = synced_proxy(&rt, &net, &envoy_bin, &config);
    Some(Served {
        bin,
        kube,
        rt,
        _net: net,
        bowline,
        envoy,
    })
}

/// `istioctl proxy-status` over bowline's TLS port: every connected proxy, each type SYNCED
/// once Envoy has ACKed it, the control plane named; the caller itself is not listed.
#[test]
fn istioctl_proxy_status() {
    let Some(Served {
        bin,
        kube,
        rt,
        bowline,
        envoy,
        ..
    }) = served_web()
    else {
        return;
    };
    // A proxy that rejects its clusters (picky-0.shop).
    let _picky = rt.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
        let tx = crate::debug_xds::nacking_proxy(channel).await;
        let nacked = common::wait_until(std::time::Duration::from_secs(10), async || {
            bowline.syncz().await.is_ok_and(|all| {
                common::find_proxy(&all, "picky-0.shop").is_some_and(|p| !p.nacks().is_empty())
            })
        })
        .await;
        assert!(nacked, "the NACK is recorded");
        tx
    });
    let certs = cert_dir(&rt, &bowline);
    let mut cmd: Vec<String> = vec!["proxy-status".into(), "--verbosity".into(), "1".into()];
    cmd.extend(xds_args(&bowline, &certs));
    let out = Command::new(bin.join("istioctl"))
        .args(&cmd)
        .env("HOME", &bin)
        .env("KUBECONFIG", &kube.kubeconfig)
        .output()
        .expect("run istioctl");
    let table = ok(&out, "istioctl proxy-status");
    let row = table
        .lines()
        .find(|l| l.starts_with("client-0.default"))
        .unwrap_or_else(|| panic!("the Envoy is listed:\n{table}"));
    // CDS, LDS, EDS and RDS synced (ECDS, which bowline does not serve, IGNORED).
    assert_eq!(row.matches("SYNCED").count(), 4, "{table}");
    assert!(!row.contains("STALE") && !row.contains("ERROR"), "{table}");
    assert!(
        row.contains("bowline"),
        "the control plane is named: {table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains("test-1")).count(),
        0,
        "istioctl's own stream is not a proxy:\n{table}"
    );
    // The NACKed type shows as such (CDS is the first status column).
    let picky = table
        .lines()
        .find(|l| l.starts_with("picky-0.shop"))
        .unwrap_or_else(|| panic!("the NACKing proxy is listed:\n{table}"));
    let columns: Vec<&str> = picky.split_whitespace().collect();
    assert_eq!(columns.get(2), Some(&"ERROR"), "CDS is ERROR:\n{table}");
    drop(envoy);
}

/// `istioctl x internal-debug` over bowline's TLS port: each view as bowline's admin port
/// serves it, printed by istioctl; the refusals istioctl reports.
#[test]
fn istioctl_internal_debug() {
    let Some(Served {
        bin,
        kube,
        rt,
        bowline,
        envoy,
        ..
    }) = served_web()
    else {
        return;
    };
    let internal_debug = |args: &[&str], xds: &[String]| {
        let mut cmd: Vec<&str> = vec!["x", "internal-debug"];
        cmd.extend(args);
        cmd.extend(xds.iter().map(String::as_str));
        Command::new(bin.join("istioctl"))
            .args(&cmd)
            .env("HOME", &bin)
            .env("KUBECONFIG", &kube.kubeconfig)
            .output()
            .expect("run istioctl")
    };
    let json = |out: &Output, what: &str| -> Value {
        let text = ok(out, what);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what}: {e}:\n{text}"))
    };
    let system = cert_dir(&rt, &bowline);
    let xds = xds_args(&bowline, &system);

    let syncz = json(&internal_debug(&["syncz"], &xds), "internal-debug syncz");
    let client = syncz
        .as_array()
        .and_then(|all| all.iter().find(|s| s["proxy"] == "client-0.default"))
        .unwrap_or_else(|| panic!("the Envoy in {syncz}"));
    assert_eq!(client["proxy_type"], "sidecar", "{client}");
    assert_eq!(
        client["cluster_acked"], client["cluster_sent"],
        "Envoy ACKed its clusters: {client}"
    );
    assert_eq!(
        syncz.as_array().map(Vec::len),
        Some(1),
        "istioctl is no proxy: {syncz}"
    );

    let adsz = json(&internal_debug(&["adsz"], &xds), "internal-debug adsz");
    assert_eq!(adsz["totalClients"], 1, "{adsz}");
    assert!(adsz["clients"][0]["watches"].is_object(), "{adsz}");

    let dump = json(
        &internal_debug(&["config_dump?proxyID=client-0.default&types=cds"], &xds),
        "internal-debug config_dump",
    );
    assert!(
        dump["configs"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["name"] == "outbound|80||web.default.svc.cluster.local")),
        "{dump}"
    );

    let list = json(&internal_debug(&["--list"], &xds), "internal-debug --list");
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|n| n == "syncz")),
        "{list}"
    );
    // An unknown view: istioctl recognises istiod's 404 and prints the list instead.
    let out = ok(
        &internal_debug(&["nonesuchz"], &xds),
        "internal-debug nonesuchz",
    );
    assert!(
        out.contains("please check all supported internal debug commands"),
        "{out}"
    );
    assert!(out.contains("\"syncz\""), "{out}");

    // A caller of another namespace (its node claims `shop/default`, as its certificate
    // proves): its own namespace's config dumps only.
    let shop = cert_dir_for(&rt, &bowline, "shop", "default");
    let mut shop_xds = xds_args(&bowline, &shop);
    shop_xds.extend(["--istioNamespace".to_string(), "shop".to_string()]);
    let out = internal_debug(&["syncz"], &shop_xds);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("PermissionDenied")
            && stderr.contains("root namespace"),
        "syncz refused to shop: {stderr}"
    );
    let out = ok(
        &internal_debug(&["config_dump?proxyID=client-0.default"], &shop_xds),
        "internal-debug config_dump from shop",
    );
    assert!(out.contains("Proxy not connected"), "{out}");

    // The plaintext port proves no identity: refused.
    let plaintext = [
        "--xds-address".to_string(),
        bowline.xds_addr.to_string(),
        "--plaintext".to_string(),
        "--timeout".to_string(),
        "10s".to_string(),
    ];
    let out = internal_debug(&["syncz"], &plaintext);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("authentication required"),
        "plaintext refused: {stderr}"
    );
    drop(envoy);
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ctl}
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
---
apiVersion: v1
kind: Pod
metadata: {name: direct, namespace: ctl, labels: {app: direct}}
spec:
  containers: [{name: app, image: app:1, ports: [{containerPort: 9080}]}]
";

/// The mesh section of manifests/bowline.yaml's `istio` ConfigMap.
fn manifest_mesh_config() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/bowline.yaml"
    ))
    .expect("manifests/bowline.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("manifest YAML");
    docs.iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "istio")
        .and_then(|d| d["data"]["mesh"].as_str())
        .expect("the istio ConfigMap's mesh")
        .to_string()
}

#[test]
fn istioctl_kube_inject_uses_the_webhook() {
    let Some(bin) = common::istio_tools_bin() else {
        return;
    };
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    kube.kubectl(&["create", "namespace", "istio-system"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    let webhook = net.addr(1, 15017);
    let flags: Vec<String> = vec![
        "--injector-image=registry.test/bowline:dev".to_string(),
        format!("--discovery-address={}", bowline.xds_tls_addr),
    ];
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
    let config = injector_config(&format!("https://{webhook}/inject"), &ca_bundle);
    assert_eq!(
        config["metadata"]["labels"]["istio.io/rev"], "default",
        "istioctl looks the injector up by this label"
    );
    kube.apply(&config.to_string());

    let dir = TempDir::new("istioctl");
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, DEPLOYMENT).expect("write manifest");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, manifest_mesh_config()).expect("write mesh config");
    let out = istioctl(
        &bin,
        &[
            "kube-inject",
            "--kubeconfig",
            &kube.kubeconfig.display().to_string(),
            "--meshConfigFile",
            &mesh.display().to_string(),
            "-f",
            &manifest.display().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let printed = ok(&out, "istioctl kube-inject");
    // Had it not found the webhook, it would have fallen back to the injection ConfigMap.
    assert!(
        !stderr.contains("failed to get injection config"),
        "istioctl did not find bowline's webhook:\n{stderr}"
    );
    let got: Vec<Value> = serde_saphyr::from_multiple(&printed).expect("istioctl's YAML");
    let want = bowline_inject(&flags, DEPLOYMENT);
    assert_eq!(got.len(), 2, "{printed}");
    assert_eq!(want.len(), 2);
    // Every field `bowline inject` writes is there, the same; istioctl only adds its empty
    // defaults (`creationTimestamp: null`, `resources: {}`, `status: {}`).
    if let Err(e) = contains(&got[0], &want[0], "deployment") {
        panic!("istioctl kube-inject differs from bowline inject: {e}\n{printed}");
    }
    if let Err(e) = contains(&got[1], &want[1], "pod") {
        panic!("istioctl kube-inject differs from bowline inject: {e}\n{printed}");
    }
    for (doc, path) in [(&got[0], "/spec/template/spec"), (&got[1], "/spec")] {
        let names: Vec<&str> = doc
            .pointer(path)
            .and_then(|s| s["containers"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(names.contains(&"istio-proxy"), "{path}: {names:?}");
    }
    assert!(
        !got[0]
            .pointer("/spec/template/metadata/annotations/sidecar.istio.io~1status")
            .unwrap_or(&Value::Null)
            .is_null()
    );
    // The webhook answered; bowline logs each injection.
    assert!(
        bowline.log_tail().contains("injected"),
        "{}",
        bowline.log_tail()
    );
}

/// `istioctl proxy-config cluster|route -f <Envoy's config dump>`: the DESTINATION RULE and
/// VIRTUAL SERVICE columns name the rules that shaped each cluster and route (istiod's
/// `filter_metadata["istio"]`).
#[test]
fn istioctl_proxy_config_names_the_rules() {
    let Some(bin) = common::istio_tools_bin() else {
        return;
    };
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let config = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews-dr, namespace: default}}\n\
             spec:\n  host: reviews\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews-vs, namespace: default}}\n\
             spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n",
        common::fixtures::docs(&[
            &common::fixtures::service("reviews", "default").port_to(9080, "http", 9080),
            &common::fixtures::workload_entry("reviews-v1", "default", net.ip(20))
                .label("app", "reviews")
                .label("version", "v1"),
        ])
    );
    let (_bowline, envoy) = synced_proxy(&rt, &net, &envoy_bin, &config);
    let dump = rt
        .block_on(envoy.config_dump())
        .expect("Envoy's config dump");
    let dir = TempDir::new("istioctl-dump");
    let file = dir.path().join("config_dump.json");
    std::fs::write(&file, serde_json::to_vec(&dump).expect("JSON")).expect("dump file");
    let file = file.display().to_string();

    let clusters = ok(
        &istioctl(
            &bin,
            &[
                "proxy-config",
                "cluster",
                "-f",
                &file,
                "--fqdn",
                "reviews.default.svc.cluster.local",
            ],
        ),
        "istioctl proxy-config cluster",
    );
    let subset = clusters
        .lines()
        .find(|l| l.contains(" v1 "))
        .unwrap_or_else(|| panic!("the v1 subset cluster:\n{clusters}"));
    assert!(subset.contains("reviews-dr.default"), "{clusters}");
    let routes = ok(
        &istioctl(
            &bin,
            &["proxy-config", "route", "-f", &file, "--name", "9080"],
        ),
        "istioctl proxy-config route",
    );
    assert!(
        routes
            .lines()
            .any(|l| l.contains("reviews") && l.contains("reviews-vs.default")),
        "{routes}"
    );
    drop(envoy);
}

/// `istioctl proxy-status <proxy> --file <Envoy's config dump>`: istioctl asks bowline for
/// `istio.io/debug/config_dump` of that proxy and compares it with what the Envoy holds.
#[test]
fn istioctl_proxy_status_compares_with_the_envoy() {
    let Some(Served {
        bin,
        kube,
        rt,
        bowline,
        envoy,
        ..
    }) = served_web()
    else {
        return;
    };
    let certs = cert_dir(&rt, &bowline);
    let dump = rt
        .block_on(envoy.admin("/config_dump"))
        .expect("Envoy's config dump");
    let file = certs.path().join("envoy-config-dump.json");
    std::fs::write(&file, dump).expect("write dump");
    let mut cmd: Vec<String> = vec![
        "proxy-status".into(),
        "client-0.default".into(),
        "--file".into(),
        file.display().to_string(),
    ];
    cmd.extend(xds_args(&bowline, &certs));
    let out = Command::new(bin.join("istioctl"))
        .args(&cmd)
        .env("HOME", &bin)
        .env("KUBECONFIG", &kube.kubeconfig)
        .output()
        .expect("run istioctl");
    let text = ok(&out, "istioctl proxy-status <proxy>");
    for kind in ["Clusters Match", "Listeners Match", "Routes Match"] {
        assert!(text.contains(kind), "{kind}:\n{text}");
    }
    drop(envoy);
}
