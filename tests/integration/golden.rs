//! Golden tests: `testdata/translate/<case>/` holds `config/` (input YAML), `proxy.yaml` (the
//! node id and metadata of the proxy asking), optionally `mesh.yaml` (istiod's mesh config;
//! defaults otherwise) and `expected.yaml` (every generated resource as
//! canonical JSON rendered to YAML, plus diagnostics). `UPDATE_GOLDEN=1` rewrites the expected
//! files; reviewing that diff is how translation changes are read.
//!
//! Injection has its own cases: `testdata/inject/<case>/input.yaml` through `bowline inject`
//! (the binary, default flags) against `expected.yaml`, rewritten the same way.

use crate::common;

use std::path::{Path, PathBuf};

use bowline::envoy::TypeSet;
use bowline::translate;

fn render(case: &Path) -> String {
    let (model, proxy) = common::cases::load(case);
    let output = translate::generate(&model, &proxy, TypeSet::ALL);
    let mut json = output.to_json().expect("renders");
    // Input diagnostics (rejected resources) belong in the golden file too. Diagnostics name
    // files relative to the case so the file is the same on every machine.
    let base = format!("{}/", case.join("config").display());
    let translated: Vec<String> = output
        .diagnostics
        .iter()
        .map(|d| {
            d.clone()
                .for_proxy(&proxy.name)
                .to_string()
                .replace(&base, "")
        })
        .collect();
    json["diagnostics"] = serde_json::json!(translated);
    let input: Vec<String> = model
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&base, ""))
        .collect();
    json["input_diagnostics"] = serde_json::json!(input);
    serde_saphyr::to_string(&json).expect("yaml")
}

#[test]
fn golden() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = common::cases::cases();
    assert!(!cases.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for case in &cases {
        let got = render(case);
        // Deterministic: a second run gives the same bytes.
        assert_eq!(
            got,
            render(case),
            "{}: output is not deterministic",
            case.display()
        );
        let expected_path = case.join("expected.yaml");
        if update {
            std::fs::write(&expected_path, &got).expect("write expected.yaml");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            let first_diff = expected
                .lines()
                .zip(got.lines())
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| format!("line {}: expected {a:?}, got {b:?}", i + 1))
                .unwrap_or_else(|| "lengths differ".to_string());
            failures.push(format!("{}: {first_diff}", case.display()));
        }
    }
    println!("{} golden cases checked", cases.len());
    assert!(
        failures.is_empty(),
        "golden mismatches (run `UPDATE_GOLDEN=1 make test` and review the diff):\n{}",
        failures.join("\n")
    );
}

fn first_difference(expected: &str, got: &str) -> String {
    expected
        .lines()
        .zip(got.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("line {}: expected {a:?}, got {b:?}", i + 1))
        .unwrap_or_else(|| "lengths differ".to_string())
}

#[test]
fn inject_golden() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata/inject exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no injection cases found");
    let mut failures = Vec::new();
    for case in &cases {
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
            "{}: bowline inject failed: {}",
            case.display(),
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
        assert_eq!(
            again,
            docs,
            "{}: injection is not idempotent",
            case.display()
        );
        let expected_path = case.join("expected.yaml");
        if update {
            std::fs::write(&expected_path, &got).expect("write expected.yaml");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            failures.push(format!(
                "{}: {}",
                case.display(),
                first_difference(&expected, &got)
            ));
        }
    }
    println!("{} injection cases checked", cases.len());
    assert!(
        failures.is_empty(),
        "injection golden mismatches (run `UPDATE_GOLDEN=1 make test` and review the diff):\n{}",
        failures.join("\n")
    );
}
