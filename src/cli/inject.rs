//! `bowline inject`: `istioctl kube-inject` for bowline's stock Envoy sidecar. Reads
//! multi-document YAML (or JSON), injects Pods and the pod templates of Deployments,
//! StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs and CronJobs (and the
//! items of a List) with the webhook's own mutation (`webhook::inject::inject_pod`), passes
//! every other document through, and prints YAML.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::webhook::inject::{
    DEFAULT_INJECTOR_IMAGE, DEFAULT_PROXY_IMAGE, Options, Outcome, inject_pod, workload_name,
};

/// What injected sidecars run and connect to (shared by `serve` and `inject`).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectorArgs {
    /// The Envoy image of injected `istio-proxy` containers (a pod's
    /// `sidecar.istio.io/proxyImage` annotation overrides it).
    #[arg(long = "proxy-image", env = "BOWLINE_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// bowline's image, run by the injected `istio-init` container (`bowline istio-iptables`
    /// and `bowline bootstrap`); it needs iptables-restore or iptables.
    #[arg(long = "injector-image", env = "BOWLINE_INJECTOR_IMAGE", default_value = DEFAULT_INJECTOR_IMAGE)]
    pub injector_image: String,
    /// bowline's TLS xDS address as injected sidecars reach it. Default:
    /// `istiod.<system namespace>.svc:15012`.
    #[arg(long = "discovery-address", env = "BOWLINE_DISCOVERY_ADDRESS")]
    pub discovery_address: Option<String>,
    /// Lifetime of the projected `istio-ca` token injected sidecars prove their identity
    /// with. Envoy sends it whenever its xDS stream (re)connects and cannot re-read it: a
    /// sidecar older than this cannot reconnect until its pod is restarted.
    #[arg(long = "injected-token-ttl", env = "BOWLINE_INJECTED_TOKEN_TTL", default_value = "720h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Inject `istio-proxy` as a native sidecar (an init container with restartPolicy
    /// Always, so Jobs complete); `sidecar.istio.io/nativeSidecar` overrides it per pod.
    #[arg(long = "native-sidecars", env = "BOWLINE_NATIVE_SIDECARS")]
    pub native_sidecars: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::model::networking::parse_duration(s)
}

impl InjectorArgs {
    /// The injection options, checked (bad flags are start-up errors).
    pub fn options(&self, system_namespace: &str) -> anyhow::Result<Options> {
        let mut opts = Options::new(system_namespace);
        opts.proxy_image = self.proxy_image.clone();
        opts.injector_image = self.injector_image.clone();
        if let Some(addr) = &self.discovery_address {
            let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                bail!("--discovery-address {addr:?}: not host:port");
            }
            opts.discovery_address = addr.clone();
        }
        let secs = self.token_ttl.as_secs();
        if secs < 600 {
            bail!(
                "--injected-token-ttl {:?}: Kubernetes requires at least 10m",
                self.token_ttl
            );
        }
        opts.token_expiration_seconds = i64::try_from(secs).unwrap_or(i64::MAX);
        opts.native_sidecars = self.native_sidecars;
        for (flag, image) in [
            ("--proxy-image", &opts.proxy_image),
            ("--injector-image", &opts.injector_image),
        ] {
            if image.trim().is_empty() {
                bail!("{flag}: empty");
            }
        }
        Ok(opts)
    }
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifests to inject: a file, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// The namespace bowline (istiod) runs in.
    #[arg(long = "system-namespace", default_value = "istio-system")]
    pub system_namespace: String,
    #[command(flatten)]
    pub injector: InjectorArgs,
}

/// Namespaces never injected (istiod's), checked on the workload for pod templates.
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public"];

fn describe(doc: &Value) -> String {
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (kind, ns, name) = (s("/kind"), s("/metadata/namespace"), s("/metadata/name"));
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Injects one document (in place); notes go to `notes`.
fn inject_document(doc: &mut Value, opts: &Options, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let template_path = match kind.as_str() {
        "Pod" => "",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        "List" => {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    inject_document(item, opts, notes)?;
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let what = describe(doc);
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if IGNORED_NAMESPACES.contains(&namespace) {
        notes.push(format!("{what}: not injected: in namespace {namespace}"));
        return Ok(());
    }
    let workload = if template_path.is_empty() {
        workload_name(doc)
    } else {
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let Some(target) = doc.pointer_mut(template_path) else {
        bail!("{what}: no {}", &template_path[1..].replace('/', "."));
    };
    match inject_pod(target, &workload, opts).with_context(|| what.clone())? {
        Outcome::Injected { pod, warnings } => {
            *target = pod;
            notes.extend(warnings.into_iter().map(|w| format!("{what}: {w}")));
        }
        Outcome::Skipped(why) => notes.push(format!("{what}: not injected: {why}")),
    }
    Ok(())
}

/// Injects every document of `text`; returns the YAML stream and notes for the user.
pub fn inject_text(text: &str, opts: &Options) -> anyhow::Result<(String, Vec<String>)> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("parsing the input")?;
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        inject_document(&mut doc, opts, &mut notes)?;
        out.push(serde_saphyr::to_string(&doc).context("rendering YAML")?);
    }
    Ok((out.join("---\n"), notes))
}

pub fn run(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let opts = args.injector.options(&args.system_namespace)?;
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let (yaml, notes) = inject_text(&text, &opts)?;
    for note in notes {
        eprintln!("{note}");
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::new("istio-system")
    }

    fn docs(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(yaml).expect("output parses")
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web:1}]
";

    /// A workload's template gets exactly what a pod with the same metadata and spec gets.
    #[test]
    fn templates_and_pods_get_the_same_mutation() {
        let (out, notes) = inject_text(DEPLOYMENT, &opts()).expect("injects");
        assert!(notes.is_empty(), "{notes:?}");
        let d = &docs(&out)[0];
        let template = d.pointer("/spec/template").expect("template");
        let pod: Value = serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]}
        });
        let Outcome::Injected { pod: want, .. } = inject_pod(&pod, "web", &opts()).expect("pod")
        else {
            panic!("pod not injected");
        };
        assert_eq!(template, &want);
        assert_eq!(d["metadata"]["name"], "web");
    }

    #[test]
    fn every_workload_kind_and_passthrough() {
        let input = format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec: {{restartPolicy: Never, containers: [{{name: job, image: j}}]}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Pod, metadata: {{name: p}}, spec: {{containers: [{{name: c, image: i}}]}}}}\n",
            DEPLOYMENT
        );
        let (out, _) = inject_text(&input, &opts()).expect("injects");
        let d = docs(&out);
        assert_eq!(d.len(), 4);
        let proxy_in = |v: &Value| v.to_string().contains("\"istio-proxy\"");
        assert!(proxy_in(&d[0]));
        assert!(!proxy_in(&d[1]));
        assert_eq!(d[1], docs(&input)[1], "a Service passes unchanged");
        assert!(proxy_in(
            d[2].pointer("/spec/jobTemplate/spec/template")
                .expect("cron template")
        ));
        assert_eq!(
            d[2].pointer(
                "/spec/jobTemplate/spec/template/metadata/labels/service.istio.io~1canonical-name"
            ),
            Some(&Value::String("nightly".into()))
        );
        assert!(proxy_in(&d[3]["items"][0]));

        // Injecting the output again changes nothing.
        let (again, notes) = inject_text(&out, &opts()).expect("re-inject");
        assert_eq!(docs(&again), d);
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn ignored_namespaces_and_errors() {
        let (out, notes) =
            inject_text(&DEPLOYMENT.replace("shop", "kube-system"), &opts()).expect("no error");
        assert!(!out.contains("istio-proxy"));
        assert_eq!(
            notes,
            ["Deployment kube-system/web: not injected: in namespace kube-system"]
        );
        let err = inject_text(
            &DEPLOYMENT.replace("containers: [{name: app, image: web:1}]", "containers: []"),
            &opts(),
        )
        .expect_err("no containers");
        assert!(
            format!("{err:#}").contains("Deployment shop/web"),
            "{err:#}"
        );
    }
}
