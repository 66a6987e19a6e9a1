//! Who is asking, against a real `bowline serve`: the TLS xDS port refuses callers without a
//! valid token or client certificate, checks the node against the proven identity, signs CSRs
//! for the caller's identity only, and serves the `default` and `ROOTCA` secrets.

use crate::common;

use std::time::Duration;

use bowline::ca::pb::IstioCertificateRequest;
use bowline::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use bowline::envoy::json_to_struct;
use common::fixtures::*;
use common::tls::{certs, client_config, grpc_channel, uri_sans};
use common::{Bowline, Net};
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use tokio_stream::StreamExt;

const SERVER_NAME: &str = "istiod.istio-system.svc";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

fn root(bowline: &Bowline) -> String {
    std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root-cert.pem")
}

fn node(ns: &str, sa: &str) -> xds_core::Node {
    let metadata = serde_json::json!({
        "NAMESPACE": ns, "SERVICE_ACCOUNT": sa, "INTERCEPTION_MODE": "NONE",
    });
    xds_core::Node {
        id: format!("sidecar~127.0.0.10~client-0.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(json_to_struct(metadata.as_object().unwrap())),
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Opens a delta ADS stream asking for `type_url` `names`; the first response, or the error.
async fn first_delta(
    channel: tonic::transport::Channel,
    token: Option<&str>,
    node: xds_core::Node,
    type_url: &str,
    names: &[&str],
) -> Result<xds_discovery::DeltaDiscoveryResponse, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let first = xds_discovery::DeltaDiscoveryRequest {
        node: Some(node),
        type_url: type_url.to_string(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), token);
    let mut responses = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    let r = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response"))?;
    drop(tx);
    match r {
        Some(r) => r,
        None => Err(tonic::Status::aborted("stream ended")),
    }
}

fn secrets(r: &xds_discovery::DeltaDiscoveryResponse) -> Vec<tls::Secret> {
    r.resources
        .iter()
        .filter_map(|res| res.resource.as_ref())
        .map(|any| tls::Secret::decode(any.value.as_slice()).expect("a Secret"))
        .collect()
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key.serialize_pem())
}

#[tokio::test]
async fn tls_port_authenticates_callers() {
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.start().await;
    let root = root(&bowline);
    let good = bowline.token("shop", "cart");
    let channel = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, None, &["h2"]),
    )
    .await
    .expect("TLS channel");

    // No credential on the TLS port: no config.
    let e = first_delta(channel.clone(), None, node("shop", "cart"), CDS, &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // A token signed by another bowline: refused.
    let mut other = Bowline::new(&Net::new());
    other.start().await;
    let foreign = other.token("shop", "cart");
    drop(other);
    let e = first_delta(
        channel.clone(),
        Some(&foreign),
        node("shop", "cart"),
        CDS,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = first_delta(
        channel.clone(),
        Some("not-a-token"),
        node("shop", "cart"),
        CDS,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // A valid token whose identity is not the node's: refused as istiod refuses it.
    let e = first_delta(
        channel.clone(),
        Some(&good),
        node("shop", "admin"),
        CDS,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = first_delta(
        channel.clone(),
        Some(&good),
        node("kube-system", "cart"),
        CDS,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // The right token: config, and the secrets.
    let r = first_delta(channel.clone(), Some(&good), node("shop", "cart"), CDS, &[])
        .await
        .expect("config with a valid token");
    assert!(!r.resources.is_empty(), "clusters served");
    let r = first_delta(
        channel.clone(),
        Some(&good),
        node("shop", "cart"),
        SDS,
        &["default", "ROOTCA"],
    )
    .await
    .expect("secrets");
    let got = secrets(&r);
    let default = got
        .iter()
        .find(|s| s.name == "default")
        .expect("default served");
    let Some(tls::secret::Type::TlsCertificate(c)) = &default.r#type else {
        panic!("default is a TLS certificate");
    };
    let Some(xds_core::data_source::Specifier::InlineBytes(chain)) = c
        .certificate_chain
        .as_ref()
        .and_then(|d| d.specifier.clone())
    else {
        panic!("inline chain");
    };
    let chain = certs(&String::from_utf8(chain).unwrap());
    assert_eq!(
        uri_sans(&chain[0]),
        vec!["spiffe://cluster.local/ns/shop/sa/cart"]
    );
    assert!(got.iter().any(|s| s.name == "ROOTCA"));

    // The refusals were logged; no key or token reached the log.
    let log = bowline.log_tail();
    assert!(log.contains("xDS stream refused"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "no key in the log");
    assert!(!log.contains(&good), "no token in the log");

    // Plaintext: config for anyone, but `default` never (it carries a key).
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = first_delta(
        plain.clone(),
        None,
        node("shop", "cart"),
        SDS,
        &["default", "ROOTCA"],
    )
    .await
    .expect("plaintext answers");
    let names: Vec<String> = secrets(&r).into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["ROOTCA"]);
    let e = first_delta(plain, Some("not-a-token"), node("shop", "cart"), CDS, &[])
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Unauthenticated,
        "a wrong token is refused on any port"
    );
}

#[tokio::test]
async fn create_certificate_signs_for_the_caller_and_client_certificates_authenticate() {
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.start().await;
    let root = root(&bowline);
    let good = bowline.token("shop", "cart");
    let channel = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, None, &["h2"]),
    )
    .await
    .expect("TLS channel");
    let (csr, key) = csr();
    let mut ca = IstioCertificateServiceClient::new(channel.clone());
    let request = IstioCertificateRequest {
        csr: csr.clone(),
        validity_duration: 3600,
        metadata: None,
    };
    let e = ca
        .create_certificate(with_token(request.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = ca
        .create_certificate(with_token(request.clone(), Some("x.y.z")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let chain = ca
        .create_certificate(with_token(request.clone(), Some(&good)))
        .await
        .expect("signed")
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2, "leaf, root");
    let leaf = certs(&chain[0]);
    assert_eq!(
        uri_sans(&leaf[0]),
        vec!["spiffe://cluster.local/ns/shop/sa/cart"],
        "the SAN is the token's identity, not the CSR's"
    );
    assert_eq!(certs(&chain[1]), certs(&root), "root last");

    // The plaintext port signs too (the key never leaves the caller).
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let chain2 = IstioCertificateServiceClient::new(plain)
        .create_certificate(with_token(request.clone(), Some(&good)))
        .await
        .expect("signed on the plaintext port")
        .into_inner()
        .cert_chain;
    assert_eq!(
        uri_sans(&certs(&chain2[0])[0]),
        vec!["spiffe://cluster.local/ns/shop/sa/cart"]
    );

    // The certificate authenticates on its own: a client-certificate stream, no token.
    let with_cert = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, Some((&chain[0], &key)), &["h2"]),
    )
    .await
    .expect("mTLS channel");
    let r = first_delta(
        with_cert.clone(),
        None,
        node("shop", "cart"),
        SDS,
        &["default"],
    )
    .await
    .expect("client certificate accepted");
    assert_eq!(secrets(&r).len(), 1);
    let e = first_delta(with_cert, None, node("shop", "other"), CDS, &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

#[test]
fn bad_ca_files_stop_the_start_before_a_port_is_bound() {
    let dir = common::TempDir::new("badca");
    let ca = dir.path().join("ca");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("ca-cert.pem"), "garbage").unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let net = Net::new();
    let xds = net.addr(1, 15010);
    let out = std::process::Command::new(common::BOWLINE)
        .args(["serve", "--config-dir"])
        .arg(&config)
        .arg("--ca-dir")
        .arg(&ca)
        .args(["--xds-addr", &xds.to_string()])
        .args(["--xds-tls-addr", &net.addr(1, 15012).to_string()])
        .args(["--admin-addr", &net.addr(1, 15014).to_string()])
        .output()
        .expect("run bowline");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("bowline: --ca-dir: ") && last.contains("incomplete"),
        "{err}"
    );
    assert!(!err.contains("serving"), "no port bound: {err}");
    assert!(
        std::net::TcpListener::bind(xds).is_ok(),
        "the xDS port was never bound"
    );
}

/// Service `a` (no workloads) with one port.
fn service_a(port: u16) -> String {
    service("a", "shop").no_selector().port(port, "http").yaml()
}

#[tokio::test]
async fn tls_stream_survives_pushes() {
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.write("a.yaml", &service_a(80));
    bowline.start().await;
    let root = root(&bowline);
    let good = bowline.token("shop", "cart");
    let channel = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, None, &["h2"]),
    )
    .await
    .expect("TLS channel");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(xds_discovery::DeltaDiscoveryRequest {
        node: Some(node("shop", "cart")),
        type_url: CDS.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), Some(&good));
    let mut responses = client
        .delta_aggregated_resources(request)
        .await
        .unwrap()
        .into_inner();
    for round in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(10), responses.next())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no response"))
            .expect("a response")
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        tx.send(xds_discovery::DeltaDiscoveryRequest {
            type_url: CDS.to_string(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        bowline.write("a.yaml", &service_a(81 + round));
    }
}

#[tokio::test]
async fn envoy_over_tls_follows_changes() {
    let Some(bin) = common::envoy_bin() else {
        return;
    };
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.write("a.yaml", &service_a(80));
    bowline.start().await;
    bowline.write(
        "cart.yaml",
        &docs(&[
            &service("cart", "shop").port(8080, "http"),
            &workload_entry("cart", "shop", net.ip(20))
                .service_account("cart")
                .label("app", "cart")
                .mtls(),
        ]),
    );
    let spec = common::ProxySpec::sidecar("cart-0", "shop", net.ip(20))
        .label("app", "cart")
        .service_account("cart")
        .with_token();
    let envoy = common::Envoy::start(&bin, &bowline, spec).await;
    bowline
        .wait_synced("cart-0.shop", Duration::from_secs(20))
        .await
        .expect("synced over TLS");
    for port in [81, 82, 83] {
        bowline.write("a.yaml", &service_a(port));
        let name = format!("outbound|{port}||a.shop.svc.cluster.local");
        let ok = common::wait_until(Duration::from_secs(20), async || {
            envoy
                .loaded()
                .await
                .is_ok_and(|l| l.clusters.contains(&name))
        })
        .await;
        assert!(
            ok,
            "Envoy follows the change to port {port}: {}",
            bowline.log_tail()
        );
    }
}

/// Every `mtls-*` golden case, served to a real Envoy that proved its identity: no NACK.
#[tokio::test]
async fn mtls_golden_cases_load_in_envoy() {
    let Some(bin) = common::envoy_bin() else {
        return;
    };
    let cases = common::cases::named("mtls-");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    for case in cases {
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        for entry in std::fs::read_dir(case.join("config"))
            .expect("config")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            bowline.write(&name, &std::fs::read_to_string(entry.path()).unwrap());
        }
        bowline.start().await;
        let spec = common::ProxySpec::sidecar("reviews-v1-abc", "default", net.ip(10))
            .label("app", "reviews")
            .label("version", "v1")
            .service_account("reviews")
            .interception("REDIRECT")
            .with_token()
            .file("certs/partner/cert.pem", &cert)
            .file("certs/partner/key.pem", &key.serialize_pem())
            .file("certs/partner/ca.pem", &cert);
        let envoy = common::Envoy::start(&bin, &bowline, spec).await;
        let synced = bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(30))
            .await;
        assert!(synced.is_ok(), "{}: {synced:?}", case.display());
        assert_eq!(
            envoy.rejections().await.expect("stats"),
            0,
            "{}: Envoy rejected an update",
            case.display()
        );
        let dump = envoy.admin("/config_dump").await.expect("dump");
        assert!(
            dump.contains("dynamic_active_secrets"),
            "{}: secrets held",
            case.display()
        );
        assert!(
            !dump.contains("PRIVATE KEY"),
            "{}: key redacted",
            case.display()
        );
        println!("{}: accepted by Envoy", case.display());
    }
}

/// The names of the secrets Envoy holds (`dynamic_active_secrets` of its config dump).
fn active_secrets(dump: &serde_json::Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("SecretsConfigDump"))
        })
        .flat_map(|c| {
            c["dynamic_active_secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A proxy on the plaintext xDS port holds no workload certificate. A DestinationRule
/// `ISTIO_MUTUAL` to a destination, and a `STRICT` PeerAuthentication on its own port, then
/// fail closed: nothing reaches either in plaintext, while a destination without such a rule
/// still works; `/debug/syncz` says what the missing certificate blocks. Over delta ADS, where
/// bowline says `default` does not exist, and over state of the world, where it is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_workload_certificate_mutual_tls_fails_closed() {
    for delta in [true, false] {
        fails_closed_without_a_certificate(delta).await;
    }
}

async fn fails_closed_without_a_certificate(delta: bool) {
    let Some(bin) = common::envoy_bin() else {
        return;
    };
    let net = Net::new();
    let long = Duration::from_secs(60);
    let reviews = common::spawn_backend(net.addr(21, 9080), "reviews")
        .await
        .expect("backend");
    let ratings = common::spawn_backend(net.addr(22, 9080), "ratings")
        .await
        .expect("backend");
    let app_port = common::free_port();
    let app = common::spawn_backend(
        std::net::SocketAddr::from(([127, 0, 0, 1], app_port)),
        "app",
    )
    .await
    .expect("backend");
    let backend = |name: &str, host: u8| {
        docs(&[
            &service(name, "shop").port(9080, "http"),
            &workload_entry(name, "shop", net.ip(host)).label("app", name),
        ])
    };
    let bind = net.ip(10);
    let config = docs(&[
        &destination_rule("reviews", "shop", "reviews.shop.svc.cluster.local")
            .traffic_policy("tls: {mode: ISTIO_MUTUAL}"),
        &peer_authentication("default", "shop", "STRICT"),
        &sidecar("client", "shop")
            .ingress(9090, "HTTP", "http", bind, format!("127.0.0.1:{app_port}"))
            .egress(9080, "HTTP", "http", bind),
    ]) + &backend("reviews", 21)
        + &backend("ratings", 22);
    let mut bowline = Bowline::new(&net);
    bowline.write("mesh.yaml", &config);
    bowline.start().await;
    let spec = common::ProxySpec::sidecar("client-0", "shop", net.ip(10))
        .label("app", "client")
        .delta(delta);
    let envoy = common::Envoy::start(&bin, &bowline, spec).await;
    bowline
        .wait_synced(&envoy.proxy_id(), long)
        .await
        .expect("proxy synced");
    // The listeners become active (the missing secret holds them no longer than Envoy's initial
    // fetch timeout), so what follows is the data path, not a listener that is not there yet.
    let outbound = format!("{}_9080", net.ip(10));
    let inbound = format!("{}_9090", net.ip(10));
    let active = common::wait_until(long, async || {
        envoy
            .loaded()
            .await
            .is_ok_and(|l| l.listeners.contains(&outbound) && l.listeners.contains(&inbound))
    })
    .await;
    assert!(active, "listeners active: {:?}", envoy.loaded().await);

    // A destination without mutual TLS is reached...
    let mut client = common::HttpClient::new(net.addr(10, 9080));
    let reached = common::wait_until(long, async || {
        client
            .get("ratings.shop.svc.cluster.local", "/", &[])
            .await
            .is_ok_and(|r| r.status == 200 && r.backend() == Some("ratings"))
    })
    .await;
    assert!(reached, "ratings is reached");
    assert!(ratings.served() > 0);
    // ...the ISTIO_MUTUAL one is not, and never in plaintext.
    for _ in 0..5 {
        let mut client = common::HttpClient::new(net.addr(10, 9080));
        if let Ok(r) = client.get("reviews.shop.svc.cluster.local", "/", &[]).await {
            assert_ne!(
                r.status, 200,
                "reviews answered through a proxy without a certificate"
            );
        }
    }
    assert_eq!(
        reviews.served(),
        0,
        "plaintext reached the ISTIO_MUTUAL destination"
    );
    // STRICT inbound refuses plaintext.
    for _ in 0..5 {
        let mut client = common::HttpClient::new(net.addr(10, 9090));
        if let Ok(r) = client.get("client.shop", "/", &[]).await {
            assert_ne!(r.status, 200, "plaintext passed a STRICT port");
        }
    }
    assert_eq!(
        app.served(),
        0,
        "plaintext reached the workload behind a STRICT port"
    );
    // The proxy never got a certificate.
    let dump: serde_json::Value =
        serde_json::from_str(&envoy.admin("/config_dump").await.expect("dump")).expect("json");
    assert!(
        !active_secrets(&dump).contains(&"default".to_string()),
        "a proxy without identity holds a workload certificate"
    );
    // The state is visible.
    let all = bowline.syncz().await.expect("syncz");
    let p = common::find_proxy(&all, &envoy.proxy_id()).expect("connected");
    assert_eq!(p.workload_certificate, Some(false));
    let said = serde_json::to_string(&p.diagnostics).unwrap();
    assert!(
        said.contains("outbound|9080||reviews.shop.svc.cluster.local"),
        "syncz names the blocked destination: {said}"
    );
    assert!(
        said.contains("9090"),
        "syncz names the blocked port: {said}"
    );
    assert!(p.nacks().is_empty(), "NACKs: {:?}", p.nacks());
}
