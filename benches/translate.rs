//! Translation and encoding cost of a load scenario's mesh (S1 by default), per proxy class:
//! `cargo bench --bench translate [-- <scenario.yaml> [classes]]`.
//!
//! Measures, with std::time over a sample of distinct proxy classes: building the model from
//! the generated YAML, translating (`translate::generate`, all types), encoding to protobuf,
//! content versioning, and the cache's whole per-class build; and the bytes each type weighs
//! per proxy. Figures are printed, never asserted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bowline::cache::{Cache, Snapshot, content_version};
use bowline::envoy;
use bowline::envoy::{ResourceType, TypeSet};
use bowline::load::Scenario;
use bowline::load::mesh::{self, Mesh};
use bowline::model::resource::parse_yaml;
use bowline::model::{MeshConfig, Model, Proxy};
use bowline::translate;
use prost::Message;

fn per(d: Duration, n: usize) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1000.0 / n.max(1) as f64)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path: PathBuf = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("testdata/load/s1.yaml"));
    let classes: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50);
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut generated = Mesh::new(&scenario.mesh, Path::new("/bench"));
    let load = |mesh: &Mesh| {
        let mut resources = Vec::new();
        let mut yaml_bytes = 0;
        for (file, content) in mesh.files() {
            yaml_bytes += content.len();
            for doc in parse_yaml(&content, &file.display().to_string()) {
                if let Some(r) = doc.resource {
                    resources.push(Arc::new(r));
                }
            }
        }
        (resources, yaml_bytes)
    };

    let t = Instant::now();
    let (resources, yaml_bytes) = load(&generated);
    let parse = t.elapsed();
    let t = Instant::now();
    let model = Arc::new(Model::build(resources, vec![], MeshConfig::default()));
    let build = t.elapsed();
    println!(
        "scenario {}: {} resources ({:.1} MiB YAML), {} services",
        scenario.name,
        model.resources.len(),
        yaml_bytes as f64 / 1048576.0,
        model.registry.services.len()
    );
    println!("parse + validate YAML      {}", per(parse, 1));
    println!("Model::build               {}", per(build, 1));

    // Distinct classes: proxies of different services (spread over the namespaces).
    let identities = mesh::proxies(&scenario);
    let proxies: Vec<Proxy> = identities
        .iter()
        .take(classes)
        .filter_map(|p| {
            Proxy::parse(&p.node_id, &serde_json::Value::Object(p.metadata.clone())).ok()
        })
        .collect();
    let n = proxies.len();

    let t = Instant::now();
    let outputs: Vec<_> = proxies
        .iter()
        .map(|p| translate::generate(&model, p, TypeSet::ALL))
        .collect();
    let generate = t.elapsed();

    let t = Instant::now();
    let mut bytes = [0usize; 4];
    let mut counts = [0usize; 4];
    let mut packed = Vec::new();
    for o in &outputs {
        let mut add = |i: usize, any: envoy_types::pb::google::protobuf::Any| {
            bytes[i] += any.encoded_len();
            counts[i] += 1;
            packed.push(any);
        };
        o.clusters.iter().for_each(|c| add(0, envoy::pack(c)));
        o.endpoints.iter().for_each(|c| add(1, envoy::pack(c)));
        o.listeners.iter().for_each(|c| add(2, envoy::pack(c)));
        o.routes.iter().for_each(|c| add(3, envoy::pack(c)));
    }
    let encode = t.elapsed();

    let t = Instant::now();
    for any in &packed {
        let _ = content_version(any);
    }
    let version = t.elapsed();

    let t = Instant::now();
    let cache = Cache::new();
    let snapshot = Snapshot {
        generation: 1,
        model: model.clone(),
        changed: TypeSet::ALL,
        changed_at: Instant::now(),
        published_at: Instant::now(),
    };
    cache.observe(&snapshot);
    for p in &proxies {
        let _ = cache.resources(&snapshot, p);
    }
    let cached = t.elapsed();

    // A route edit, then an endpoint added, on service 17 (or the last one): what bringing
    // every sampled class forward costs.
    let target = 17.min(scenario.mesh.services.saturating_sub(1));
    let mut forward = Vec::new();
    let mut observed = Vec::new();
    for (generation, what) in [(2u64, "route edit"), (3, "endpoint add")] {
        let edit = if generation == 2 {
            generated.route_edit(target)
        } else {
            generated.endpoint_add(target, 1)
        };
        if edit.is_err() {
            break;
        }
        let next = Arc::new(Model::build(
            load(&generated).0,
            vec![],
            MeshConfig::default(),
        ));
        let change = next.change_from(&model);
        let snapshot = Snapshot {
            generation,
            model: next,
            changed: bowline::push::changed_types(change),
            changed_at: Instant::now(),
            published_at: Instant::now(),
        };
        let t = Instant::now();
        cache.observe(&snapshot);
        observed.push((what, t.elapsed()));
        let t = Instant::now();
        for p in &proxies {
            let _ = cache.resources(&snapshot, p);
        }
        forward.push((what, t.elapsed()));
    }

    println!("\nper proxy class (mean over {n} classes):");
    println!("translate::generate (all)  {}", per(generate, n));
    println!("encode (pack to Any)       {}", per(encode, n));
    println!("content versions           {}", per(version, n));
    println!("Cache::resources (total)   {}", per(cached, n));
    for (what, d) in forward {
        println!("  after a {what:<13}       {}", per(d, n));
    }
    println!("\nper change:");
    for (what, d) in observed {
        println!("Cache::observe, {what:<13} {}", per(d, 1));
    }
    println!("\nper proxy:");
    for t in ResourceType::CONFIG {
        let i = t as usize;
        println!(
            "{:4} {:6.0} resources {:9.1} KiB",
            t.as_str(),
            counts[i] as f64 / n.max(1) as f64,
            bytes[i] as f64 / 1024.0 / n.max(1) as f64
        );
    }
    println!(
        "all  {:6.0} resources {:9.1} KiB",
        counts.iter().sum::<usize>() as f64 / n.max(1) as f64,
        bytes.iter().sum::<usize>() as f64 / 1024.0 / n.max(1) as f64
    );
}
