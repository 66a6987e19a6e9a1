//! End to end: a real bowline, a real Envoy sidecar (client side, interception NONE, listener bound
//! by a Sidecar resource) and two HTTP backends (`v1`, `v2`) written in the test. Every test runs
//! once over delta ADS and once over state-of-the-world ADS.
//!
//! Without Envoy (`ENVOY_BIN` unset and no `envoy` on PATH) each test prints a skip line and
//! passes, unless `CI=true`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

const NS: &str = "demo";
/// The service's FQDN; requests carry it as Host.
const HOST: &str = "echo.demo.svc.cluster.local";
/// Service port, also the port of the client's egress listener.
const PORT: u16 = 8000;
/// Port the backends listen on (the Service's targetPort, the WorkloadEntries' `http` port).
const TARGET_PORT: u16 = 8080;
/// Port of the TCP service `tcp-echo` (service, egress listener and backend).
const TCP_PORT: u16 = 9000;

const LONG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Delta,
    Sotw,
}

/// The mesh every test starts from: Service `echo` selecting two WorkloadEntries (v1 at .11,
/// v2 at .12), a DestinationRule with subsets v1/v2, and a Sidecar binding the client's egress
/// listener to .10:PORT without capture. With `tcp`, also a TCP Service `tcp-echo` (one
/// WorkloadEntry at .13) and a TCP egress listener on .10:TCP_PORT.
fn mesh_yaml(net: &Net, tcp: bool) -> String {
    mesh_yaml_with(net, tcp, &echo_rule())
}

/// [`mesh_yaml`] with this DestinationRule for `echo`.
fn mesh_yaml_with(net: &Net, tcp: bool, rule: &DestinationRule) -> String {
    let bind = net.ip(10);
    let echo = |name: &str, host: u8, version: &str| {
        workload_entry(name, NS, net.ip(host))
            .label("app", "echo")
            .label("version", version)
            .port("http", TARGET_PORT)
    };
    let mut client = sidecar("client", NS).egress(PORT, "HTTP", "http", bind);
    if tcp {
        client = client.egress(TCP_PORT, "TCP", "tcp", bind);
    }
    let mut yaml = docs(&[
        &service("echo", NS).port_to(PORT, "http", TARGET_PORT),
        &echo("echo-v1", 11, "v1"),
        &echo("echo-v2", 12, "v2"),
        rule,
        &client,
    ]);
    if tcp {
        yaml.push_str(&docs(&[
            &service("tcp-echo", NS).port_to(TCP_PORT, "tcp", TCP_PORT),
            &workload_entry("tcp-echo-v1", NS, net.ip(13))
                .label("app", "tcp-echo")
                .label("version", "v1")
                .port("tcp", TCP_PORT),
        ]));
    }
    yaml
}

/// `echo`'s DestinationRule: subsets v1 and v2.
fn echo_rule() -> DestinationRule {
    destination_rule("echo", NS, "echo").subsets("version", &["v1", "v2"])
}

/// A VirtualService for `echo` splitting traffic between the subsets by weight.
fn vs_split(v1: u32, v2: u32) -> String {
    let routes: Vec<Route> = [("v1", v1), ("v2", v2)]
        .into_iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(subset, weight)| route("echo").subset(subset).weight(weight))
        .collect();
    virtual_service("echo", NS, &["echo"])
        .http_route(&routes)
        .yaml()
}

/// `end-user: jason` → v2, everything else → v1 (bookinfo's reviews-test-v2 shape).
fn vs_header_match() -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: {NS}
spec:
  hosts:
  - echo
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: echo
        subset: v2
  - route:
    - destination:
        host: echo
        subset: v1
"#
    )
}

/// bowline + client Envoy + backends v1 and v2.
struct Mesh {
    net: Net,
    bowline: Bowline,
    envoy: Envoy,
    _v1: Backend,
    _v2: Backend,
    /// The client Envoy's egress listener.
    listener: SocketAddr,
}

impl Mesh {
    /// Starts everything with the base mesh plus `vs` (as `virtual-service.yaml`) and waits until
    /// Envoy is synced and its listener answers. `None` when Envoy is missing outside CI.
    async fn start(mode: Mode, vs: Option<String>) -> Option<Mesh> {
        Mesh::start_with(mode, vs, false).await
    }

    /// [`Mesh::start`], with the TCP service and listener of [`mesh_yaml`] when `tcp`.
    async fn start_with(mode: Mode, vs: Option<String>, tcp: bool) -> Option<Mesh> {
        let envoy_bin = envoy_bin()?;
        let net = Net::new();
        let v1 = spawn_backend(net.addr(11, TARGET_PORT), "v1")
            .await
            .expect("start backend v1");
        let v2 = spawn_backend(net.addr(12, TARGET_PORT), "v2")
            .await
            .expect("start backend v2");
        let mut bowline = Bowline::new(&net);
        bowline.write("mesh.yaml", &mesh_yaml(&net, tcp));
        if let Some(vs) = vs {
            bowline.write("virtual-service.yaml", &vs);
        }
        bowline.start().await;
        let spec = ProxySpec::sidecar("client-0", NS, net.ip(10))
            .label("app", "client")
            .service_account("client")
            .delta(mode == Mode::Delta);
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        let mesh = Mesh {
            listener: net.addr(10, PORT),
            net,
            bowline,
            envoy,
            _v1: v1,
            _v2: v2,
        };
        let synced = mesh.synced().await;
        assert_eq!(
            synced.delta,
            mode == Mode::Delta,
            "syncz reports delta={} for a {mode:?} proxy",
            synced.delta
        );
        mesh.wait_serving().await;
        Some(mesh)
    }

    fn proxy_id(&self) -> String {
        self.envoy.proxy_id()
    }

    async fn synced(&self) -> ProxySync {
        self.bowline
            .wait_synced(&self.proxy_id(), LONG)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until a request through the listener is answered by a backend.
    async fn wait_serving(&self) {
        let mut client = HttpClient::new(self.listener);
        let mut last = String::new();
        let ok = wait_until(LONG, async || match client.get(HOST, "/", &[]).await {
            Ok(r) if r.status == 200 && r.backend().is_some() => true,
            Ok(r) => {
                last = format!("status {}: {}", r.status, r.text());
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        })
        .await;
        assert!(ok, "listener {} never served {HOST}: {last}", self.listener);
    }

    async fn tally(&self, n: usize, headers: &[(&str, &str)]) -> Tally {
        tally(self.listener, HOST, headers, n, LONG).await
    }

    /// Sends requests (about one per 2 ms) until one is answered by `name`; the time that took.
    async fn first_answer_from(&self, name: &str, since: Instant) -> Result<Duration, Tally> {
        let mut client = HttpClient::new(self.listener);
        let mut seen = Tally::default();
        for _ in 0..50_000 {
            if since.elapsed() > LONG {
                break;
            }
            let r = client.get(HOST, "/", &[]).await;
            if r.as_ref().ok().and_then(|r| r.backend()) == Some(name) {
                return Ok(since.elapsed());
            }
            seen.record(r);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(seen)
    }

    /// No NACK in syncz and none in Envoy's own `update_rejected` counters.
    async fn assert_no_nack(&self) {
        let all = self.bowline.syncz().await.expect("syncz");
        let p = find_proxy(&all, &self.proxy_id()).expect("proxy connected");
        assert!(p.nacks().is_empty(), "NACKs recorded: {:?}", p.nacks());
        let rejected = self.envoy.rejections().await.expect("envoy stats");
        assert_eq!(rejected, 0, "Envoy counted {rejected} rejected updates");
    }

    fn assert_envoy_not_restarted(&mut self, pid: Option<u32>) {
        if let Err(e) = self.envoy.check_running() {
            panic!("Envoy is not running: {e}");
        }
        assert_eq!(self.envoy.pid(), pid, "Envoy process changed");
    }
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delta() {
                super::$name(super::Mode::Delta).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sotw() {
                super::$name(super::Mode::Sotw).await
            }
        }
    )*};
}

both_modes!(
    default_routing,
    split_80_20,
    header_match,
    tcp_routing,
    rewrite_virtual_service,
    broken_files_change_nothing,
    bowline_restart,
    changed_cluster_is_applied,
);

/// No VirtualService: the service is reachable by FQDN and short name, both versions answer.
async fn default_routing(mode: Mode) {
    let Some(mesh) = Mesh::start(mode, None).await else {
        return;
    };
    let t = mesh.tally(100, &[]).await;
    println!("default routing ({mode:?}), Host {HOST}: {t}");
    assert_eq!(t.errors, 0, "{t}");
    assert_eq!(t.count("v1") + t.count("v2"), 100, "{t}");
    assert!(
        t.count("v1") > 0 && t.count("v2") > 0,
        "both endpoints serve: {t}"
    );

    for host in ["echo", "echo.demo", &format!("{HOST}:{PORT}")] {
        let t = tally(mesh.listener, host, &[], 10, LONG).await;
        println!("default routing ({mode:?}), Host {host}: {t}");
        assert_eq!(t.count("v1") + t.count("v2"), 10, "Host {host}: {t}");
    }
    mesh.assert_no_nack().await;
}

/// 80/20 weighted split over 1000 requests, within ±5 points.
async fn split_80_20(mode: Mode) {
    let Some(mesh) = Mesh::start(mode, Some(vs_split(80, 20))).await else {
        return;
    };
    let t = mesh.tally(1000, &[]).await;
    println!(
        "80/20 split ({mode:?}): {t}; v1 {:.1}% v2 {:.1}% in {:?}",
        t.percent("v1"),
        t.percent("v2"),
        t.elapsed
    );
    assert_eq!(t.sent, 1000, "{t}");
    assert_eq!(t.errors, 0, "{t}");
    assert!((75.0..=85.0).contains(&t.percent("v1")), "v1 share: {t}");
    assert!((15.0..=25.0).contains(&t.percent("v2")), "v2 share: {t}");
    mesh.assert_no_nack().await;
}

/// `end-user: jason` goes to v2, everything else to v1.
async fn header_match(mode: Mode) {
    let Some(mesh) = Mesh::start(mode, Some(vs_header_match())).await else {
        return;
    };
    let jason = mesh.tally(50, &[("end-user", "jason")]).await;
    let other = mesh.tally(50, &[("end-user", "tom")]).await;
    let none = mesh.tally(50, &[]).await;
    println!("header match ({mode:?}): jason → {jason}; tom → {other}; none → {none}");
    assert_eq!(jason.count("v2"), 50, "end-user: jason → v2: {jason}");
    assert_eq!(other.count("v1"), 50, "end-user: tom → v1: {other}");
    assert_eq!(none.count("v1"), 50, "no end-user → v1: {none}");

    // The header reaches the backend unchanged.
    let r = HttpClient::new(mesh.listener)
        .get(HOST, "/reviews/1", &[("end-user", "jason")])
        .await
        .expect("request");
    let echoed = r.header(backend::ECHO_HEADERS_HEADER).unwrap_or_default();
    assert!(
        echoed.contains(r#""end-user":"jason""#),
        "echoed headers: {echoed}"
    );
    assert_eq!(r.header(backend::ECHO_PATH_HEADER), Some("/reviews/1"));
    mesh.assert_no_nack().await;
}

/// A TCP service behind a TCP egress listener (tcp_proxy): bytes reach the echo backend and back.
async fn tcp_routing(mode: Mode) {
    let Some(mesh) = Mesh::start_with(mode, None, true).await else {
        return;
    };
    let backend = spawn_tcp_echo(mesh.net.addr(13, TCP_PORT), "tcp-v1")
        .await
        .expect("start tcp echo backend");
    let listener = mesh.net.addr(10, TCP_PORT);
    let mut last = String::new();
    let echoed = wait_until(LONG, async || {
        match tcp_exchange(listener, b"ping\n").await {
            Ok(got) if got == b"tcp-v1\nping\n" => true,
            Ok(got) => {
                last = format!("got {:?}", String::from_utf8_lossy(&got));
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    })
    .await;
    assert!(echoed, "no TCP echo through {listener}: {last}");
    for i in 0..20 {
        let msg = format!("message {i}\n");
        let got = tcp_exchange(listener, msg.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("TCP exchange {i}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("tcp-v1\n{msg}"),
            "TCP exchange {i}"
        );
    }
    println!(
        "tcp routing ({mode:?}): {} connections reached the backend",
        backend.served()
    );
    mesh.assert_no_nack().await;
}

/// Connects, sends `msg`, half-closes, and reads everything the other side sends (at most 5 s).
async fn tcp_exchange(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(msg).await?;
        conn.shutdown().await?;
        let mut got = Vec::new();
        conn.take(64 * 1024).read_to_end(&mut got).await?;
        Ok(got)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TCP exchange timed out",
            ))
        })
}

/// Rewriting the VirtualService file (in place) moves traffic without restarting Envoy.
async fn rewrite_virtual_service(mode: Mode) {
    let Some(mut mesh) = Mesh::start(mode, Some(vs_split(100, 0))).await else {
        return;
    };
    let pid = mesh.envoy.pid();
    let before = mesh.tally(50, &[]).await;
    assert_eq!(before.count("v1"), 50, "all v1 before the change: {before}");

    let written = Instant::now();
    mesh.bowline
        .write_in_place("virtual-service.yaml", &vs_split(0, 100));
    match mesh.first_answer_from("v2", written).await {
        Ok(d) => println!(
            "convergence ({mode:?}): file write → first request answered by the new route: {d:?}"
        ),
        Err(t) => panic!("no answer from v2 within {LONG:?} after the rewrite: {t}"),
    }
    let after = mesh.tally(100, &[]).await;
    assert_eq!(after.count("v2"), 100, "all v2 after the change: {after}");

    // And back, to show it was no one-off.
    let written = Instant::now();
    mesh.bowline
        .write_in_place("virtual-service.yaml", &vs_split(100, 0));
    match mesh.first_answer_from("v1", written).await {
        Ok(d) => println!("convergence ({mode:?}), second change: {d:?}"),
        Err(t) => panic!("no answer from v1 within {LONG:?} after the second rewrite: {t}"),
    }
    mesh.assert_envoy_not_restarted(pid);
    mesh.synced().await;
    mesh.assert_no_nack().await;
}

/// A cluster whose settings change while its endpoints do not is applied: Envoy warms the new
/// cluster until it has its endpoints again, so bowline sends them after it (as istiod pushes
/// EDS after CDS), and the new settings take over instead of warming for ever.
async fn changed_cluster_is_applied(mode: Mode) {
    let Some(mesh) = Mesh::start(mode, None).await else {
        return;
    };
    const CLUSTER: &str = "outbound|8000||echo.demo.svc.cluster.local";
    let limited = mesh_yaml_with(
        &mesh.net,
        false,
        &echo_rule().traffic_policy("connectionPool: {tcp: {maxConnections: 7}}"),
    );
    assert_ne!(limited, mesh_yaml(&mesh.net, false));
    mesh.bowline.write("mesh.yaml", &limited);
    let mut last = String::new();
    let applied = wait_until(LONG, async || {
        let dump = mesh
            .envoy
            .admin("/config_dump?resource=dynamic_active_clusters")
            .await
            .unwrap_or_default();
        let warming = mesh
            .envoy
            .stat("cluster_manager.warming_clusters")
            .await
            .unwrap_or(u64::MAX);
        let active: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
        let max_connections = active["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["cluster"]["name"] == CLUSTER)
            .map(|c| c["cluster"]["circuit_breakers"]["thresholds"][0]["max_connections"].clone());
        last = format!("warming clusters: {warming}, active max_connections: {max_connections:?}");
        warming == 0 && max_connections == Some(serde_json::json!(7))
    })
    .await;
    assert!(
        applied,
        "Envoy applies the changed cluster ({mode:?}): {last}"
    );
    mesh.wait_serving().await;
    mesh.synced().await;
    mesh.assert_no_nack().await;
}

const BAD_YAML: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo-broken
  namespace: demo
spec:
  hosts: [echo
  http:
  - route: {{{
"#;

const UNKNOWN_FIELD: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo-unknown-field
  namespace: demo
spec:
  hosts:
  - echo
  http:
  - route:
    - destination:
        host: echo
        subset: v2
    colour: blue
"#;

/// Broken YAML and a resource with an unknown field are reported and skipped: routing stays as it
/// was, Envoy gets no NACK, and later good changes still apply.
async fn broken_files_change_nothing(mode: Mode) {
    let Some(mut mesh) = Mesh::start(mode, Some(vs_split(100, 0))).await else {
        return;
    };
    let pid = mesh.envoy.pid();
    mesh.bowline.write("broken.yaml", BAD_YAML);
    mesh.bowline.write("unknown-field.yaml", UNKNOWN_FIELD);

    // Wait until bowline has read both files (configz names them), then leave time for any push.
    let mut configz = serde_json::Value::Null;
    let reported = wait_until(Duration::from_secs(20), async || {
        match mesh.bowline.diagnosticz().await {
            Ok(v) => {
                let text = v.to_string();
                configz = v;
                text.contains("broken.yaml") && text.contains("unknown-field.yaml")
            }
            Err(_) => false,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let t = mesh.tally(100, &[]).await;
    println!("after broken files ({mode:?}): {t}");
    assert_eq!(t.count("v1"), 100, "routing unchanged (all v1): {t}");
    mesh.synced().await;
    mesh.assert_no_nack().await;
    assert!(
        reported,
        "/debug/diagnosticz does not name broken.yaml and unknown-field.yaml: {configz:#}"
    );
    let text = configz.to_string();
    assert!(
        text.contains("colour"),
        "/debug/diagnosticz does not name the unknown field `colour`: {configz:#}"
    );

    // Everything else keeps being served: a good change still goes through.
    let written = Instant::now();
    mesh.bowline
        .write("virtual-service.yaml", &vs_split(0, 100));
    if let Err(t) = mesh.first_answer_from("v2", written).await {
        panic!("a good change after the broken files did not apply: {t}");
    }
    mesh.assert_envoy_not_restarted(pid);
    mesh.assert_no_nack().await;
}

/// bowline killed → Envoy keeps serving; bowline restarted on the same addresses → Envoy
/// reconnects by itself, gets what changed meanwhile, and later changes reach it too.
async fn bowline_restart(mode: Mode) {
    let Some(mut mesh) = Mesh::start(mode, Some(vs_split(100, 0))).await else {
        return;
    };
    let pid = mesh.envoy.pid();
    mesh.bowline.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = mesh.tally(100, &[]).await;
    println!("bowline down ({mode:?}): {t}");
    assert_eq!(
        t.count("v1"),
        100,
        "requests still succeed on the last config: {t}"
    );

    // Changed while bowline is down: the restarted bowline must bring Envoy up to date.
    mesh.bowline
        .write("virtual-service.yaml", &vs_split(0, 100));
    let restarted = Instant::now();
    mesh.bowline.start().await;
    let synced = mesh.synced().await;
    println!(
        "bowline restart ({mode:?}): Envoy reconnected and synced {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(synced.delta, mode == Mode::Delta);
    if let Err(t) = mesh.first_answer_from("v2", restarted).await {
        panic!("the change made while bowline was down never reached Envoy: {t}");
    }

    // A change through the restarted bowline's watcher.
    let written = Instant::now();
    mesh.bowline
        .write_in_place("virtual-service.yaml", &vs_split(100, 0));
    match mesh.first_answer_from("v1", written).await {
        Ok(d) => println!("after restart ({mode:?}): change converged in {d:?}"),
        Err(t) => panic!("a change after the restart never reached Envoy: {t}"),
    }
    mesh.assert_envoy_not_restarted(pid);
    mesh.assert_no_nack().await;
}
