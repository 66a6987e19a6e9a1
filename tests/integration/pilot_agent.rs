//! Istio's own pilot-agent (`pilot-agent proxy sidecar`, built from Istio's source) running
//! stock Envoy against bowline in file mode, as the istio-proxy container of a pod that istiod
//! injected: pods are network namespaces. Pod A runs the agent (its certificate from bowline's
//! CA service, its SDS server, its xDS proxy and its DNS proxy); pod B runs a stock Envoy
//! started from bowline's bootstrap (a bowline-injected pod); bowline runs in a third namespace.
//!
//! - A's Envoy serves the agent's certificate (the serial the agent wrote out), referenced
//!   through the agent's `sds-grpc` cluster; bowline sends it no key. The certificate rotates
//!   at the agent's own `SECRET_TTL`.
//! - The agent's DNS proxy answers from bowline's name table: a Service (and its short form)
//!   and a ServiceEntry host without addresses, which gets an allocated address that A's Envoy
//!   routes.
//! - A calls B over mutual TLS under STRICT: B's application sees A's SPIFFE ID.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::netns::{App, Netns, NsHandle, PROXY_GID, veth};
use common::{Bowline, Envoy, HttpClient, Net, Proc, ProxySpec, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A_IP: &str = "10.91.0.1";
const B_IP: &str = "10.91.0.2";
const CP_TO_A: &str = "10.91.1.1";
const A_TO_CP: &str = "10.91.1.2";
const CP_TO_B: &str = "10.91.2.1";
const B_TO_CP: &str = "10.91.2.2";
const B_VIP: &str = "10.96.1.2";
/// The range bowline allocates ServiceEntry addresses from.
const AUTO_RANGE: &str = "240.240.0.0/16";
const DB_HOST: &str = "db.external.example";
/// The agent's certificate lifetime: it renews at half of it.
const SECRET_TTL_S: u64 = 20;

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("test address"), port)
}

fn mesh_yaml() -> String {
    let db = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: mesh}
spec:
  hosts: [db.external.example]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{address: 127.0.0.1}]
"#;
    format!(
        "{}---{db}",
        docs(&[
            &service("b", "mesh")
                .cluster_ip(B_VIP)
                .port_to(80, "http", 8080),
            &workload_entry("b-1", "mesh", B_IP)
                .service_account("b")
                .label("app", "b")
                .mtls(),
            &service("a", "mesh")
                .cluster_ip("10.96.1.1")
                .port_to(80, "http", 8080),
            &workload_entry("a-1", "mesh", A_IP)
                .service_account("a")
                .label("app", "a")
                .mtls(),
            &peer_authentication("b", "mesh", "STRICT").selector("b"),
        ])
    )
}

/// pilot-agent in a namespace, in a working directory laid out as the istio-proxy container's
/// (`./var/run/secrets/...`, `./etc/istio/...`, paths the agent reads relative to it).
struct Agent {
    proc: Proc,
    dir: TempDir,
}

/// Who the agent's pod is.
struct Pod<'a> {
    name: &'a str,
    namespace: &'a str,
    service_account: &'a str,
    ip: &'a str,
    /// The downward API's labels file (`key="value"` lines).
    labels: &'a str,
}

const POD_A: Pod<'static> = Pod {
    name: "a-0",
    namespace: "mesh",
    service_account: "a",
    ip: A_IP,
    labels: "app=\"a\"\nsecurity.istio.io/tlsMode=\"istio\"\n",
};

impl Agent {
    /// Starts the agent in `ns`, proving `pod`'s identity with `token`, trusting `root_pem` and
    /// reaching bowline at `xds`.
    fn start(
        ns: &NsHandle,
        tools: &Path,
        pod: &Pod,
        token: &str,
        root_pem: &str,
        xds: &str,
    ) -> Agent {
        let dir = TempDir::new("pilot-agent");
        let root = dir.path();
        let write = |relative: &str, contents: &str| {
            let path = root.join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
            std::fs::write(&path, contents).expect("write agent file");
        };
        write("var/run/secrets/tokens/istio-token", token);
        write("var/run/secrets/istio/root-cert.pem", root_pem);
        write("etc/istio/pod/labels", pod.labels);
        std::fs::create_dir_all(root.join("etc/istio/proxy")).expect("config dir");
        std::fs::create_dir_all(root.join("certs")).expect("certs dir");
        let envoy = common::envoy_bin().expect("envoy");
        let proxy_config = format!(
            "discoveryAddress: {xds}\nbinaryPath: {}\nproxyBootstrapTemplatePath: {}\n\
             configPath: ./etc/istio/proxy\nconcurrency: 1\nterminationDrainDuration: 1s\n",
            envoy.display(),
            tools.join("envoy_bootstrap_tmpl.json").display()
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(tools.join("pilot-agent"))
            .args(["proxy", "sidecar"])
            .current_dir(root)
            .env("PROXY_CONFIG", proxy_config)
            .env("POD_NAME", pod.name)
            .env("POD_NAMESPACE", pod.namespace)
            .env("INSTANCE_IP", pod.ip)
            .env("SERVICE_ACCOUNT", pod.service_account)
            // The name in bowline's serving certificate (the address is an IP here), for the
            // xDS and CA connections (CA_ADDR unset: the CA is at the discovery address).
            .env("ISTIOD_SAN", "istiod.istio-system.svc")
            .env("ISTIO_META_DNS_CAPTURE", "true")
            .env("OUTPUT_CERTS", "./certs")
            .env("SECRET_TTL", format!("{SECRET_TTL_S}s"));
        // The proxy's group: its own connections are not captured.
        std::os::unix::process::CommandExt::gid(&mut cmd, PROXY_GID);
        let id = format!("pilot-agent {}.{}", pod.name, pod.namespace);
        let proc = Proc::spawn(&id, &mut cmd, &root.join("agent.log"));
        Agent { proc, dir }
    }

    /// Waits until the agent's Envoy serves a workload certificate, and checks it is the one
    /// the agent holds; returns its serial.
    fn served_serial(&self, ns: &NsHandle) -> String {
        let served = ns.run(|| async {
            let mut seen = None;
            common::wait_until(Duration::from_secs(30), async || {
                seen = envoy_serial(15000).await;
                seen.is_some()
            })
            .await;
            seen
        });
        let served = served.expect("the agent's Envoy holds a workload certificate");
        assert_eq!(
            Some(served.clone()),
            self.serial(),
            "the agent's Envoy serves the certificate the agent obtained"
        );
        served
    }

    /// The serial number (lowercase hex) of the certificate the agent holds now.
    fn serial(&self) -> Option<String> {
        let pem = std::fs::read(self.dir.path().join("certs/cert-chain.pem")).ok()?;
        let der = common::tls::certs(std::str::from_utf8(&pem).ok()?)
            .into_iter()
            .next()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        Some(hex(cert.raw_serial()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent does not take its Envoy with it when killed.
        if let Some(pid) = self.proc.pid() {
            // Children are listed per thread that started them.
            let children: String = std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .collect::<Vec<_>>()
                .join(" ");
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.proc.kill();
    }
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    digits.trim_start_matches('0').to_string()
}

/// The serial of the workload certificate an Envoy serves, from its admin `/certs`.
async fn envoy_serial(admin: u16) -> Option<String> {
    let certs: serde_json::Value =
        serde_json::from_str(&common::envoy_admin_get(admin, "/certs").await.ok()?).ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .find_map(|c| c["serial_number"].as_str().map(str::to_string))
        .map(|s| s.trim_start_matches('0').to_lowercase())
}

/// Every SDS secret reference (`name` with `sds_config`) to `default` or `ROOTCA` in a dump.
fn sds_references(v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(map) => {
            if let (Some(name), Some(source)) = (map.get("name"), map.get("sds_config"))
                && (name == "default" || name == "ROOTCA")
            {
                out.push((name.to_string(), source.clone()));
            }
            map.values().for_each(|v| sds_references(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| sds_references(v, out)),
        _ => {}
    }
}

/// One DNS question for `name` (type A) to `server`: the response code and the addresses.
fn dns_a(server: SocketAddr, name: &str) -> std::io::Result<(u8, Vec<Ipv4Addr>)> {
    let mut query = vec![0x4b, 0x1d, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.send_to(&query, server)?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf)?;
    let answer = &buf[..n];
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "short DNS answer");
    if n < 12 || answer[..2] != query[..2] {
        return Err(bad());
    }
    let rcode = answer[3] & 0x0f;
    let count = u16::from_be_bytes([answer[6], answer[7]]);
    let mut at = query.len();
    let mut ips = Vec::new();
    for _ in 0..count {
        // The owner name: a pointer, or labels.
        if answer.get(at).ok_or_else(bad)? & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while *answer.get(at).ok_or_else(bad)? != 0 {
                at += usize::from(answer[at]) + 1;
            }
            at += 1;
        }
        let fixed = answer.get(at..at + 10).ok_or_else(bad)?;
        let (kind, len) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            usize::from(u16::from_be_bytes([fixed[8], fixed[9]])),
        );
        at += 10;
        let data = answer.get(at..at + len).ok_or_else(bad)?;
        if kind == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += len;
    }
    Ok((rcode, ips))
}

/// A lookup through the agent's DNS proxy (127.0.0.1:15053), retried until it answers.
async fn lookup(name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match dns_a(addr("127.0.0.1", 15053), name) {
            Ok((0, ips)) if !ips.is_empty() => return (0, ips),
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match last {
        Some(Ok(answer)) => answer,
        other => panic!("no DNS answer for {name} from the agent: {other:?}"),
    }
}

fn tools() -> Option<PathBuf> {
    let bin = common::istio_tools_bin()?;
    if bin.join("envoy_bootstrap_tmpl.json").is_file() {
        return Some(bin);
    }
    assert!(
        !common::ci(),
        "CI=true: no envoy_bootstrap_tmpl.json in {} (hack/istio-tools.sh build installs it)",
        bin.display()
    );
    eprintln!("skipping: no Envoy bootstrap template beside pilot-agent");
    None
}

#[test]
fn pilot_agent_sidecar_uses_its_own_certificate_dns_and_mtls() {
    let Some(_) = common::envoy_bin() else {
        return;
    };
    let Some(tools) = tools() else {
        return;
    };
    let Some(cp) = Netns::create("cp", &[]) else {
        return;
    };
    let Some(a) = Netns::create("a", &[B_VIP]) else {
        return;
    };
    let Some(b) = Netns::create("b", &[]) else {
        return;
    };
    veth(&a, A_IP, &b, B_IP, 24);
    veth(&cp, CP_TO_A, &a, A_TO_CP, 30);
    veth(&cp, CP_TO_B, &b, B_TO_CP, 30);
    // Allocated addresses are local to pod A, as a VIP is: connections to them are captured.
    a.exec(&["ip", "addr", "add", AUTO_RANGE, "dev", "lo"]);

    let bowline = cp.run(|| async {
        let mut bowline = Bowline::new(&Net::new());
        bowline.xds_tls_addr = addr("0.0.0.0", 15012);
        bowline.write("mesh.yaml", &mesh_yaml());
        bowline.start().await;
        bowline
    });
    let bowline = Arc::new(bowline);

    let _b_app = App::http(&b, addr("0.0.0.0", 8080), "b");
    let _db = App::tcp_echo(&a, addr("127.0.0.1", 9000), "db");
    for pod in [&a, &b] {
        pod.capture_outbound(15001);
        pod.capture_inbound(15006);
    }
    let envoy_b = {
        let ca_dir = bowline.ca_dir.clone();
        let bin = common::envoy_bin().expect("envoy");
        b.run(move || async move {
            let mut stub = Bowline::new(&Net::new());
            stub.ca_dir = ca_dir;
            let spec = ProxySpec::sidecar("b-0", "mesh", B_IP.parse().expect("ip"))
                .label("app", "b")
                .service_account("b")
                .interception("REDIRECT")
                .run_as_group(PROXY_GID)
                .with_token()
                .xds_addr(&format!("{CP_TO_B}:15012"))
                .listen_ports(15001, 15006);
            Envoy::start(&bin, &stub, spec).await
        })
    };
    let root_pem = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    let mut agent = Agent::start(
        &a,
        &tools,
        &POD_A,
        &bowline.token("mesh", "a"),
        &root_pem,
        &format!("{CP_TO_A}:15012"),
    );

    {
        let bowline = bowline.clone();
        cp.run(move || async move {
            for id in ["a-0.mesh", "b-0.mesh"] {
                let p = bowline
                    .wait_synced(id, Duration::from_secs(60))
                    .await
                    .unwrap_or_else(|e| panic!("{id} synced: {e}"));
                assert_eq!(p.nacks().len(), 0, "{id}: {p:?}");
            }
        });
    }
    agent.proc.check_running().expect("pilot-agent runs");

    // A's Envoy serves the agent's certificate, from the agent's SDS server.
    let first = agent.served_serial(&a);
    let dump: serde_json::Value = a.run(|| async {
        serde_json::from_str(
            &common::envoy_admin_get(15000, "/config_dump?include_eds")
                .await
                .expect("config dump"),
        )
        .expect("config dump JSON")
    });
    // Every reference to the workload secrets names the agent's SDS cluster, never ADS.
    let mut references = Vec::new();
    sds_references(&dump, &mut references);
    assert!(!references.is_empty(), "A's configuration uses mTLS");
    for (name, source) in &references {
        assert!(
            source["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"]
                == "sds-grpc",
            "secret {name} is read from the agent: {source}"
        );
    }
    let secrets: Vec<String> = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .flat_map(|c| {
            c["dynamic_active_secrets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        secrets.contains(&"default".to_string()) && secrets.contains(&"ROOTCA".to_string()),
        "{secrets:?}"
    );

    // Names through the agent's DNS proxy, from bowline's name table.
    let (service, short, db) = a.run(|| async {
        (
            lookup("b.mesh.svc.cluster.local").await,
            lookup("b.mesh").await,
            lookup(DB_HOST).await,
        )
    });
    let vip: Ipv4Addr = B_VIP.parse().expect("vip");
    assert_eq!(service, (0, vec![vip]), "a Service resolves to its VIP");
    assert_eq!(short, (0, vec![vip]), "and by its short name");
    let db_ip = db.1.first().copied().expect("an allocated address");
    assert_eq!(db_ip.octets()[..2], [240, 240], "{DB_HOST}: {db:?}");

    // A's Envoy routes the allocated address to the ServiceEntry.
    let greeting = a.run(move || async move {
        let mut last = String::new();
        for _ in 0..60 {
            if let Ok(Ok(mut conn)) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect((db_ip, 9000)),
            )
            .await
            {
                let _ = conn.write_all(b"ping\n").await;
                let mut buf = vec![0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await
                {
                    last = String::from_utf8_lossy(&buf[..n]).to_string();
                    if last.starts_with("db") {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    });
    assert!(
        greeting.starts_with("db"),
        "{DB_HOST} at {db_ip}:9000 reaches its endpoint through A's Envoy: {greeting:?}"
    );

    // A calls B over mutual TLS (B is STRICT); B's application sees A's identity.
    let seen = a.run(|| async {
        let mut last = None;
        common::wait_until(Duration::from_secs(30), async || {
            last = HttpClient::new(addr(B_VIP, 80))
                .get("b.mesh.svc.cluster.local", "/", &[])
                .await
                .ok();
            last.as_ref().is_some_and(|r| r.status == 200)
        })
        .await;
        last.map(|r| {
            let xfcc = r
                .header(common::backend::ECHO_HEADERS_HEADER)
                .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
                .and_then(|v| v["x-forwarded-client-cert"].as_str().map(str::to_string))
                .unwrap_or_default();
            (r.status, xfcc)
        })
    });
    let (status, xfcc) = seen.expect("A reaches B");
    assert_eq!(status, 200);
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/mesh/sa/a"),
        "B's application sees A's identity: {xfcc:?}"
    );

    // The agent renews at half its SECRET_TTL; A's Envoy follows.
    let renewed = a.run(move || async move {
        let mut now = None;
        common::wait_until(Duration::from_secs(3 * SECRET_TTL_S), async || {
            now = envoy_serial(15000).await;
            now.as_ref().is_some_and(|s| *s != first)
        })
        .await;
        now
    });
    let renewed = renewed.expect("A's Envoy holds a certificate");
    assert_eq!(
        Some(renewed),
        agent.serial(),
        "A's Envoy serves the agent's renewed certificate"
    );
    agent.proc.check_running().expect("pilot-agent runs");
    drop((agent, envoy_b));
}

/// The same agent with bowline in Kubernetes mode: the agent proves its pod's identity with a
/// projected service-account token, which bowline checks with TokenReview against a real API
/// server; the Service and the ServiceEntry its DNS proxy answers come from the API. The API
/// server runs in the control plane's namespace with bowline.
#[test]
fn pilot_agent_sidecar_in_kubernetes_mode() {
    let Some(_) = common::envoy_bin() else {
        return;
    };
    let Some(tools) = tools() else {
        return;
    };
    if common::kube::kube_bin().is_none() {
        return;
    }
    let Some(cp) = Netns::create("kcp", &[]) else {
        return;
    };
    let Some(a) = Netns::create("ka", &[]) else {
        return;
    };
    veth(&cp, CP_TO_A, &a, A_TO_CP, 30);
    let kube = Arc::new(
        cp.run(|| async { common::kube::KubeEnv::start() })
            .expect("API server"),
    );
    let (token, vip) = {
        let kube = kube.clone();
        cp.run(move || async move {
            kube.install_istio_crds();
            kube.kubectl(&["create", "namespace", "mesh"]);
            kube.node("node-1");
            kube.apply(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: mesh}\n",
            );
            kube.apply(
                "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: mesh}\n\
                 spec:\n  selector: {app: b}\n  ports: [{port: 80, name: http, targetPort: 8080}]\n",
            );
            kube.apply(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
                 metadata: {name: db, namespace: mesh}\nspec:\n  hosts: [db.external.example]\n  \
                 ports: [{number: 9000, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
            );
            kube.ready_pod("mesh", "a-0", A_IP, "a", &[("app", "a")]);
            let vip = kube.kubectl(&[
                "get", "service", "b", "-n", "mesh", "-o", "jsonpath={.spec.clusterIP}",
            ]);
            let token = kube.kubectl(&[
                "create", "token", "a", "-n", "mesh", "--audience", "istio-ca", "--duration",
                "1h",
            ]);
            (token.trim().to_string(), vip.trim().to_string())
        })
    };
    let bowline = {
        let kubeconfig = kube.kubeconfig.clone();
        cp.run(move || async move {
            let mut bowline = Bowline::new(&Net::new());
            bowline.xds_tls_addr = addr("0.0.0.0", 15012);
            bowline.extra_args = vec!["--kubeconfig".into(), kubeconfig.display().to_string()];
            bowline.start().await;
            bowline
        })
    };
    let bowline = Arc::new(bowline);
    let root_pem = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    let mut agent = Agent::start(
        &a,
        &tools,
        &POD_A,
        &token,
        &root_pem,
        &format!("{CP_TO_A}:15012"),
    );
    {
        let bowline = bowline.clone();
        cp.run(move || async move {
            let p = bowline
                .wait_synced("a-0.mesh", Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("a-0.mesh synced: {e}"));
            assert_eq!(p.nacks().len(), 0, "{p:?}");
        });
    }
    agent.proc.check_running().expect("pilot-agent runs");
    agent.served_serial(&a);

    let (service, db) = a.run(|| async {
        (
            lookup("b.mesh.svc.cluster.local").await,
            lookup(DB_HOST).await,
        )
    });
    let vip: Ipv4Addr = vip.parse().expect("the Service's cluster IP");
    assert_eq!(
        service,
        (0, vec![vip]),
        "the Service resolves to its cluster IP"
    );
    assert!(
        db.1.first()
            .is_some_and(|ip| ip.octets()[..2] == [240, 240]),
        "{DB_HOST} has an allocated address: {db:?}"
    );
    agent.proc.check_running().expect("pilot-agent runs");
    drop(agent);
    drop(bowline);
    drop(kube);
}
