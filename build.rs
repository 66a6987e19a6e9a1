//! Build script:
//! - makes the protobuf descriptors of Envoy's API (shipped inside the envoy-types crate as
//!   `src/generated/types.bin`) available to bowline, which needs them to render Envoy resources
//!   as JSON (config dumps, golden files) and to compute canonical content versions;
//! - compiles `proto/` (bowline's definitions of Istio's certificate service and of the name
//!   table pilot-agent's DNS proxy asks for) with protox and tonic-prost-build, without a
//!   system protoc. Well-known types resolve to envoy-types' `google.protobuf`, so a `Struct`
//!   is the same Rust type everywhere;
//! - stamps the source revision into `BOWLINE_GIT_REVISION` and `BOWLINE_BUILD_STATUS`
//!   (`Clean` or `Modified`, as Istio's builds do), for istiod's `/version`. Without git (or
//!   with `BOWLINE_GIT_REVISION` set in the environment) the revision is taken as given, else
//!   `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

const DESCRIPTORS: &str = "src/generated/types.bin";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let source = from_registry(&manifest_dir)
        .or_else(|| from_metadata(&manifest_dir))
        .expect("the envoy-types crate source (with src/generated/types.bin) is found");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"))
        .join("envoy_descriptors.bin");
    std::fs::copy(source.join(DESCRIPTORS), &out).expect("copy envoy descriptors");
    compile_protos(&manifest_dir);
    stamp_revision(&manifest_dir);
}

/// `git rev-parse HEAD` and whether tracked files differ from it, as of this build script's run
/// (it runs again when HEAD, the branch it names, or the index change).
fn stamp_revision(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=BOWLINE_GIT_REVISION");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (revision, status) = match std::env::var("BOWLINE_GIT_REVISION") {
        Ok(r) if !r.is_empty() => (r, "Clean".to_string()),
        _ => match git(&["rev-parse", "HEAD"]) {
            Some(head) => {
                for path in ["HEAD", "index"] {
                    if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                        println!("cargo:rerun-if-changed={}", manifest_dir.join(p).display());
                    }
                }
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                    && let Some(p) = git(&["rev-parse", "--git-path", &branch])
                {
                    println!("cargo:rerun-if-changed={}", manifest_dir.join(p).display());
                }
                let clean = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| s.is_empty());
                (head, if clean { "Clean" } else { "Modified" }.to_string())
            }
            None => ("unknown".to_string(), "Clean".to_string()),
        },
    };
    println!("cargo:rustc-env=BOWLINE_GIT_REVISION={revision}");
    println!("cargo:rustc-env=BOWLINE_BUILD_STATUS={status}");
}

/// `proto/**/*.proto` → Rust (messages, tonic client and server) in OUT_DIR.
fn compile_protos(manifest_dir: &Path) {
    const PROTOS: &[&str] = &[
        "istio/v1/auth/ca.proto",
        "istio/networking/nds/v1/nds.proto",
    ];
    let root = manifest_dir.join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(PROTOS, [&root]).expect("proto/ compiles");
    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::envoy_types::pb::google::protobuf")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
        .expect("generate Rust for proto/");
}

/// The locked envoy-types version, unpacked in cargo's registry cache.
fn from_registry(manifest_dir: &Path) -> Option<PathBuf> {
    let lock = std::fs::read_to_string(manifest_dir.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    let version = loop {
        let line = lines.next()?;
        if line.trim() == "name = \"envoy-types\"" {
            let v = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            break v.to_string();
        }
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let registries = std::fs::read_dir(cargo_home.join("registry/src")).ok()?;
    registries
        .filter_map(Result::ok)
        .map(|r| r.path().join(format!("envoy-types-{version}")))
        .find(|p| p.join(DESCRIPTORS).exists())
}

/// Asks cargo where the envoy-types package is.
fn from_metadata(manifest_dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let manifest = metadata["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "envoy-types")?["manifest_path"]
        .as_str()?
        .to_string();
    Some(PathBuf::from(manifest).parent()?.to_path_buf())
}
