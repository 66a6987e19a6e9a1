//! Kubernetes mode against a real kube-apiserver (hack/kube-env.sh; no kubelet, so the tests
//! create a Node and Pods and report Pod status themselves; EndpointSlices come from the real
//! kube-controller-manager):
//!
//! - bookinfo applied with kubectl reaches a stock Envoy (bootstrapped as productpage's
//!   sidecar) as `outbound|9080||reviews.default.svc.cluster.local` with the reviews pods'
//!   endpoints; the EndpointSlice of a Service without pods (`endpoints: null`) is loaded, not
//!   rejected; a VirtualService applied with kubectl changes its routes without a restart and
//!   its deletion reverts them; a new ready Pod changes endpoints only (no cluster push);
//! - a projected service-account token (audience `istio-ca`) is checked with TokenReview: a
//!   sidecar bootstrapped with it gets its service account's certificate over SDS, and the CA
//!   service refuses tokens for another audience;
//! - with bowline's CRDs (manifests/crds.yaml, which leave validation to the webhook), the
//!   validating webhook registered with the API server denies every document of Istio's
//!   `*-invalid.yaml` corpus (for the kinds bowline models) on `kubectl create`, and admits
//!   every `*-valid.yaml` document; every Istio document of `samples/` and `testdata-config/`
//!   is admitted;
//! - manifests/ installs; bowline publishes its root (both webhook configurations' caBundle,
//!   istio-ca-root-cert) while it holds the `bowline-leader` Lease, and a second replica
//!   takes over when it dies;
//! - bowline cut off from the API server for 30 s while changes are made: it keeps serving the
//!   last configuration and the changes arrive once it is reconnected; the API server itself
//!   stopped for 30 s: the watchers resync after its restart;
//! - without --ca-dir, the root lives in the Secret istio-ca-secret: replicas share it;
//! - the mesh ConfigMap with an invalid extension provider is used (the rest of it counts),
//!   and only that provider and the policies naming it are reported.
//!   (Injection itself is tests/inject.rs.)

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::fixtures::{Doc, service};
use common::kube::{KubeEnv, Partition};
use common::{Bowline, Envoy, Net, ProxySpec};

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// A fresh API server with bowline's CRDs installed (`None`: skipped, see `KubeEnv::start`).
fn cluster_with_crds() -> Option<KubeEnv> {
    let kube = KubeEnv::start()?;
    istio_crds(&kube);
    Some(kube)
}

/// bowline's CRDs (manifests/crds.yaml): Istio's kinds and versions, validated by the webhook.
fn istio_crds(kube: &KubeEnv) {
    kube.install_istio_crds();
}

/// The endpoints Envoy holds for `cluster` (from its admin `/clusters`).
async fn envoy_endpoints(envoy: &Envoy, cluster: &str) -> Vec<String> {
    let text = envoy.admin("/clusters").await.unwrap_or_default();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{cluster}::")))
        .filter_map(|rest| {
            let (addr, field) = rest.split_once("::")?;
            field.starts_with("health_flags").then(|| addr.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Envoy's stat `name` (from `/stats?filter=`), 0 when absent.
async fn envoy_stat(envoy: &Envoy, name: &str) -> u64 {
    let text = envoy
        .admin(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether Envoy's route configuration for port 9080 sends reviews traffic 80/20 to v1/v2.
async fn weighted_reviews(envoy: &Envoy) -> bool {
    let dump = envoy
        .admin("/config_dump?resource=dynamic_route_configs")
        .await
        .unwrap_or_default();
    dump.contains("outbound|9080|v1|reviews.default.svc.cluster.local")
        && dump.contains("outbound|9080|v2|reviews.default.svc.cluster.local")
        && dump.contains("\"weight\": 80")
}

#[test]
fn bookinfo_from_the_api_server() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(corpus) = common::istio_corpus() else {
        return;
    };
    let Some(kube) = cluster_with_crds() else {
        return;
    };
    let bookinfo = corpus.join("samples/bookinfo/platform/kube/bookinfo.yaml");
    kube.kubectl(&["apply", "-f", &bookinfo.display().to_string()]);
    // The Deployments' own Pods are never scheduled (no scheduler or kubelet): these stand in.
    kube.node("node-1");
    let pods = [
        (
            "productpage-v1-0",
            "10.244.0.10",
            "bookinfo-productpage",
            "productpage",
            "v1",
        ),
        (
            "reviews-v1-0",
            "10.244.0.21",
            "bookinfo-reviews",
            "reviews",
            "v1",
        ),
        (
            "reviews-v2-0",
            "10.244.0.22",
            "bookinfo-reviews",
            "reviews",
            "v2",
        ),
        (
            "reviews-v3-0",
            "10.244.0.23",
            "bookinfo-reviews",
            "reviews",
            "v3",
        ),
        (
            "ratings-v1-0",
            "10.244.0.30",
            "bookinfo-ratings",
            "ratings",
            "v1",
        ),
        (
            "details-v1-0",
            "10.244.0.40",
            "bookinfo-details",
            "details",
            "v1",
        ),
    ];
    for (name, ip, sa, app, version) in pods {
        kube.ready_pod(
            "default",
            name,
            ip,
            sa,
            &[
                ("app", app),
                ("version", version),
                ("security.istio.io/tlsMode", "istio"),
            ],
        );
    }
    assert!(
        kube.wait_for(
            &[
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                "kubernetes.io/service-name=reviews",
                "-o",
                "json"
            ],
            Duration::from_secs(30),
            |out| ["10.244.0.21", "10.244.0.22", "10.244.0.23"]
                .iter()
                .all(|ip| out.contains(ip)),
        ),
        "the EndpointSlice controller lists the three reviews pods"
    );
    // A Service without pods: the API server lists its slice with `endpoints: null`.
    kube.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&service("idle", "default").port(80, "http").yaml()),
    );
    assert!(
        kube.wait_for(
            &[
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                "kubernetes.io/service-name=idle",
                "-o",
                "name"
            ],
            Duration::from_secs(30),
            |out| !out.trim().is_empty(),
        ),
        "the EndpointSlice controller makes the idle Service's slice"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
    rt.block_on(bowline.start());
    let spec = ProxySpec::sidecar(
        "productpage-v1-0",
        "default",
        "10.244.0.10".parse().unwrap(),
    )
    .label("app", "productpage")
    .label("version", "v1")
    .service_account("bookinfo-productpage")
    .interception("REDIRECT");
    let envoy = rt.block_on(Envoy::start(&envoy_bin, &bowline, spec));

    // The reviews cluster with the three pods' endpoints.
    let want = vec![
        "10.244.0.21:9080".to_string(),
        "10.244.0.22:9080".to_string(),
        "10.244.0.23:9080".to_string(),
    ];
    let got = rt.block_on(common::poll(Duration::from_secs(30), async || {
        let e = envoy_endpoints(&envoy, REVIEWS).await;
        if e == want {
            Ok(e)
        } else {
            Err(format!("{e:?}"))
        }
    }));
    assert_eq!(
        got,
        Ok(want),
        "Envoy's endpoints of {REVIEWS}\n{}",
        bowline.log_tail()
    );
    assert!(!rt.block_on(weighted_reviews(&envoy)));
    let synced = rt
        .block_on(bowline.wait_synced("productpage-v1-0.default", Duration::from_secs(30)))
        .expect("productpage's sidecar in sync");
    assert_eq!(synced.nacks().len(), 0, "no NACK: {:?}", synced.nacks());

    // The idle Service's empty slice is loaded like any other, not reported as rejected.
    let configz = rt.block_on(common::poll(Duration::from_secs(30), async || {
        let c = bowline.diagnosticz().await?;
        let loaded = c["resources"].as_array().is_some_and(|all| {
            all.iter().any(|r| {
                r["kind"] == "EndpointSlice"
                    && r["name"].as_str().is_some_and(|n| n.starts_with("idle-"))
            })
        });
        if loaded {
            Ok(c)
        } else {
            Err(format!("the idle slice is not loaded: {c}"))
        }
    }));
    let configz = configz.expect("/debug/diagnosticz lists the idle Service's EndpointSlice");
    let rejected: Vec<&serde_json::Value> = configz["diagnostics"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["kind"] == "EndpointSlice").collect())
        .unwrap_or_default();
    assert!(rejected.is_empty(), "EndpointSlices rejected: {rejected:?}");

    // A VirtualService applied with kubectl changes the routes; deleting it reverts them.
    let networking = corpus.join("samples/bookinfo/networking");
    kube.kubectl(&[
        "apply",
        "-f",
        &networking
            .join("destination-rule-all.yaml")
            .display()
            .to_string(),
    ]);
    kube.kubectl(&[
        "apply",
        "-f",
        &networking
            .join("virtual-service-reviews-80-20.yaml")
            .display()
            .to_string(),
    ]);
    let weighted = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        weighted_reviews(&envoy).await
    }));
    assert!(
        weighted,
        "80/20 routes after kubectl apply\n{}",
        bowline.log_tail()
    );
    kube.kubectl(&["delete", "virtualservice", "reviews", "-n", "default"]);
    let reverted = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        !weighted_reviews(&envoy).await
    }));
    assert!(reverted, "routes revert after kubectl delete");

    // Scaling up: a new ready Pod reaches Envoy as an endpoint, with no cluster push.
    let cds_before = rt.block_on(envoy_stat(&envoy, "cluster_manager.cds.update_success"));
    kube.ready_pod(
        "default",
        "reviews-v3-1",
        "10.244.0.24",
        "bookinfo-reviews",
        &[
            ("app", "reviews"),
            ("version", "v3"),
            ("security.istio.io/tlsMode", "istio"),
        ],
    );
    let scaled = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        envoy_endpoints(&envoy, REVIEWS)
            .await
            .contains(&"10.244.0.24:9080".to_string())
    }));
    assert!(scaled, "the new pod is an endpoint of {REVIEWS}");
    let cds_after = rt.block_on(envoy_stat(&envoy, "cluster_manager.cds.update_success"));
    assert_eq!(
        cds_before, cds_after,
        "an endpoint change pushes no clusters"
    );

    // A projected service-account token (audience istio-ca) proves the identity on the TLS
    // port: bowline checks it with TokenReview and hands that service account's certificate
    // over SDS.
    let token = kube.kubectl(&[
        "create",
        "token",
        "bookinfo-reviews",
        "-n",
        "default",
        "--audience",
        "istio-ca",
        "--duration",
        "1h",
    ]);
    let token_file = kube.dir().join("reviews-token");
    std::fs::write(&token_file, token.trim()).expect("token file");
    let spec = ProxySpec::sidecar("reviews-v1-0", "default", "10.244.0.21".parse().unwrap())
        .label("app", "reviews")
        .label("version", "v1")
        .service_account("bookinfo-reviews")
        .xds_addr(&bowline.xds_tls_addr.to_string())
        .bootstrap_arg("--token-file")
        .bootstrap_arg(&token_file.display().to_string())
        .bootstrap_arg("--ca-dir")
        .bootstrap_arg(&bowline.ca_dir.display().to_string());
    let reviews = rt.block_on(Envoy::start(&envoy_bin, &bowline, spec));
    let certified = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        reviews
            .admin("/certs")
            .await
            .unwrap_or_default()
            .contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    }));
    assert!(
        certified,
        "the reviews sidecar holds its workload certificate\n{}",
        bowline.log_tail()
    );
    // The same token is a credential for the CA service too; a token for another audience,
    // or no Kubernetes token at all, is not.
    let (chain, _) = rt
        .block_on(common::tls::create_certificate(
            bowline.xds_addr,
            token.trim(),
        ))
        .expect("a certificate for the projected token");
    let leaf = common::tls::certs(&chain[0]);
    assert_eq!(
        common::tls::uri_sans(&leaf[0]),
        vec!["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]
    );
    let other = kube.kubectl(&[
        "create",
        "token",
        "bookinfo-reviews",
        "-n",
        "default",
        "--audience",
        "other",
    ]);
    for bad in [other.trim(), "not-a-token"] {
        let refused = rt.block_on(common::tls::create_certificate(bowline.xds_addr, bad));
        assert_eq!(
            refused.err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated),
            "a token that does not verify gets no certificate"
        );
    }
    drop(reviews);
    drop(envoy);
}

/// The documents of a corpus file, `_err` stripped.
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("corpus file");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("corpus YAML");
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|mut d| {
            if let Some(m) = d.as_object_mut() {
                m.remove("_err");
            }
            d
        })
        .collect()
}

fn modeled(doc: &serde_json::Value) -> bool {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    bowline::model::Kind::ALL.iter().any(|k| k.as_str() == kind)
}

#[test]
fn validation_webhook_with_kubectl() {
    let Some(corpus) = common::istio_corpus() else {
        return;
    };
    let Some(kube) = cluster_with_crds() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    let webhook = net.addr(1, 15017);
    bowline.extra_args = vec!["--webhook-addr".into(), webhook.to_string()];
    rt.block_on(bowline.start());
    let root = std::fs::read(bowline.ca_dir.join("root-cert.pem")).expect("bowline's root");
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(root);
    kube.apply(&format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: bowline-validator}}
webhooks:
- name: validation.istio.io
  clientConfig: {{url: "https://{webhook}/validate", caBundle: {ca_bundle}}}
  rules:
  - apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
    apiVersions: ["*"]
    operations: [CREATE, UPDATE]
    resources: ["*"]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
"#
    ));

    let mut files: Vec<_> = std::fs::read_dir(corpus.join("validation"))
        .expect("validation corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let (mut denied_by_webhook, mut denied_by_schema, mut admitted) = (0, 0, 0);
    let mut failures = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let invalid = name.ends_with("-invalid.yaml");
        for doc in documents(&file).into_iter().filter(modeled) {
            let what = format!(
                "{name}: {}/{}",
                doc["kind"].as_str().unwrap_or("?"),
                doc.pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
            );
            let json = doc.to_string();
            // The first attempt may race the webhook registration reaching the API server.
            let mut out = kube.kubectl_raw(&["create", "-f", "-"], Some(&json));
            for _ in 0..20 {
                let err = String::from_utf8_lossy(&out.stderr).to_string();
                if out.status.success() || !err.contains("failed calling webhook") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
                out = kube.kubectl_raw(&["create", "-f", "-"], Some(&json));
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            match (invalid, out.status.success()) {
                (true, false) if err.contains("denied the request") => denied_by_webhook += 1,
                (true, false) => denied_by_schema += 1,
                (true, true) => failures.push(format!("{what}: admitted, should be denied")),
                (false, true) => admitted += 1,
                (false, false) => failures.push(format!("{what}: denied: {err}")),
            }
            if out.status.success() {
                kube.kubectl_raw(&["delete", "-f", "-"], Some(&json));
            }
        }
    }
    println!(
        "validation corpus via kubectl: {admitted} valid admitted, {denied_by_webhook} invalid denied by bowline's webhook, {denied_by_schema} by the CRD schema"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // bowline's CRDs keep every field: bowline's validation is what denies.
    assert_eq!(denied_by_schema, 0);
    assert!(admitted > 0 && denied_by_webhook > 0);

    // Every Istio document of the samples and of Istio's test configs is admitted, through
    // bowline's CRDs and webhook, whether or not bowline models its kind.
    let mut sample_files = Vec::new();
    let mut dirs = vec![corpus.join("samples"), corpus.join("testdata-config")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("corpus dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                sample_files.push(path);
            }
        }
    }
    sample_files.sort();
    let mut created_namespaces = std::collections::BTreeSet::new();
    let mut samples = 0;
    for file in sample_files {
        let text = std::fs::read_to_string(&file).expect("sample");
        let Ok(docs) = serde_saphyr::from_multiple::<serde_json::Value>(&text) else {
            continue; // Go templates and other non-YAML files.
        };
        for doc in docs.into_iter().filter(|d| {
            d["apiVersion"].as_str().is_some_and(|v| {
                v.split('/')
                    .next()
                    .unwrap_or_default()
                    .ends_with(".istio.io")
            })
        }) {
            if let Some(ns) = doc.pointer("/metadata/namespace").and_then(|n| n.as_str())
                && created_namespaces.insert(ns.to_string())
            {
                kube.kubectl_raw(&["create", "namespace", ns], None);
            }
            let json = doc.to_string();
            // Apply: documents that share a name across files replace each other.
            let out = kube.kubectl_raw(&["apply", "-f", "-"], Some(&json));
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                samples += 1;
            } else {
                failures.push(format!("{}: {}: {err}", file.display(), describe(&doc)));
            }
        }
    }
    println!("samples and test configs via kubectl: {samples} Istio documents admitted");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(samples > 100, "{samples}");
}

fn describe(doc: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc.pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
    )
}

#[test]
fn manifests_install_and_bowline_publishes_its_root() {
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/");
    // The CRDs must be established before the rest is applied in the same run.
    istio_crds(&kube);
    kube.kubectl(&["apply", "-f", manifests]);
    for (kind, name) in [
        ("service", "istiod"),
        ("deployment", "istiod"),
        ("configmap", "istio"),
        ("serviceaccount", "istiod"),
        ("deployment", "istio-ingressgateway"),
        ("service", "istio-ingressgateway"),
        ("serviceaccount", "istio-ingressgateway"),
    ] {
        kube.kubectl(&["get", "-n", "istio-system", kind, name]);
    }
    let ports = kube.kubectl(&[
        "get",
        "service",
        "istiod",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={range .spec.ports[*]}{.port}:{.targetPort} {end}",
    ]);
    assert_eq!(
        ports.trim(),
        "15010:15010 15012:15012 15014:15014 443:15017"
    );

    // bowline in Kubernetes mode with its webhooks: it writes its root into the webhook
    // configuration (failure policy Fail) and into every namespace's istio-ca-root-cert.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec![
        "--kubeconfig".into(),
        kube.kubeconfig.display().to_string(),
        "--webhook-addr".into(),
        net.addr(1, 15017).to_string(),
    ];
    rt.block_on(bowline.start());
    let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&root);
    let webhook = [
        "get",
        "validatingwebhookconfiguration",
        "istio-validator-istio-system",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle} {.webhooks[0].failurePolicy}",
    ];
    assert!(
        kube.wait_for(&webhook, Duration::from_secs(30), |out| out.trim()
            == format!("{bundle} Fail")),
        "caBundle and failure policy: {}\n{}",
        kube.kubectl(&webhook),
        bowline.log_tail()
    );
    // The injector's configuration gets the bundle too; its failure policy stays as
    // installed.
    let injector = [
        "get",
        "mutatingwebhookconfiguration",
        "istio-sidecar-injector",
        "-o",
        "jsonpath={.webhooks[*].clientConfig.caBundle} {.webhooks[*].failurePolicy}",
    ];
    assert!(
        kube.wait_for(&injector, Duration::from_secs(30), |out| out.trim()
            == format!("{bundle} {bundle} Ignore Ignore")),
        "the injector's caBundle: {}\n{}",
        kube.kubectl(&injector),
        bowline.log_tail()
    );
    let configmap = [
        "get",
        "configmap",
        "istio-ca-root-cert",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ];
    assert!(
        kube.wait_for(&configmap, Duration::from_secs(30), |out| out == root),
        "istio-ca-root-cert in default"
    );

    // One replica writes at a time: a second bowline (with a root of its own) waits for the
    // Lease and takes over when the first one dies.
    let holder = [
        "get",
        "lease",
        "bowline-leader",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ];
    let first_id = format!("-{}", bowline.pid().expect("pid"));
    assert!(
        kube.wait_for(&holder, Duration::from_secs(30), |out| out
            .ends_with(&first_id)),
        "the first bowline holds the lease: {}",
        kube.kubectl(&holder)
    );
    let net2 = Net::new();
    let mut second = Bowline::new(&net2);
    second.extra_args = bowline.extra_args.clone();
    second.extra_args[3] = net2.addr(1, 15017).to_string();
    rt.block_on(second.start());
    let second_root =
        std::fs::read_to_string(second.ca_dir.join("root-cert.pem")).expect("second root");
    assert_ne!(second_root, root);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        kube.kubectl(&holder).ends_with(&first_id),
        "the lease stays with its holder"
    );
    assert_eq!(kube.kubectl(&configmap), root, "only the leader writes");
    bowline.kill();
    let second_id = format!("-{}", second.pid().expect("pid"));
    assert!(
        kube.wait_for(&holder, Duration::from_secs(60), |out| out
            .ends_with(&second_id)),
        "the second bowline takes the lease: {}\n{}",
        kube.kubectl(&holder),
        second.log_tail()
    );
    assert!(
        kube.wait_for(&configmap, Duration::from_secs(30), |out| out
            == second_root),
        "the new leader publishes its root"
    );
}

#[test]
fn api_server_outage_keeps_the_last_config_then_resyncs() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(kube) = cluster_with_crds() else {
        return;
    };
    kube.node("node-1");
    kube.apply(&service("echo", "default").port_to(80, "http", 9080).yaml());
    kube.ready_pod(
        "default",
        "echo-0",
        "10.244.1.10",
        "default",
        &[("app", "echo")],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // bowline reaches the API server through a forwarder the test can cut.
    let partition = rt.block_on(Partition::start(kube.apiserver_addr()));
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec![
        "--kubeconfig".into(),
        kube.kubeconfig_via(partition.addr).display().to_string(),
    ];
    rt.block_on(bowline.start());
    // Captured traffic (REDIRECT): listeners for service VIPs are not bound to the VIPs.
    let spec = ProxySpec::sidecar("client-0", "default", "10.244.1.1".parse().unwrap())
        .label("app", "client")
        .interception("REDIRECT");
    let envoy = rt.block_on(Envoy::start(&envoy_bin, &bowline, spec));
    const ECHO: &str = "outbound|80||echo.default.svc.cluster.local";
    let endpoints =
        |ips: &[&str]| -> Vec<String> { ips.iter().map(|ip| format!("{ip}:9080")).collect() };
    let first = endpoints(&["10.244.1.10"]);
    let ok = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        envoy_endpoints(&envoy, ECHO).await == first
    }));
    assert!(ok, "echo's endpoint\n{}", bowline.log_tail());
    let routes_contain = |marker: &str| {
        let marker = marker.to_string();
        let envoy = &envoy;
        async move {
            envoy
                .admin("/config_dump?resource=dynamic_route_configs")
                .await
                .unwrap_or_default()
                .contains(&marker)
        }
    };
    let stays_up = |during: &str| {
        let outage = std::time::Instant::now();
        while outage.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_secs(5));
            assert_eq!(
                rt.block_on(envoy_endpoints(&envoy, ECHO)),
                first,
                "{during}"
            );
            let ready = rt.block_on(common::admin_get(bowline.admin_addr, "/ready"));
            assert!(
                matches!(ready, Ok(ref r) if r.status == 200),
                "bowline stays up ({during})\n{}",
                bowline.log_tail()
            );
        }
    };

    // 30 s cut off from the API server while changes are made: bowline keeps serving the last
    // configuration; the changes arrive once it reaches the API server again.
    partition.cut();
    kube.ready_pod(
        "default",
        "echo-1",
        "10.244.1.11",
        "default",
        &[("app", "echo")],
    );
    kube.apply(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo, namespace: default}\n\
         spec:\n  hosts: [echo]\n  http:\n  - match: [{uri: {prefix: /made-meanwhile}}]\n    route: [{destination: {host: echo}}]\n  - route: [{destination: {host: echo}}]\n",
    );
    stays_up("partitioned");
    partition.restore();
    let both = endpoints(&["10.244.1.10", "10.244.1.11"]);
    let resynced = rt.block_on(common::wait_until(Duration::from_secs(90), async || {
        routes_contain("/made-meanwhile").await && envoy_endpoints(&envoy, ECHO).await == both
    }));
    assert!(
        resynced,
        "changes made meanwhile arrive\n{}",
        bowline.log_tail()
    );

    // The API server itself down for 30 s, then back: the watchers resync.
    kube.apiserver_stop();
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(
            rt.block_on(envoy_endpoints(&envoy, ECHO)),
            both,
            "API server down"
        );
    }
    kube.apiserver_start();
    kube.ready_pod(
        "default",
        "echo-2",
        "10.244.1.12",
        "default",
        &[("app", "echo")],
    );
    let all = endpoints(&["10.244.1.10", "10.244.1.11", "10.244.1.12"]);
    let back = rt.block_on(common::wait_until(Duration::from_secs(90), async || {
        envoy_endpoints(&envoy, ECHO).await == all
    }));
    assert!(
        back,
        "a change after the API server's restart arrives\n{}",
        bowline.log_tail()
    );
    drop(envoy);
}

#[test]
fn cluster_ca_is_one_root_for_every_replica() {
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    kube.kubectl(&["create", "namespace", "istio-system"]);
    kube.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: default}\n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Two replicas without --ca-dir: the first creates istio-ca-secret, the second uses it.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.pass_ca_dir = false;
        bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
        rt.block_on(bowline.start());
        replicas.push((net, bowline));
    }
    let secret = kube.kubectl(&[
        "get",
        "secret",
        "istio-ca-secret",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.data.ca-cert\\.pem}",
    ]);
    use base64::Engine;
    let root_pem = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .expect("base64");
    let root = common::tls::certs(&String::from_utf8_lossy(&root_pem));
    let token = kube.kubectl(&["create", "token", "app", "--audience", "istio-ca"]);
    for (_, bowline) in &replicas {
        let (chain, _) = rt
            .block_on(common::tls::create_certificate(
                bowline.xds_addr,
                token.trim(),
            ))
            .expect("a certificate");
        let last = common::tls::certs(chain.last().expect("chain"));
        assert_eq!(
            last, root,
            "every replica signs under the root in istio-ca-secret"
        );
    }
}

/// The mesh ConfigMap with one invalid extension provider next to a good one: bowline uses the
/// ConfigMap (the good provider is defined), the bad provider is reported, and a CUSTOM policy
/// naming it is reported (what it selects is denied) while one naming the good provider is not.
#[test]
fn mesh_configmap_with_an_invalid_provider_keeps_the_rest() {
    let Some(kube) = cluster_with_crds() else {
        return;
    };
    kube.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n\
         data:\n  mesh: |\n    extensionProviders:\n\
         \x20   - name: good\n      envoyExtAuthzGrpc: {service: authz.default.svc.cluster.local, port: 9000}\n\
         \x20   - name: broken\n      envoyExtAuthzGrpc: {service: authz.default.svc.cluster.local, port: 0}\n",
    );
    for provider in ["good", "broken"] {
        kube.apply(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: uses-{provider}, namespace: default}}\n\
             spec:\n  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules: [{{}}]\n"
        ));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
    rt.block_on(bowline.start());
    let mut last = Vec::new();
    let reported = rt.block_on(common::wait_until(Duration::from_secs(30), async || {
        let configz = bowline.diagnosticz().await.unwrap_or_default();
        last = configz["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["field"] == "spec.provider.name")
            .map(|d| {
                format!(
                    "{}: {}",
                    d["name"].as_str().unwrap_or_default(),
                    d["message"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>();
        last.len() == 1
            && last[0].starts_with("uses-broken: ")
            && last[0].contains("\"broken\" is invalid")
    }));
    assert!(
        reported,
        "only the policy naming the bad provider is reported: {last:?}"
    );
    let log = bowline.log_tail();
    assert!(
        log.contains("istio-system/istio")
            && log.contains("extensionProviders[1] (name \"broken\")"),
        "the bad provider is reported: {log}"
    );
}
