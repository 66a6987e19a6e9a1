//! Gateway credentials over SDS, against a real `bowline serve` and a real ADS client: a
//! gateway (`router`) proxy that proves its identity on the TLS port receives the
//! `kubernetes://` credentials the Gateways of its namespace name for it, built from the
//! Secrets of the config directory; a rewritten Secret reaches it as a new version on the open
//! stream. A sidecar, a gateway of another namespace, an anonymous gateway on the plaintext port
//! and a name no Gateway references get nothing, the refusals are logged once and listed in
//! `/debug/syncz`, and no private key shows in a debug view or the log.

use crate::common;

use std::time::Duration;

use base64::Engine;
use bowline::envoy::json_to_struct;
use common::tls::{client_config, grpc_channel};
use common::{Bowline, Net};
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const SERVER_NAME: &str = "istiod.istio-system.svc";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const NS: &str = "edge";

/// A server certificate (chain PEM, key PEM) for `host`, and a CA certificate (PEM).
fn server_certificate(host: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    (cert.pem(), key.serialize_pem(), ca.pem())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A `kubernetes.io/tls` Secret holding a certificate, its key and a CA.
fn tls_secret(namespace: &str, name: &str, (cert, key, ca): &(String, String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(cert),
        b64(key),
        b64(ca)
    )
}

/// A Gateway of `namespace` for the ingress gateways, a MUTUAL server with `credential`.
fn gateway(namespace: &str, credential: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
         metadata: {{name: ingress, namespace: {namespace}}}\nspec:\n\
         \x20 selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20 - port: {{number: 443, name: https, protocol: HTTPS}}\n\
         \x20   hosts: [\"*\"]\n\
         \x20   tls: {{mode: MUTUAL, credentialName: {credential}}}\n"
    )
}

/// The node of an ingress gateway pod (`router`) or of a sidecar in `ns`.
fn node(kind: &str, ns: &str) -> xds_core::Node {
    let metadata = serde_json::json!({
        "NAMESPACE": ns, "SERVICE_ACCOUNT": "gw", "LABELS": {"istio": "ingressgateway"},
    });
    xds_core::Node {
        id: format!("{kind}~127.0.0.20~ingress-0.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(json_to_struct(metadata.as_object().unwrap())),
        ..Default::default()
    }
}

/// A state-of-the-world ADS stream.
struct Stream {
    tx: mpsc::Sender<xds_discovery::DiscoveryRequest>,
    rx: tonic::Streaming<xds_discovery::DiscoveryResponse>,
}

impl Stream {
    /// Opens a stream on `channel` (with `token`, if any) asking for `names` of SDS.
    async fn open(
        channel: tonic::transport::Channel,
        token: Option<&str>,
        node: xds_core::Node,
        names: &[&str],
    ) -> Stream {
        let (tx, rx) = mpsc::channel(4);
        tx.send(xds_discovery::DiscoveryRequest {
            node: Some(node),
            type_url: SDS.to_string(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let rx = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(request)
            .await
            .expect("stream opened")
            .into_inner();
        Stream { tx, rx }
    }

    async fn recv(&mut self) -> xds_discovery::DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.next())
            .await
            .expect("a response within 10s")
            .expect("stream open")
            .expect("not an error")
    }

    async fn ack(&self, r: &xds_discovery::DiscoveryResponse, names: &[&str]) {
        self.tx
            .send(xds_discovery::DiscoveryRequest {
                type_url: SDS.to_string(),
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn secrets(r: &xds_discovery::DiscoveryResponse) -> Vec<tls::Secret> {
    r.resources
        .iter()
        .map(|any| tls::Secret::decode(any.value.as_slice()).expect("a Secret"))
        .collect()
}

fn names(r: &xds_discovery::DiscoveryResponse) -> Vec<String> {
    secrets(r).into_iter().map(|s| s.name).collect()
}

fn inline(d: &Option<xds_core::DataSource>) -> String {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(xds_core::data_source::Specifier::InlineBytes(b)) => {
            String::from_utf8(b.clone()).expect("PEM")
        }
        other => panic!("inline bytes expected: {other:?}"),
    }
}

/// (chain, key) of the TLS certificate secret `name`, and the trusted CA of `<name>-cacert`.
fn credential(r: &xds_discovery::DiscoveryResponse, name: &str) -> (String, String, String) {
    let all = secrets(r);
    let find = |n: &str| {
        all.iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("{n} served"))
            .r#type
            .clone()
    };
    let Some(tls::secret::Type::TlsCertificate(c)) = find(name) else {
        panic!("{name} is a TLS certificate");
    };
    let Some(tls::secret::Type::ValidationContext(v)) = find(&format!("{name}-cacert")) else {
        panic!("{name}-cacert is a validation context");
    };
    (
        inline(&c.certificate_chain),
        inline(&c.private_key),
        inline(&v.trusted_ca),
    )
}

const FRONT: &str = "kubernetes://front";
const FRONT_CA: &str = "kubernetes://front-cacert";

#[tokio::test]
async fn gateways_get_their_credentials_and_rotations() {
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    let first = server_certificate("front.example.com");
    bowline.write("gateway.yaml", &gateway(NS, "front"));
    bowline.write("front.yaml", &tls_secret(NS, "front", &first));
    // A Secret no Gateway names, and another namespace's credential.
    bowline.write("unnamed.yaml", &tls_secret(NS, "unnamed", &first));
    bowline.write("other.yaml", &gateway("other", "theirs"));
    bowline.write("theirs.yaml", &tls_secret("other", "theirs", &first));
    bowline.start().await;
    let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    let channel = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, None, &["h2"]),
    )
    .await
    .expect("TLS channel");

    let asked = [
        FRONT,
        FRONT_CA,
        "kubernetes://unnamed",
        "kubernetes://other/theirs",
    ];
    let good = bowline.token(NS, "gw");
    let mut gw = Stream::open(channel.clone(), Some(&good), node("router", NS), &asked).await;
    let r = gw.recv().await;
    assert_eq!(names(&r), [FRONT, FRONT_CA], "only what the Gateway names");
    assert_eq!(credential(&r, FRONT), first);
    gw.ack(&r, &asked).await;

    // The refusals show in /debug/syncz and were logged once.
    let syncz = common::admin_get(bowline.admin_addr, "/debug/syncz")
        .await
        .expect("syncz");
    let syncz: serde_json::Value = serde_json::from_slice(&syncz.body).expect("JSON");
    let refused = &syncz[0]["refused_credentials"];
    assert!(
        refused["kubernetes://unnamed"]
            .as_str()
            .is_some_and(|why| why.contains("no Gateway")),
        "{syncz}"
    );
    assert!(
        refused["kubernetes://other/theirs"]
            .as_str()
            .is_some_and(|why| why.contains("ReferenceGrant")),
        "{syncz}"
    );
    assert!(refused.get(FRONT).is_none(), "{syncz}");

    // Rotation: the rewritten Secret reaches the open stream as a new version.
    let second = server_certificate("front.example.com");
    bowline.write("front.yaml", &tls_secret(NS, "front", &second));
    let rotated = gw.recv().await;
    assert_ne!(rotated.version_info, r.version_info);
    assert_eq!(credential(&rotated, FRONT), second);
    gw.ack(&rotated, &asked).await;

    // Debug views and the log show no key.
    let configz = common::admin_get(bowline.admin_addr, "/debug/diagnosticz")
        .await
        .expect("configz")
        .text();
    assert!(configz.contains("\"Secret\""), "{configz}");
    let dump = bowline
        .config_dump(&format!("ingress-0.{NS}"))
        .await
        .expect("config dump")
        .to_string();
    assert!(
        dump.contains(FRONT) && dump.contains("[redacted]"),
        "{dump}"
    );
    let log = bowline.log_tail();
    let key_line = second.1.lines().nth(1).expect("a PEM body");
    for shown in [&configz, &dump, &log] {
        assert!(!shown.contains("PRIVATE KEY"), "a key shows: {shown}");
        assert!(!shown.contains(key_line), "a key shows: {shown}");
    }
    let warnings = log
        .matches("proxy asked for credentials it may not receive")
        .count();
    assert_eq!(warnings, 1, "one warning for the stream's refusals: {log}");

    // Nobody else gets anything: each is answered with ROOTCA only.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let other = bowline.token("other", "gw");
    let cases = [
        (
            "a sidecar",
            channel.clone(),
            Some(&good),
            node("sidecar", NS),
            FRONT,
        ),
        (
            "another namespace's gateway",
            channel.clone(),
            Some(&other),
            node("router", "other"),
            "kubernetes://edge/front",
        ),
        (
            "another namespace's gateway, by its short name",
            channel.clone(),
            Some(&other),
            node("router", "other"),
            FRONT,
        ),
        (
            "an anonymous gateway",
            plaintext,
            None,
            node("router", NS),
            FRONT,
        ),
    ];
    for (who, channel, token, node, name) in cases {
        let asked = ["ROOTCA", name];
        let mut s = Stream::open(channel, token.map(String::as_str), node, &asked).await;
        assert_eq!(
            names(&s.recv().await),
            ["ROOTCA"],
            "{who} gets no credential"
        );
    }
}

/// Kubernetes mode: Secrets are watched in every namespace, without the types no credential is
/// read from (the API server filters them out), and one rotated with kubectl reaches the
/// gateway's open stream.
#[test]
fn secrets_are_watched_in_kubernetes_mode() {
    let Some(kube) = common::kube::KubeEnv::start() else {
        return;
    };
    kube.kubectl(&["create", "namespace", NS]);
    let first = server_certificate("front.example.com");
    kube.apply(&tls_secret(NS, "front", &first));
    kube.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: helm, namespace: {NS}}}\n\
         type: helm.sh/release.v1\nstringData: {{release: x}}\n"
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
    // The Gateway from the config directory, the Secrets from the API server.
    bowline.write("gateway.yaml", &gateway(NS, "front"));
    rt.block_on(bowline.start());

    let configz = rt.block_on(bowline.diagnosticz()).expect("configz");
    let secrets: Vec<&str> = configz["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["kind"] == "Secret")
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        secrets,
        ["front"],
        "the Helm release is not watched: {configz}"
    );

    rt.block_on(async {
        let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
        let channel = grpc_channel(
            bowline.xds_tls_addr,
            SERVER_NAME,
            client_config(&root, None, &["h2"]),
        )
        .await
        .expect("TLS channel");
        let asked = [FRONT, FRONT_CA];
        let good = bowline.token(NS, "gw");
        let mut gw = Stream::open(channel, Some(&good), node("router", NS), &asked).await;
        let r = gw.recv().await;
        assert_eq!(credential(&r, FRONT), first);
        gw.ack(&r, &asked).await;
        let second = server_certificate("front.example.com");
        kube.apply(&tls_secret(NS, "front", &second));
        assert_eq!(credential(&gw.recv().await, FRONT), second);
    });
}
