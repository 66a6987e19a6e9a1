//! Golden tests, one test per case, so that a case runs by name
//! (`cargo test --test integration -- golden::translate::authz_allow_deny`) and fails alone.
//!
//! Translation: `testdata/translate/<case>/` holds `config/` (input YAML), `proxy.yaml` (the node
//! id and metadata of the proxy asking), optionally `mesh.yaml` (istiod's mesh config; defaults
//! otherwise) and `expected/`, one file per resource type: `clusters.yaml`, `endpoints.yaml`,
//! `listeners.yaml`, `routes.yaml` (each the list of generated resources as canonical JSON
//! rendered to YAML; `[]` when there are none) and `diagnostics.yaml` (`input`: the resources
//! rejected on loading; `translation`: what went wrong generating for the proxy). Every case has
//! all five files. Generating twice gives the same bytes.
//!
//! Injection: `testdata/inject/<case>/input.yaml` through `bowline inject` (the binary, default
//! flags) against `expected.yaml`; the output parses and injecting it again changes nothing.
//!
//! `UPDATE_GOLDEN=1` rewrites the expected files (and removes any other file of `expected/`);
//! reviewing that diff is how translation changes are read. Each module lists its cases with
//! [`cases!`], and its `every_case_is_listed` test fails when a case directory is not listed, or
//! a listed one is missing.

use crate::common;

use std::path::{Path, PathBuf};

use bowline::envoy::TypeSet;

/// One `#[test]` per case (the test's name is the directory's, `-` read as `_`), checked by
/// `$check(directory name)`, and `every_case_is_listed`, which compares the list with the
/// directories under `testdata/$root/`.
macro_rules! cases {
    (root: $root:literal, check: $check:path, $($test:ident: $dir:literal,)+) => {
        $(
            #[test]
            fn $test() {
                $check($dir);
            }
        )+

        #[test]
        fn every_case_is_listed() {
            super::check_listed($root, &[$((stringify!($test), $dir)),+]);
        }
    };
}

/// Every directory under `testdata/<root>/` is listed exactly once, every listed one exists, and
/// each test is named after its directory.
fn check_listed(root: &str, listed: &[(&str, &str)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(root);
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut names: Vec<&str> = listed.iter().map(|(_, d)| *d).collect();
    names.sort();
    let mut problems = Vec::new();
    for pair in names.windows(2).filter(|p| p[0] == p[1]) {
        problems.push(format!("{} is listed twice", pair[0]));
    }
    for case in present.iter().filter(|p| !names.contains(&p.as_str())) {
        problems.push(format!(
            "testdata/{root}/{case}/ is not listed in tests/integration/golden.rs"
        ));
    }
    for case in names.iter().filter(|n| !present.iter().any(|p| p == *n)) {
        problems.push(format!(
            "{case} is listed but testdata/{root}/{case}/ does not exist"
        ));
    }
    for (test, case) in listed {
        if case.replace('-', "_") != *test {
            problems.push(format!("the test of {case} is named {test}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// The first line where `got` differs from `expected`, in `file`.
fn first_difference(file: &str, expected: &str, got: &str) -> String {
    let (mut want, mut have) = (expected.lines(), got.lines());
    for line in 1.. {
        match (want.next(), have.next()) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => return format!("{file} line {line}: expected {a:?}, got {b:?}"),
            (Some(a), None) => return format!("{file} line {line}: expected {a:?}, got the end"),
            (None, Some(b)) => return format!("{file} line {line}: expected the end, got {b:?}"),
            (None, None) => break,
        }
    }
    format!("{file}: differs in line endings or a final newline")
}

/// Translation cases: `testdata/translate/<case>/`.
mod translate {
    cases! {
        root: "translate",
        check: super::check_translation,
        authz_allow_deny: "authz-allow-deny",
        authz_conditions: "authz-conditions",
        authz_custom: "authz-custom",
        authz_custom_bad: "authz-custom-bad",
        authz_custom_http: "authz-custom-http",
        authz_custom_invalid_provider: "authz-custom-invalid-provider",
        authz_custom_undefined: "authz-custom-undefined",
        authz_deny_all: "authz-deny-all",
        authz_jwt: "authz-jwt",
        authz_principal_wildcards: "authz-principal-wildcards",
        authz_principal_wildcards_aliases: "authz-principal-wildcards-aliases",
        captured_inbound: "captured-inbound",
        dr_connection_pool: "dr-connection-pool",
        dr_inbound_pool: "dr-inbound-pool",
        dr_load_balancer: "dr-load-balancer",
        dr_node_locality: "dr-node-locality",
        dr_outlier_locality: "dr-outlier-locality",
        dr_scope: "dr-scope",
        dr_tls: "dr-tls",
        external_dynamic_dns: "external-dynamic-dns",
        external_services: "external-services",
        gateway_conflicts: "gateway-conflicts",
        gateway_egress: "gateway-egress",
        gateway_http: "gateway-http",
        gateway_tls: "gateway-tls",
        http_split: "http-split",
        inbound_named_target_port: "inbound-named-target-port",
        inbound_named_target_port_workload_entry: "inbound-named-target-port-workload-entry",
        l4_routing: "l4-routing",
        mtls_auto: "mtls-auto",
        mtls_istio_mutual: "mtls-istio-mutual",
        mtls_no_certificate: "mtls-no-certificate",
        mtls_peer_authentication: "mtls-peer-authentication",
        mtls_trust_domain_aliases: "mtls-trust-domain-aliases",
        sidecar_ingress_capture: "sidecar-ingress-capture",
        vs_delegate: "vs-delegate",
        vs_fault_mirror_cors: "vs-fault-mirror-cors",
        vs_headers_rewrite: "vs-headers-rewrite",
        vs_match: "vs-match",
        vs_precedence: "vs-precedence",
        vs_redirect_direct: "vs-redirect-direct",
    }
}

/// Injection cases: `testdata/inject/<case>/`.
mod inject {
    cases! {
        root: "inject",
        check: super::check_injection,
        deployment_annotations: "deployment-annotations",
        gateway: "gateway",
        native_sidecar: "native-sidecar",
        pod: "pod",
        skipped: "skipped",
        workloads: "workloads",
    }
}

/// The files of a translation case's `expected/`, in this order.
const EXPECTED_FILES: [&str; 5] = [
    "clusters.yaml",
    "endpoints.yaml",
    "listeners.yaml",
    "routes.yaml",
    "diagnostics.yaml",
];

/// What the case generates, as the content of each of [`EXPECTED_FILES`].
fn render(case: &Path) -> [String; 5] {
    let (model, proxy) = common::cases::load(case);
    let output = bowline::translate::generate(&model, &proxy, TypeSet::ALL);
    let json = output.to_json().expect("renders");
    let yaml = |v: &serde_json::Value| serde_saphyr::to_string(v).expect("yaml");
    // Diagnostics name files relative to the case, so the files are the same on every machine.
    let base = format!("{}/", case.join("config").display());
    let translation: Vec<String> = output
        .diagnostics
        .iter()
        .map(|d| {
            d.clone()
                .for_proxy(&proxy.name)
                .to_string()
                .replace(&base, "")
        })
        .collect();
    let input: Vec<String> = model
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&base, ""))
        .collect();
    [
        yaml(&json["clusters"]),
        yaml(&json["endpoints"]),
        yaml(&json["listeners"]),
        yaml(&json["routes"]),
        yaml(&serde_json::json!({ "input": input, "translation": translation })),
    ]
}

fn case_dir(root: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(root)
        .join(name)
}

fn check_translation(name: &str) {
    let case = case_dir("translate", name);
    assert!(
        case.join("proxy.yaml").exists(),
        "{}: no proxy.yaml",
        case.display()
    );
    let got = render(&case);
    assert_eq!(got, render(&case), "{name}: output is not deterministic");
    let dir = case.join("expected");
    let others: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !EXPECTED_FILES.contains(&e.file_name().to_string_lossy().as_ref()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if update() {
        std::fs::create_dir_all(&dir).expect("create expected/");
        for (file, text) in EXPECTED_FILES.iter().zip(&got) {
            std::fs::write(dir.join(file), text).expect("write an expected file");
        }
        for other in others {
            std::fs::remove_file(&other)
                .unwrap_or_else(|e| panic!("remove {}: {e}", other.display()));
        }
        return;
    }
    let mut failures: Vec<String> = others
        .iter()
        .map(|p| format!("{}: not one of {EXPECTED_FILES:?}", p.display()))
        .collect();
    for (file, got) in EXPECTED_FILES.iter().zip(&got) {
        let path = dir.join(file);
        let shown = format!("testdata/translate/{name}/expected/{file}");
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == *got => {}
            Ok(expected) => failures.push(first_difference(&shown, &expected, got)),
            Err(e) => failures.push(format!("{shown}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (`UPDATE_GOLDEN=1 cargo test --test integration -- golden::` rewrites \
         the expected files; review the diff):\n{}",
        failures.join("\n")
    );
}

fn check_injection(name: &str) {
    let case = case_dir("inject", name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bowline"))
        .arg("inject")
        .arg("-f")
        .arg(case.join("input.yaml"))
        // The defaults, whatever the environment says.
        .env_remove("BOWLINE_PROXY_IMAGE")
        .env_remove("BOWLINE_INJECTOR_IMAGE")
        .env_remove("BOWLINE_DISCOVERY_ADDRESS")
        .env_remove("BOWLINE_INJECTED_TOKEN_TTL")
        .env_remove("BOWLINE_NATIVE_SIDECARS")
        .output()
        .expect("run bowline inject");
    assert!(
        out.status.success(),
        "{name}: bowline inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).expect("UTF-8 output");
    // The output is valid YAML, and injecting it again changes nothing.
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&got).expect("the output parses");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(got.as_bytes())?;
            child.wait_with_output()
        })
        .expect("re-inject");
    let again: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&again.stdout))
            .expect("re-injected output parses");
    assert_eq!(again, docs, "{name}: injection is not idempotent");
    let path = case.join("expected.yaml");
    if update() {
        std::fs::write(&path, &got).expect("write expected.yaml");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == got,
        "injection golden mismatch (`UPDATE_GOLDEN=1 cargo test --test integration -- golden::` \
         rewrites the expected files; review the diff):\n{}",
        first_difference(
            &format!("testdata/inject/{name}/expected.yaml"),
            &expected,
            &got
        )
    );
}
