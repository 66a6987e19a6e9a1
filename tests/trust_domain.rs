//! The mesh's trust domain with real Envoy and real TLS on loopback: pod B's sidecar has an
//! ingress listener bound on B's address (interception NONE) in front of B's application, under
//! STRICT mutual TLS.
//!
//! - `trustDomainAliases`: a client certificate of an alias trust domain signed by the mesh's
//!   CA completes the handshake with B's sidecar, and RBAC decides: admitted by a principal
//!   written in the alias or in the main trust domain, refused when only another service
//!   account is allowed. A certificate of a foreign trust domain from the same CA is refused
//!   in the handshake.
//!
//! Without Envoy the test prints a skip line and passes, unless `CI=true`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::tls::exchange;
use common::{Bowline, Envoy, Net, ProxySpec};

const NS: &str = "mesh";
/// A's egress port, the port of service `b`.
const SERVICE_PORT: u16 = 8000;
/// B's ingress port (the WorkloadEntry's and the Service's target port).
const B_PORT: u16 = 9080;
const LONG: Duration = Duration::from_secs(60);

/// Services `a` and `b` (WorkloadEntries on the pods' addresses, labelled for auto mTLS), A's
/// egress and B's ingress (to its application on `app`), and STRICT for B.
fn mesh_yaml(net: &Net, app: SocketAddr) -> String {
    let (a, b) = (net.ip(10), net.ip(11));
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: b, namespace: {NS}}}
spec:
  selector: {{app: b}}
  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {B_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: b-1, namespace: {NS}}}
spec: {{address: "{b}", serviceAccount: b, labels: {{app: b, security.istio.io/tlsMode: istio}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: a, namespace: {NS}}}
spec:
  selector: {{app: a}}
  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {B_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: a-1, namespace: {NS}}}
spec: {{address: "{a}", serviceAccount: a, labels: {{app: a, security.istio.io/tlsMode: istio}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: a, namespace: {NS}}}
spec:
  workloadSelector: {{labels: {{app: a}}}}
  egress:
  - port: {{number: {SERVICE_PORT}, protocol: HTTP, name: http}}
    bind: "{a}"
    captureMode: NONE
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: b, namespace: {NS}}}
spec:
  workloadSelector: {{labels: {{app: b}}}}
  egress:
  - port: {{number: {SERVICE_PORT}, protocol: HTTP, name: http}}
    bind: "{b}"
    captureMode: NONE
    hosts: ["./*"]
  ingress:
  - port: {{number: {B_PORT}, protocol: HTTP, name: http}}
    bind: "{b}"
    defaultEndpoint: "{app}"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: b, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: b}}}}
  mtls: {{mode: STRICT}}
"#
    )
}

/// On B: only these principals may call.
fn allow_only(principals: &[&str]) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: allow, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: b}}}}\n  \
         action: ALLOW\n  rules: [{{from: [{{source: {{principals: [{}]}}}}]}}]\n",
        principals.join(", ")
    )
}

/// A sidecar for pod `app` (`<app>-0`, service account `app`) at `<net>.host`.
fn sidecar(net: &Net, app: &str, host: u8) -> ProxySpec {
    ProxySpec::sidecar(&format!("{app}-0"), NS, net.ip(host))
        .label("app", app)
        .service_account(app)
}

/// A certificate for `spiffe://<td>/ns/mesh/sa/<sa>` signed by the CA in `ca_dir` (as a
/// workload of another trust domain sharing the mesh's root would hold): (chain, key) PEM.
fn certificate_from(ca_dir: &Path, td: &str, sa: &str) -> (String, String) {
    let ca = bowline::ca::Ca::load(&bowline::ca::CaOptions {
        dir: Some(ca_dir.to_path_buf()),
        trust_domain: td.to_string(),
        workload_ttl: Duration::from_secs(3600),
    })
    .expect("the mesh's CA");
    let identity = bowline::model::Identity::new(td, NS, sa).expect("identity");
    let cert = ca.issue(&identity).expect("signed");
    (
        cert.chain_pem.clone(),
        String::from_utf8(cert.key.expose().to_vec()).expect("PEM key"),
    )
}

#[test]
fn peers_of_an_alias_trust_domain_pass_the_handshake_and_rbac_decides() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let app = common::free_port();
    let app_addr = SocketAddr::from(([127, 0, 0, 1], app));
    let _app = rt
        .block_on(common::spawn_backend(app_addr, "b"))
        .expect("B's application");
    let mut bowline = Bowline::new(&net);
    bowline.set_mesh_config("trustDomain: cluster.local\ntrustDomainAliases: [old.example]\n");
    bowline.write("mesh.yaml", &mesh_yaml(&net, app_addr));
    rt.block_on(bowline.start());
    let envoy_b = rt.block_on(Envoy::start(
        &envoy_bin,
        &bowline,
        sidecar(&net, "b", 11).with_token(),
    ));
    let synced = rt
        .block_on(bowline.wait_synced(&envoy_b.proxy_id(), Duration::from_secs(30)))
        .expect("B in sync");
    assert_eq!(synced.nacks().len(), 0, "no NACK: {:?}", synced.nacks());

    // A workload of the alias trust domain, with a certificate from the mesh's CA, calls B's
    // sidecar directly.
    let (chain, key) = certificate_from(&bowline.ca_dir, "old.example", "c");
    let call = || {
        rt.block_on(exchange(
            net.addr(11, B_PORT),
            Some((&chain, &key)),
            &["istio"],
            b"GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
        ))
        .map(|(_, answer)| String::from_utf8_lossy(&answer).to_string())
    };
    let status = |answer: &Result<String, String>| {
        answer
            .as_ref()
            .ok()
            .and_then(|a| a.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
    };
    let mut last = call();
    let deadline = std::time::Instant::now() + LONG;
    while status(&last) != Some(200) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        last = call();
    }
    let answer = match &last {
        Ok(a) if status(&last) == Some(200) => a.clone(),
        _ => panic!(
            "an alias trust domain's peer completes mTLS with B: {last:?}\nB: {}",
            rt.block_on(envoy_b.admin("/stats?filter=ssl|inbound"))
                .unwrap_or_default()
        ),
    };
    assert!(
        answer.contains("URI=spiffe://old.example/ns/mesh/sa/c"),
        "B's application sees the alias identity: {answer}"
    );

    // A peer of a trust domain that is neither the mesh's nor an alias is refused in the
    // handshake, though its certificate chains to the same root.
    let (foreign_chain, foreign_key) = certificate_from(&bowline.ca_dir, "other.example", "c");
    let foreign = rt.block_on(exchange(
        net.addr(11, B_PORT),
        Some((&foreign_chain, &foreign_key)),
        &["istio"],
        b"GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
    ));
    assert!(
        status(&foreign.map(|(_, a)| String::from_utf8_lossy(&a).to_string())).is_none(),
        "a peer of another trust domain gets no answer"
    );

    // RBAC decides on the alias identity: a principal in the alias or in the main trust
    // domain admits it; a policy for another service account refuses it.
    for (policy, want) in [
        (allow_only(&["old.example/ns/mesh/sa/c"]), 200),
        (allow_only(&["cluster.local/ns/mesh/sa/a"]), 403),
        (allow_only(&["cluster.local/ns/mesh/sa/c"]), 200),
    ] {
        bowline.write("authz.yaml", &policy);
        let deadline = std::time::Instant::now() + LONG;
        let mut got = status(&call());
        while got != Some(want) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            got = status(&call());
        }
        assert_eq!(got, Some(want), "{policy}");
    }
    drop(envoy_b);
}
