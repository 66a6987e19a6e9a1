//! The mesh's trust domain with real Envoy and real TLS on loopback: pod A's sidecar has an
//! egress listener bound on A's address (interception NONE), pod B's an ingress listener bound
//! on B's, in front of B's application; B is under STRICT mutual TLS.
//!
//! - Kubernetes mode, the trust domain named only by the mesh ConfigMap (`istio` in
//!   `istio-system`, `trustDomain: example.org`): sidecars that prove Kubernetes
//!   service-account tokens get certificates in example.org, A reaches B over mutual TLS
//!   through an ALLOW policy naming A's principal in example.org, and B's application sees A's
//!   SPIFFE ID. The ConfigMap then moves the mesh to example.com, example.org becoming an
//!   alias: both sidecars' certificates are replaced, A keeps reaching B, and B sees A's
//!   example.com identity.
//! - `trustDomainAliases`: a client certificate of an alias trust domain signed by the mesh's
//!   CA completes the handshake with B's sidecar, and RBAC decides: admitted by a principal
//!   written in the alias or in the main trust domain, refused when only another service
//!   account is allowed.
//!
//! Without Envoy (or, for the first, the Kubernetes binaries) a test prints a skip line and
//! passes, unless `CI=true`.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::fixtures::{self, *};
use common::kube::KubeEnv;
use common::tls::exchange;
use common::{Bowline, Envoy, HttpClient, Net, ProxySpec};

const NS: &str = "mesh";
/// A's egress port, the port of service `b`.
const SERVICE_PORT: u16 = 8000;
/// B's ingress port (the WorkloadEntry's and the Service's target port).
const B_PORT: u16 = 9080;
const B_HOST: &str = "b.mesh.svc.cluster.local";
const LONG: Duration = Duration::from_secs(60);

/// Services `a` and `b` (WorkloadEntries on the pods' addresses, labelled for auto mTLS), A's
/// egress and B's ingress (to its application on `app`), and STRICT for B.
fn mesh_yaml(net: &Net, app: SocketAddr) -> String {
    let (a, b) = (net.ip(10), net.ip(11));
    docs(&[
        &service("b", NS).port_to(SERVICE_PORT, "http", B_PORT),
        &workload_entry("b-1", NS, b)
            .service_account("b")
            .label("app", "b")
            .mtls(),
        &service("a", NS).port_to(SERVICE_PORT, "http", B_PORT),
        &workload_entry("a-1", NS, a)
            .service_account("a")
            .label("app", "a")
            .mtls(),
        &fixtures::sidecar("a", NS).egress(SERVICE_PORT, "HTTP", "http", a),
        &fixtures::sidecar("b", NS)
            .egress(SERVICE_PORT, "HTTP", "http", b)
            .ingress(B_PORT, "HTTP", "http", b, app),
        &peer_authentication("b", NS, "STRICT").selector("b"),
    ])
}

/// On B: only these principals may call.
fn allow_only(principals: &[&str]) -> String {
    authorization_policy("allow", NS)
        .selector("b")
        .action("ALLOW")
        .principals(principals)
        .yaml()
}

fn xfcc(r: &common::Response) -> String {
    r.header(common::backend::ECHO_HEADERS_HEADER)
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
        .and_then(|v| v["x-forwarded-client-cert"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A → B through A's egress listener: (status, XFCC B's application saw).
async fn a_to_b(net: &Net) -> Option<(u16, String)> {
    HttpClient::new(net.addr(10, SERVICE_PORT))
        .with_timeout(Duration::from_secs(5))
        .get(B_HOST, "/", &[])
        .await
        .ok()
        .map(|r| (r.status, xfcc(&r)))
}

/// The URI SANs of the certificates an Envoy holds (its admin `/certs`).
async fn held_identities(envoy: &Envoy) -> String {
    envoy.admin("/certs").await.unwrap_or_default()
}

/// What to print when A does not reach B.
async fn diagnose(envoy_a: &Envoy, envoy_b: &Envoy) -> String {
    format!(
        "A certs: {}\nA stats: {}\nB certs: {}\nB stats: {}",
        held_identities(envoy_a).await,
        envoy_a
            .admin("/stats?filter=ssl|outbound|sds")
            .await
            .unwrap_or_default(),
        held_identities(envoy_b).await,
        envoy_b
            .admin("/stats?filter=ssl|inbound|sds|rbac")
            .await
            .unwrap_or_default(),
    )
}

/// A sidecar for pod `app` (`<app>-0`, service account `app`) at `<net>.host`.
fn sidecar(net: &Net, app: &str, host: u8) -> ProxySpec {
    ProxySpec::sidecar(&format!("{app}-0"), NS, net.ip(host))
        .label("app", app)
        .service_account(app)
}

/// A Kubernetes service-account token of `mesh/<sa>` for the audience istio-ca, in a file.
fn kube_token(kube: &KubeEnv, sa: &str) -> std::path::PathBuf {
    let token = kube.kubectl(&[
        "create",
        "token",
        sa,
        "-n",
        NS,
        "--audience",
        "istio-ca",
        "--duration",
        "1h",
    ]);
    let path = kube.dir().join(format!("token-{sa}"));
    std::fs::write(&path, token.trim()).expect("token file");
    path
}

/// The mesh ConfigMap holding `mesh`.
fn mesh_configmap(mesh: &str) -> String {
    let body = serde_json::to_string(mesh).expect("json string");
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\n\
         data:\n  mesh: {body}\n"
    )
}

#[test]
fn trust_domain_of_the_mesh_configmap_everywhere() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(kube) = KubeEnv::start() else {
        return;
    };
    kube.kubectl(&["create", "namespace", "istio-system"]);
    kube.kubectl(&["create", "namespace", NS]);
    for sa in ["a", "b"] {
        kube.kubectl(&["create", "serviceaccount", sa, "-n", NS]);
    }
    // Only the ConfigMap names the trust domain: no --mesh-config, no bootstrap flag.
    kube.apply(&mesh_configmap("trustDomain: example.org\n"));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let app = common::free_port();
    let app_addr = SocketAddr::from(([127, 0, 0, 1], app));
    let _app = rt
        .block_on(common::spawn_backend(app_addr, "b"))
        .expect("B's application");
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--kubeconfig".into(), kube.kubeconfig.display().to_string()];
    bowline.write("mesh.yaml", &mesh_yaml(&net, app_addr));
    bowline.write("authz.yaml", &allow_only(&["example.org/ns/mesh/sa/a"]));
    rt.block_on(bowline.start());

    let proxy = |app: &str, host: u8| {
        sidecar(&net, app, host)
            .xds_addr(&bowline.xds_tls_addr.to_string())
            .bootstrap_arg("--token-file")
            .bootstrap_arg(&kube_token(&kube, app).display().to_string())
            .bootstrap_arg("--ca-dir")
            .bootstrap_arg(&bowline.ca_dir.display().to_string())
    };
    let envoy_b = rt.block_on(Envoy::start(&envoy_bin, &bowline, proxy("b", 11)));
    let envoy_a = rt.block_on(Envoy::start(&envoy_bin, &bowline, proxy("a", 10)));

    // Start-up: certificates, SAN matchers and the principal all in example.org.
    let reached = rt.block_on(common::wait_until(LONG, async || {
        matches!(a_to_b(&net).await, Some((200, _)))
    }));
    if !reached {
        panic!(
            "A reaches B over mTLS in the ConfigMap's trust domain: last {:?}\n{}",
            rt.block_on(a_to_b(&net)),
            rt.block_on(diagnose(&envoy_a, &envoy_b))
        );
    }
    let (_, seen) = rt.block_on(a_to_b(&net)).expect("A → B");
    assert!(
        seen.contains("URI=spiffe://example.org/ns/mesh/sa/a"),
        "B's application sees A's identity in example.org: {seen:?}"
    );
    assert!(
        rt.block_on(held_identities(&envoy_b))
            .contains("spiffe://example.org/ns/mesh/sa/b"),
        "B holds a certificate in example.org"
    );
    for envoy in [&envoy_a, &envoy_b] {
        let synced = rt
            .block_on(bowline.wait_synced(&envoy.proxy_id(), Duration::from_secs(30)))
            .expect("in sync");
        assert_eq!(synced.nacks().len(), 0, "no NACK: {:?}", synced.nacks());
    }

    // At run time the ConfigMap moves the mesh to example.com, keeping example.org as an
    // alias: the connected sidecars get certificates in example.com, A keeps reaching B, and
    // the policy naming example.org still admits A.
    kube.apply(&mesh_configmap(
        "trustDomain: example.com\ntrustDomainAliases: [example.org]\n",
    ));
    let moved = rt.block_on(common::wait_until(LONG, async || {
        matches!(a_to_b(&net).await, Some((200, seen)) if seen.contains("URI=spiffe://example.com/ns/mesh/sa/a"))
    }));
    if !moved {
        panic!(
            "after the ConfigMap change A reaches B as example.com: last {:?}\n{}\n{}",
            rt.block_on(a_to_b(&net)),
            rt.block_on(diagnose(&envoy_a, &envoy_b)),
            bowline.log_tail()
        );
    }
    let b_certs = rt.block_on(held_identities(&envoy_b));
    assert!(
        b_certs.contains("spiffe://example.com/ns/mesh/sa/b"),
        "B's certificate was replaced: {b_certs}"
    );
    assert!(
        bowline
            .log_tail()
            .contains("the mesh's trust domain changed"),
        "the change is reported"
    );
    drop((envoy_a, envoy_b));
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
