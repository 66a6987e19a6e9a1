//! The ingress gateway in Kubernetes mode, against a real kube-apiserver (hack/kube-env.sh):
//! manifests/ingressgateway.yaml applied with kubectl, and its pod run as a kubelet would run
//! it (no kubelet here): `istio-bootstrap`'s command writes the bootstrap from a projected
//! `istio-ca` token of the gateway's service account, `istio-proxy`'s command runs stock Envoy
//! on it. A Gateway, a VirtualService and a `kubernetes.io/tls` Secret applied with kubectl
//! make it terminate HTTPS with the Secret's certificate (port 443 of its Service, listening on
//! the target port 8443) and route to the backend; a Secret replaced with kubectl is served by
//! the same Envoy process.
//!
//! Traffic stays on loopback: the Gateway's server binds the gateway's own 127.77.N address
//! (`bind`), so its listener cannot clash with other tests; the readiness, stats and admin
//! ports are moved to free ones.

use crate::common;
use crate::gateway::{Pki, der};

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::kube::KubeEnv;
use common::{BOWLINE, Bowline, Net, Proc, TempDir};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYSTEM: &str = "istio-system";
const APP: &str = "web";
const HOST: &str = "web.example.com";
/// The gateway pod's name (its Deployment's pods are never scheduled here).
const POD: &str = "istio-ingressgateway-0";

/// The Gateway, the VirtualService and the backend's Service and WorkloadEntry.
fn routing(gateway_ip: &str, backend_ip: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web-gateway, namespace: {SYSTEM}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    bind: {gateway_ip}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, credentialName: web-cert}}
---
apiVersion: v1
kind: Service
metadata: {{name: {APP}, namespace: {APP}}}
spec:
  selector: {{app: {APP}}}
  ports:
  - {{name: http, port: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {APP}-1, namespace: {APP}}}
spec: {{address: {backend_ip}, labels: {{app: {APP}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {APP}, namespace: {APP}}}
spec:
  hosts: [{HOST}]
  gateways: [{SYSTEM}/web-gateway]
  http:
  - route:
    - destination: {{host: {APP}.{APP}.svc.cluster.local, port: {{number: 9080}}}}
"#
    )
}

/// The gateway's credential: a `kubernetes.io/tls` Secret in its namespace.
fn tls_secret((cert, key): &(String, String)) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: web-cert, namespace: {SYSTEM}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(cert),
        indent(key)
    )
}

/// Downward-API `metadata.labels` file content (Go's `%q` quoting).
fn labels_file(labels: &Value) -> String {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}\n",
                Value::String(v.as_str().unwrap_or_default().into())
            )
        })
        .collect()
}

fn string_args(container: &Value, subst: impl Fn(&str) -> String) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| subst(a.as_str().expect("string arg")))
        .collect()
}

/// One HTTPS request (SNI and host `HOST`, trusting `ca_pem`): the status, the body and the
/// certificate the gateway presented.
async fn https_get(to: SocketAddr, ca_pem: &str) -> Result<(u16, String, Vec<u8>), String> {
    let config = common::tls::client_config(ca_pem, None, &["http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(HOST).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        tls.write_all(
            format!("GET / HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        Ok((status, body.to_string(), presented))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[test]
fn ingress_gateway_serves_a_secret_and_its_rotation() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    kube.install_istio_crds();
    let net = Net::new();
    let (gateway_ip, backend_ip) = (net.ip(5).to_string(), net.ip(6).to_string());
    let pki = Pki::new();
    let (first, second) = (pki.leaf(HOST), pki.leaf(HOST));

    kube.kubectl(&["create", "namespace", SYSTEM]);
    kube.kubectl(&["create", "namespace", APP]);
    kube.kubectl(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/ingressgateway.yaml"),
    ]);
    kube.apply(&routing(&gateway_ip, &backend_ip));
    kube.apply(&tls_secret(&first));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _backend = rt
        .block_on(common::spawn_backend(net.addr(6, 9080), APP))
        .expect("backend");
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
    rt.block_on(bowline.start());

    // The gateway's pod, as the API server holds its Deployment's template.
    let deployment: Value = serde_json::from_str(&kube.kubectl(&[
        "get",
        "deployment",
        "istio-ingressgateway",
        "-n",
        SYSTEM,
        "-o",
        "json",
    ]))
    .expect("Deployment JSON");
    let template = &deployment["spec"]["template"];
    let sa = template["spec"]["serviceAccountName"]
        .as_str()
        .expect("service account")
        .to_string();

    // Its volumes, as a kubelet fills them.
    let dir = TempDir::new("gateway-kubelet");
    let volume = |v: &str| {
        let d = dir.path().join(v);
        std::fs::create_dir_all(&d).expect("volume dir");
        d.display().to_string()
    };
    let (envoy_dir, podinfo, tokens, root) = (
        volume("istio-envoy"),
        volume("istio-podinfo"),
        volume("istio-token"),
        volume("istiod-ca-cert"),
    );
    let token = kube.kubectl(&[
        "create",
        "token",
        &sa,
        "-n",
        SYSTEM,
        "--audience",
        "istio-ca",
        "--duration",
        "1h",
    ]);
    std::fs::write(format!("{tokens}/istio-token"), token.trim()).expect("token");
    std::fs::copy(
        bowline.ca_dir.join("root-cert.pem"),
        format!("{root}/root-cert.pem"),
    )
    .expect("root");
    std::fs::write(
        format!("{podinfo}/labels"),
        labels_file(&template["metadata"]["labels"]),
    )
    .expect("labels");

    let (admin, prom, ready) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let subst = |a: &str| {
        a.replace("$(POD_NAME)", POD)
            .replace("$(POD_NAMESPACE)", SYSTEM)
            .replace("$(INSTANCE_IP)", &gateway_ip)
            .replace("$(SERVICE_ACCOUNT)", &sa)
            .replace("/etc/istio/proxy", &envoy_dir)
            .replace("/etc/istio/pod", &podinfo)
            .replace("/var/run/secrets/tokens", &tokens)
            .replace("/var/run/secrets/istio", &root)
            .replace(
                "istiod.istio-system.svc:15012",
                &bowline.xds_tls_addr.to_string(),
            )
            .replace(
                "--prometheus-port=15090",
                &format!("--prometheus-port={prom}"),
            )
            .replace(
                "--readiness-port=15021",
                &format!("--readiness-port={ready}"),
            )
    };
    let init = &template["spec"]["initContainers"][0];
    assert_eq!(init["name"], "istio-bootstrap");
    let mut args = string_args(init, subst);
    args.push(format!("--admin-port={admin}"));
    let out = Command::new(BOWLINE)
        .args(&args)
        .output()
        .expect("run istio-bootstrap's command");
    assert!(
        out.status.success(),
        "istio-bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = &template["spec"]["containers"][0];
    assert_eq!(proxy["name"], "istio-proxy");
    assert_eq!(proxy["command"][0], "envoy");
    let mut envoy = Proc::spawn(
        "istio-proxy",
        Command::new(&envoy_bin).args(string_args(proxy, subst)),
        &dir.path().join("envoy.log"),
    );
    let pid = envoy.pid();

    // Synced, with the listener on the Service's target port of 443, on the bound address.
    let id = format!("{POD}.{SYSTEM}");
    let synced = rt
        .block_on(bowline.wait_synced(&id, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("the gateway is synced: {e}\n{}", bowline.log_tail()));
    assert_eq!(synced.nacks().len(), 0, "no NACK: {:?}", synced.nacks());
    assert!(
        synced.node_id.starts_with("router~"),
        "a router: {}",
        synced.node_id
    );
    let listener = format!("{gateway_ip}_8443");
    let listeners = rt
        .block_on(common::envoy_admin_get(
            admin,
            "/config_dump?resource=dynamic_listeners",
        ))
        .expect("config dump");
    assert!(listeners.contains(&listener), "{listener} in {listeners}");

    // HTTPS with the Secret's certificate, to the backend.
    let to: SocketAddr = format!("{gateway_ip}:8443").parse().expect("address");
    let served = |want: &(String, String)| {
        let want = der(&want.0);
        let ca = pki.ca_pem.clone();
        rt.block_on(common::poll(
            Duration::from_secs(30),
            async || match https_get(to, &ca).await {
                Ok((200, body, cert)) if cert == want && body == APP => Ok(()),
                Ok((status, body, cert)) => Err(format!(
                    "{status} {body:?}, the expected certificate: {}",
                    cert == want
                )),
                Err(e) => Err(e),
            },
        ))
    };
    if let Err(e) = served(&first) {
        panic!(
            "the Secret's certificate and the backend's answer: {e}\n{}",
            bowline.log_tail()
        );
    }
    let ready_ok = rt.block_on(common::wait_until(Duration::from_secs(10), async || {
        common::envoy_admin_get(ready, "/healthz/ready")
            .await
            .is_ok()
    }));
    assert!(ready_ok, "ready on the readiness port");

    // The Secret replaced through the API server: the same Envoy serves the new certificate.
    kube.apply(&tls_secret(&second));
    if let Err(e) = served(&second) {
        panic!("the rotated certificate: {e}\n{}", bowline.log_tail());
    }
    envoy.check_running().expect("Envoy kept running");
    assert_eq!(envoy.pid(), pid, "Envoy was not restarted");
}
