//! Conformance against Istio's own configuration corpus (`../shared/istio`, or `$ISTIO_CORPUS`):
//! every document of `validation/*-valid.yaml` must be accepted and every document of
//! `validation/*-invalid.yaml` rejected (its `_err` key says why and is stripped first), for the
//! kinds bowline models; every in-scope document of `testdata-config/*.yaml` and
//! `samples/bookinfo/networking/*.yaml` must be accepted. Kinds bowline does not model are
//! counted and skipped. Without the corpus the test is skipped, unless `CI=true`.

use std::path::{Path, PathBuf};

use bowline::model::resource::{Kind, parse_value};

fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("ISTIO_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/istio"),
    };
    if dir.join("validation").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Istio corpus not found at {} (CI=true)", dir.display());
    }
    println!(
        "Istio corpus absent at {}; skipping corpus tests",
        dir.display()
    );
    None
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Whether bowline models this document's kind (whatever its apiVersion says).
fn modeled(doc: &serde_json::Value) -> bool {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    Kind::ALL.iter().any(|k| k.as_str() == kind)
}

fn describe(doc: &serde_json::Value) -> String {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    let name = doc
        .pointer("/metadata/name")
        .and_then(|k| k.as_str())
        .unwrap_or("?");
    format!("{kind}/{name}")
}

#[derive(Default)]
struct Counts {
    valid_accepted: usize,
    invalid_rejected: usize,
    other_accepted: usize,
    skipped: usize,
    /// Per kind: valid accepted, invalid rejected, other accepted.
    by_kind: std::collections::BTreeMap<String, [usize; 3]>,
}

impl Counts {
    fn kind(&mut self, doc: &serde_json::Value, slot: usize) {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        self.by_kind.entry(kind.to_string()).or_default()[slot] += 1;
    }
}

#[test]
fn istio_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let mut counts = Counts::default();
    let mut failures = Vec::new();

    for path in yaml_files(&dir.join("validation")) {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let expect_valid = if file.ends_with("-invalid.yaml") {
            false
        } else if file.ends_with("-valid.yaml") {
            true
        } else {
            continue;
        };
        let origin = path.display().to_string();
        for mut doc in documents(&path) {
            if !modeled(&doc) {
                counts.skipped += 1;
                continue;
            }
            let why = doc
                .as_object_mut()
                .and_then(|o| o.remove("_err"))
                .map(|e| e.as_str().map(str::to_string).unwrap_or(e.to_string()));
            let what = describe(&doc);
            let kind_of = doc.clone();
            let parsed = parse_value(doc, Some(&origin));
            let errors: Vec<String> = parsed
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.to_string())
                .collect();
            if expect_valid {
                if errors.is_empty() {
                    counts.valid_accepted += 1;
                    counts.kind(&kind_of, 0);
                } else {
                    failures.push(format!("{file}: {what} rejected: {}", errors.join("; ")));
                }
            } else if errors.is_empty() {
                failures.push(format!(
                    "{file}: {what} accepted, but Istio rejects it: {}",
                    why.unwrap_or_default()
                ));
            } else {
                counts.invalid_rejected += 1;
                counts.kind(&kind_of, 1);
                println!(
                    "rejected {what} (istio: {}) -> {}",
                    why.unwrap_or_default(),
                    errors.join("; ")
                );
            }
        }
    }

    for sub in ["testdata-config", "samples/bookinfo/networking"] {
        for path in yaml_files(&dir.join(sub)) {
            let origin = path.display().to_string();
            for doc in documents(&path) {
                if !modeled(&doc) {
                    counts.skipped += 1;
                    continue;
                }
                let what = describe(&doc);
                let kind_of = doc.clone();
                let parsed = parse_value(doc, Some(&origin));
                let errors: Vec<String> = parsed
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.to_string())
                    .collect();
                if errors.is_empty() {
                    counts.other_accepted += 1;
                    counts.kind(&kind_of, 2);
                } else {
                    failures.push(format!("{origin}: {what} rejected: {}", errors.join("; ")));
                }
            }
        }
    }

    println!(
        "istio corpus: {} valid accepted, {} invalid rejected, {} other documents accepted, {} \
         documents of unmodeled kinds skipped",
        counts.valid_accepted, counts.invalid_rejected, counts.other_accepted, counts.skipped
    );
    for (kind, [valid, invalid, other]) in &counts.by_kind {
        println!(
            "  {kind}: {valid} valid accepted, {invalid} invalid rejected, {other} other accepted"
        );
    }
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
