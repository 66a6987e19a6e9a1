//! Authorization with real requests through a real Envoy: the workload's sidecar (interception
//! NONE, inbound listeners bound by a Sidecar's ingress, forwarding to backends on 127.0.0.1)
//! enforces AuthorizationPolicies (ALLOW with a header condition, DENY on a path winning over
//! ALLOW, `spec: {}` denying everything, DENY on a TCP port), RequestAuthentication (a JWT signed
//! in the test with `openssl`: valid token accepted, invalid one rejected with 401, missing one
//! refused only where a policy requires a request principal) and CUSTOM with an HTTP
//! authorizer written in the test, also next to invalid extension providers (a policy naming
//! one denies what it selects). Every `testdata/translate/authz-*` golden case is also pushed
//! to a real Envoy, which must accept it (no NACK).
//!
//! Peer identities need mutual TLS: for principals written with a wildcard trust domain, the
//! sidecar gets certificates (token on the TLS port) and the test calls it with certificates
//! bowline signed for two identities.
//! Without Envoy each test prints a skip line and passes, unless `CI=true`.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "shop";
const HTTP_PORT: u16 = 9080;
const TCP_PORT: u16 = 5432;
const LONG: Duration = Duration::from_secs(60);

/// The workload `reviews` with an HTTP ingress port and a TCP ingress port bound on `.10`,
/// forwarding to the given local backend ports; `egress` adds an outbound HTTP listener on
/// `.10:8000` importing the namespace's services (for an ext_authz cluster).
fn workload_yaml(net: &Net, http_backend: u16, tcp_backend: u16, egress: bool) -> String {
    let bind = net.ip(10);
    let mut listeners = sidecar("reviews", NS)
        .ingress(
            HTTP_PORT,
            "HTTP",
            "http",
            bind,
            format!("127.0.0.1:{http_backend}"),
        )
        .ingress(
            TCP_PORT,
            "TCP",
            "tcp-db",
            bind,
            format!("127.0.0.1:{tcp_backend}"),
        );
    if egress {
        listeners = listeners.egress(8000, "HTTP", "http", bind);
    }
    docs(&[
        &service("reviews", NS)
            .port(HTTP_PORT, "http")
            .port(TCP_PORT, "tcp-db"),
        &listeners,
    ])
}

struct Setup {
    net: Net,
    bowline: Bowline,
    envoy: Envoy,
    _http: Backend,
    _tcp: Backend,
}

impl Setup {
    async fn start(mesh: Option<&str>, egress: bool, extra: &str) -> Option<Setup> {
        Setup::start_with(mesh, egress, extra, false).await
    }

    /// `token`: the sidecar proves its identity on the TLS port and gets certificates (mutual
    /// TLS, so peer identities).
    async fn start_with(
        mesh: Option<&str>,
        egress: bool,
        extra: &str,
        token: bool,
    ) -> Option<Setup> {
        let envoy_bin = envoy_bin()?;
        let net = Net::new();
        let http = spawn_backend(SocketAddr::from(([127, 0, 0, 1], free_port())), "reviews")
            .await
            .expect("http backend");
        let tcp = spawn_tcp_echo(SocketAddr::from(([127, 0, 0, 1], free_port())), "db")
            .await
            .expect("tcp backend");
        let mut bowline = Bowline::new(&net);
        if let Some(m) = mesh {
            bowline.set_mesh_config(m);
        }
        bowline.write(
            "workload.yaml",
            &format!(
                "{}{extra}",
                workload_yaml(&net, http.addr.port(), tcp.addr.port(), egress)
            ),
        );
        bowline.start().await;
        let mut spec = ProxySpec::sidecar("reviews-0", NS, net.ip(10))
            .label("app", "reviews")
            .service_account("reviews");
        if token {
            spec = spec.with_token();
        }
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), LONG)
            .await
            .expect("proxy synced");
        Some(Setup {
            net,
            bowline,
            envoy,
            _http: http,
            _tcp: tcp,
        })
    }

    fn listener(&self) -> SocketAddr {
        self.net.addr(10, HTTP_PORT)
    }

    /// The status of `GET path` with `headers`, on a fresh connection.
    async fn status(&self, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
        let mut client = HttpClient::new(self.listener()).with_timeout(Duration::from_secs(5));
        client
            .get("reviews.shop.svc.cluster.local", path, headers)
            .await
            .ok()
            .map(|r| r.status)
    }

    /// Waits until `GET path` answers `want` (config pushes take a moment to reach Envoy).
    async fn expect(&self, path: &str, headers: &[(&str, &str)], want: u16) {
        let mut last = None;
        let ok = wait_until(LONG, async || {
            last = self.status(path, headers).await;
            last == Some(want)
        })
        .await;
        assert!(
            ok,
            "GET {path} {headers:?}: expected {want}, last answer {last:?}"
        );
    }

    async fn no_nack(&self) {
        let all = self.bowline.syncz().await.expect("syncz");
        let p = find_proxy(&all, &self.envoy.proxy_id()).expect("proxy connected");
        assert!(p.nacks().is_empty(), "NACKs: {:?}", p.nacks());
        assert_eq!(self.envoy.rejections().await.expect("stats"), 0);
    }

    /// Whether a TCP connection to the TCP port gets the backend's greeting.
    async fn tcp_greets(&self) -> bool {
        let to = self.net.addr(10, TCP_PORT);
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(to).await.ok()?;
            s.write_all(b"hello\n").await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).to_string())
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
            .is_some_and(|g| g.starts_with("db"))
    }
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_deny_and_deny_all() {
    let Some(s) = Setup::start(None, false, "").await else {
        return;
    };
    s.expect("/", &[], 200).await;
    assert!(s.tcp_greets().await, "TCP passes without policies");

    // ALLOW only x-user: alice; DENY /admin even for alice.
    s.bowline.write(
        "allow.yaml",
        &policy(
            "alice-only",
            "  selector: {matchLabels: {app: reviews}}\n  rules:\n  - when:\n    - key: request.headers[x-user]\n      values: [alice]\n",
        ),
    );
    s.bowline.write(
        "deny.yaml",
        &policy(
            "no-admin",
            "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin, /admin/*], ports: [\"9080\"]}\n",
        ),
    );
    s.expect("/", &[], 403).await;
    s.expect("/", &[("x-user", "alice")], 200).await;
    s.expect("/", &[("x-user", "bob")], 403).await;
    s.expect("/admin/users", &[("x-user", "alice")], 403).await;
    // The ALLOW's header condition cannot match a TCP connection: the port is closed.
    assert!(
        wait_until(LONG, async || !s.tcp_greets().await).await,
        "an ALLOW without TCP-matchable rules denies TCP"
    );

    // `spec: {}` denies everything, alice included.
    s.bowline.remove("deny.yaml");
    s.bowline.write("allow.yaml", &policy("deny-all", "  {}\n"));
    s.expect("/", &[("x-user", "alice")], 403).await;

    // DENY on the TCP port only: HTTP flows again, TCP is refused.
    s.bowline.remove("allow.yaml");
    s.bowline.write(
        "deny.yaml",
        &policy(
            "no-db",
            "  action: DENY\n  rules:\n  - to:\n    - operation: {ports: [\"5432\"]}\n",
        ),
    );
    s.expect("/", &[], 200).await;
    assert!(
        wait_until(LONG, async || !s.tcp_greets().await).await,
        "DENY on the TCP port refuses connections"
    );
    s.no_nack().await;
}

// --- Peer identities ---------------------------------------------------------------------

impl Setup {
    /// The status of `GET /` over mutual TLS with a certificate bowline signed for `<NS>/<sa>`.
    async fn status_as(&self, sa: &str) -> Option<u16> {
        let token = bowline::cli::bootstrap::sign_token(
            &self.bowline.ca_dir,
            "cluster.local",
            NS,
            sa,
            Duration::from_secs(3600),
        )
        .expect("token");
        let (chain, key) = common::tls::create_certificate(self.bowline.xds_addr, &token)
            .await
            .expect("certificate");
        let (_, answer) = common::tls::exchange(
            self.listener(),
            Some((&chain[..chain.len().saturating_sub(1)].concat(), &key)),
            &["istio"],
            b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n",
        )
        .await
        .ok()?;
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
    }

    async fn expect_as(&self, sa: &str, want: u16) {
        let mut last = None;
        let ok = wait_until(LONG, async || {
            last = self.status_as(sa).await;
            last == Some(want)
        })
        .await;
        assert!(ok, "GET / as {sa}: expected {want}, last answer {last:?}");
    }
}

/// A DENY naming a principal whose trust domain is a wildcard matching the mesh's
/// (`cluster*`): as istiod, that is the mesh's trust domain, so the identity is refused over
/// mutual TLS while another is admitted; an ALLOW written the same way admits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_with_a_wildcard_trust_domain() {
    let strict = peer_authentication("strict", NS, "STRICT").yaml();
    let Some(s) = Setup::start_with(None, false, &strict, true).await else {
        return;
    };
    s.expect_as("c", 200).await;
    s.bowline.write(
        "deny.yaml",
        &policy(
            "not-c",
            &format!(
                "  action: DENY\n  rules:\n  - from:\n    - source: {{principals: [\"cluster*/ns/{NS}/sa/c\"]}}\n"
            ),
        ),
    );
    s.expect_as("c", 403).await;
    s.expect_as("d", 200).await;
    s.bowline.remove("deny.yaml");
    s.bowline.write(
        "allow.yaml",
        &policy(
            "only-c",
            &format!(
                "  rules:\n  - from:\n    - source: {{principals: [\"clu*/ns/{NS}/sa/c\"]}}\n"
            ),
        ),
    );
    s.expect_as("d", 403).await;
    s.expect_as("c", 200).await;
    s.no_nack().await;
}

// --- JWT ---------------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn openssl(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all_sync(input)?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

trait WriteAllSync {
    fn write_all_sync(self, data: &[u8]) -> Option<()>;
}

impl WriteAllSync for std::process::ChildStdin {
    fn write_all_sync(mut self, data: &[u8]) -> Option<()> {
        std::io::Write::write_all(&mut self, data).ok()
    }
}

/// An RSA key made with `openssl`, its JWKS, and RS256 tokens signed with it.
struct Signer {
    key: String,
    jwks: String,
}

impl Signer {
    fn new(dir: &Path) -> Option<Signer> {
        let key = dir.join("jwt-key.pem").display().to_string();
        openssl(&["genrsa", "-out", &key, "2048"], b"")?;
        let modulus = openssl(&["rsa", "-in", &key, "-noout", "-modulus"], b"")?;
        let hex = String::from_utf8(modulus).ok()?;
        let hex = hex.trim().strip_prefix("Modulus=")?;
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect::<Option<_>>()?;
        let jwks = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k1","alg":"RS256","e":"AQAB","n":"{}"}}]}}"#,
            b64url(&bytes)
        );
        Some(Signer { key, jwks })
    }

    fn token(&self, claims: &serde_json::Value) -> Option<String> {
        let header = b64url(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let payload = b64url(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let sig = openssl(&["dgst", "-sha256", "-sign", &self.key], input.as_bytes())?;
        Some(format!("{input}.{}", b64url(&sig)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_request_authentication() {
    let dir = TempDir::new("authz-jwt");
    let Some(signer) = Signer::new(dir.path()) else {
        assert!(!ci(), "openssl is needed to sign test tokens");
        println!("skipping: openssl not available");
        return;
    };
    let iss = "https://issuer.bowline.test";
    let config = format!(
        r#"---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: {iss}
    jwks: '{jwks}'
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from:
    - source: {{requestPrincipals: ["{iss}/alice"]}}
    to:
    - operation: {{paths: ["/secure/*"]}}
  - to:
    - operation: {{paths: ["/public"]}}
"#,
        jwks = signer.jwks
    );
    let Some(s) = Setup::start(None, false, &config).await else {
        return;
    };
    let exp = 4_000_000_000u64;
    let alice = signer
        .token(&serde_json::json!({"iss": iss, "sub": "alice", "exp": exp}))
        .expect("sign");
    let bob = signer
        .token(&serde_json::json!({"iss": iss, "sub": "bob", "exp": exp}))
        .expect("sign");
    let bearer = |t: &str| format!("Bearer {t}");
    let (a, b) = (bearer(&alice), bearer(&bob));
    // Broken signature: the last characters changed.
    let forged = format!("{}AAAA", &a[..a.len() - 4]);

    s.expect("/public", &[], 200).await;
    s.expect("/public", &[("authorization", &forged)], 401)
        .await;
    s.expect("/public", &[("authorization", "Bearer not.a.jwt")], 401)
        .await;
    s.expect("/secure/x", &[], 403).await;
    s.expect("/secure/x", &[("authorization", &b)], 403).await;
    s.expect("/secure/x", &[("authorization", &a)], 200).await;
    s.no_nack().await;
}

// --- CUSTOM ------------------------------------------------------------------------------

/// The authorizer's Service and WorkloadEntry (the test backend on `port`), and a CUSTOM policy
/// `name` sending `/checked/*` to `provider`.
fn authorizer_config(port: u16) -> String {
    docs(&[
        &service("authz", NS).port_to(8000, "http", port),
        &workload_entry("authz-0", NS, "127.0.0.1").label("app", "authz"),
    ])
}

fn custom_policy(provider: &str) -> String {
    policy(
        "ext",
        &format!(
            "  selector: {{matchLabels: {{app: reviews}}}}\n  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules:\n  - to:\n    - operation: {{paths: [\"/checked/*\"]}}\n"
        ),
    )
}

/// The authorizer allows (200) unless the checked request carries `x-status: 403`, which the
/// provider forwards to it.
fn test_authz_provider() -> String {
    format!(
        "- name: test-authz\n  envoyExtAuthzHttp:\n    service: authz.{NS}.svc.cluster.local\n    port: 8000\n    includeRequestHeadersInCheck: [x-status]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_authorizer() {
    let authorizer = spawn_backend(SocketAddr::from(([127, 0, 0, 1], free_port())), "authz")
        .await
        .expect("authorizer");
    let mesh = format!("extensionProviders:\n{}", test_authz_provider());
    let config = format!(
        "{}---\n{}",
        authorizer_config(authorizer.addr.port()),
        custom_policy("test-authz")
    );
    let Some(s) = Setup::start(Some(&mesh), true, &config).await else {
        return;
    };
    s.expect("/checked/a", &[], 200).await;
    s.expect("/checked/a", &[("x-status", "403")], 403).await;
    // Requests the policy does not select never reach the authorizer.
    let before = authorizer.served();
    s.expect("/open", &[], 200).await;
    assert_eq!(
        authorizer.served(),
        before,
        "unselected request was checked"
    );
    s.no_nack().await;
}

/// Invalid extension providers next to a good one: bowline starts with the rest of the mesh
/// config, a CUSTOM policy naming an invalid provider denies what it selects (and is reported),
/// and the good provider keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_provider_fails_closed_only_where_named() {
    let authorizer = spawn_backend(SocketAddr::from(([127, 0, 0, 1], free_port())), "authz")
        .await
        .expect("authorizer");
    let mesh = format!(
        "extensionProviders:\n{}\
         - name: broken\n  envoyExtAuthzHttp: {{service: authz.{NS}.svc.cluster.local, port: 0}}\n\
         - name: Tracing_Main\n  zipkin: {{service: zipkin.istio-system.svc.cluster.local, port: 9411}}\n",
        test_authz_provider()
    );
    let Some(s) = Setup::start(
        Some(&mesh),
        true,
        &authorizer_config(authorizer.addr.port()),
    )
    .await
    else {
        return;
    };
    assert!(
        s.bowline
            .log_tail()
            .contains("extensionProviders[1] (name \"broken\")"),
        "the bad provider is reported: {}",
        s.bowline.log_tail()
    );
    s.bowline.write("ext.yaml", &custom_policy("broken"));
    s.expect("/checked/a", &[], 403).await;
    s.expect("/open", &[], 200).await;
    let configz = s.bowline.diagnosticz().await.expect("configz");
    let reported = configz["diagnostics"].as_array().is_some_and(|all| {
        all.iter().any(|d| {
            d["kind"] == "AuthorizationPolicy"
                && d["name"] == "ext"
                && d["field"] == "spec.provider.name"
                && d["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("\"broken\" is invalid"))
        })
    });
    assert!(reported, "the policy is reported: {configz}");
    // The good provider next to it works.
    s.bowline.write("ext.yaml", &custom_policy("test-authz"));
    s.expect("/checked/a", &[], 200).await;
    s.expect("/checked/a", &[("x-status", "403")], 403).await;
    s.no_nack().await;
}

// --- Golden cases ------------------------------------------------------------------------

/// Every `testdata/translate/authz-*` case, loaded by bowline (with the case's mesh config)
/// and pushed to a real Envoy as the case's proxy (captured, REDIRECT): no NACK, no rejected
/// update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_cases_load_in_envoy() {
    let Some(envoy_bin) = envoy_bin() else {
        return;
    };
    let cases = common::cases::named("authz-");
    for case in cases {
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        if let Ok(mesh) = std::fs::read_to_string(case.join("mesh.yaml")) {
            bowline.set_mesh_config(&mesh);
        }
        for entry in std::fs::read_dir(case.join("config"))
            .expect("config")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let text = std::fs::read_to_string(entry.path()).expect("read config");
            bowline.write(&name, &text);
        }
        bowline.start().await;
        let spec = ProxySpec::sidecar("reviews-v1-abc", "default", net.ip(10))
            .label("app", "reviews")
            .label("version", "v1")
            .service_account("bookinfo-reviews")
            .interception("REDIRECT");
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        let synced = bowline.wait_synced(&envoy.proxy_id(), LONG).await;
        assert!(synced.is_ok(), "{}: {synced:?}", case.display());
        let all = bowline.syncz().await.expect("syncz");
        let p = find_proxy(&all, &envoy.proxy_id()).expect("proxy connected");
        assert!(
            p.nacks().is_empty(),
            "{}: NACKs: {:?}",
            case.display(),
            p.nacks()
        );
        assert_eq!(
            envoy.rejections().await.expect("stats"),
            0,
            "{}: Envoy rejected an update",
            case.display()
        );
        println!("{}: accepted by Envoy", case.display());
    }
}
