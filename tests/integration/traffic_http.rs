//! VirtualService HTTP behaviour with real requests through a real Envoy: retries, per-try and
//! overall timeouts, fault delay and abort, mirroring, redirect, rewrite, header manipulation,
//! CORS, direct responses and delegation. Each test starts its own bowline and client Envoy
//! (interception NONE, egress listener bound by a Sidecar) on its own loopback /24, with backends
//! programmed per request (see `tests/common/backend.rs`) that record what they received, and
//! asserts what a user would observe.
//!
//! Without Envoy (`ENVOY_BIN` unset and no `envoy` on PATH) each test prints a skip line and
//! passes, unless `CI=true`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{
    CALL_HEADER, DELAY_CALLS_HEADER, DELAY_HEADER, FAIL_CALLS_HEADER, FAIL_STATUS_HEADER,
    KEY_HEADER, REPLY_HEADER, Seen,
};
use common::fixtures::*;
use common::*;

const NS: &str = "shop";
/// The routed service's FQDN; requests carry it as Host.
const HOST: &str = "api.shop.svc.cluster.local";
/// Service port, also the port of the client's egress listener.
const PORT: u16 = 8000;
/// Port the backends listen on (the Services' targetPort).
const TARGET_PORT: u16 = 8080;

const LONG: Duration = Duration::from_secs(60);

/// The mesh every test starts from, on `net`:
/// - Service `api` (shop) with WorkloadEntries v1 (.11) and v2 (.12), DestinationRule subsets
///   v1 and v2;
/// - Service `shadow` (shop), one WorkloadEntry (.13);
/// - Service `cart` in namespace `team`, one WorkloadEntry (.14);
/// - a Sidecar binding the client's egress listener to .10:PORT, importing `shop` and `team`.
fn mesh_yaml(net: &Net) -> String {
    let backend = |name: &str, ns: &str, host: u8, app: &str| {
        workload_entry(name, ns, net.ip(host))
            .label("app", app)
            .port("http", TARGET_PORT)
    };
    docs(&[
        &service("api", NS).port_to(PORT, "http", TARGET_PORT),
        &backend("api-v1", NS, 11, "api").label("version", "v1"),
        &backend("api-v2", NS, 12, "api").label("version", "v2"),
        &service("shadow", NS).port_to(PORT, "http", TARGET_PORT),
        &backend("shadow-1", NS, 13, "shadow"),
        &service("cart", "team").port_to(PORT, "http", TARGET_PORT),
        &backend("cart-1", "team", 14, "cart"),
        &destination_rule("api", NS, "api").subsets("version", &["v1", "v2"]),
        &sidecar("client", NS)
            .egress(PORT, "HTTP", "http", net.ip(10))
            .hosts(&["./*", "team/*"]),
    ])
}

/// A VirtualService `api` for host `api` with these `http` rules (a YAML list, indented as a
/// whole), followed by a catch-all rule to subset v1.
fn vs(rules: &str) -> String {
    virtual_service("api", NS, &["api"])
        .http_rules(rules)
        .http_route(&[route("api").subset("v1")])
        .yaml()
}

/// bowline, a client Envoy and the four backends of [`mesh_yaml`].
struct Mesh {
    /// Holds the loopback /24 for as long as the test runs.
    _net: Net,
    bowline: Bowline,
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
    shadow: Backend,
    cart: Backend,
    /// The client Envoy's egress listener.
    listener: SocketAddr,
}

impl Mesh {
    /// Starts everything with the base mesh plus `config` (as `routes.yaml`) and waits until
    /// Envoy is synced and `GET /` is answered by v1. `None` when Envoy is missing outside CI.
    async fn start(config: &str) -> Option<Mesh> {
        let envoy_bin = envoy_bin()?;
        let net = Net::new();
        let backend = async |host: u8, name: &str| {
            spawn_backend(net.addr(host, TARGET_PORT), name)
                .await
                .unwrap_or_else(|e| panic!("start backend {name}: {e}"))
        };
        let v1 = backend(11, "v1").await;
        let v2 = backend(12, "v2").await;
        let shadow = backend(13, "shadow").await;
        let cart = backend(14, "cart").await;
        let mut bowline = Bowline::new(&net);
        bowline.write("mesh.yaml", &mesh_yaml(&net));
        bowline.write("routes.yaml", config);
        bowline.start().await;
        let spec = ProxySpec::sidecar("client-0", NS, net.ip(10)).label("app", "client");
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), LONG)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mesh = Mesh {
            listener: net.addr(10, PORT),
            bowline,
            envoy,
            v1,
            v2,
            shadow,
            cart,
            _net: net,
        };
        let mut client = mesh.client();
        let mut last = String::new();
        let serving = wait_until(LONG, async || match client.get(HOST, "/", &[]).await {
            Ok(r) if r.status == 200 && r.backend() == Some("v1") => true,
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
        assert!(
            serving,
            "listener {} never served {HOST}: {last}",
            mesh.listener
        );
        Some(mesh)
    }

    fn client(&self) -> HttpClient {
        HttpClient::new(self.listener).with_timeout(Duration::from_secs(20))
    }

    /// `GET path` with `Host: HOST` on a fresh connection; panics on a transport error.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers).await
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client()
            .request(method, HOST, path, headers, b"")
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Mesh::get`], also returning how long the answer took.
    async fn timed_get(&self, path: &str, headers: &[(&str, &str)]) -> (Response, Duration) {
        let start = Instant::now();
        let r = self.get(path, headers).await;
        (r, start.elapsed())
    }

    /// No NACK in syncz and none in Envoy's own `update_rejected` counters.
    async fn assert_no_nack(&self) {
        let all = self.bowline.syncz().await.expect("syncz");
        let p = find_proxy(&all, &self.envoy.proxy_id()).expect("proxy connected");
        assert!(p.nacks().is_empty(), "NACKs recorded: {:?}", p.nacks());
        let rejected = self.envoy.rejections().await.expect("envoy stats");
        assert_eq!(rejected, 0, "Envoy counted {rejected} rejected updates");
    }
}

/// Requests of `backend` whose path starts with `prefix`.
fn seen_under(backend: &Backend, prefix: &str) -> Vec<Seen> {
    backend
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with(prefix))
        .collect()
}

/// The `x-envoy-attempt-count` values a backend saw for requests with key `key`.
fn attempt_counts(backend: &Backend, key: &str) -> Vec<String> {
    backend
        .seen()
        .iter()
        .filter(|s| s.header(KEY_HEADER) == Some(key))
        .map(|s| s.header("x-envoy-attempt-count").unwrap_or("-").to_string())
        .collect()
}

/// `retries`: a backend failing the first N calls of a request succeeds within `attempts` on the
/// conditions of `retryOn`, and the backend's call count shows every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries() {
    let config = vs(r#"  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 3, retryOn: "gateway-error,429"}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /never}}]
    retries: {attempts: 0}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /default}}]
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let v1 = &mesh.v1;
    // (path, key, failing calls, failing status, expected status, expected backend calls)
    let cases: [(&str, &str, &str, &str, u16, u64); 7] = [
        // attempts: 2 → up to 3 calls: two 503s are absorbed, three are not.
        ("/retry", "fail-2", "2", "503", 200, 3),
        ("/retry", "fail-3", "3", "503", 503, 3),
        ("/retry", "fail-1-500", "1", "500", 200, 2),
        // 5xx does not cover 4xx.
        ("/retry", "fail-429", "1", "429", 429, 1),
        // A status code in retryOn becomes a retriable status code.
        ("/codes", "codes-429", "3", "429", 200, 4),
        // attempts: 0 disables retries.
        ("/never", "never", "1", "503", 503, 1),
        // No retries field: istiod's default policy does not retry 503.
        ("/default", "default", "1", "503", 503, 1),
    ];
    let mut report = Vec::new();
    for (path, key, fail, fail_status, want_status, want_calls) in cases {
        let r = mesh
            .get(
                path,
                &[
                    (KEY_HEADER, key),
                    (FAIL_CALLS_HEADER, fail),
                    (FAIL_STATUS_HEADER, fail_status),
                ],
            )
            .await;
        let calls = v1.calls(key);
        let attempts = attempt_counts(v1, key);
        report.push(format!(
            "{path} failing {fail}×{fail_status}: client got {}, backend calls {calls}, \
             x-envoy-attempt-count {attempts:?}",
            r.status
        ));
        assert_eq!(
            r.status,
            want_status,
            "{path} key {key} failing {fail} calls with {fail_status}: {}",
            r.text()
        );
        assert_eq!(calls, want_calls, "{path} key {key}: backend calls");
        if want_status == 200 {
            assert_eq!(
                r.header(CALL_HEADER),
                Some(want_calls.to_string().as_str()),
                "{path} key {key}: the answer came from the last call"
            );
        }
        // Envoy numbers its attempts (include_request_attempt_count): these were its retries.
        let expected: Vec<String> = (1..=want_calls).map(|n| n.to_string()).collect();
        assert_eq!(attempts, expected, "{path} key {key}: attempt numbers");
    }
    println!("retries:\n  {}", report.join("\n  "));
    mesh.assert_no_nack().await;
}

/// `timeout` and `retries.perTryTimeout`: a slow backend gets a 504 after the timeout while a
/// fast answer passes; a per-try timeout cuts a stalled attempt and the retry succeeds; the
/// overall timeout bounds a sequence of retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts() {
    let config = vs(r#"  - match: [{uri: {prefix: /timeout}}]
    timeout: 1s
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /per-try}}]
    retries: {attempts: 2, perTryTimeout: 500ms, retryOn: 5xx}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /bounded}}]
    timeout: 1s
    retries: {attempts: 5, perTryTimeout: 400ms, retryOn: 5xx}
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let v1 = &mesh.v1;
    // The backend's stall: far beyond every timeout here.
    let slow = Duration::from_secs(4);
    let slow_ms = slow.as_millis().to_string();

    // Overall timeout 1s: 100 ms passes, 4 s does not.
    let (fast, fast_took) = mesh
        .timed_get("/timeout", &[(KEY_HEADER, "t-fast"), (DELAY_HEADER, "100")])
        .await;
    assert_eq!(
        fast.status,
        200,
        "100 ms under a 1s timeout: {}",
        fast.text()
    );
    let (cut, cut_took) = mesh
        .timed_get(
            "/timeout",
            &[(KEY_HEADER, "t-slow"), (DELAY_HEADER, &slow_ms)],
        )
        .await;
    println!(
        "timeout 1s: 100 ms backend → {} in {fast_took:?}; 4 s backend → {} in {cut_took:?}",
        fast.status, cut.status
    );
    assert_eq!(cut.status, 504, "4 s over a 1s timeout: {}", cut.text());
    assert!(
        cut_took >= Duration::from_millis(800),
        "the 504 came before the timeout: {cut_took:?}"
    );
    assert!(
        cut_took < slow,
        "the 504 came only after the backend's delay: {cut_took:?}"
    );
    assert_eq!(v1.calls("t-slow"), 1, "no retry on the overall timeout");

    // perTryTimeout 500ms: the first attempt stalls, the retry answers at once.
    let (retried, retried_took) = mesh
        .timed_get(
            "/per-try",
            &[
                (KEY_HEADER, "p-first"),
                (DELAY_HEADER, &slow_ms),
                (DELAY_CALLS_HEADER, "1"),
            ],
        )
        .await;
    println!(
        "perTryTimeout 500ms: first attempt stalled → {} from call {:?} in {retried_took:?}",
        retried.status,
        retried.header(CALL_HEADER)
    );
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.header(CALL_HEADER), Some("2"), "the retry answered");
    assert_eq!(v1.calls("p-first"), 2);
    assert!(
        retried_took < slow,
        "the stalled attempt was waited out: {retried_took:?}"
    );
    // Every attempt stalls: three attempts (1 + 2 retries), each cut, then 504.
    let (all, all_took) = mesh
        .timed_get(
            "/per-try",
            &[(KEY_HEADER, "p-all"), (DELAY_HEADER, &slow_ms)],
        )
        .await;
    println!(
        "perTryTimeout 500ms, every attempt stalled → {} after {} calls in {all_took:?}",
        all.status,
        v1.calls("p-all")
    );
    assert_eq!(all.status, 504, "{}", all.text());
    assert_eq!(v1.calls("p-all"), 3);
    assert!(
        all_took < slow,
        "the stalled attempts were waited out: {all_took:?}"
    );

    // timeout 1s over perTryTimeout 400ms × 6 attempts: at most 3 attempts fit.
    let (bounded, bounded_took) = mesh
        .timed_get(
            "/bounded",
            &[(KEY_HEADER, "b-all"), (DELAY_HEADER, &slow_ms)],
        )
        .await;
    let calls = v1.calls("b-all");
    println!(
        "timeout 1s with perTryTimeout 400ms, attempts 5 → {} after {calls} calls in \
         {bounded_took:?}",
        bounded.status
    );
    assert_eq!(bounded.status, 504, "{}", bounded.text());
    assert!(
        (2..=3).contains(&calls),
        "the overall timeout should stop the retries after 2 or 3 attempts, not {calls}"
    );
    assert!(bounded_took < slow, "{bounded_took:?}");
    mesh.assert_no_nack().await;
}

/// `fault.abort` at 50%: about half the requests get the configured status from Envoy without
/// reaching the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort() {
    let config = vs(r#"  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    // 2000 requests: one standard deviation of the share is 1.1 points, so ±5 is 4.5σ.
    const N: usize = 2000;
    let mut client = mesh.client();
    let (mut aborted, mut served, mut other) = (0usize, 0usize, Vec::new());
    for i in 0..N {
        let r = client
            .get(HOST, &format!("/abort/{i}"), &[])
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        match (r.status, r.backend()) {
            (418, None) => aborted += 1,
            (200, Some("v1")) => served += 1,
            (status, backend) => other.push(format!("{status} from {backend:?}")),
        }
    }
    let share = 100.0 * aborted as f64 / N as f64;
    let reached = seen_under(&mesh.v1, "/abort").len();
    println!(
        "fault abort 50% (418) over {N} requests: {aborted} aborted ({share:.1}%), {served} \
         served by v1, backend saw {reached}"
    );
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert!(
        (45.0..=55.0).contains(&share),
        "abort share {share:.1}% is not 50±5"
    );
    assert_eq!(reached, served, "aborted requests never reach the backend");
    mesh.assert_no_nack().await;
}

/// `fault.delay` at 100%: every request is held back by the fixed delay and still succeeds; a
/// route without the fault is not delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay() {
    let config = vs(r#"  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let delay = Duration::from_secs(1);
    let mut took = Vec::new();
    for i in 0..3 {
        let (r, t) = mesh.timed_get(&format!("/delay/{i}"), &[]).await;
        assert_eq!(r.status, 200, "delayed request {i}: {}", r.text());
        assert_eq!(r.backend(), Some("v1"));
        took.push(t);
    }
    let (plain, plain_took) = mesh.timed_get("/plain", &[]).await;
    println!("fault delay 1s at 100%: delayed requests took {took:?}; undelayed {plain_took:?}");
    assert_eq!(plain.status, 200);
    for t in &took {
        assert!(
            *t >= delay.mul_f64(0.8),
            "a delayed request took only {t:?} (delay {delay:?})"
        );
    }
    assert_eq!(seen_under(&mesh.v1, "/delay").len(), 3);
    mesh.assert_no_nack().await;
}

/// `mirror` with `mirrorPercentage`: at 100% the shadow gets a copy of every request, its
/// authority suffixed with `-shadow`; at 0% it gets none; the client only sees the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring() {
    let config = vs(r#"  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: api, subset: v1}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /unmirrored}}]
    route: [{destination: {host: api, subset: v1}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 0}
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    const N: usize = 20;
    // 0% first: once every 100% copy has arrived, a stray 0% copy would have too.
    for prefix in ["/unmirrored", "/mirrored"] {
        for i in 0..N {
            let key = format!("{prefix}-{i}");
            let r = mesh
                .get(&format!("{prefix}/{i}"), &[(KEY_HEADER, &key)])
                .await;
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            assert_eq!(r.backend(), Some("v1"), "{key}: the primary answers");
            assert_eq!(r.text(), "v1", "{key}: the primary's body");
        }
    }
    let arrived = wait_until(Duration::from_secs(10), async || {
        seen_under(&mesh.shadow, "/mirrored").len() >= N
    })
    .await;
    let copies = seen_under(&mesh.shadow, "/mirrored");
    let stray = seen_under(&mesh.shadow, "/unmirrored");
    let primary =
        seen_under(&mesh.v1, "/mirrored").len() + seen_under(&mesh.v1, "/unmirrored").len();
    println!(
        "mirroring: primary served {primary}; shadow got {} copies at 100% and {} at 0%; \
         authorities {:?}",
        copies.len(),
        stray.len(),
        copies
            .iter()
            .map(|s| s.authority.as_str())
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(arrived, "the shadow got {} of {N} copies", copies.len());
    assert_eq!(copies.len(), N, "exactly one copy per request");
    assert_eq!(primary, 2 * N, "the primary served every request");
    for (i, copy) in copies.iter().enumerate() {
        assert_eq!(copy.authority, format!("{HOST}-shadow"), "copy {i}");
        let key = copy.header(KEY_HEADER).unwrap_or_default();
        assert_eq!(
            copy.path,
            format!("/mirrored/{}", key.trim_start_matches("/mirrored-")),
            "copy {i}: same path as its original"
        );
    }
    assert!(stray.is_empty(), "mirrorPercentage 0 mirrored: {stray:?}");
    mesh.assert_no_nack().await;
}

/// `redirect`: Envoy answers with the redirect code and a Location built from `uri`,
/// `authority`, `scheme` and `port`; the backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect() {
    let config = vs(r#"  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: other.example, redirectCode: 302}
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /v2/moved}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, authority: secure.example, port: 8443, redirectCode: 308}
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let cases = [
        ("/old", 302, "http://other.example/new".to_string()),
        ("/moved", 301, format!("http://{HOST}/v2/moved")),
        (
            "/secure/login",
            308,
            "https://secure.example:8443/secure/login".to_string(),
        ),
    ];
    for (path, status, location) in cases {
        let r = mesh.get(path, &[]).await;
        println!(
            "redirect {path}: {} Location {:?}",
            r.status,
            r.header("location")
        );
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("location"), Some(location.as_str()), "{path}");
        assert_eq!(r.backend(), None, "{path}: Envoy answered, not a backend");
    }
    assert!(
        mesh.v1.seen().iter().all(|s| s.path == "/"),
        "redirected requests reached the backend"
    );
    mesh.assert_no_nack().await;
}

/// `rewrite`: the backend sees the rewritten path (prefix, exact, regex) and authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite() {
    let config = vs(r#"  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/, authority: internal.example}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {exact: /login}}]
    rewrite: {uri: /auth/login}
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /users/}}]
    rewrite: {uriRegexRewrite: {match: "^/users/([0-9]+)$", rewrite: "/people/\\1"}}
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let cases = [
        (
            "/api/v1/items?page=2",
            "/v2/items?page=2",
            "internal.example",
        ),
        ("/login", "/auth/login", HOST),
        ("/users/42", "/people/42", HOST),
    ];
    for (i, (path, want_path, want_authority)) in cases.into_iter().enumerate() {
        let key = format!("rewrite-{i}");
        let r = mesh.get(path, &[(KEY_HEADER, &key)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen: Vec<Seen> = mesh
            .v1
            .seen()
            .into_iter()
            .filter(|s| s.header(KEY_HEADER) == Some(key.as_str()))
            .collect();
        let [s] = seen.as_slice() else {
            panic!("{path}: backend saw {seen:?}");
        };
        println!(
            "rewrite {path}: backend saw path {} authority {}",
            s.path, s.authority
        );
        assert_eq!(s.path, want_path, "{path}: path at the backend");
        assert_eq!(
            s.authority, want_authority,
            "{path}: authority at the backend"
        );
    }
    mesh.assert_no_nack().await;
}

/// `headers`: request set/add/remove reach the backend, response set/add/remove reach the
/// client, and per-destination operations (one destination, and each of a weighted pair,
/// including an authority) apply to that destination only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_manipulation() {
    let config = vs(r#"  - match: [{uri: {prefix: /headers}}]
    headers:
      request:
        set: {x-set: by-route}
        add: {x-add: by-route}
        remove: [x-remove]
      response:
        set: {x-resp-set: by-route}
        add: {x-resp-add: by-route}
        remove: [x-resp-remove]
    route:
    - destination: {host: api, subset: v1}
      headers:
        request: {set: {x-dest: single}}
        response: {set: {x-dest-resp: single}}
  - match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: api, subset: v1}
      weight: 50
      headers:
        request: {set: {x-dest: one}}
        response: {set: {x-served-by: one}, remove: [x-echo-path]}
    - destination: {host: api, subset: v2}
      weight: 50
      headers:
        request: {set: {x-dest: two, host: two.internal}}
        response: {set: {x-served-by: two}}
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let r = mesh
        .get(
            "/headers",
            &[
                (KEY_HEADER, "h"),
                ("x-set", "by-client"),
                ("x-add", "by-client"),
                ("x-remove", "by-client"),
                ("x-keep", "by-client"),
                (REPLY_HEADER, "x-resp-set: by-backend"),
                (REPLY_HEADER, "x-resp-add: by-backend"),
                (REPLY_HEADER, "x-resp-remove: by-backend"),
                (REPLY_HEADER, "x-resp-keep: by-backend"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mesh.v1.seen();
    let Some(s) = seen.iter().find(|s| s.header(KEY_HEADER) == Some("h")) else {
        panic!("backend did not see the request: {seen:?}");
    };
    let values = |name: &str| s.header_all(name);
    println!(
        "headers at the backend: x-set {:?} x-add {:?} x-remove {:?} x-keep {:?} x-dest {:?}",
        values("x-set"),
        values("x-add"),
        values("x-remove"),
        values("x-keep"),
        values("x-dest")
    );
    assert_eq!(values("x-set"), ["by-route"], "request set overwrites");
    let mut added = values("x-add");
    added.sort_unstable();
    assert_eq!(added, ["by-client", "by-route"], "request add appends");
    assert!(values("x-remove").is_empty(), "request remove");
    assert_eq!(values("x-keep"), ["by-client"], "untouched headers pass");
    assert_eq!(values("x-dest"), ["single"], "destination request set");
    assert_eq!(s.authority, HOST, "no authority rewrite on this route");

    let all = |name: &str| -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    println!(
        "headers at the client: x-resp-set {:?} x-resp-add {:?} x-resp-remove {:?} \
         x-resp-keep {:?} x-dest-resp {:?}",
        all("x-resp-set"),
        all("x-resp-add"),
        all("x-resp-remove"),
        all("x-resp-keep"),
        all("x-dest-resp")
    );
    assert_eq!(all("x-resp-set"), ["by-route"], "response set overwrites");
    let mut added = all("x-resp-add");
    added.sort_unstable();
    assert_eq!(added, ["by-backend", "by-route"], "response add appends");
    assert!(all("x-resp-remove").is_empty(), "response remove");
    assert_eq!(all("x-resp-keep"), ["by-backend"], "untouched headers pass");
    assert_eq!(all("x-dest-resp"), ["single"], "destination response set");

    // Weighted destinations, each with its own operations.
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let r = mesh.get(&format!("/split/{i}"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let backend = r.backend().unwrap_or("-").to_string();
        let served_by = r.header("x-served-by");
        match backend.as_str() {
            "v1" => {
                assert_eq!(served_by, Some("one"), "v1's response operations");
                assert_eq!(r.header("x-echo-path"), None, "v1's response remove");
            }
            "v2" => {
                assert_eq!(served_by, Some("two"), "v2's response operations");
                assert!(r.header("x-echo-path").is_some(), "v2 keeps x-echo-path");
            }
            other => panic!("/split answered by {other}"),
        }
        *by.entry(backend).or_default() += 1;
    }
    let at_v1 = seen_under(&mesh.v1, "/split");
    let at_v2 = seen_under(&mesh.v2, "/split");
    println!(
        "weighted destinations: answers {by:?}; v1 saw x-dest {:?} authority {:?}; v2 saw \
         x-dest {:?} authority {:?}",
        at_v1.first().map(|s| s.header_all("x-dest")),
        at_v1.first().map(|s| s.authority.clone()),
        at_v2.first().map(|s| s.header_all("x-dest")),
        at_v2.first().map(|s| s.authority.clone()),
    );
    assert!(
        !at_v1.is_empty() && !at_v2.is_empty(),
        "both destinations served: {by:?}"
    );
    for s in &at_v1 {
        assert_eq!(s.header_all("x-dest"), ["one"], "{}", s.path);
        assert_eq!(s.authority, HOST, "{}", s.path);
    }
    for s in &at_v2 {
        assert_eq!(s.header_all("x-dest"), ["two"], "{}", s.path);
        assert_eq!(s.authority, "two.internal", "{}", s.path);
    }
    mesh.assert_no_nack().await;
}

/// `corsPolicy`: Envoy answers a preflight from an allowed origin with the configured
/// access-control headers; a disallowed origin gets none (its preflight is passed on to the
/// backend, or with `unmatchedPreflights: IGNORE` answered by Envoy without an allow-origin);
/// actual requests get allow-origin and expose-headers only for an allowed origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight() {
    let config = vs(r#"  - match: [{uri: {prefix: /strict}}]
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: api, subset: v1}}]
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}, {regex: "https://.*\\.shop\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [authorization, content-type]
      exposeHeaders: [x-request-id]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: api, subset: v1}}]
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ]
    };
    let cors_headers = |r: &Response| -> Vec<(String, String)> {
        r.headers
            .iter()
            .filter(|(k, _)| k.starts_with("access-control-"))
            .cloned()
            .collect()
    };

    for origin in ["https://shop.example", "https://eu.shop.example"] {
        let r = mesh
            .request("OPTIONS", "/cors/cart", &preflight(origin))
            .await;
        println!(
            "preflight from {origin}: {} {:?}",
            r.status,
            cors_headers(&r)
        );
        assert_eq!(r.status, 200, "preflight from {origin}");
        assert_eq!(r.backend(), None, "Envoy answers the preflight itself");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("authorization,content-type")
        );
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    }

    // A disallowed origin: passed on to the backend, no CORS headers.
    let r = mesh
        .request("OPTIONS", "/cors/cart", &preflight("https://evil.example"))
        .await;
    println!(
        "preflight from https://evil.example: {} from {:?} {:?}",
        r.status,
        r.backend(),
        cors_headers(&r)
    );
    assert_eq!(
        r.backend(),
        Some("v1"),
        "the unmatched preflight is forwarded"
    );
    assert!(cors_headers(&r).is_empty(), "{:?}", cors_headers(&r));

    // unmatchedPreflights: IGNORE: answered by Envoy, without CORS headers, never forwarded.
    let r = mesh
        .request("OPTIONS", "/strict/x", &preflight("https://evil.example"))
        .await;
    println!(
        "preflight from https://evil.example, unmatchedPreflights IGNORE: {} from {:?} {:?}",
        r.status,
        r.backend(),
        cors_headers(&r)
    );
    // Envoy answers it itself, without the one header that grants access (it still lists the
    // policy's other headers, as its CORS filter does).
    assert_eq!(r.status, 200);
    assert_eq!(
        r.backend(),
        None,
        "the unmatched preflight is not forwarded"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        seen_under(&mesh.v1, "/strict").is_empty(),
        "the backend saw the ignored preflight"
    );

    // Actual requests.
    let r = mesh
        .get("/cors/cart", &[("origin", "https://shop.example")])
        .await;
    assert_eq!(r.backend(), Some("v1"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    let r = mesh
        .get("/cors/cart", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(r.backend(), Some("v1"));
    assert!(cors_headers(&r).is_empty(), "{:?}", cors_headers(&r));
    let preflights_forwarded = mesh
        .v1
        .seen()
        .iter()
        .filter(|s| s.method == "OPTIONS")
        .count();
    assert_eq!(
        preflights_forwarded, 1,
        "only the unmatched preflight reached v1"
    );
    mesh.assert_no_nack().await;
}

/// `directResponse`: Envoy answers with the status and body (string or base64 bytes); the
/// backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response() {
    let config = vs(r#"  - match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {bytes: "SSdtIGEgdGVhcG90"}}
  - match: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
"#);
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    for (path, status, body) in [
        ("/maintenance/now", 503, "down for maintenance"),
        ("/teapot", 418, "I'm a teapot"),
        ("/empty", 204, ""),
    ] {
        let r = mesh.get(path, &[]).await;
        println!("direct response {path}: {} {:?}", r.status, r.text());
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.text(), body, "{path}");
        assert_eq!(r.backend(), None, "{path}: Envoy answered");
    }
    assert!(
        mesh.v1.seen().iter().all(|s| s.path == "/"),
        "a direct response reached the backend"
    );
    mesh.assert_no_nack().await;
}

/// `delegate`: a root VirtualService hands `/shop` to a VirtualService in another namespace,
/// which picks the backend; its rule outside the root's prefix is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate() {
    let mut config = vs(r#"  - match: [{uri: {prefix: /shop}}]
    delegate: {name: shop-routes, namespace: team}
"#);
    config.push_str(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-routes, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /shop/cart}}]
    route: [{destination: {host: cart}}]
  - match: [{uri: {prefix: /cart}}]
    route: [{destination: {host: cart}}]
  - match: [{headers: {x-beta: {exact: "yes"}}}]
    route: [{destination: {host: api.shop.svc.cluster.local, subset: v2}}]
  - route: [{destination: {host: shadow.shop.svc.cluster.local}}]
"#,
    );
    let Some(mesh) = Mesh::start(&config).await else {
        return;
    };
    // (path, with `x-beta: yes`, expected backend)
    let cases = [
        ("/shop/cart/1", false, "cart"),
        ("/shop/items", false, "shadow"),
        ("/shop/items", true, "v2"),
        // The delegate's match outside /shop does not apply.
        ("/cart", false, "v1"),
        // The delegate's header rule only applies under /shop.
        ("/other", true, "v1"),
        ("/other", false, "v1"),
    ];
    for (path, beta, want) in cases {
        let headers: &[(&str, &str)] = if beta { &[("x-beta", "yes")] } else { &[] };
        let r = mesh.get(path, headers).await;
        println!(
            "delegate: {path} {headers:?} → {} from {:?}",
            r.status,
            r.backend()
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.backend(), Some(want), "{path} {headers:?}");
    }
    assert_eq!(
        seen_under(&mesh.cart, "/").len(),
        1,
        "cart served /shop/cart/1 only"
    );
    mesh.assert_no_nack().await;
}
