//! bowline's `/metrics` against Istio's own "Istio Control Plane" Grafana dashboard
//! (`manifests/addons/dashboards/pilot-dashboard.gen.json` of the pinned istio.io/istio module,
//! `$ISTIO_SOURCE`, set by `make test` from `hack/istio-tools.sh source`).
//!
//! Every metric every panel queries is found in the PromQL ([`queried`]); those no control
//! plane exports are dropped by an explicit list ([`NOT_THE_CONTROL_PLANES`]); each of the rest
//! must be in bowline's exposition with the labels the query groups by or matches on (and the
//! values it matches with `=`), as a counter where the query takes its rate, as a histogram
//! where it reads `_bucket`s. The exposition is read after a run that does each thing for real:
//! a real API server (Kubernetes mode: Services, Namespaces and Istio resources, the
//! validation and injection webhooks called by the API server), a stock Envoy connecting and
//! getting pushes, a configuration change, and a certificate signing request.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use bowline::ca::pb::IstioCertificateRequest;
use bowline::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use common::fixtures;
use common::kube::KubeEnv;
use common::tls::{client_config, grpc_channel};
use common::{Bowline, Envoy, Net, ProxySpec};
use serde_json::Value;

use crate::inject::injector_config;

/// Metric-name prefixes of the dashboard's queries that no control plane exports:
const NOT_THE_CONTROL_PLANES: &[(&str, &str)] = &[
    // cAdvisor's container series, exported by the kubelet about the control plane's pod;
    ("container_", "the kubelet's (cAdvisor)"),
    // the proxies' own statistics, scraped from each Envoy;
    ("envoy_", "Envoy's"),
    // the Go runtime's, which only a Go process has (bowline exports none in their place).
    ("go_", "the Go runtime's"),
];

/// `$ISTIO_SOURCE`, the istio.io/istio module's source. Without it, panics under `CI=true`,
/// otherwise prints why and returns `None`.
fn istio_source() -> Option<PathBuf> {
    let dir = std::env::var_os("ISTIO_SOURCE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let why = match &dir {
        Some(d) if d.join(DASHBOARD).is_file() => return dir,
        Some(d) => format!("no {DASHBOARD} in ISTIO_SOURCE={}", d.display()),
        None => "ISTIO_SOURCE is not set (make test sets it from `hack/istio-tools.sh source`)"
            .to_string(),
    };
    if common::ci() {
        panic!("{why}; CI=true makes this fatal");
    }
    eprintln!("skipping: {why}");
    None
}

const DASHBOARD: &str = "manifests/addons/dashboards/pilot-dashboard.gen.json";

/// Every `expr` of every panel target, nested rows included.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = target["expr"].as_str() {
                out.push(e.to_string());
            }
        }
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One metric a query reads, and what the query asks of its series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Use {
    /// Labels the query groups by (`by (...)`) or matches on (`{...}`).
    labels: BTreeSet<String>,
    /// Values matched with `=`.
    equals: BTreeMap<String, String>,
    /// Read under `rate`, `irate` or `increase`: a counter.
    rated: bool,
}

/// PromQL keywords that look like names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// PromQL's aggregation operators, which may be followed by `by (...)` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metrics a PromQL expression reads, by name. Enough of PromQL for dashboards: names
/// followed by `(` are functions or aggregations, `by`/`without` lists are labels, `{...}`
/// holds matchers, `[...]` ranges, and quoted strings are values.
fn queried(expr: &str) -> BTreeMap<String, Use> {
    let chars: Vec<char> = expr.chars().collect();
    let mut metrics: BTreeMap<String, Use> = BTreeMap::new();
    let mut grouping = BTreeSet::new();
    // The function (or "" for a plain parenthesis) each open parenthesis belongs to.
    let mut calls: Vec<String> = Vec::new();
    let mut last_word = String::new();
    let mut i = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
            continue;
        }
        if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '(' {
            if matches!(
                last_word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                let close = chars[i..].iter().position(|&c| c == ')').map(|p| i + p);
                let close = close.unwrap_or(chars.len());
                let list: String = chars[i + 1..close].iter().collect();
                // Vector matching (`on`, `ignoring`, `group_*`) names labels of both sides:
                // only `by` and `without` say what a series must carry.
                let keep = last_word == "by" || last_word == "without";
                grouping.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|l| keep && !l.is_empty())
                        .map(str::to_string),
                );
                last_word.clear();
                i = close + 1;
                continue;
            }
            calls.push(std::mem::take(&mut last_word));
            i += 1;
            continue;
        }
        if c == ')' {
            calls.pop();
            i += 1;
            continue;
        }
        if is_start(c) && (i == 0 || !is_part(chars[i - 1])) {
            let start = i;
            while i < chars.len() && is_part(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let followed_by = chars.get(next).copied();
            if KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || followed_by == Some('(')
            {
                last_word = word;
                continue;
            }
            last_word.clear();
            let mut used = Use {
                rated: calls
                    .iter()
                    .any(|f| matches!(f.as_str(), "rate" | "irate" | "increase")),
                ..Default::default()
            };
            if followed_by == Some('{') {
                let (matchers, end) = matchers(&chars, next);
                for (label, op, value) in matchers {
                    used.labels.insert(label.clone());
                    if op == "=" {
                        used.equals.insert(label, value);
                    }
                }
                i = end;
            }
            let entry = metrics.entry(word).or_default();
            entry.labels.extend(used.labels);
            entry.equals.extend(used.equals);
            entry.rated |= used.rated;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    for u in metrics.values_mut() {
        u.labels.extend(grouping.iter().cloned());
    }
    metrics
}

/// The index after the string opening at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The matchers of the `{...}` opening at `open` (label, operator, value), and the index after
/// its `}`.
fn matchers(chars: &[char], open: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (out, i + 1);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if label.is_empty() || op.is_empty() || i >= chars.len() {
            // Not a matcher: give up on this selector rather than loop.
            let end = chars[i.min(chars.len())..]
                .iter()
                .position(|&c| c == '}')
                .map(|p| i + p + 1)
                .unwrap_or(chars.len());
            return (out, end);
        }
        let end = skip_string(chars, i);
        let value: String = chars[i + 1..end.saturating_sub(1).max(i + 1)]
            .iter()
            .collect();
        out.push((label, op, value));
        i = end;
    }
}

/// A Prometheus text exposition: each series' name and labels, and each metric's type.
#[derive(Debug, Default)]
struct Exposition {
    series: Vec<(String, BTreeMap<String, String>)>,
    types: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(t)) = (parts.next(), parts.next()) {
                out.types.insert(name.to_string(), t.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let name_end = chars
            .iter()
            .position(|&c| c == '{' || c.is_whitespace())
            .unwrap_or(chars.len());
        let name: String = chars[..name_end].iter().collect();
        let mut labels = BTreeMap::new();
        if chars.get(name_end) == Some(&'{') {
            let (matchers, _) = matchers(&chars, name_end);
            for (label, _, value) in matchers {
                labels.insert(label, value);
            }
        }
        out.series.push((name, labels));
    }
    out
}

/// What is wrong with how the exposition serves `metric` as `used` (nothing: `None`).
fn check(exposition: &Exposition, metric: &str, used: &Use) -> Option<String> {
    let series: Vec<&BTreeMap<String, String>> = exposition
        .series
        .iter()
        .filter(|(name, _)| name == metric)
        .map(|(_, labels)| labels)
        .collect();
    if series.is_empty() {
        return Some(format!("{metric}: not exported"));
    }
    let fits = |labels: &&BTreeMap<String, String>| {
        used.labels.iter().all(|l| labels.contains_key(l))
            && used
                .equals
                .iter()
                .all(|(l, v)| labels.get(l).is_some_and(|have| have == v))
    };
    if !series.iter().any(fits) {
        return Some(format!(
            "{metric}: no series with the labels {:?} and values {:?}; exported: {series:?}",
            used.labels, used.equals
        ));
    }
    let base = metric.strip_suffix("_bucket");
    let want = match base {
        Some(_) => "histogram",
        None if used.rated => "counter",
        None => return None,
    };
    let family = base.unwrap_or(metric);
    match exposition.types.get(family) {
        Some(t) if t == want => None,
        other => Some(format!("{family}: a {want} is read, exported as {other:?}")),
    }
}

#[test]
fn promql_names_labels_and_rates() {
    let q = queried(r#"sum by (type,event) (rate(pilot_k8s_reg_events[$__rate_interval]))"#);
    assert_eq!(q.len(), 1);
    let u = &q["pilot_k8s_reg_events"];
    assert!(u.rated);
    assert_eq!(
        u.labels,
        BTreeSet::from(["type".to_string(), "event".to_string()])
    );

    let q = queried(r#"sum by (tag) (istio_build{component="pilot"})"#);
    let u = &q["istio_build"];
    assert!(!u.rated);
    assert_eq!(u.equals["component"], "pilot");
    assert!(u.labels.contains("tag") && u.labels.contains("component"));

    let q = queried(r#"sum(rate(pilot_xds_push_time_bucket{}[$__rate_interval])) by (le)"#);
    assert!(q["pilot_xds_push_time_bucket"].labels.contains("le"));

    let q = queried(
        r#"sum by (pod) (container_memory_working_set_bytes{container="discovery",pod=~"istiod-.*"})"#,
    );
    let u = &q["container_memory_working_set_bytes"];
    assert_eq!(u.equals.len(), 1, "=~ is not an equality: {u:?}");
    assert!(u.labels.contains("pod") && u.labels.contains("container"));

    let q = queried("pilot_total_xds_internal_errors");
    assert_eq!(
        q.keys().collect::<Vec<_>>(),
        ["pilot_total_xds_internal_errors"]
    );
    // Two metrics in one expression, strings and numbers ignored.
    let q = queried(r#"sum(a_total{x="by (y)"}) / 1e3 + ignoring(z) b_total offset 5m"#);
    assert_eq!(q.keys().collect::<Vec<_>>(), ["a_total", "b_total"]);
}

#[test]
fn exposition_is_read_with_escaped_values() {
    let e = parse_exposition("# TYPE c counter\nc{a=\"x,y\",b=\"q\\\"z\"} 1\nd 2\n# HELP d help\n");
    assert_eq!(e.types["c"], "counter");
    assert_eq!(e.series.len(), 2);
    assert_eq!(e.series[0].1["a"], "x,y");
    assert_eq!(e.series[0].1["b"], "q\\\"z");
    assert!(e.series[1].1.is_empty());
}

#[test]
fn the_check_names_what_is_missing() {
    let e = parse_exposition(
        "# TYPE c counter\nc{type=\"cds\"} 1\n# TYPE g gauge\ng 1\n\
         # TYPE h histogram\nh_bucket{le=\"1\"} 1\n# TYPE s summary\ns_bucket{le=\"1\"} 1\n",
    );
    let using = |labels: &[&str], rated: bool| Use {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rated,
        ..Default::default()
    };
    assert_eq!(check(&e, "c", &using(&["type"], true)), None);
    assert_eq!(check(&e, "h_bucket", &using(&["le"], true)), None);
    assert!(
        check(&e, "missing", &using(&[], false))
            .unwrap()
            .contains("not exported")
    );
    assert!(
        check(&e, "c", &using(&["event"], true))
            .unwrap()
            .contains("no series")
    );
    assert!(
        check(&e, "g", &using(&[], true))
            .unwrap()
            .contains("a counter is read")
    );
    assert!(
        check(&e, "s_bucket", &using(&["le"], true))
            .unwrap()
            .contains("a histogram")
    );
    let mut pilot = using(&["component"], false);
    pilot.equals.insert("component".into(), "pilot".into());
    let e = parse_exposition("istio_build{component=\"proxy\"} 1\n");
    assert!(check(&e, "istio_build", &pilot).is_some());
}

/// The namespace of the API server's objects.
const NS: &str = "metrics";
/// The namespace of the configuration files and the proxy.
const MESH: &str = "mesh";

fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}\n\
         spec:\n  containers: [{{name: app, image: app:1, ports: [{{containerPort: 9080}}]}}]\n"
    )
}

fn validator(url: &str, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: bowline-metrics-validator}}
webhooks:
- name: validation.istio.io
  clientConfig: {{url: "{url}", caBundle: {ca_bundle}}}
  rules:
  - apiGroups: [networking.istio.io, security.istio.io]
    apiVersions: ["*"]
    operations: [CREATE, UPDATE]
    resources: ["*"]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
"#
    )
}

/// A VirtualService for the test's namespace; `invalid` gives it a route without a destination
/// host, which the validation webhook denies.
fn virtual_service(name: &str, invalid: bool) -> String {
    let host = if invalid { "" } else { "web" };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec: {{hosts: [web], http: [{{route: [{{destination: {{host: \"{host}\"}}}}]}}]}}\n"
    )
}

/// Runs `kubectl create` until the API server has called a webhook (it picks a new webhook
/// configuration up a moment after it is created): `true` when the object was created.
fn create_through_webhook(kube: &KubeEnv, yaml: &str, want_denied: bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = kube.kubectl_raw(&["create", "-f", "-"], Some(yaml));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let denied = err.contains("denied the request");
        if denied == want_denied && (denied || out.status.success()) {
            return out.status.success();
        }
        if out.status.success() {
            // Created before the webhook was in force: try again.
            kube.kubectl_raw(&["delete", "-f", "-"], Some(yaml));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook never {} {yaml}: {err}",
            if want_denied { "denied" } else { "admitted" }
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metrics the dashboard reads from the control plane, with what it asks of them.
fn dashboard_metrics(source: &std::path::Path) -> BTreeMap<String, Use> {
    let path = source.join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut all: BTreeMap<String, Use> = BTreeMap::new();
    for expr in expressions(&dashboard) {
        for (metric, used) in queried(&expr) {
            let entry = all.entry(metric).or_default();
            entry.labels.extend(used.labels);
            entry.equals.extend(used.equals);
            entry.rated |= used.rated;
        }
    }
    let (dropped, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = all.into_iter().partition(|(m, _)| {
        NOT_THE_CONTROL_PLANES
            .iter()
            .any(|(prefix, _)| m.starts_with(prefix))
    });
    println!(
        "dashboard: {} control-plane metrics; not the control plane's: {:?}",
        kept.len(),
        dropped.keys().collect::<Vec<_>>()
    );
    // The parse found the dashboard's series (a parse that finds nothing checks nothing).
    for known in [
        "istio_build",
        "pilot_xds_pushes",
        "pilot_k8s_cfg_events",
        "sidecar_injection_success_total",
    ] {
        assert!(
            kept.contains_key(known),
            "{known} not found in {}",
            path.display()
        );
    }
    kept
}

#[test]
fn the_control_plane_dashboard_reads_bowline() {
    let Some(source) = istio_source() else {
        return;
    };
    let wanted = dashboard_metrics(&source);
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    kube.install_istio_crds();
    kube.kubectl(&["create", "namespace", "istio-system"]);
    kube.kubectl(&["create", "namespace", NS]);
    kube.kubectl(&["label", "namespace", NS, "istio-injection=enabled"]);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    let webhook = net.addr(1, 15017);
    bowline.extra_args = vec![
        "--kubeconfig".into(),
        kube.kubeconfig.display().to_string(),
        "--webhook-addr".into(),
        webhook.to_string(),
    ];
    // Files too: the proxy's service, and later a change. The proxy's Sidecar keeps it to its
    // own namespace (the API server's `default/kubernetes` would have it bind 10.96.0.1:443).
    bowline.write(
        "web.yaml",
        &fixtures::docs(&[
            &fixtures::service("web", MESH).port_to(80, "http", 8080),
            &fixtures::workload_entry("web-1", MESH, net.ip(99))
                .label("app", "web")
                .service_account("web"),
        ]),
    );
    bowline.write(
        "sidecar.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {MESH}}}\n\
             spec: {{egress: [{{hosts: [\"./*\"]}}]}}\n"
        ),
    );
    rt.block_on(bowline.start());
    let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&root);

    // The webhooks, called by the API server.
    kube.apply(&validator(
        &format!("https://{webhook}/validate"),
        &ca_bundle,
    ));
    kube.apply(&injector_config(&format!("https://{webhook}/inject"), &ca_bundle).to_string());
    create_through_webhook(&kube, &virtual_service("broken", true), true);
    assert!(create_through_webhook(
        &kube,
        &virtual_service("web", false),
        false
    ));
    assert!(
        kube.wait_for(
            &["get", "serviceaccount", "default", "-n", NS],
            Duration::from_secs(30),
            |_| true
        ),
        "the default service account of {NS}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = kube.kubectl_raw(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(&pod_yaml("app")),
        );
        if String::from_utf8_lossy(&out.stdout).contains("istio-proxy") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the injection webhook never injected: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            bowline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Registry events: a Service.
    kube.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {NS}}}\nspec: {{ports: [{{port: 80, name: http}}]}}\n"
    ));

    rt.block_on(async {
        // A stock Envoy connects and is pushed its configuration, then a change.
        let envoy = Envoy::start(
            &envoy_bin,
            &bowline,
            ProxySpec::sidecar("client-0", MESH, net.ip(10)),
        )
        .await;
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(30))
            .await
            .expect("synced");
        bowline.write(
            "route.yaml",
            &fixtures::docs(&[&fixtures::virtual_service("web", MESH, &["web"])
                .http_route(&[fixtures::route("web")])]),
        );
        let pushed = common::wait_until(Duration::from_secs(30), async || {
            metrics_text(&bowline)
                .await
                .contains("pilot_push_triggers{type=\"config\"}")
        })
        .await;
        assert!(pushed, "no config push recorded\n{}", bowline.log_tail());
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(30))
            .await
            .expect("synced after the change");

        // A certificate signing request.
        let channel = grpc_channel(
            bowline.xds_tls_addr,
            "istiod.istio-system.svc",
            client_config(&root, None, &["h2"]),
        )
        .await
        .expect("TLS channel");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://cluster.local/ns/{MESH}/sa/web").try_into().unwrap(),
        )];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: 3600,
            metadata: None,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", bowline.token(MESH, "web"))
                .parse()
                .unwrap(),
        );
        IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .expect("certificate signed");

        // The Kubernetes events reach the counters (the watchers are asynchronous).
        let seen = common::wait_until(Duration::from_secs(30), async || {
            let text = metrics_text(&bowline).await;
            text.contains("pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"}")
                && text.contains("pilot_k8s_reg_events{type=\"Services\",event=\"add\"}")
        })
        .await;
        let text = metrics_text(&bowline).await;
        assert!(seen, "no Kubernetes events counted:\n{text}");

        let exposition = parse_exposition(&text);
        let problems: Vec<String> = wanted
            .iter()
            .filter_map(|(metric, used)| check(&exposition, metric, used))
            .collect();
        assert!(
            problems.is_empty(),
            "the dashboard's queries against bowline's /metrics:\n{}\n\n{text}",
            problems.join("\n")
        );

        // The run's facts, counted where they happened.

        for series in [
            "galley_validation_passed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\"}",
            "galley_validation_failed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"invalid_resource\"}",
            "pilot_xds{version=",
            "pilot_inbound_updates{type=\"svc\"}",
            "pilot_inbound_updates{type=\"config\"}",
            "pilot_debounce_time_bucket{le=\"0.01\"}",
            "pilot_proxy_queue_time_bucket{le=\"0.1\"}",
            "pilot_xds_send_time_bucket{le=\"0.01\"}",
            "sidecar_injection_time_seconds_bucket{le=\"0.1\"}",
            "citadel_server_root_cert_expiry_timestamp ",
        ] {
            assert!(text.contains(series), "no {series} in:\n{text}");
        }
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert!(value("citadel_server_csr_count") >= 1.0, "{text}");
        assert!(value("citadel_server_success_cert_issuance_count") >= 1.0, "{text}");
        assert!(value("sidecar_injection_requests_total") >= 1.0, "{text}");
        assert!(value("sidecar_injection_success_total") >= 1.0, "{text}");
        assert!(value("pilot_xds_pushes{") >= 4.0, "{text}");
        assert_eq!(value("pilot_xds{"), 1.0, "one proxy connected:\n{text}");
        drop(envoy);
    });
}

async fn metrics_text(bowline: &Bowline) -> String {
    common::admin_get(bowline.admin_addr, "/metrics")
        .await
        .map(|r| r.text())
        .unwrap_or_default()
}
