//! Mutual TLS with real Envoy and real TLS, pods as network namespaces: pods A and B joined by a
//! veth pair, each with istio-init's capture (outbound to 15001, inbound to 15006, the proxy's
//! group excluded) and a stock Envoy that proved its identity with a bowline token; bowline in a third
//! namespace (the control plane), linked to each pod, with an operator's CA plugged in (root and
//! intermediate) and 60-second workload certificates. Traffic stays inside these namespaces.
//! Besides mTLS itself: an AuthorizationPolicy that admits one service account, decided on
//! the identities the certificates prove.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::netns::{App, Netns, PROXY_GID, veth};
use common::tls::{certs, create_certificate, exchange, uri_sans};
use common::{Bowline, Envoy, HttpClient, Net, ProxySpec};

const A_IP: &str = "10.89.0.1";
const B_IP: &str = "10.89.0.2";
const CP_TO_A: &str = "10.89.1.1";
const A_TO_CP: &str = "10.89.1.2";
const CP_TO_B: &str = "10.89.2.1";
const B_TO_CP: &str = "10.89.2.2";
const B_VIP: &str = "10.96.0.2";

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("test address"), port)
}

fn mesh_yaml() -> String {
    docs(&[
        &service("b", "mesh")
            .cluster_ip(B_VIP)
            .port_to(80, "http", 8080),
        &workload_entry("b-1", "mesh", B_IP)
            .service_account("b")
            .label("app", "b")
            .mtls(),
        &service("a", "mesh")
            .cluster_ip("10.96.0.1")
            .port_to(80, "http", 8080),
        &workload_entry("a-1", "mesh", A_IP)
            .service_account("a")
            .label("app", "a")
            .mtls(),
    ])
}

/// On B: only A's service account may call.
fn allow_only_a() -> String {
    authorization_policy("only-a", "mesh")
        .selector("b")
        .action("ALLOW")
        .principals(&["cluster.local/ns/mesh/sa/a"])
        .yaml()
}

/// B's mutual TLS `mode`.
fn peer_authentication_of_b(mode: &str) -> String {
    peer_authentication("b", "mesh", mode).selector("b").yaml()
}

/// An operator CA: a root and an intermediate that signs, in Istio's cacerts layout.
fn plugged_in_ca(dir: &std::path::Path) -> Vec<u8> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "operator root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name
        .push(DnType::CommonName, "operator intermediate");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let int_cert = int.signed_by(&int_key, &issuer).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), int_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", int_cert.pem(), root_cert.pem()),
    )
    .unwrap();
    int_cert.der().to_vec()
}

/// The XFCC header the backend saw, from its header echo.
fn xfcc(r: &common::Response) -> String {
    r.header(common::backend::ECHO_HEADERS_HEADER)
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
        .and_then(|v| v["x-forwarded-client-cert"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn envoy_in(ns: &common::netns::NsHandle, ca_dir: std::path::PathBuf, spec: ProxySpec) -> Envoy {
    let bin = common::envoy_bin().expect("envoy");
    ns.run(move || async move {
        // Envoy::start reads the CA directory and addresses from a Bowline; this one is not
        // started (the real one runs in the control-plane namespace).
        let mut stub = Bowline::new(&Net::new());
        stub.ca_dir = ca_dir;
        Envoy::start(&bin, &stub, spec).await
    })
}

#[test]
fn mutual_tls_between_pods_with_a_plugged_in_ca_and_renewals() {
    let Some(_) = common::envoy_bin() else {
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

    let dir = common::TempDir::new("mtls-mesh");
    let ca_dir = dir.path().join("ca");
    let intermediate = plugged_in_ca(&ca_dir);

    // The control plane.
    let bowline = {
        let ca_dir = ca_dir.clone();
        cp.run(move || async move {
            let mut bowline = Bowline::new(&Net::new());
            bowline.ca_dir = ca_dir;
            bowline.xds_tls_addr = addr("0.0.0.0", 15012);
            bowline.extra_args = vec!["--workload-cert-ttl".into(), "60s".into()];
            bowline.write("mesh.yaml", &mesh_yaml());
            bowline.write("pa.yaml", &peer_authentication_of_b("STRICT"));
            bowline.start().await;
            bowline
        })
    };
    let bowline = Arc::new(bowline);

    // Pod B: the app, its sidecar, inbound capture. Pod A: its sidecar, outbound capture.
    let b_app = App::http(&b, addr("0.0.0.0", 8080), "b");
    let spec = |name: &str, ip: &str, app: &str, cp_ip: &str| {
        ProxySpec::sidecar(name, "mesh", ip.parse().expect("ip"))
            .label("app", app)
            .service_account(app)
            .interception("REDIRECT")
            .run_as_group(PROXY_GID)
            .with_token()
            .xds_addr(&format!("{cp_ip}:15012"))
            .listen_ports(15001, 15006)
    };
    // istio-init runs before the proxy starts: connections that predate the rules would be
    // picked up mid-stream by conntrack and redirected.
    for pod in [&a, &b] {
        pod.capture_outbound(15001);
        pod.capture_inbound(15006);
    }
    let envoy_b = Arc::new(envoy_in(
        &b,
        ca_dir.clone(),
        spec("b-0", B_IP, "b", CP_TO_B),
    ));
    let envoy_a = Arc::new(envoy_in(
        &a,
        ca_dir.clone(),
        spec("a-0", A_IP, "a", CP_TO_A),
    ));
    {
        let bowline = bowline.clone();
        cp.run(move || async move {
            for id in ["a-0.mesh", "b-0.mesh"] {
                let p = bowline
                    .wait_synced(id, Duration::from_secs(30))
                    .await
                    .expect("proxy synced over the TLS port");
                assert_eq!(p.nacks().len(), 0);
            }
            let all = bowline.syncz().await.expect("syncz");
            let text = format!("{all:?}");
            assert!(text.contains("b-0.mesh"), "{text}");
        });
    }

    // A calls B over mTLS under STRICT; B's application sees A's SPIFFE ID.
    let reached = a.run(|| async {
        common::wait_until(Duration::from_secs(30), async || {
            matches!(
                HttpClient::new(addr(B_VIP, 80)).get("b.mesh.svc.cluster.local", "/", &[]).await,
                Ok(r) if r.status == 200
            )
        })
        .await
    });
    if !reached {
        let ea = envoy_a.clone();
        let a_info = a.run(move || async move {
            let last = HttpClient::new(addr(B_VIP, 80))
                .get("b.mesh.svc.cluster.local", "/", &[])
                .await
                .map(|r| format!("{} {}", r.status, r.text()));
            format!(
                "last: {last:?}\nclusters:\n{}\nstats:\n{}",
                ea.admin("/clusters")
                    .await
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("b.mesh"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                ea.admin("/stats?filter=ssl|outbound.80..b|sds")
                    .await
                    .unwrap_or_default()
            )
        });
        let eb = envoy_b.clone();
        let b_info = b.run(move || async move {
            format!(
                "stats:\n{}\nlisteners: {}",
                eb.admin("/stats?filter=ssl|inbound|sds|listener.0.0.0.0")
                    .await
                    .unwrap_or_default(),
                eb.admin("/listeners").await.unwrap_or_default()
            )
        });
        panic!("A does not reach B.\nA: {a_info}\nB: {b_info}");
    }
    let seen = a.run(|| async {
        let ok = common::wait_until(Duration::from_secs(30), async || {
            matches!(
                HttpClient::new(addr(B_VIP, 80)).get("b.mesh.svc.cluster.local", "/", &[]).await,
                Ok(r) if r.status == 200
            )
        })
        .await;
        assert!(ok, "A reaches B over mTLS");
        let r = HttpClient::new(addr(B_VIP, 80))
            .get("b.mesh.svc.cluster.local", "/", &[])
            .await
            .expect("A → B");
        (r.status, xfcc(&r))
    });
    assert_eq!(seen.0, 200);
    assert!(
        seen.1.contains("URI=spiffe://cluster.local/ns/mesh/sa/a"),
        "B's app sees A's identity: {:?}",
        seen.1
    );

    // A TLS client without a sidecar (the control-plane namespace), with a certificate bowline
    // signed for it: B's sidecar presents B's identity and the intermediate, and B's app sees
    // the client's identity.
    let (client_chain, client_key) = {
        let bowline = bowline.clone();
        let ca_dir = ca_dir.clone();
        cp.run(move || async move { client_certificate(&bowline, &ca_dir, "c").await })
    };
    let first_leaf = {
        let (chain, key) = (client_chain.clone(), client_key.clone());
        let intermediate = intermediate.clone();
        cp.run(move || async move {
            let (presented, answer) = exchange(
                addr(B_TO_CP, 8080),
                Some((&chain, &key)),
                &["istio"],
                b"GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
            )
            .await
            .expect("mTLS to B from a TLS client");
            let answer = String::from_utf8_lossy(&answer).to_string();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(
                answer.contains("URI=spiffe://cluster.local/ns/mesh/sa/c"),
                "B's app sees the client's identity: {answer}"
            );
            assert_eq!(
                uri_sans(&presented[0]),
                vec!["spiffe://cluster.local/ns/mesh/sa/b"]
            );
            assert_eq!(
                presented.get(1).map(|c| c.to_vec()),
                Some(intermediate),
                "B's sidecar presents the plugged-in intermediate"
            );
            presented[0].to_vec()
        })
    };

    // Authorization between proven identities: an ALLOW policy on B naming A's service
    // account admits A (through its sidecar, over mTLS) and refuses the TLS client that proves
    // identity `c`; without the policy `c` is admitted again.
    let c_status = || {
        let bowline = bowline.clone();
        let ca_dir = ca_dir.clone();
        cp.run(move || async move {
            let (chain, key) = client_certificate(&bowline, &ca_dir, "c").await;
            let (_, answer) = exchange(
                addr(B_TO_CP, 8080),
                Some((&chain, &key)),
                &["istio"],
                b"GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
            )
            .await
            .expect("mTLS to B from a TLS client");
            String::from_utf8_lossy(&answer)
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
        })
    };
    let a_status = || {
        a.run(|| async {
            HttpClient::new(addr(B_VIP, 80))
                .get("b.mesh.svc.cluster.local", "/", &[])
                .await
                .map(|r| r.status)
                .ok()
        })
    };
    {
        let bowline = bowline.clone();
        cp.run(move || async move { bowline.write("authz.yaml", &allow_only_a()) });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while c_status() != Some(403) {
        assert!(
            Instant::now() < deadline,
            "ALLOW for A refuses identity c with 403"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(a_status(), Some(200), "ALLOW for A admits A");
    {
        let bowline = bowline.clone();
        cp.run(move || async move { bowline.remove("authz.yaml") });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while c_status() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "without the policy, identity c is admitted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // STRICT refuses a plaintext client without a sidecar; PERMISSIVE accepts it.
    let plaintext = || {
        cp.run(|| async {
            HttpClient::new(addr(B_TO_CP, 8080))
                .with_timeout(Duration::from_secs(3))
                .get("b", "/", &[])
                .await
                .map(|r| r.status)
                .ok()
        })
    };
    assert_ne!(plaintext(), Some(200), "STRICT refuses plaintext");
    {
        let bowline = bowline.clone();
        cp.run(move || async move { bowline.write("pa.yaml", &peer_authentication_of_b("PERMISSIVE")) });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while plaintext() != Some(200) {
        if Instant::now() >= deadline {
            let last = cp.run(|| async {
                HttpClient::new(addr(B_TO_CP, 8080))
                    .with_timeout(Duration::from_secs(3))
                    .get("b", "/", &[])
                    .await
                    .map(|r| format!("{} {}", r.status, r.text()))
                    .map_err(|e| e.to_string())
            });
            let eb = envoy_b.clone();
            let info = b.run(move || async move {
                format!(
                    "{}\n{}",
                    eb.admin("/stats?filter=control_plane|xds-grpc|listener_manager")
                        .await
                        .unwrap_or_default(),
                    eb.admin("/config_dump?resource=dynamic_listeners")
                        .await
                        .unwrap_or_default()
                )
            });
            let bw = bowline.clone();
            let served = cp.run(move || async move {
                let dump = bw
                    .config_dump("b-0.mesh")
                    .await
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                let sync = bw
                    .syncz()
                    .await
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_default();
                let configz = bw
                    .diagnosticz()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                format!(
                    "SYNC {sync}\nCONFIGZ {configz}\nSERVED-TRANSPORT {:?}",
                    dump.match_indices("raw_buffer").count()
                )
            });
            panic!("PERMISSIVE accepts plaintext: last {last:?}\n{served}\n{info}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    {
        let bowline = bowline.clone();
        cp.run(
            move || async move { bowline.write("pa.yaml", &peer_authentication_of_b("STRICT")) },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while plaintext() == Some(200) {
        assert!(Instant::now() < deadline, "STRICT again");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Continuous traffic across two renewals of 60-second certificates: no failed request.
    let traffic = {
        let a = (*a).clone();
        std::thread::spawn(move || {
            a.run(|| async {
                let start = Instant::now();
                let (mut ok, mut failed) = (0u32, Vec::new());
                let mut client = HttpClient::new(addr(B_VIP, 80));
                while start.elapsed() < Duration::from_secs(75) {
                    match client.get("b.mesh.svc.cluster.local", "/", &[]).await {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (ok, failed)
            })
        })
    };
    let mut leaves = vec![first_leaf];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(25));
        // The client's own certificate lives 60 s too (the workload TTL caps CSRs): a new one.
        let bowline = bowline.clone();
        let ca_dir = ca_dir.clone();
        let leaf = cp.run(move || async move {
            let (chain, key) = client_certificate(&bowline, &ca_dir, "c").await;
            let (presented, _) = exchange(
                addr(B_TO_CP, 8080),
                Some((&chain, &key)),
                &["istio"],
                b"GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
            )
            .await
            .expect("mTLS to B");
            presented[0].to_vec()
        });
        if leaves.last() != Some(&leaf) {
            leaves.push(leaf);
        }
    }
    let (ok, failed) = traffic.join().expect("traffic thread");
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok > 300, "traffic flowed: {ok}");
    assert!(
        leaves.len() >= 3,
        "B's certificate was renewed twice (distinct leaves seen: {})",
        leaves.len()
    );

    // Key material stays out of Envoy's and bowline's dumps and bowline's log.
    let dump = a.run({
        let envoy_a = envoy_a.clone();
        move || async move {
            envoy_a
                .admin("/config_dump?include_eds")
                .await
                .expect("dump")
        }
    });
    assert!(
        dump.contains("\"name\": \"default\""),
        "Envoy holds the default secret"
    );
    assert!(
        !dump.contains("PRIVATE KEY"),
        "Envoy's dump redacts the key"
    );
    let (bowline_dump, log) = {
        let bowline = bowline.clone();
        cp.run(move || async move {
            (
                bowline
                    .config_dump("a-0.mesh")
                    .await
                    .expect("bowline dump")
                    .to_string(),
                bowline.log_tail(),
            )
        })
    };
    assert!(bowline_dump.contains("[redacted]"), "{bowline_dump}");
    assert!(!bowline_dump.contains("PRIVATE KEY"));
    assert!(!log.contains("PRIVATE KEY"));

    // A caller with a missing or wrong token gets no certificate and no config.
    let fake = dir.path().join("fake-ca");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::copy(ca_dir.join("root-cert.pem"), fake.join("root-cert.pem")).unwrap();
    bowline::ca::token::TokenKey::load_or_create(&fake.join("token-key.pem")).unwrap();
    let wrong = envoy_in(
        &a,
        fake,
        spec("wrong-0", A_IP, "a", CP_TO_A)
            .listen_ports(16001, 16006)
            .delta(false),
    );
    let missing = envoy_in(
        &a,
        ca_dir.clone(),
        ProxySpec::sidecar("missing-0", "mesh", A_IP.parse().unwrap())
            .service_account("a")
            .run_as_group(PROXY_GID)
            .xds_addr(&format!("{CP_TO_A}:15012"))
            .bootstrap_arg("--tls")
            .bootstrap_arg("--ca-dir")
            .bootstrap_arg(&ca_dir.display().to_string()),
    );
    let wrong = Arc::new(wrong);
    let missing = Arc::new(missing);
    for envoy in [wrong.clone(), missing.clone()] {
        let dump = a.run(move || async move { envoy.admin("/config_dump").await.expect("dump") });
        assert!(
            !dump.contains("dynamic_active_clusters"),
            "no config: {dump}"
        );
        // (The only certificate it holds is the mesh root its bootstrap trusts.)
        assert!(
            !dump.contains("dynamic_active_secrets"),
            "no certificate: {dump}"
        );
    }
    let (all, log) = {
        let bowline = bowline.clone();
        cp.run(move || async move { (bowline.syncz().await.expect("syncz"), bowline.log_tail()) })
    };
    assert!(
        all.iter()
            .all(|p| p.proxy != "wrong-0.mesh" && p.proxy != "missing-0.mesh")
    );
    assert!(log.contains("xDS stream refused"), "refusals are logged");
    drop((wrong, missing, envoy_a, envoy_b, b_app));
}

/// A certificate for `mesh/<sa>` from bowline's CreateCertificate, with a token.
async fn client_certificate(
    bowline: &Bowline,
    ca_dir: &std::path::Path,
    sa: &str,
) -> (String, String) {
    let token = bowline::cli::bootstrap::sign_token(
        ca_dir,
        "cluster.local",
        "mesh",
        sa,
        Duration::from_secs(3600),
    )
    .expect("token");
    let (chain, key) = create_certificate(bowline.xds_addr, &token)
        .await
        .expect("certificate");
    let _ = certs(&chain[0]);
    (chain[..chain.len() - 1].concat(), key)
}
