//! `bowline proxy-status` and `bowline proxy-config` against a real `bowline serve`, a real
//! Envoy sidecar and a proxy that NACKs, checked against the real istioctl
//! (`$ISTIO_TOOLS_BIN`) reading the same answers:
//!
//! - `proxy-status` over the TLS port (a client certificate of bowline's CA) lists each proxy
//!   with istioctl's rows: the Envoy SYNCED for CDS, LDS, EDS and RDS, the NACKing proxy's CDS
//!   ERROR; on the plaintext port the refusal is explained; `proxy-status <proxy>` finds the
//!   Envoy's dump equal to what bowline sent, and shows a unified diff when it is not;
//! - `proxy-config cluster|listener|route|endpoint|secret|all` of the Envoy's dump (a saved
//!   file, and its admin API) print the same rows as `istioctl proxy-config` of that file,
//!   DESTINATION RULE and VIRTUAL SERVICE columns included.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BOWLINE, Bowline, Envoy, Net, ProxySpec, TempDir};
use serde_json::Value;

use crate::istioctl::{cert_dir, xds_args};

/// Runs a command to its end, killed after a minute.
fn run(bin: &str, args: &[String], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {bin}: {e}"));
    // The pipes are drained while waiting, so a large output cannot stall the command.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

fn bowline_cli(args: &[String]) -> Output {
    run(BOWLINE, args, &[])
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A table's lines, sorted (istioctl sorts rows with Go's unstable sort, so rows with equal
/// keys may come in either order); the header stays first.
fn rows(table: &str) -> Vec<String> {
    let mut lines: Vec<String> = table.lines().map(str::to_string).collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines
}

/// The mesh of these tests: `reviews` with a subset DestinationRule and a VirtualService, its
/// endpoint speaking mutual TLS (so the sidecar asks for its certificates).
fn mesh(net: &Net) -> String {
    format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews-dr, namespace: default}}\n\
             spec:\n  host: reviews\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews-vs, namespace: default}}\n\
             spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n",
        common::fixtures::docs(&[
            &common::fixtures::service("reviews", "default").port_to(9080, "http", 9080),
            &common::fixtures::workload_entry("reviews-v1", "default", net.ip(20))
                .label("app", "reviews")
                .label("version", "v1")
                .mtls(),
        ])
    )
}

/// bowline serving the mesh and a real Envoy sidecar (`client-0.default`, proven with a token
/// on the TLS port) in sync with it.
fn synced(rt: &tokio::runtime::Runtime, net: &Net, envoy_bin: &Path) -> (Bowline, Envoy) {
    let mut bowline = Bowline::new(net);
    bowline.write("mesh.yaml", &mesh(net));
    rt.block_on(bowline.start());
    let mut spec = ProxySpec::sidecar("client-0", "default", net.ip(10));
    spec.token = true;
    let envoy = rt.block_on(Envoy::start(envoy_bin, &bowline, spec));
    rt.block_on(bowline.wait_synced(&envoy.proxy_id(), Duration::from_secs(20)))
        .expect("synced");
    (bowline, envoy)
}

/// A status table's cells without the ages (`SYNCED (5s)` → `SYNCED`): two runs a second
/// apart print different ages.
fn without_ages(table: &str) -> Vec<String> {
    let age = regex::Regex::new(r" \([0-9smhdy<>invalid]+\)").expect("regex");
    rows(table)
        .iter()
        .map(|l| {
            age.replace_all(l, "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn proxy_status_lists_proxies_and_compares_one_with_its_envoy() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(istio_bin) = common::istio_tools_bin() else {
        return;
    };
    // istioctl's proxy-status builds a Kubernetes client (and reads the cluster) before it
    // asks bowline.
    let Some(kube) = common::kube::KubeEnv::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let (bowline, envoy) = synced(&rt, &net, &envoy_bin);
    let plaintext = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("plaintext channel")
    });
    let _picky = rt.block_on(crate::debug_xds::nacking_proxy(plaintext));
    let certs = cert_dir(&rt, &bowline);
    let xds = xds_args(&bowline, &certs);

    // The NACK reaches the status (bounded wait); then the default table.
    let mut verbose = String::new();
    for _ in 0..50 {
        let mut args = strings(&["proxy-status", "-v", "1"]);
        args.extend(xds.iter().cloned());
        verbose = ok(&bowline_cli(&args), "bowline proxy-status -v 1");
        if verbose
            .lines()
            .any(|l| l.starts_with("picky-0.shop") && l.contains("ERROR ("))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let header = verbose.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "CLUSTER", "CDS", "ECDS", "EDS", "LDS", "RDS", "SDS", "ISTIOD", "VERSION"
        ],
        "{verbose}"
    );
    let client = verbose
        .lines()
        .find(|l| l.starts_with("client-0.default "))
        .unwrap_or_else(|| panic!("the Envoy is listed:\n{verbose}"));
    // Its certificates too: it proved its identity on the TLS port.
    assert_eq!(client.matches("SYNCED (").count(), 5, "{verbose}");
    assert!(
        client.contains(" IGNORED "),
        "ECDS is not served: {verbose}"
    );
    assert!(client.contains(" bowline "), "the control plane: {verbose}");
    let picky = verbose
        .lines()
        .find(|l| l.starts_with("picky-0.shop "))
        .unwrap_or_else(|| panic!("the NACKing proxy is listed:\n{verbose}"));
    let cells: Vec<&str> = picky
        .split("     ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert!(
        cells[2].starts_with("ERROR ("),
        "CDS after the NACK: {verbose}"
    );
    assert!(
        !verbose.contains("bowline-cli"),
        "the caller is no proxy: {verbose}"
    );

    let mut args = strings(&["proxy-status"]);
    args.extend(xds.iter().cloned());
    let table = ok(&bowline_cli(&args), "bowline proxy-status");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("client-0.default ") && l.ends_with(" 5 (CDS,LDS,EDS,RDS,SDS)")),
        "{table}"
    );

    // istioctl reads the same answer into the same rows (ages aside).
    let home = TempDir::new("istioctl-home");
    let env = [
        ("HOME", home.path()),
        ("KUBECONFIG", kube.kubeconfig.as_path()),
    ];
    let istioctl = istio_bin.join("istioctl").display().to_string();
    for verbosity in ["0", "1"] {
        let mut args = strings(&["proxy-status", "-v", verbosity]);
        args.extend(xds.iter().cloned());
        let theirs = ok(&run(&istioctl, &args, &env), "istioctl proxy-status");
        let ours = ok(&bowline_cli(&args), "bowline proxy-status");
        assert_eq!(
            without_ages(&ours),
            without_ages(&theirs),
            "-v {verbosity}\nbowline:\n{ours}\nistioctl:\n{theirs}"
        );
    }

    // A namespace's filter.
    let mut args = strings(&["proxy-status", "-n", "shop", "-o", "json"]);
    args.extend(xds.iter().cloned());
    let json: Value =
        serde_json::from_str(&ok(&bowline_cli(&args), "proxy-status -o json")).expect("JSON");
    let listed = json["resources"].as_array().expect("resources");
    assert_eq!(listed.len(), 1, "{json}");
    assert_eq!(listed[0]["node"]["id"], "picky-0.shop", "{json}");

    // A token instead of a client certificate (only the CA's root in --cert-dir); a token of
    // another namespace than the root namespace sees only its namespace's proxies.
    let roots = TempDir::new("proxy-status-roots");
    std::fs::copy(
        bowline.ca_dir.join("root-cert.pem"),
        roots.path().join("root-cert.pem"),
    )
    .expect("root");
    for (ns, want) in [("istio-system", 2), ("shop", 1)] {
        let token = roots.path().join(format!("{ns}.token"));
        std::fs::write(&token, bowline.token(ns, "admin")).expect("token");
        let args = strings(&[
            "proxy-status",
            "--xds-address",
            &bowline.xds_tls_addr.to_string(),
            "--cert-dir",
            &roots.path().display().to_string(),
            "--token-file",
            &token.display().to_string(),
            "--timeout",
            "10s",
        ]);
        let table = ok(&bowline_cli(&args), "bowline proxy-status --token-file");
        assert_eq!(table.lines().count(), 1 + want, "{ns}:\n{table}");
        assert!(table.contains("picky-0.shop "), "{ns}:\n{table}");
    }

    // The plaintext port refuses debug requests; the error says why and what to do.
    let out = bowline_cli(&strings(&[
        "proxy-status",
        "--plaintext",
        "--xds-address",
        &bowline.xds_addr.to_string(),
        "--timeout",
        "10s",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused istio.io/debug/syncz")
            && err.contains("authentication required")
            && err.contains("--cert-dir"),
        "{err}"
    );

    // One proxy: what bowline sent equals what the Envoy holds.
    let admin = format!("http://{}", envoy.admin_addr());
    let mut args = strings(&["proxy-status", "client-0.default", "--envoy-admin", &admin]);
    args.extend(xds.iter().cloned());
    let report = ok(&bowline_cli(&args), "bowline proxy-status <proxy>");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[..2],
        ["Clusters Match", "Listeners Match"],
        "{report}"
    );
    assert!(
        lines[2].starts_with("Routes Match (RDS last loaded at ") && lines[2].ends_with(" UTC)"),
        "{report}"
    );
    assert_eq!(lines.len(), 3, "{report}");

    // A dump that lacks a cluster bowline sent: the difference, as a unified diff.
    let mut dump = rt.block_on(envoy.config_dump()).expect("config dump");
    let clusters = dump["configs"]
        .as_array_mut()
        .expect("configs")
        .iter_mut()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
        .expect("clusters");
    let active = clusters["dynamic_active_clusters"]
        .as_array_mut()
        .expect("dynamic clusters");
    let at = active
        .iter()
        .position(|c| c["cluster"]["name"] == "outbound|9080|v1|reviews.default.svc.cluster.local")
        .expect("the v1 subset cluster");
    active.remove(at);
    let dir = TempDir::new("proxy-status-dump");
    let file = dir.path().join("envoy.json");
    std::fs::write(&file, dump.to_string()).expect("dump file");
    let mut args = strings(&[
        "proxy-status",
        "client-0.default",
        "-f",
        &file.display().to_string(),
    ]);
    args.extend(xds.iter().cloned());
    let report = ok(&bowline_cli(&args), "bowline proxy-status <proxy> -f");
    assert!(
        report.starts_with("Clusters Don't Match\n--- Istiod Clusters\n+++ Envoy Clusters\n@@ -"),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with('-')
            && l.contains("outbound|9080|v1|reviews.default.svc.cluster.local")),
        "{report}"
    );
    assert!(report.contains("\nListeners Match\n"), "{report}");

    // A proxy that is not connected.
    let mut args = strings(&[
        "proxy-status",
        "nobody-0.default",
        "-f",
        &file.display().to_string(),
    ]);
    args.extend(xds.iter().cloned());
    let out = bowline_cli(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no configuration for nobody-0.default"),
        "{err}"
    );
    drop(envoy);
}

#[test]
fn proxy_config_prints_istioctl_rows() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(istio_bin) = common::istio_tools_bin() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let net = Net::new();
    let (_bowline, envoy) = synced(&rt, &net, &envoy_bin);
    // The sidecar holds its certificates once it has asked for them.
    rt.block_on(common::poll(Duration::from_secs(20), async || {
        let text = envoy
            .admin("/config_dump?resource=dynamic_active_secrets")
            .await?;
        if text.contains("\"default\"") && text.contains("\"ROOTCA\"") {
            Ok(())
        } else {
            Err(format!("no certificates yet: {text}"))
        }
    }))
    .expect("the sidecar's secrets");
    let dump = rt
        .block_on(envoy.admin("/config_dump?include_eds"))
        .expect("config dump");
    let dir = TempDir::new("proxy-config");
    let file = dir.path().join("config_dump.json");
    std::fs::write(&file, &dump).expect("dump file");
    let file = file.display().to_string();
    let admin = format!("http://{}", envoy.admin_addr());
    let istioctl = istio_bin.join("istioctl").display().to_string();
    let home = TempDir::new("istioctl-home");
    let env = [("HOME", home.path())];

    let cases: &[(&str, &str, &[&str])] = &[
        ("cluster", "cluster", &[]),
        (
            "cluster",
            "cluster",
            &["--fqdn", "reviews.default.svc.cluster.local"],
        ),
        (
            "cluster",
            "cluster",
            &["--direction", "outbound", "--port", "9080"],
        ),
        ("listener", "listener", &[]),
        ("listener", "listener", &["--verbose=false"]),
        ("listener", "listener", &["--port", "9080"]),
        ("route", "route", &[]),
        ("route", "route", &["--name", "9080"]),
        ("endpoint", "eds", &[]),
        ("secret", "secret", &[]),
        ("all", "all", &[]),
    ];
    let mut tables = std::collections::BTreeMap::new();
    for (ours, theirs, flags) in cases {
        let mut args = strings(&["proxy-config", ours, "-f", &file]);
        args.extend(strings(flags));
        let mine = ok(
            &bowline_cli(&args),
            &format!("bowline proxy-config {ours} {flags:?}"),
        );
        let mut args = strings(&["proxy-config", theirs, "-f", &file]);
        args.extend(strings(flags));
        let real = ok(
            &run(&istioctl, &args, &env),
            &format!("istioctl proxy-config {theirs} {flags:?}"),
        );
        assert!(
            mine.lines().count() > 1,
            "{ours} {flags:?}: rows expected:\n{mine}"
        );
        assert_eq!(
            rows(&mine),
            rows(&real),
            "{ours} {flags:?}\nbowline:\n{mine}\nistioctl:\n{real}"
        );
        tables.insert((*ours, flags.len()), mine);
    }

    // The columns that name the rules.
    let clusters = &tables[&("cluster", 0)];
    let subset = clusters
        .lines()
        .find(|l| l.contains("reviews.default.svc.cluster.local") && l.contains(" v1 "))
        .unwrap_or_else(|| panic!("the v1 subset cluster:\n{clusters}"));
    assert!(subset.ends_with(" reviews-dr.default"), "{clusters}");
    let routes = &tables[&("route", 0)];
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("9080 ") && l.ends_with(" reviews-vs.default")),
        "{routes}"
    );
    let secrets = &tables[&("secret", 0)];
    assert!(
        secrets.lines().any(|l| l.starts_with("default ")
            && l.contains(" Cert Chain ")
            && l.contains(" true ")),
        "{secrets}"
    );
    assert!(
        secrets
            .lines()
            .any(|l| l.starts_with("ROOTCA ") && l.contains(" CA ")),
        "{secrets}"
    );

    // The admin API gives what its saved dump gives.
    for kind in ["cluster", "listener", "route", "endpoint", "secret"] {
        let live = ok(
            &bowline_cli(&strings(&["proxy-config", kind, "--admin", &admin])),
            &format!("bowline proxy-config {kind} --admin"),
        );
        let saved = ok(
            &bowline_cli(&strings(&["proxy-config", kind, "-f", &file])),
            &format!("bowline proxy-config {kind} -f"),
        );
        assert_eq!(live, saved, "{kind}");
    }

    // The resources themselves, and the bootstrap.
    let json: Value = serde_json::from_str(&ok(
        &bowline_cli(&strings(&[
            "proxy-config",
            "cluster",
            "-f",
            &file,
            "--subset",
            "v1",
            "-o",
            "json",
        ])),
        "proxy-config cluster -o json",
    ))
    .expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(
        json[0]["name"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    let bootstrap: Value = serde_json::from_str(&ok(
        &bowline_cli(&strings(&["proxy-config", "bootstrap", "-f", &file])),
        "proxy-config bootstrap",
    ))
    .expect("JSON");
    assert!(
        bootstrap["bootstrap"]["node"]["id"]
            .as_str()
            .is_some_and(|id| id.contains("client-0.default")),
        "{bootstrap}"
    );

    // Bad input: named, and no table.
    let bad = dir.path().join("not-a-dump.json");
    std::fs::write(
        &bad,
        "{\"configs\": [{\"@type\": \"type.googleapis.com/no.such.Type\"}]}",
    )
    .expect("bad file");
    let out = bowline_cli(&strings(&[
        "proxy-config",
        "cluster",
        "-f",
        &bad.display().to_string(),
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-dump.json") && err.contains("no.such.Type"),
        "{err}"
    );
    let out = bowline_cli(&strings(&[
        "proxy-config",
        "cluster",
        "--admin",
        "http://127.0.0.1:9",
        "--timeout",
        "5s",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Envoy's admin at 127.0.0.1:9"), "{err}");
    drop(envoy);
}
