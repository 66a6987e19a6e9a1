//! Mesh tests: a network namespace as a pod, with istio-init's iptables capture, a real Envoy
//! running as the proxy group (1337) configured by bowline in REDIRECT mode, and backends in the
//! same namespace. Requests go to service VIPs and unknown addresses exactly as an application's
//! would, and the capture hands them to Envoy. The rules an injected `istio-init` installs
//! (`bowline istio-iptables` with the arguments `bowline inject` writes) are checked the same
//! way, in a pod namespace joined to a peer by a veth pair. A Service whose `targetPort` names a
//! container port reaches the workload through the captured inbound listener.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fixtures::*;
use common::netns::{Netns, PROXY_GID};
use common::{Bowline, Envoy, HttpClient, Net, ProxySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD_IP: &str = "10.88.0.2";
const V1: &str = "10.88.1.11";
const V2: &str = "10.88.1.12";
const VIP: &str = "10.96.0.10";
const EXTERNAL: &str = "10.88.9.9";

fn mesh_yaml() -> String {
    docs(&[
        &service("echo", "mesh")
            .cluster_ip(VIP)
            .port_to(80, "http", 8080),
        &workload_entry("echo-v1", "mesh", V1)
            .label("app", "echo")
            .label("version", "v1"),
        &workload_entry("echo-v2", "mesh", V2)
            .label("app", "echo")
            .label("version", "v2"),
    ])
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

/// istio-init's arguments as `bowline inject` writes them for a pod with `annotations`
/// (the `bowline istio-iptables` part, before `--`).
fn injected_capture_args(annotations: &str) -> Vec<String> {
    use std::io::Write;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: mesh, annotations: {{{annotations}}}}}\n\
         spec: {{containers: [{{name: app, image: app}}]}}\n"
    );
    let mut child = std::process::Command::new(common::BOWLINE)
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bowline inject");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pod.as_bytes())
        .expect("write pod");
    let out = child.wait_with_output().expect("bowline inject output");
    assert!(out.status.success());
    let doc: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("injected pod");
    let args: Vec<String> = doc["spec"]["initContainers"][0]["args"]
        .as_array()
        .expect("istio-init args")
        .iter()
        .map(|a| a.as_str().expect("string").to_string())
        .collect();
    let dash = args.iter().position(|a| a == "--").expect("--");
    args[..dash].to_vec()
}

/// A TCP greeting read by a process running as `uid`:`uid` (the proxy's identity) in the
/// calling thread's network namespace.
fn greeting_as(uid: u32, to: SocketAddr) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let script = format!("exec 3<>/dev/tcp/{}/{} && head -n1 <&3", to.ip(), to.port());
    let out = std::process::Command::new("timeout")
        .args(["5", "bash", "-c", &script])
        .uid(uid)
        .gid(uid)
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// The rules `bowline istio-iptables` installs for an injected pod capture as istio-init's
/// do: outbound TCP to 15001 except the proxy's own (uid 1337), loopback and excluded ports;
/// inbound TCP to 15006 except the proxy's admin ports. The pod is a namespace joined to a
/// peer by a veth pair, so nothing travels over loopback by accident.
#[test]
fn injected_istio_init_rules_capture_like_istio_init() {
    const POD: &str = "10.89.0.2";
    const PEER: &str = "10.89.0.3";
    let Some(pod) = Netns::create("capture", &[]) else {
        return;
    };
    let Some(peer) = Netns::create("peer", &[]) else {
        return;
    };
    common::netns::veth(&pod, POD, &peer, PEER, 24);
    let args = injected_capture_args("traffic.sidecar.istio.io/excludeOutboundPorts: \"9000\"");
    assert_eq!(args[0], "istio-iptables");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.name, common::BOWLINE])
        .args(&args)
        .output()
        .expect("bowline istio-iptables");
    assert!(
        out.status.success(),
        "bowline istio-iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Listeners: in the pod the proxy's capture ports, its readiness port and the app; in the
    // peer a service on 80 and one on the excluded port 9000. Each runs until `stop`.
    let serve = |ns: &common::netns::NsHandle, listeners: Vec<(u16, &'static str)>| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.clone();
        let thread = std::thread::spawn(move || {
            ns.run(move || async move {
                let mut held = Vec::new();
                for (port, name) in listeners {
                    held.push(
                        common::spawn_tcp_echo(addr("0.0.0.0", port), name)
                            .await
                            .expect("listener"),
                    );
                }
                let _ = ready_tx.send(());
                let _ = stop_rx.await;
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listeners up");
        (stop_tx, thread)
    };
    let (stop_pod, pod_thread) = serve(
        &pod,
        vec![
            (15001, "outbound-capture"),
            (15006, "inbound-capture"),
            (15021, "readiness"),
            (8080, "app"),
        ],
    );
    let (stop_peer, peer_thread) = serve(&peer, vec![(80, "peer"), (9000, "peer-9000")]);

    let from_pod = pod.run(|| async {
        (
            tcp_greeting(addr(PEER, 80)).await,
            tcp_greeting(addr(PEER, 9000)).await,
            tcp_greeting(addr("127.0.0.1", 8080)).await,
            greeting_as(1337, addr(PEER, 80)),
        )
    });
    let from_peer = peer.run(|| async {
        (
            tcp_greeting(addr(POD, 8080)).await,
            tcp_greeting(addr(POD, 15021)).await,
        )
    });
    let _ = stop_pod.send(());
    let _ = stop_peer.send(());
    let _ = pod_thread.join();
    let _ = peer_thread.join();

    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        from_pod,
        (
            some("outbound-capture"),
            some("peer-9000"),
            some("app"),
            some("peer")
        ),
        "from the pod: the app's outbound is captured except port 9000 and loopback; the proxy's is not"
    );
    assert_eq!(
        from_peer,
        (some("inbound-capture"), some("readiness")),
        "into the pod: captured, except the proxy's readiness port"
    );
}

/// A Service whose `targetPort` names a container port (`http-web`, 8080 in the Pod): the
/// captured pod's inbound listener has a chain for 8080, so a request from another pod to
/// POD:8080 goes through the inbound HTTP connection manager (which adds `x-forwarded-proto`
/// and counts on `inbound|8080||`), not through the passthrough chain.
#[test]
fn named_target_port_reaches_the_workload_through_the_inbound_listener() {
    const POD: &str = "10.91.0.2";
    const PEER: &str = "10.91.0.3";
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(pod) = Netns::create("named", &[]) else {
        return;
    };
    let Some(peer) = Netns::create("caller", &[]) else {
        return;
    };
    common::netns::veth(&pod, POD, &peer, PEER, 24);
    let mesh = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: mesh}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http-web}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: mesh, labels: {{app: web}}}}
spec:
  containers:
  - name: app
    image: web
    ports: [{{name: http-web, containerPort: 8080, protocol: TCP}}]
status: {{podIP: {POD}}}
"#
    );
    let pod_handle = (*pod).clone();
    let peer_handle = (*peer).clone();
    pod.run(move || async move {
        let app = common::spawn_backend(addr("0.0.0.0", 8080), "web")
            .await
            .expect("app");
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.write("mesh.yaml", &mesh);
        bowline.start().await;
        // istio-init runs before the proxy starts.
        pod_handle.capture_inbound(15006);
        let spec = ProxySpec::sidecar("web-0", "mesh", POD.parse().expect("ip"))
            .label("app", "web")
            .interception("REDIRECT")
            .run_as_group(PROXY_GID)
            .listen_ports(15001, 15006);
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(20))
            .await
            .expect("proxy synced");

        // From the other pod, as a client without a sidecar would call the workload.
        let echoed = tokio::task::spawn_blocking(move || {
            peer_handle.run(|| async {
                common::poll(Duration::from_secs(30), async || {
                    let r = HttpClient::new(addr(POD, 8080))
                        .get("web.mesh.svc.cluster.local", "/", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    let headers = r.header("x-echo-headers").unwrap_or_default().to_string();
                    if r.status == 200 && headers.contains("x-forwarded-proto") {
                        Ok(headers)
                    } else {
                        Err(format!("{} {:?}, app saw {headers}", r.status, r.backend()))
                    }
                })
                .await
            })
        })
        .await
        .expect("caller thread");
        let listeners = envoy.admin("/listeners").await.unwrap_or_default();
        assert!(
            echoed.is_ok(),
            "the request reaches the app through the inbound HTTP chain: {echoed:?}\n\
             Envoy's listeners: {listeners}"
        );
        assert!(
            app.seen()
                .iter()
                .any(|s| s.header("x-forwarded-proto").is_some()),
            "the app on 8080 served it"
        );
        assert!(
            envoy
                .stat("cluster.inbound|8080||.upstream_rq_total")
                .await
                .expect("stats")
                > 0,
            "the inbound cluster of port 8080 carried the request"
        );
        let synced = bowline.syncz().await.expect("syncz");
        let me = common::find_proxy(&synced, &envoy.proxy_id()).expect("proxy connected");
        assert!(me.nacks().is_empty(), "no NACK: {:?}", me.nacks());
    });
}
