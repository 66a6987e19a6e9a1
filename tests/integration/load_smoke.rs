//! `bowline load` end to end on the smoke scenario (testdata/load/smoke.yaml): the load
//! generator runs bowline itself, makes every kind of change (route edit, endpoint add and
//! removal, new service, churn, restart) and must see every proxy converge after each one,
//! with no resource that fails to decode. With stuck proxies (which stop reading once in
//! sync), every other proxy must still converge. Correctness only: no timing is asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(mode: &str, extra: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // One directory per run: the tests run in parallel in one process.
    let tag = extra.join("").replace('-', "");
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "bowline-load-smoke-{mode}{tag}-{}",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["load", "--spawn", "--json", "--quiet", "--mode", mode])
        .args(extra)
        .arg("--config-dir")
        .arg(&dir)
        .arg("--max-duration")
        .arg("10m")
        .arg(root.join("testdata/load/smoke.yaml"))
        .output()
        .expect("bowline runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    report
}

fn check(report: &serde_json::Value, reached_in_one_namespace: u64) {
    let phases = report["phases"].as_array().expect("phases");
    // connect + 7 timeline steps.
    assert_eq!(phases.len(), 8, "{report:#}");
    for phase in phases {
        let name = phase["name"].as_str().unwrap_or_default();
        assert!(
            phase["expected"].as_u64().unwrap_or(0) > 0,
            "{name}: no proxy expected"
        );
        assert_eq!(
            phase["converged"], phase["expected"],
            "{name}: not every proxy converged: {phase:#}"
        );
        assert_eq!(phase["errors"], 0, "{name}: {phase:#}");
        assert!(phase.get("problem").is_none(), "{name}: {phase:#}");
    }
    // Scoping: a change in one namespace reaches only its proxies (50 proxies, 5 namespaces).
    assert_eq!(
        phases[1]["expected"], reached_in_one_namespace,
        "{:#}",
        phases[1]
    );
    assert_eq!(report["errors"], 0);
    assert_eq!(report["nacks"], 0);
    assert_eq!(report["ok"], true);
}

#[test]
fn smoke_delta() {
    check(&run("delta", &[]), 10);
}

#[test]
fn smoke_state_of_the_world() {
    check(&run("sotw", &[]), 10);
}

#[test]
fn stuck_proxies_delay_no_one() {
    // The first 5 proxies, one per namespace, stop reading responses once in sync.
    let report = run("delta", &["--stalled", "5"]);
    assert_eq!(report["stalled"], 5);
    check(&report, 9);
}
