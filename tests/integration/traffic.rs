//! Traffic management with real traffic through a real Envoy (interception NONE, listeners bound
//! by a Sidecar): weighted TCP routes, SNI routing of TLS passthrough, and gRPC routing.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fixtures::*;
use common::*;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

const LONG: Duration = Duration::from_secs(60);

/// Starts bowline with `config` and a client Envoy (`client-0.shop`, app=client) on `net`.
async fn start(net: &Net, config: &str) -> Option<(Bowline, Envoy)> {
    let envoy_bin = envoy_bin()?;
    let mut bowline = Bowline::new(net);
    bowline.write("mesh.yaml", config);
    bowline.start().await;
    let spec = ProxySpec::sidecar("client-0", "shop", net.ip(10)).label("app", "client");
    let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
    bowline
        .wait_synced(&envoy.proxy_id(), LONG)
        .await
        .expect("proxy synced");
    Some((bowline, envoy))
}

async fn assert_no_nack(bowline: &Bowline, envoy: &Envoy) {
    let all = bowline.syncz().await.expect("syncz");
    let p = find_proxy(&all, &envoy.proxy_id()).expect("proxy connected");
    assert!(p.nacks().is_empty(), "NACKs: {:?}", p.nacks());
    assert_eq!(envoy.rejections().await.expect("stats"), 0);
}

/// Sends `first` on a new connection and returns the first line the far end sends back
/// (the TCP echo backends greet with their name).
async fn greeting(to: SocketAddr, first: &[u8]) -> Option<String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(to).await.ok()?;
        s.write_all(first).await.ok()?;
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.lines().next().map(str::to_string)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_tcp_routes() {
    let net = Net::new();
    let _primary = spawn_tcp_echo(net.addr(21, 5432), "primary")
        .await
        .expect("backend");
    let _replica = spawn_tcp_echo(net.addr(22, 5432), "replica")
        .await
        .expect("backend");
    let config = docs(&[
        &service("db", "shop").port(5432, "tcp-pg"),
        &destination_rule("db", "shop", "db").subsets("role", &["primary", "replica"]),
        &virtual_service("db", "shop", &["db"]).tcp_route(
            5432,
            &[
                route("db").subset("primary").weight(70),
                route("db").subset("replica").weight(30),
            ],
        ),
        &sidecar("client", "shop").egress(5432, "TCP", "tcp-pg", net.ip(10)),
        &workload_entry("db-1", "shop", net.ip(21))
            .label("app", "db")
            .label("role", "primary"),
        &workload_entry("db-2", "shop", net.ip(22))
            .label("app", "db")
            .label("role", "replica"),
    ]);
    let Some((bowline, envoy)) = start(&net, &config).await else {
        return;
    };
    let listener = net.addr(10, 5432);
    let mut primary = 0usize;
    let mut replica = 0usize;
    for _ in 0..300 {
        match greeting(listener, b"hello\n").await.as_deref() {
            Some("primary") => primary += 1,
            Some("replica") => replica += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let share = primary as f64 * 100.0 / 300.0;
    println!(
        "weighted TCP 70/30 over 300 connections: primary {primary}, replica {replica} ({share:.1}%)"
    );
    assert!(
        (share - 70.0).abs() <= 8.0,
        "primary share {share:.1}% is not 70±8"
    );
    assert_no_nack(&bowline, &envoy).await;
}

/// A minimal TLS ClientHello carrying `sni`: enough for Envoy's tls_inspector, which routes the
/// connection by SNI without terminating TLS.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // server name list
    sni_ext.push(0); // host_name
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&[0x00, 0x00]); // server_name
    extensions.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni_ext);
    let mut body = vec![0x03, 0x03]; // TLS 1.2
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0x00, 0x9c]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![0x01]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routing_of_tls_passthrough() {
    let net = Net::new();
    let _a = spawn_tcp_echo(net.addr(21, 9443), "a")
        .await
        .expect("backend");
    let _b = spawn_tcp_echo(net.addr(22, 9443), "b")
        .await
        .expect("backend");
    let entry = |name: &str, host: &str, ip: std::net::IpAddr| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: 9443}}]\n  resolution: STATIC\n  location: MESH_EXTERNAL\n  endpoints: [{{address: \"{ip}\"}}]\n"
        )
    };
    let config = format!(
        "{}{}{}",
        sidecar("client", "shop")
            .egress(443, "TLS", "tls", net.ip(10))
            .yaml(),
        entry("a", "a.example.com", net.ip(21)),
        entry("b", "b.example.com", net.ip(22))
    );
    let Some((bowline, envoy)) = start(&net, &config).await else {
        return;
    };
    let listener = net.addr(10, 443);
    assert_eq!(
        greeting(listener, &client_hello("a.example.com"))
            .await
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        greeting(listener, &client_hello("b.example.com"))
            .await
            .as_deref(),
        Some("b")
    );

    // A VirtualService tls rule sends SNI b.example.com to a's endpoints.
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b-to-a, namespace: shop}\nspec:\n  hosts: [b.example.com]\n  tls:\n  - match: [{sniHosts: [b.example.com]}]\n    route: [{destination: {host: a.example.com, port: {number: 443}}}]\n";
    bowline.write("mesh.yaml", &format!("{config}{vs}"));
    let moved = wait_until(LONG, async || {
        greeting(listener, &client_hello("b.example.com"))
            .await
            .as_deref()
            == Some("a")
    })
    .await;
    assert!(moved, "SNI b.example.com follows the tls route to a");
    assert_eq!(
        greeting(listener, &client_hello("a.example.com"))
            .await
            .as_deref(),
        Some("a")
    );
    assert_no_nack(&bowline, &envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routing() {
    let net = Net::new();
    // The gRPC backend: a second bowline's ADS server (a real gRPC service over HTTP/2).
    let backend_net = Net::new();
    let mut backend = Bowline::new(&backend_net);
    let config = docs(&[
        &service("xds", "shop").port(15010, "grpc"),
        &workload_entry("xds-1", "shop", backend.xds_addr.ip()).label("app", "xds"),
        &sidecar("client", "shop").egress(15010, "GRPC", "grpc", net.ip(10)),
    ]);
    let Some((bowline, envoy)) = start(&net, &config).await else {
        return;
    };
    backend.start().await;
    // Dial Envoy's listener, naming the service as the authority Envoy routes on.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}:15010", net.ip(10)))
        .expect("uri")
        .origin(
            "http://xds.shop.svc.cluster.local:15010"
                .parse()
                .expect("origin"),
        )
        .connect()
        .await
        .expect("connect to Envoy");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let node = xds_core::Node {
        id: "sidecar~10.0.0.1~probe.shop~shop.svc.cluster.local".into(),
        ..Default::default()
    };
    let request = xds_discovery::DeltaDiscoveryRequest {
        node: Some(node),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    // Keep the request stream open while the backend is checked.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.expect("queue request");
    let mut responses = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("gRPC call through Envoy")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .expect("a response within 10s")
        .expect("stream open")
        .expect("gRPC status ok");
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"PassthroughCluster"), "{names:?}");
    // The backend saw the probe as a proxy of its own.
    let seen = backend.syncz().await.expect("backend syncz");
    assert!(
        find_proxy(&seen, "probe.shop").is_some(),
        "gRPC reached the backend"
    );
    assert_no_nack(&bowline, &envoy).await;
}

/// A wildcard `DYNAMIC_DNS` ServiceEntry: Envoy resolves the host the client names (the HTTP
/// `Host`, the TLS SNI) with DNS and connects there. `*.localhost` names resolve to 127.0.0.1
/// without a DNS server (RFC 6761), so the traffic stays on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_dns_wildcard_resolves_the_named_host() {
    let net = Net::new();
    let http_port = free_port();
    let tls_port = free_port();
    let web = spawn_backend(SocketAddr::from(([127, 0, 0, 1], http_port)), "resolved")
        .await
        .expect("backend");
    let _tls = spawn_tcp_echo(SocketAddr::from(([127, 0, 0, 1], tls_port)), "resolved-tls")
        .await
        .expect("backend");
    let bind = net.ip(10);
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wildcard, namespace: shop}}
spec:
  hosts: ["*.localhost"]
  ports:
  - {{number: {http_port}, name: http, protocol: HTTP}}
  - {{number: {tls_port}, name: tls, protocol: TLS}}
  resolution: DYNAMIC_DNS
  location: MESH_EXTERNAL
{}"#,
        sidecar("client", "shop")
            .egress(http_port, "HTTP", "http", bind)
            .egress(tls_port, "TLS", "tls", bind)
            .yaml()
    );
    let Some((bowline, envoy)) = start(&net, &config).await else {
        return;
    };
    let mut client = HttpClient::new(net.addr(10, http_port));
    let host = format!("echo.localhost:{http_port}");
    let reached = wait_until(LONG, async || {
        client
            .get(&host, "/dns", &[])
            .await
            .is_ok_and(|r| r.status == 200 && r.backend() == Some("resolved"))
    })
    .await;
    assert!(
        reached,
        "{host} is resolved by DNS and reached: {:?}",
        client.get(&host, "/dns", &[]).await
    );
    assert!(web.served() > 0);
    assert_eq!(
        greeting(net.addr(10, tls_port), &client_hello("tls.localhost"))
            .await
            .as_deref(),
        Some("resolved-tls"),
        "the SNI is resolved by DNS and the TLS connection reaches it"
    );
    assert_no_nack(&bowline, &envoy).await;
}

/// A Sidecar `ingress` listener with `captureMode: NONE` on a proxy whose traffic is captured
/// (REDIRECT) binds its own address and serves, as istiod's listener does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_capture_none_binds_on_a_captured_proxy() {
    let Some(bin) = envoy_bin() else {
        return;
    };
    let net = Net::new();
    let app_port = free_port();
    let app = spawn_backend(SocketAddr::from(([127, 0, 0, 1], app_port)), "app")
        .await
        .expect("backend");
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: shop}}
spec:
  workloadSelector: {{labels: {{app: server}}}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    bind: "{bind}"
    captureMode: NONE
    defaultEndpoint: "127.0.0.1:{app_port}"
"#,
        bind = net.ip(10)
    );
    let mut bowline = Bowline::new(&net);
    bowline.write("mesh.yaml", &config);
    bowline.start().await;
    let spec = ProxySpec::sidecar("server-0", "shop", net.ip(10))
        .label("app", "server")
        .interception("REDIRECT");
    let envoy = Envoy::start(&bin, &bowline, spec).await;
    bowline
        .wait_synced(&envoy.proxy_id(), LONG)
        .await
        .expect("proxy synced");
    let mut client = HttpClient::new(net.addr(10, 9080));
    let served = wait_until(LONG, async || {
        client
            .get("server.shop", "/in", &[])
            .await
            .is_ok_and(|r| r.status == 200 && r.backend() == Some("app"))
    })
    .await;
    assert!(
        served,
        "the ingress listener is bound on {}:9080 and serves: {:?}",
        net.ip(10),
        client.get("server.shop", "/in", &[]).await
    );
    assert!(app.served() > 0);
    let name = format!("{}_9080", net.ip(10));
    assert!(
        envoy
            .loaded()
            .await
            .is_ok_and(|l| l.listeners.contains(&name)),
        "listener {name}"
    );
    assert_no_nack(&bowline, &envoy).await;
}
