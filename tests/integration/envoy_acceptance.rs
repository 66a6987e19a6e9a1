//! Envoy acceptance: everything bowline generates from the Istio corpus is loaded by a real Envoy
//! sidecar without a NACK.
//!
//! One bowline and one Envoy sidecar (namespace `default`, interception REDIRECT with its own
//! listen ports, so virtualOutbound/virtualInbound are generated) are reused; for every file of
//! `$ISTIO_CORPUS/testdata-config/*.yaml` and `$ISTIO_CORPUS/samples/bookinfo/networking/*.yaml`
//! the config directory's contents are swapped. A marker ServiceEntry written after the file tells
//! when bowline has loaded it. The file is accepted when bowline reports the proxy synced with no
//! NACK, Envoy counts no rejected update, and Envoy's own config dump has exactly the clusters and
//! active listeners bowline's `/debug/config_dump` says it sends, and every route configuration.
//!
//! Without Envoy or the corpus the test prints a skip line and passes, unless `CI=true`.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

const NS: &str = "default";
const CASE_FILE: &str = "case.yaml";

/// The proxy's own workload: a Service selecting a WorkloadEntry at the proxy's address.
fn base_yaml(net: &Net) -> String {
    docs(&[
        &service("acceptance", NS).port_to(8080, "http", 8080),
        &workload_entry("acceptance-0", NS, net.ip(10))
            .label("app", "acceptance")
            .service_account("default"),
    ])
}

fn marker_host(i: usize) -> String {
    format!("marker-{i}.acceptance.test")
}

fn marker_yaml(net: &Net, i: usize) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: marker
  namespace: {NS}
spec:
  hosts:
  - {host}
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - address: {ip}
"#,
        host = marker_host(i),
        ip = net.ip(99)
    )
}

fn corpus_files(corpus: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["testdata-config", "samples/bookinfo/networking"] {
        let dir = corpus.join(dir);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        let mut here: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        here.sort();
        files.extend(here);
    }
    files
}

struct Rig {
    envoy_bin: PathBuf,
    net: Net,
    bowline: Bowline,
    envoy: Option<Envoy>,
}

impl Rig {
    fn spec(&self) -> ProxySpec {
        // DestinationRule MUTUAL names certificate files Envoy reads itself (it rejects a
        // cluster whose files are missing): the corpus's relative paths exist in Envoy's
        // working directory, as an operator would mount them.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate")
            .pem();
        let dir = "tests/testdata/certs/default";
        ProxySpec::sidecar("acceptance-0", NS, self.net.ip(10))
            .label("app", "acceptance")
            .interception("REDIRECT")
            .file(&format!("{dir}/cert-chain.pem"), &cert)
            .file(&format!("{dir}/key.pem"), &key.serialize_pem())
            .file(&format!("{dir}/root-cert.pem"), &cert)
    }

    async fn start_envoy(&mut self) {
        self.envoy = None;
        self.envoy = Some(Envoy::start(&self.envoy_bin, &self.bowline, self.spec()).await);
    }

    fn envoy(&self) -> &Envoy {
        self.envoy.as_ref().expect("envoy started")
    }

    /// Waits until bowline has loaded marker `i`, then until Envoy has what bowline sends.
    async fn check(&self, i: usize) -> Result<(), String> {
        let proxy = self.spec().id();
        let marker = marker_host(i);

        // 1. bowline has read the directory as of the marker (and so the case file before it).
        let expected = poll(Duration::from_secs(30), async || {
            let dump = self.bowline.config_dump(&proxy).await?;
            let names = DumpNames::from_dump(&dump);
            if names.clusters.iter().any(|c| c.contains(&marker)) {
                Ok(names)
            } else {
                Err(format!(
                    "no cluster for {marker} in bowline's config_dump yet"
                ))
            }
        })
        .await?;

        // 2. Envoy holds exactly that, ACKed, with no NACK on either side.
        let envoy = self.envoy();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = self.bowline.syncz().await?;
            let p = find_proxy(&all, &proxy).ok_or_else(|| format!("{proxy} not connected"))?;
            if let Some((t, n)) = p.nacks().first() {
                return Err(format!(
                    "NACK of {t} (resources {:?}): {}",
                    n.resources, n.message
                ));
            }
            let rejected = envoy.rejections().await?;
            if rejected > 0 {
                return Err(format!("Envoy counts {rejected} rejected updates"));
            }
            let loaded = envoy.loaded().await?;
            if let Some((name, err)) = loaded.listener_errors.first() {
                return Err(format!("Envoy listener {name} in error state: {err}"));
            }
            // Route configs are compared as a subset: a listener removed from Envoy keeps
            // draining (and holding its route config) for Envoy's drain time.
            let same = loaded.clusters == expected.clusters
                && loaded.listeners == expected.listeners
                && loaded.routes.is_superset(&expected.routes);
            if p.synced() && same {
                return Ok(());
            }
            let last = format!(
                "synced={}; clusters missing in Envoy {:?}, extra {:?}, warming {:?}; \
                 listeners missing {:?}, extra {:?}; routes missing {:?}, extra (draining?) {:?}; \
                 syncz {:?}",
                p.synced(),
                expected
                    .clusters
                    .difference(&loaded.clusters)
                    .collect::<Vec<_>>(),
                loaded
                    .clusters
                    .difference(&expected.clusters)
                    .collect::<Vec<_>>(),
                loaded.warming_clusters,
                expected
                    .listeners
                    .difference(&loaded.listeners)
                    .collect::<Vec<_>>(),
                loaded
                    .listeners
                    .difference(&expected.listeners)
                    .collect::<Vec<_>>(),
                expected
                    .routes
                    .difference(&loaded.routes)
                    .collect::<Vec<_>>(),
                loaded
                    .routes
                    .difference(&expected.routes)
                    .collect::<Vec<_>>(),
                p.types,
            );
            if Instant::now() >= deadline {
                return Err(format!("not in sync after 30s: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Error diagnostics `/debug/diagnosticz` reports for the case file (informational: resources bowline
/// skips are not sent, so they cannot be NACKed).
async fn rejected_by_bowline(bowline: &Bowline) -> Vec<String> {
    let Ok(configz) = bowline.diagnosticz().await else {
        return Vec::new();
    };
    let Some(diagnostics) = configz["diagnostics"].as_array() else {
        return Vec::new();
    };
    diagnostics
        .iter()
        .filter(|d| d["origin"].as_str().is_some_and(|o| o.ends_with(CASE_FILE)))
        .filter(|d| d["severity"].as_str() != Some("warning"))
        .map(|d| {
            format!(
                "{}/{}/{}: {}: {}",
                d["kind"].as_str().unwrap_or_default(),
                d["namespace"].as_str().unwrap_or_default(),
                d["name"].as_str().unwrap_or_default(),
                d["field"].as_str().unwrap_or_default(),
                d["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_corpus_is_accepted_by_envoy() {
    let Some(envoy_bin) = envoy_bin() else {
        return;
    };
    let Some(corpus) = istio_corpus() else {
        return;
    };
    let files = corpus_files(&corpus);
    assert!(
        !files.is_empty(),
        "no corpus files under {}",
        corpus.display()
    );

    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.write("base.yaml", &base_yaml(&net));
    bowline.write("marker.yaml", &marker_yaml(&net, 0));
    bowline.start().await;
    let mut rig = Rig {
        envoy_bin,
        net,
        bowline,
        envoy: None,
    };
    rig.start_envoy().await;
    rig.check(0)
        .await
        .unwrap_or_else(|e| panic!("base config (no corpus file) not accepted: {e}"));

    let mut accepted = 0;
    let mut failures = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let i = n + 1;
        let rel = file
            .strip_prefix(&corpus)
            .unwrap_or(file)
            .display()
            .to_string();
        let yaml = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        let started = Instant::now();
        rig.bowline.remove(CASE_FILE);
        rig.bowline.write(CASE_FILE, &yaml);
        rig.bowline.write("marker.yaml", &marker_yaml(&rig.net, i));
        match rig.check(i).await {
            Ok(()) => {
                accepted += 1;
                let skipped = rejected_by_bowline(&rig.bowline).await;
                println!(
                    "accepted {rel} ({:?}; {} resource(s) of it rejected by bowline)",
                    started.elapsed(),
                    skipped.len()
                );
                for d in skipped {
                    println!("    rejected: {d}");
                }
            }
            Err(e) => {
                println!("FAILED   {rel}: {e}");
                failures.push(format!("{rel}: {e}"));
                // A fresh Envoy (new connection, clean NACK state) for the next file.
                rig.start_envoy().await;
            }
        }
    }
    println!(
        "envoy acceptance: {accepted}/{} corpus files accepted",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus files not accepted:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
