//! Mesh tests: a network namespace as a pod, with istio-init's iptables capture, a real Envoy
//! running as the proxy group (1337) configured by bowline in REDIRECT mode, and backends in the
//! same namespace. Requests go to service VIPs and unknown addresses exactly as an application's
//! would, and the capture hands them to Envoy.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::{Netns, PROXY_GID};
use common::{Bowline, Envoy, HttpClient, Net, ProxySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD_IP: &str = "10.88.0.2";
const V1: &str = "10.88.1.11";
const V2: &str = "10.88.1.12";
const VIP: &str = "10.96.0.10";
const EXTERNAL: &str = "10.88.9.9";

fn mesh_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: mesh}}
spec:
  clusterIP: {VIP}
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v1, namespace: mesh}}
spec: {{address: {V1}, labels: {{app: echo, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v2, namespace: mesh}}
spec: {{address: {V2}, labels: {{app: echo, version: v2}}}}
"#
    )
}

fn outbound_policy(mode: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: mesh}}\n\
         spec:\n  outboundTrafficPolicy: {{mode: {mode}}}\n  egress: [{{hosts: [\"./*\"]}}]\n"
    )
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("test address"), port)
}

/// Connects (captured), reads the backend's greeting line; `None` if the connection is refused,
/// reset or closed without one.
async fn tcp_greeting(to: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(to).await.ok()?;
        s.write_all(b"ping\n").await.ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        (n > 0).then(|| {
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

#[test]
fn captured_outbound_reaches_services_and_follows_outbound_policy() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(ns) = Netns::create("mesh", &[POD_IP, V1, V2, VIP, EXTERNAL]) else {
        return;
    };
    let pod = (*ns).clone();
    ns.run(move || async move {
        let _v1 = common::spawn_backend(addr(V1, 8080), "v1")
            .await
            .expect("backend v1");
        let _v2 = common::spawn_backend(addr(V2, 8080), "v2")
            .await
            .expect("backend v2");
        let _ext = common::spawn_backend(addr(EXTERNAL, 80), "external")
            .await
            .expect("external");
        let _ext_tcp = common::spawn_tcp_echo(addr(EXTERNAL, 9000), "external-tcp")
            .await
            .expect("external tcp");
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.write("mesh.yaml", &mesh_yaml());
        bowline.start().await;
        let spec = ProxySpec::sidecar("client-0", "mesh", POD_IP.parse().expect("ip"))
            .label("app", "client")
            .interception("REDIRECT")
            .run_as_group(PROXY_GID);
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(20))
            .await
            .expect("proxy synced");
        pod.capture_outbound(envoy.listen_port);

        // A service VIP: captured, routed by Host, balanced over both endpoints.
        let t = common::tally(
            addr(VIP, 80),
            "echo.mesh.svc.cluster.local",
            &[],
            60,
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(t.ok(), 60, "all requests to the VIP answered: {t:?}");
        assert!(
            t.count("v1") > 0 && t.count("v2") > 0,
            "both endpoints used: {t:?}"
        );
        // The short name works from the service's namespace.
        let r = HttpClient::new(addr(VIP, 80))
            .get("echo", "/", &[])
            .await
            .expect("short name");
        assert_eq!(r.status, 200);

        // ALLOW_ANY (the default): unknown destinations pass through, HTTP and TCP.
        let r = HttpClient::new(addr(EXTERNAL, 80))
            .get("external.example", "/", &[])
            .await
            .expect("passthrough HTTP");
        assert_eq!((r.status, r.backend()), (200, Some("external")));
        assert_eq!(
            tcp_greeting(addr(EXTERNAL, 9000)).await.as_deref(),
            Some("external-tcp")
        );

        // REGISTRY_ONLY: unknown destinations are refused; the registry still works.
        bowline.write("sidecar.yaml", &outbound_policy("REGISTRY_ONLY"));
        let blocked = common::wait_until(Duration::from_secs(20), async || {
            matches!(
                HttpClient::new(addr(EXTERNAL, 80)).get("external.example", "/", &[]).await,
                Ok(r) if r.status == 502
            )
        })
        .await;
        assert!(blocked, "REGISTRY_ONLY answers 502 for an unknown host");
        assert_eq!(
            tcp_greeting(addr(EXTERNAL, 9000)).await,
            None,
            "unknown TCP is dropped"
        );
        let r = HttpClient::new(addr(VIP, 80))
            .get("echo.mesh.svc.cluster.local", "/", &[])
            .await
            .expect("registry service");
        assert_eq!(r.status, 200);

        // Back to ALLOW_ANY.
        bowline.write("sidecar.yaml", &outbound_policy("ALLOW_ANY"));
        let open = common::wait_until(Duration::from_secs(20), async || {
            tcp_greeting(addr(EXTERNAL, 9000)).await.as_deref() == Some("external-tcp")
        })
        .await;
        assert!(open, "ALLOW_ANY passes unknown TCP again");
        let synced = bowline.syncz().await.expect("syncz");
        let me = common::find_proxy(&synced, &envoy.proxy_id()).expect("proxy connected");
        assert!(me.nacks().is_empty(), "no NACK: {:?}", me.nacks());
    });
}
