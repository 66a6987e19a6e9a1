//! Sidecar injection for stock Envoy: istiod's `/inject` webhook and `istioctl kube-inject`,
//! without istio-agent.
//!
//! Contract: [`inject_pod`] is the one pure mutation of a pod (or a workload's pod template:
//! anything with `metadata` and `spec`), shared by the webhook and `bowline inject`. It adds
//! what istiod adds, in istiod's names:
//!
//! - the init container `istio-init`, running bowline's own image: `bowline istio-iptables`
//!   with istio-init's flags (honouring the `traffic.sidecar.istio.io/*` annotations), which
//!   first writes the pod's Envoy bootstrap (`-- bootstrap ...`: downward-API name, namespace,
//!   IP, service account and labels; bowline's TLS port with the projected `istio-ca` token and
//!   the mesh root from `istio-ca-root-cert`) into the `istio-envoy` emptyDir;
//! - the container `istio-proxy`: stock Envoy on that bootstrap as uid/gid 1337, Prometheus
//!   stats on 15090 and readiness on 15021 (`/healthz/ready`, Envoy's `/ready`) — or, with
//!   native sidecars, the same as a restartable init container after `istio-init`;
//! - the volumes `istio-envoy`, `istio-podinfo`, `istio-token`, `istiod-ca-cert`;
//! - the labels `security.istio.io/tlsMode`, `service.istio.io/canonical-name` and
//!   `canonical-revision` (kept when present), and the annotations `sidecar.istio.io/status`
//!   (istiod's JSON) and `kubectl.kubernetes.io/default-container`.
//!
//! A pod already injected (status annotation or an `istio-proxy` container), opted out
//! (`sidecar.istio.io/inject` label, else annotation, not y/yes/true/on), on the host network,
//! or in kube-system/kube-public is left as it is. Which pods are asked about at all is the
//! MutatingWebhookConfiguration's selectors' business, as with istiod.
//!
//! A pod annotated `inject.istio.io/templates: gateway` gets istiod's `gateway` template
//! instead (see [`gateway`]): no capture, a router bootstrap, and the `istio-proxy` container
//! the pod declares filled in. `sidecar` names the default; any other template name, or more
//! than one, denies the pod as istiod denies a template it does not have.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

mod gateway;

/// The init container that installs the capture and writes the bootstrap.
pub const INIT_CONTAINER: &str = "istio-init";
/// A gateway's init container: it only writes the bootstrap.
pub const BOOTSTRAP_CONTAINER: &str = "istio-bootstrap";
/// The injection templates a pod asks for (istiod's annotation).
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";
/// The Envoy container.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// istiod's injection status annotation.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// The proxy's uid and gid; its traffic is never captured.
pub const PROXY_UID: i64 = 1337;
pub const PROXY_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Envoy's Prometheus stats (istio's `http-envoy-prom`).
pub const PROMETHEUS_PORT: u16 = 15090;
/// `/healthz/ready`, as istio's sidecars serve it.
pub const READINESS_PORT: u16 = 15021;
/// istio-agent's status port: not used here, excluded from capture as istio does.
pub const STATUS_PORT: u16 = 15020;
/// The audience of the projected token bowline's TokenReview accepts.
pub const TOKEN_AUDIENCE: &str = "istio-ca";

const VOLUME_ENVOY: &str = "istio-envoy";
const VOLUME_PODINFO: &str = "istio-podinfo";
const VOLUME_TOKEN: &str = "istio-token";
const VOLUME_ROOT: &str = "istiod-ca-cert";
const ENVOY_DIR: &str = "/etc/istio/proxy";
const BOOTSTRAP_FILE: &str = "/etc/istio/proxy/envoy.json";
const PODINFO_DIR: &str = "/etc/istio/pod";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_DIR: &str = "/var/run/secrets/istio";

/// Namespaces istiod never injects into.
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public"];

/// What the injected containers run and connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The Envoy image of `istio-proxy` (`sidecar.istio.io/proxyImage` overrides it).
    pub proxy_image: String,
    /// bowline's image, for `istio-init`.
    pub injector_image: String,
    /// bowline's TLS xDS address as the pods reach it (`istiod.<ns>.svc:15012`).
    pub discovery_address: String,
    /// Lifetime requested for the projected `istio-ca` token (seconds, at least 600). Envoy
    /// sends it whenever its xDS stream (re)connects and cannot re-read it.
    pub token_expiration_seconds: i64,
    /// Inject `istio-proxy` as a native sidecar (a restartable init container) by default
    /// (`sidecar.istio.io/nativeSidecar` overrides it per pod).
    pub native_sidecars: bool,
}

/// The default Envoy image: the stock release bowline is built and tested against.
pub const DEFAULT_PROXY_IMAGE: &str = "envoyproxy/envoy:v1.40.0";
/// The default image for `istio-init`: bowline's own.
pub const DEFAULT_INJECTOR_IMAGE: &str = concat!("bowline:", env!("CARGO_PKG_VERSION"));

impl Options {
    /// Defaults for a bowline installed as `istiod` in `system_namespace`.
    pub fn new(system_namespace: &str) -> Options {
        Options {
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            injector_image: DEFAULT_INJECTOR_IMAGE.into(),
            discovery_address: format!("istiod.{system_namespace}.svc:15012"),
            token_expiration_seconds: 30 * 24 * 3600,
            native_sidecars: false,
        }
    }

    /// The name bowline's serving certificate is checked for: the discovery address' host.
    fn xds_server_name(&self) -> &str {
        match self.discovery_address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.discovery_address,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("{0} is not an object")]
    NotAnObject(&'static str),
    #[error("spec.containers: a pod needs at least one container")]
    NoContainers,
    #[error("{field}: {name:?} is already taken")]
    NameTaken { field: &'static str, name: String },
    #[error(
        "annotation {TEMPLATES_ANNOTATION}: requested template {0:?} not found; have sidecar, gateway"
    )]
    UnknownTemplate(String),
    #[error("annotation {name}: {value:?}: {reason}")]
    BadAnnotation {
        name: String,
        value: String,
        reason: String,
    },
}

/// Why a pod was left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    AlreadyInjected,
    OptedOut,
    HostNetwork,
    IgnoredNamespace(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::AlreadyInjected => write!(f, "already injected"),
            Skip::OptedOut => write!(f, "opted out ({INJECT_LABEL})"),
            Skip::HostNetwork => write!(f, "on the host network"),
            Skip::IgnoredNamespace(ns) => write!(f, "in namespace {ns}, never injected"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The injected pod, and warnings for the user.
    Injected {
        pod: Value,
        warnings: Vec<String>,
    },
    Skipped(Skip),
}

/// The injection template a pod asks for (`inject.istio.io/templates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// istiod's default: capture and a sidecar proxy.
    Sidecar,
    /// istiod's `gateway`: the pod is a gateway (a `router` proxy), nothing is captured.
    Gateway,
}

impl Template {
    /// The template `annotations` name: `sidecar` without the annotation. istiod overlays a
    /// list of templates in order; bowline applies one, so a list naming two is refused, as is
    /// a name it does not have (istiod denies those pods too).
    pub fn of(annotations: &BTreeMap<String, String>) -> Result<Template, InjectError> {
        let Some(value) = annotations.get(TEMPLATES_ANNOTATION) else {
            return Ok(Template::Sidecar);
        };
        let mut chosen = Vec::new();
        for name in value.split(',').map(str::trim) {
            let template = match name {
                "sidecar" => Template::Sidecar,
                "gateway" => Template::Gateway,
                other => return Err(InjectError::UnknownTemplate(other.to_string())),
            };
            if !chosen.contains(&template) {
                chosen.push(template);
            }
        }
        match chosen[..] {
            [one] => Ok(one),
            _ => Err(bad(
                TEMPLATES_ANNOTATION,
                value,
                "one template per pod: bowline does not combine templates",
            )),
        }
    }
}

fn strings(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the pod's own choice (label first, then annotation) allows injection: istiod's
/// reading, where only y/yes/true/on opt in and anything else opts out.
fn opted_in(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> bool {
    let choice = labels
        .get(INJECT_LABEL)
        .or_else(|| annotations.get(INJECT_LABEL))
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(choice.as_str(), "" | "y" | "yes" | "true" | "on")
}

/// The workload a pod belongs to, as istiod guesses it from a pod at admission: the
/// controller's name, a Deployment's for a ReplicaSet's pod (pod-template-hash stripped), a
/// CronJob's for its Job's pod; otherwise the pod's own name.
pub fn workload_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (name, generate_name) = (field("name"), field("generateName"));
    let mut workload = name.clone();
    if !generate_name.is_empty() {
        let controller = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            });
        if let Some(owner) = controller {
            let kind = owner
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let owner_name = owner
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            workload = owner_name.to_string();
            let hash = strings(meta.and_then(|m| m.get("labels")))
                .get("pod-template-hash")
                .cloned()
                .unwrap_or_default();
            if kind == "ReplicaSet" && !hash.is_empty() {
                if let Some(d) = owner_name.strip_suffix(&format!("-{hash}")) {
                    workload = d.to_string();
                }
            } else if kind == "Job"
                && let Some((cron, suffix)) = owner_name.rsplit_once('-')
                && (8..=10).contains(&suffix.len())
                && suffix.bytes().all(|b| b.is_ascii_digit())
                && !cron.is_empty()
            {
                workload = cron.to_string();
            }
        }
    }
    if workload.is_empty() {
        workload = generate_name.trim_end_matches('-').to_string();
    }
    workload
}

fn bad(name: &str, value: &str, reason: impl Into<String>) -> InjectError {
    InjectError::BadAnnotation {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn check_ports(name: &str, value: &str, wildcard: bool) -> Result<(), InjectError> {
    if wildcard && value.trim() == "*" {
        return Ok(());
    }
    for p in list(value) {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            return Err(bad(name, value, format!("{p:?} is not a port")));
        }
    }
    Ok(())
}

fn check_ranges(name: &str, value: &str, wildcard: bool) -> Result<(), InjectError> {
    if wildcard && value.trim() == "*" {
        return Ok(());
    }
    for r in list(value) {
        if r.parse::<ipnet::IpNet>().is_err() && r.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(name, value, format!("{r:?} is not a CIDR")));
        }
    }
    Ok(())
}

const ANNOTATION_INCLUDE_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
const ANNOTATION_EXCLUDE_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
const ANNOTATION_INCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/includeInboundPorts";
const ANNOTATION_EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const ANNOTATION_EXCLUDE_OUTBOUND: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
const ANNOTATION_INCLUDE_OUTBOUND: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
const ANNOTATION_STATUS_PORT: &str = "status.sidecar.istio.io/port";
const ANNOTATION_INTERCEPTION: &str = "sidecar.istio.io/interceptionMode";
const ANNOTATION_PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
const ANNOTATION_LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
const ANNOTATION_NATIVE: &str = "sidecar.istio.io/nativeSidecar";

/// istio's `excludeInboundPort`: the status port joins the exclusions unless already there.
fn exclude_inbound_port(port: &str, excluded: &str) -> String {
    let port = port.trim();
    if port.is_empty() || port == "0" {
        return excluded.to_string();
    }
    let mut out: Vec<&str> = list(excluded).collect();
    if out.contains(&port) {
        return excluded.to_string();
    }
    out.push(port);
    out.join(",")
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn to_value<T: serde::Serialize>(t: &T) -> Value {
    // k8s-openapi types always serialize.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// istiod's status annotation, fields in its order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Option<Vec<&'a str>>,
    containers: Option<Vec<&'a str>>,
    volumes: Option<Vec<&'a str>>,
    image_pull_secrets: Option<Vec<&'a str>>,
    revision: &'a str,
}

/// Injects the sidecar, or the gateway, into `pod` (a Pod, or a pod template: `metadata` and
/// `spec`). `workload` names the workload, the canonical name when the labels give none.
///
/// The steps, in order: read what the pod has; skip it (already injected, opted out, host
/// network, an ignored namespace) or refuse it (an unknown template, names the injection needs
/// are taken); read the injection settings from its annotations; make the containers and
/// volumes of its template; add them; label and annotate the pod as istiod does.
pub fn inject_pod(pod: &Value, workload: &str, opts: &Options) -> Result<Outcome, InjectError> {
    let found = Found::read(pod)?;
    if let Some(skip) = found.skip() {
        return Ok(Outcome::Skipped(skip));
    }
    let template = Template::of(&found.annotations)?;
    // A sidecar pod that declares the proxy container itself was injected by other means; a
    // gateway pod declares it for the injector to fill in.
    if template == Template::Sidecar && found.has_proxy() {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    found.check_names(template)?;
    let mut settings = Settings::read(&found.annotations, opts)?;
    let injection = match template {
        Template::Sidecar => Injection {
            init: init_container(&settings, opts),
            proxy: proxy_container(&settings, &found.annotations),
            volumes: volumes(opts),
            place: if settings.native {
                Place::NativeSidecar
            } else {
                Place::Sidecar
            },
        },
        Template::Gateway => {
            settings.native = false;
            settings
                .warnings
                .extend(gateway::unused_annotations(&found.annotations));
            Injection {
                init: gateway::bootstrap_container(opts),
                proxy: proxy_container(&settings, &found.annotations),
                volumes: volumes(opts),
                place: Place::Gateway,
            }
        }
    };
    let mut out = pod.clone();
    let status = injection.add_to(&mut out)?;
    label_and_annotate(&mut out, &found, workload, template, status)?;
    Ok(Outcome::Injected {
        pod: out,
        warnings: settings.warnings,
    })
}

/// What the pod has before injection.
struct Found {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    namespace: Option<String>,
    host_network: bool,
    containers: Vec<String>,
    init_containers: Vec<String>,
    volumes: Vec<String>,
}

impl Found {
    fn read(pod: &Value) -> Result<Found, InjectError> {
        let object = pod.as_object().ok_or(InjectError::NotAnObject("the pod"))?;
        let meta = object.get("metadata");
        if meta.is_some_and(|m| !m.is_object()) {
            return Err(InjectError::NotAnObject("metadata"));
        }
        let spec = object
            .get("spec")
            .and_then(Value::as_object)
            .ok_or(InjectError::NotAnObject("spec"))?;
        Ok(Found {
            labels: strings(meta.and_then(|m| m.get("labels"))),
            annotations: strings(meta.and_then(|m| m.get("annotations"))),
            namespace: meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_string),
            host_network: spec.get("hostNetwork").and_then(Value::as_bool) == Some(true),
            containers: names(spec.get("containers")),
            init_containers: names(spec.get("initContainers")),
            volumes: names(spec.get("volumes")),
        })
    }

    /// Why the pod is left as it is, if it is.
    fn skip(&self) -> Option<Skip> {
        if self.annotations.contains_key(STATUS_ANNOTATION) {
            return Some(Skip::AlreadyInjected);
        }
        if !opted_in(&self.labels, &self.annotations) {
            return Some(Skip::OptedOut);
        }
        if self.host_network {
            return Some(Skip::HostNetwork);
        }
        self.namespace
            .as_deref()
            .filter(|ns| IGNORED_NAMESPACES.contains(ns))
            .map(|ns| Skip::IgnoredNamespace(ns.to_string()))
    }

    /// The pod declares an `istio-proxy` container (or native sidecar) of its own.
    fn has_proxy(&self) -> bool {
        self.containers.iter().any(|c| c == PROXY_CONTAINER)
            || self.init_containers.iter().any(|c| c == PROXY_CONTAINER)
    }

    /// The pod has containers, and none of the names the template adds is taken.
    fn check_names(&self, template: Template) -> Result<(), InjectError> {
        if self.containers.is_empty() {
            return Err(InjectError::NoContainers);
        }
        let init = match template {
            Template::Sidecar => INIT_CONTAINER,
            Template::Gateway => BOOTSTRAP_CONTAINER,
        };
        let taken = |field, name: &str| InjectError::NameTaken {
            field,
            name: name.into(),
        };
        if self.init_containers.iter().any(|c| c == init) {
            return Err(taken("spec.initContainers", init));
        }
        // A gateway's proxy is a container: one declared among the init containers is not
        // where the template fills it in.
        if template == Template::Gateway
            && self.init_containers.iter().any(|c| c == PROXY_CONTAINER)
        {
            return Err(taken("spec.initContainers", PROXY_CONTAINER));
        }
        for v in [VOLUME_ENVOY, VOLUME_PODINFO, VOLUME_TOKEN, VOLUME_ROOT] {
            if self.volumes.iter().any(|n| n == v) {
                return Err(taken("spec.volumes", v));
            }
        }
        Ok(())
    }
}

/// The injection settings a pod's annotations choose (istiod's annotations), checked.
struct Settings {
    include_ranges: String,
    exclude_ranges: String,
    include_inbound: String,
    exclude_inbound: String,
    status_port: String,
    exclude_outbound: Option<String>,
    include_outbound: Option<String>,
    /// Interception mode: REDIRECT or NONE.
    mode: &'static str,
    log_level: String,
    native: bool,
    proxy_image: String,
    warnings: Vec<String>,
}

impl Settings {
    fn read(
        annotations: &BTreeMap<String, String>,
        opts: &Options,
    ) -> Result<Settings, InjectError> {
        let annotation = |k: &str| annotations.get(k).map(String::as_str);
        let mut warnings = Vec::new();
        let include_ranges = annotation(ANNOTATION_INCLUDE_RANGES).unwrap_or("*");
        check_ranges(ANNOTATION_INCLUDE_RANGES, include_ranges, true)?;
        let exclude_ranges = annotation(ANNOTATION_EXCLUDE_RANGES).unwrap_or("");
        check_ranges(ANNOTATION_EXCLUDE_RANGES, exclude_ranges, false)?;
        let include_inbound = annotation(ANNOTATION_INCLUDE_INBOUND).unwrap_or("*");
        check_ports(ANNOTATION_INCLUDE_INBOUND, include_inbound, true)?;
        let exclude_inbound = annotation(ANNOTATION_EXCLUDE_INBOUND).unwrap_or("");
        check_ports(ANNOTATION_EXCLUDE_INBOUND, exclude_inbound, false)?;
        let status_port = annotation(ANNOTATION_STATUS_PORT)
            .map(str::to_string)
            .unwrap_or_else(|| STATUS_PORT.to_string());
        if status_port.trim() != "0" {
            check_ports(ANNOTATION_STATUS_PORT, &status_port, false)?;
        }
        let exclude_outbound = annotation(ANNOTATION_EXCLUDE_OUTBOUND);
        if let Some(v) = exclude_outbound {
            check_ports(ANNOTATION_EXCLUDE_OUTBOUND, v, false)?;
        }
        let include_outbound = annotation(ANNOTATION_INCLUDE_OUTBOUND);
        if let Some(v) = include_outbound {
            check_ports(ANNOTATION_INCLUDE_OUTBOUND, v, false)?;
        }
        let mode = match annotation(ANNOTATION_INTERCEPTION).unwrap_or("REDIRECT") {
            "REDIRECT" => "REDIRECT",
            "NONE" => "NONE",
            "TPROXY" => {
                warnings.push(format!(
                    "{ANNOTATION_INTERCEPTION}: TPROXY is not supported without istio-agent; REDIRECT is used"
                ));
                "REDIRECT"
            }
            other => {
                return Err(bad(
                    ANNOTATION_INTERCEPTION,
                    other,
                    "not REDIRECT, TPROXY or NONE",
                ));
            }
        };
        let log_level = annotation(ANNOTATION_LOG_LEVEL).unwrap_or("warning");
        if ![
            "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
        ]
        .contains(&log_level)
        {
            return Err(bad(
                ANNOTATION_LOG_LEVEL,
                log_level,
                "not an Envoy log level",
            ));
        }
        let native = match annotation(ANNOTATION_NATIVE).map(|s| s.to_ascii_lowercase()) {
            None => opts.native_sidecars,
            Some(s) if s == "true" => true,
            Some(s) if s == "false" => false,
            Some(s) => return Err(bad(ANNOTATION_NATIVE, &s, "not true or false")),
        };
        Ok(Settings {
            include_ranges: include_ranges.to_string(),
            exclude_ranges: exclude_ranges.to_string(),
            include_inbound: include_inbound.to_string(),
            exclude_inbound: exclude_inbound.to_string(),
            status_port,
            exclude_outbound: exclude_outbound.map(str::to_string),
            include_outbound: include_outbound.map(str::to_string),
            mode,
            log_level: log_level.to_string(),
            native,
            proxy_image: annotation(ANNOTATION_PROXY_IMAGE)
                .unwrap_or(&opts.proxy_image)
                .to_string(),
            warnings,
        })
    }
}

/// istio-init: the capture (`bowline istio-iptables`), after it writes the bootstrap.
fn init_container(settings: &Settings, opts: &Options) -> Container {
    let mut args: Vec<String> = [
        "istio-iptables",
        "-p",
        &PROXY_PORT.to_string(),
        "-z",
        &INBOUND_CAPTURE_PORT.to_string(),
        "-u",
        &PROXY_UID.to_string(),
        "-m",
        settings.mode,
        "-i",
        &settings.include_ranges,
        "-x",
        &settings.exclude_ranges,
        "-b",
        &settings.include_inbound,
        "-d",
        &format!(
            "{PROMETHEUS_PORT},{READINESS_PORT},{}",
            exclude_inbound_port(&settings.status_port, &settings.exclude_inbound)
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(v) = &settings.exclude_outbound {
        args.extend(["-o".to_string(), v.clone()]);
    }
    if let Some(v) = &settings.include_outbound {
        args.extend(["-q".to_string(), v.clone()]);
    }
    args.push("--".to_string());
    args.extend(bootstrap_args(
        opts,
        [
            format!("--interception-mode={}", settings.mode),
            format!("--proxy-listen-port={PROXY_PORT}"),
            format!("--proxy-inbound-listen-port={INBOUND_CAPTURE_PORT}"),
        ],
    ));
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(opts.injector_image.clone()),
        args: Some(args),
        env: Some(downward_env()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        volume_mounts: Some(bootstrap_mounts()),
        ..Default::default()
    }
}

/// `bowline bootstrap`'s arguments for the pod's proxy: who it is (downward API), bowline's TLS
/// port with the projected token and the mesh root, `proxy` (what the proxy type adds), and
/// the stats and readiness ports.
fn bootstrap_args(opts: &Options, proxy: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut args = vec![
        "bootstrap".to_string(),
        format!("--output={BOOTSTRAP_FILE}"),
        "--name=$(POD_NAME)".to_string(),
        "--namespace=$(POD_NAMESPACE)".to_string(),
        "--ip=$(INSTANCE_IP)".to_string(),
        "--service-account=$(SERVICE_ACCOUNT)".to_string(),
        format!("--labels-file={PODINFO_DIR}/labels"),
        format!("--xds-addr={}", opts.discovery_address),
        format!("--xds-server-name={}", opts.xds_server_name()),
        format!("--token-file={TOKEN_DIR}/{VOLUME_TOKEN}"),
        format!("--root-cert={ROOT_DIR}/root-cert.pem"),
    ];
    args.extend(proxy);
    args.extend([
        format!("--prometheus-port={PROMETHEUS_PORT}"),
        format!("--readiness-port={READINESS_PORT}"),
    ]);
    args
}

/// The downward-API values `bootstrap_args` names.
fn downward_env() -> Vec<EnvVar> {
    vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_field("INSTANCE_IP", "status.podIP"),
        env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ]
}

/// What writing the bootstrap reads (labels, token, root) and where it writes it.
fn bootstrap_mounts() -> Vec<VolumeMount> {
    vec![
        mount(VOLUME_ENVOY, ENVOY_DIR, false),
        mount(VOLUME_PODINFO, PODINFO_DIR, true),
        mount(VOLUME_TOKEN, TOKEN_DIR, true),
        mount(VOLUME_ROOT, ROOT_DIR, true),
    ]
}

/// istio-proxy: stock Envoy on the bootstrap istio-init wrote, with the resources the pod's
/// annotations ask for.
/// The proxy's user and group (1337), no privilege, capability or writable root: what the
/// proxy container (and a gateway's bootstrap step) run as.
fn proxy_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_group: Some(PROXY_UID),
        run_as_non_root: Some(true),
        run_as_user: Some(PROXY_UID),
        ..Default::default()
    }
}

fn proxy_container(settings: &Settings, annotations: &BTreeMap<String, String>) -> Container {
    let quantities = |keys: [(&str, &str); 2]| -> BTreeMap<String, Quantity> {
        keys.iter()
            .filter_map(|(key, resource)| {
                annotations
                    .get(*key)
                    .map(|v| (resource.to_string(), Quantity(v.clone())))
            })
            .collect()
    };
    let requests = quantities([
        ("sidecar.istio.io/proxyCPU", "cpu"),
        ("sidecar.istio.io/proxyMemory", "memory"),
    ]);
    let limits = quantities([
        ("sidecar.istio.io/proxyCPULimit", "cpu"),
        ("sidecar.istio.io/proxyMemoryLimit", "memory"),
    ]);
    let resources = (!requests.is_empty() || !limits.is_empty()).then(|| ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    });
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.proxy_image.clone()),
        command: Some(vec!["envoy".into()]),
        args: Some(
            [
                "-c",
                BOOTSTRAP_FILE,
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                &settings.log_level,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            container_port: PROMETHEUS_PORT.into(),
            protocol: Some("TCP".into()),
            name: Some("http-envoy-prom".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(READINESS_PORT.into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(1),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            failure_threshold: Some(30),
            ..Default::default()
        }),
        resources,
        security_context: Some(proxy_security_context()),
        volume_mounts: Some(vec![mount(VOLUME_ENVOY, ENVOY_DIR, true)]),
        restart_policy: settings.native.then(|| "Always".to_string()),
        ..Default::default()
    }
}

/// The volumes the injected containers use: Envoy's working directory, the pod's labels and
/// annotations, the projected `istio-ca` token and the mesh root.
fn volumes(opts: &Options) -> [Volume; 4] {
    [
        Volume {
            name: VOLUME_ENVOY.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: VOLUME_PODINFO.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(
                    [
                        ("labels", "metadata.labels"),
                        ("annotations", "metadata.annotations"),
                    ]
                    .iter()
                    .map(|(path, field)| DownwardAPIVolumeFile {
                        path: path.to_string(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: field.to_string(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: VOLUME_TOKEN.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(opts.token_expiration_seconds),
                        path: VOLUME_TOKEN.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: VOLUME_ROOT.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: crate::webhook::publish::ROOT_CERT_CONFIGMAP.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// Where the proxy container goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Last among the containers.
    Sidecar,
    /// A native sidecar: an init container that keeps running, after the injected one.
    NativeSidecar,
    /// In place of the `istio-proxy` container the pod declares (its fields over ours), else
    /// last among the containers.
    Gateway,
}

/// What injection adds to a pod's spec.
struct Injection {
    init: Container,
    proxy: Container,
    volumes: [Volume; 4],
    place: Place,
}

impl Injection {
    /// Adds the containers and volumes to `pod`'s spec: the injected init container first
    /// among the init containers (it must run before anything that uses the network, and it
    /// writes the proxy's bootstrap), then the native sidecar, then the pod's own; the proxy
    /// among the containers otherwise (see [`Place`]). A gateway pod may also bind ports below
    /// 1024 ([`gateway::allow_low_ports`]). Returns istiod's status annotation, naming what
    /// was added.
    fn add_to(&self, pod: &mut Value) -> Result<String, InjectError> {
        let (injected_init, injected_containers): (Vec<&Container>, Vec<&Container>) =
            match self.place {
                Place::NativeSidecar => (vec![&self.init, &self.proxy], vec![]),
                Place::Sidecar | Place::Gateway => (vec![&self.init], vec![&self.proxy]),
            };
        let status = Status {
            init_containers: Some(injected_init.iter().map(|c| c.name.as_str()).collect()),
            containers: (!injected_containers.is_empty()).then(|| {
                injected_containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect()
            }),
            volumes: Some(self.volumes.iter().map(|v| v.name.as_str()).collect()),
            image_pull_secrets: None,
            revision: "default",
        };
        let status = serde_json::to_string(&status).unwrap_or_default();
        let spec = pod
            .as_object_mut()
            .ok_or(InjectError::NotAnObject("the pod"))?
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or(InjectError::NotAnObject("spec"))?;
        let mut inits: Vec<Value> = injected_init.iter().map(|c| to_value(*c)).collect();
        if let Some(existing) = spec.get("initContainers").and_then(Value::as_array) {
            inits.extend(existing.iter().cloned());
        }
        spec.insert("initContainers".into(), Value::Array(inits));
        if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for proxy in injected_containers {
                match self.place {
                    Place::Gateway => gateway::place_proxy(list, to_value(proxy)),
                    Place::Sidecar | Place::NativeSidecar => list.push(to_value(proxy)),
                }
            }
        }
        if self.place == Place::Gateway {
            gateway::allow_low_ports(spec)?;
        }
        let mut vols: Vec<Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        vols.extend(self.volumes.iter().map(to_value));
        spec.insert("volumes".into(), Value::Array(vols));
        Ok(status)
    }
}

/// istiod's labels (`security.istio.io/tlsMode` on sidecars, the canonical name and
/// revision, unless the pod sets them) and annotations (on sidecars the default container;
/// the injection status).
fn label_and_annotate(
    pod: &mut Value,
    found: &Found,
    workload: &str,
    template: Template,
    status: String,
) -> Result<(), InjectError> {
    let sidecar = template == Template::Sidecar;
    let meta = pod
        .as_object_mut()
        .ok_or(InjectError::NotAnObject("the pod"))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(InjectError::NotAnObject("metadata"));
    };
    let first_label = |keys: [&str; 3]| {
        keys.iter()
            .find_map(|k| found.labels.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    let canonical_name = first_label([
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload.to_string());
    let canonical_name: String = canonical_name.chars().take(63).collect();
    let canonical_name = canonical_name.trim_end_matches('-').to_string();
    let canonical_revision = first_label([
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_string());
    let label_map = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(l) = label_map.as_object_mut() {
        let tls_mode = sidecar.then(|| ("security.istio.io/tlsMode", "istio".to_string()));
        for (k, v) in tls_mode.into_iter().chain([
            ("service.istio.io/canonical-name", canonical_name),
            ("service.istio.io/canonical-revision", canonical_revision),
        ]) {
            let present = l
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !present {
                l.insert(k.into(), Value::String(v));
            }
        }
    }
    let annotation_map = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(a) = annotation_map.as_object_mut() {
        for k in [
            "kubectl.kubernetes.io/default-container",
            "kubectl.kubernetes.io/default-logs-container",
        ] {
            if sidecar
                && !a.contains_key(k)
                && let Some(first) = found.containers.first()
            {
                a.insert(k.into(), Value::String(first.clone()));
            }
        }
        a.insert(STATUS_ANNOTATION.into(), Value::String(status));
    }
    Ok(())
}

/// `/inject`: AdmissionReview v1 for Pods, answered with a JSONPatch; `istioctl kube-inject`'s
/// reviews are read as Pods being created (see [`kube_inject_review`]).
pub async fn handle(
    State(opts): State<Arc<Options>>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = std::time::Instant::now();
    metrics::counter!("sidecar_injection_requests_total").increment(1);
    let (response, outcome) = match super::read_review(&body, kube_inject_review) {
        Ok(request) => judge_pod(&request, &opts),
        Err(denied) => (*denied, Answered::Failed),
    };
    match outcome {
        Answered::Failed => metrics::counter!("sidecar_injection_failure_total").increment(1),
        Answered::Skipped => {
            metrics::counter!("sidecar_injection_skip_total").increment(1);
            metrics::counter!("sidecar_injection_success_total").increment(1);
        }
        Answered::Injected | Answered::NotAPodCreation => {
            metrics::counter!("sidecar_injection_success_total").increment(1)
        }
    }
    metrics::histogram!("sidecar_injection_time_seconds").record(started.elapsed().as_secs_f64());
    Json(response.into_review())
}

/// How an injection request was answered, for the metrics: a failure (the review could not
/// be read, or injecting failed) counts in `sidecar_injection_failure_total`, every other
/// answer in `sidecar_injection_success_total`, a pod left as it is also in
/// `sidecar_injection_skip_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Injected,
    Skipped,
    NotAPodCreation,
    Failed,
}

/// `istioctl kube-inject` asks the webhook about a workload's pod template (a Pod it makes of
/// the template's metadata and spec) in a review of its own making: no `operation`, `kind` the
/// `admission.k8s.io/v1 AdmissionRequest` type itself, no resource, empty subresources.
/// istiod's injector looks at none of these; bowline reads a review without an operation as
/// that of a Pod being created. Reviews from the API server always name their operation.
pub fn kube_inject_review(review: &mut Value) {
    let Some(request) = review.get_mut("request").and_then(Value::as_object_mut) else {
        return;
    };
    let operation = request.get("operation").and_then(Value::as_str);
    if !operation.is_none_or(str::is_empty) {
        return;
    }
    request.insert("operation".into(), "CREATE".into());
    request.insert(
        "kind".into(),
        serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
    );
    request.insert(
        "resource".into(),
        serde_json::json!({"group": "", "version": "v1", "resource": "pods"}),
    );
    for key in ["subResource", "requestSubResource"] {
        if request.get(key).and_then(Value::as_str) == Some("") {
            request.remove(key);
        }
    }
}

/// The injection decision for one admission request: a patch, or the pod as it is.
pub fn review_pod(request: &AdmissionRequest<DynamicObject>, opts: &Options) -> AdmissionResponse {
    judge_pod(request, opts).0
}

/// The injection decision for one admission request, and how it was answered.
pub fn judge_pod(
    request: &AdmissionRequest<DynamicObject>,
    opts: &Options,
) -> (AdmissionResponse, Answered) {
    let response = AdmissionResponse::from(request);
    if request.operation != Operation::Create
        || !request.kind.group.is_empty()
        || request.kind.kind != "Pod"
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return (response, Answered::NotAPodCreation);
    }
    let Some(object) = &request.object else {
        return (response, Answered::NotAPodCreation);
    };
    let mut pod = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return (
                response.deny(format!("pod does not serialize: {e}")),
                Answered::Failed,
            );
        }
    };
    // The namespace comes with the request when the pod does not name it yet.
    if let (Some(ns), Some(meta)) = (
        &request.namespace,
        pod.get_mut("metadata").and_then(Value::as_object_mut),
    ) && !meta.contains_key("namespace")
    {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    let workload = workload_name(&pod);
    let what = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or_default(),
        if request.name.is_empty() {
            workload.as_str()
        } else {
            request.name.as_str()
        }
    );
    match inject_pod(&pod, &workload, opts) {
        Ok(Outcome::Injected {
            pod: injected,
            warnings,
        }) => {
            let patch = json_patch::diff(&pod, &injected);
            let mut response = match response.with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        AdmissionResponse::from(request).deny(format!("injection: {e}")),
                        Answered::Failed,
                    );
                }
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            tracing::info!(pod = %what, "injected");
            (response, Answered::Injected)
        }
        Ok(Outcome::Skipped(why)) => {
            tracing::debug!(pod = %what, "not injected: {why}");
            (response, Answered::Skipped)
        }
        Err(e) => {
            tracing::warn!(pod = %what, error = %e, "sidecar injection failed");
            (
                response.deny(format!("sidecar injection failed: {e}")),
                Answered::Failed,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> Options {
        Options::new("istio-system")
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web", "version": "v2"}},
            "spec": {"containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 8080}]}]}
        })
    }

    fn injected(pod: &Value) -> Value {
        match inject_pod(pod, "web", &opts()).expect("injects") {
            Outcome::Injected { pod, .. } => pod,
            other => panic!("not injected: {other:?}"),
        }
    }

    fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
        pod["spec"][list]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no {list} {name} in {pod:#}"))
    }

    fn args(c: &Value) -> Vec<String> {
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_string())
            .collect()
    }

    #[test]
    fn adds_init_proxy_volumes_labels_and_status() {
        let out = injected(&pod());
        let names = |list: &str| names(out["spec"].get(list));
        assert_eq!(names("initContainers"), ["istio-init"]);
        assert_eq!(names("containers"), ["app", "istio-proxy"]);
        assert_eq!(
            names("volumes"),
            [
                "istio-envoy",
                "istio-podinfo",
                "istio-token",
                "istiod-ca-cert"
            ]
        );
        let labels = &out["metadata"]["labels"];
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(labels["service.istio.io/canonical-name"], "web");
        assert_eq!(labels["service.istio.io/canonical-revision"], "v2");
        assert_eq!(labels["app"], "web");
        let annotations = &out["metadata"]["annotations"];
        assert_eq!(
            annotations[STATUS_ANNOTATION],
            r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#
        );
        assert_eq!(
            annotations["kubectl.kubernetes.io/default-container"],
            "app"
        );
        // The pod's own parts are untouched.
        assert_eq!(out["spec"]["containers"][0], pod()["spec"]["containers"][0]);

        let init = container(&out, "initContainers", "istio-init");
        assert_eq!(init["image"], DEFAULT_INJECTOR_IMAGE);
        assert_eq!(init["securityContext"]["runAsUser"], 0);
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        let a = args(init);
        let flag = |f: &str| {
            let i = a
                .iter()
                .position(|x| x == f)
                .unwrap_or_else(|| panic!("{f} in {a:?}"));
            a[i + 1].clone()
        };
        assert_eq!(a[0], "istio-iptables");
        assert_eq!(
            (flag("-p"), flag("-z"), flag("-u"), flag("-m")),
            (
                "15001".into(),
                "15006".into(),
                "1337".into(),
                "REDIRECT".into()
            )
        );
        assert_eq!(
            (flag("-i"), flag("-x"), flag("-b")),
            ("*".into(), "".into(), "*".into())
        );
        assert_eq!(flag("-d"), "15090,15021,15020");
        assert!(!a.contains(&"-o".to_string()));
        for want in [
            "--xds-addr=istiod.istio-system.svc:15012",
            "--xds-server-name=istiod.istio-system.svc",
            "--token-file=/var/run/secrets/tokens/istio-token",
            "--root-cert=/var/run/secrets/istio/root-cert.pem",
            "--labels-file=/etc/istio/pod/labels",
            "--ip=$(INSTANCE_IP)",
        ] {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }

        let proxy = container(&out, "containers", "istio-proxy");
        assert_eq!(proxy["image"], DEFAULT_PROXY_IMAGE);
        assert_eq!(proxy["command"], json!(["envoy"]));
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        assert_eq!(proxy["securityContext"]["runAsGroup"], 1337);
        assert_eq!(
            proxy["ports"],
            json!([{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}])
        );
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        assert!(proxy.get("restartPolicy").is_none());

        let token = &out["spec"]["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], "istio-ca");
        assert_eq!(token["path"], "istio-token");
        assert_eq!(
            out["spec"]["volumes"][3]["configMap"]["name"],
            "istio-ca-root-cert"
        );
    }

    #[test]
    fn idempotent() {
        let once = injected(&pod());
        assert_eq!(
            inject_pod(&once, "web", &opts()),
            Ok(Outcome::Skipped(Skip::AlreadyInjected))
        );
        // An istio-proxy container alone marks a pod as injected too.
        let mut p = pod();
        p["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "istio-proxy", "image": "x"}));
        assert_eq!(
            inject_pod(&p, "web", &opts()),
            Ok(Outcome::Skipped(Skip::AlreadyInjected))
        );
    }

    #[test]
    fn opt_outs() {
        for (labels, annotations, skipped) in [
            (json!({"sidecar.istio.io/inject": "false"}), json!({}), true),
            (json!({}), json!({"sidecar.istio.io/inject": "false"}), true),
            (json!({}), json!({"sidecar.istio.io/inject": "nope"}), true),
            // The label wins over the annotation.
            (
                json!({"sidecar.istio.io/inject": "true"}),
                json!({"sidecar.istio.io/inject": "false"}),
                false,
            ),
            (json!({}), json!({"sidecar.istio.io/inject": "Yes"}), false),
        ] {
            let mut p = pod();
            p["metadata"]["labels"] = labels.clone();
            p["metadata"]["annotations"] = annotations.clone();
            let out = inject_pod(&p, "web", &opts()).expect("no error");
            assert_eq!(
                out == Outcome::Skipped(Skip::OptedOut),
                skipped,
                "{labels} {annotations}: {out:?}"
            );
        }
        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            inject_pod(&p, "web", &opts()),
            Ok(Outcome::Skipped(Skip::HostNetwork))
        );
        let mut p = pod();
        p["metadata"]["namespace"] = json!("kube-system");
        assert_eq!(
            inject_pod(&p, "web", &opts()),
            Ok(Outcome::Skipped(Skip::IgnoredNamespace(
                "kube-system".into()
            )))
        );
    }

    #[test]
    fn traffic_annotations() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
            "traffic.sidecar.istio.io/includeInboundPorts": "8080",
            "traffic.sidecar.istio.io/excludeInboundPorts": "22",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "3306,5432",
            "sidecar.istio.io/proxyImage": "envoyproxy/envoy:v1.39.0",
            "sidecar.istio.io/logLevel": "debug",
            "sidecar.istio.io/proxyCPU": "100m",
        });
        let out = injected(&p);
        let a = args(container(&out, "initContainers", "istio-init"));
        let joined = a.join(" ");
        assert!(
            joined.contains(
                "-i 10.0.0.0/8 -x 10.96.0.1/32 -b 8080 -d 15090,15021,22,15020 -o 3306,5432 --"
            ),
            "{joined}"
        );
        let proxy = container(&out, "containers", "istio-proxy");
        assert_eq!(proxy["image"], "envoyproxy/envoy:v1.39.0");
        assert!(args(proxy).join(" ").ends_with("--log-level debug"));
        assert_eq!(proxy["resources"], json!({"requests": {"cpu": "100m"}}));

        for (k, v) in [
            ("traffic.sidecar.istio.io/includeInboundPorts", "http"),
            ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "*"),
            (
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.0.0.0/99",
            ),
            ("sidecar.istio.io/interceptionMode", "MAGIC"),
            ("sidecar.istio.io/logLevel", "loud"),
        ] {
            let mut p = pod();
            p["metadata"]["annotations"] = json!({k: v});
            assert!(
                matches!(
                    inject_pod(&p, "web", &opts()),
                    Err(InjectError::BadAnnotation { .. })
                ),
                "{k}: {v}"
            );
        }
    }

    #[test]
    fn native_sidecar() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"sidecar.istio.io/nativeSidecar": "true"});
        p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
        let out = injected(&p);
        assert_eq!(
            names(out["spec"].get("initContainers")),
            ["istio-init", "istio-proxy", "migrate"]
        );
        assert_eq!(names(out["spec"].get("containers")), ["app"]);
        assert_eq!(
            container(&out, "initContainers", "istio-proxy")["restartPolicy"],
            "Always"
        );
        assert!(
            out["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .expect("status")
                .starts_with(
                    r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"#
                )
        );
    }

    #[test]
    fn canonical_labels() {
        let mut p = pod();
        p["metadata"]["labels"] = json!({"app.kubernetes.io/name": "shop", "app": "web",
            "security.istio.io/tlsMode": "disabled"});
        let out = injected(&p);
        let labels = &out["metadata"]["labels"];
        assert_eq!(labels["service.istio.io/canonical-name"], "shop");
        assert_eq!(labels["service.istio.io/canonical-revision"], "latest");
        assert_eq!(labels["security.istio.io/tlsMode"], "disabled");
        let mut p = pod();
        p["metadata"]["labels"] = json!({});
        let out = match inject_pod(&p, &format!("{}-", "w".repeat(70)), &opts()) {
            Ok(Outcome::Injected { pod, .. }) => pod,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            out["metadata"]["labels"]["service.istio.io/canonical-name"],
            "w".repeat(63)
        );
    }

    #[test]
    fn workload_names() {
        let p = |meta: Value| json!({"metadata": meta});
        assert_eq!(workload_name(&p(json!({"name": "solo"}))), "solo");
        assert_eq!(
            workload_name(&p(json!({
                "generateName": "web-7d4b9c-",
                "labels": {"pod-template-hash": "7d4b9c"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9c", "controller": true}]
            }))),
            "web"
        );
        assert_eq!(
            workload_name(&p(json!({
                "generateName": "backup-29012345-",
                "ownerReferences": [{"kind": "Job", "name": "backup-29012345", "controller": true}]
            }))),
            "backup"
        );
        assert_eq!(
            workload_name(&p(json!({
                "generateName": "db-",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]
            }))),
            "db"
        );
        assert_eq!(workload_name(&p(json!({"generateName": "x-"}))), "x");
    }

    #[test]
    fn errors() {
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        assert_eq!(inject_pod(&p, "w", &opts()), Err(InjectError::NoContainers));
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "istio-envoy", "emptyDir": {}}]);
        assert!(matches!(
            inject_pod(&p, "w", &opts()),
            Err(InjectError::NameTaken { .. })
        ));
        assert_eq!(
            inject_pod(&json!({"metadata": {}}), "w", &opts()),
            Err(InjectError::NotAnObject("spec"))
        );
    }

    fn review(pod: Value, operation: &str) -> AdmissionRequest<DynamicObject> {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {},
                "object": pod,
                "dryRun": false
            }
        });
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(body).expect("review parses");
        review.try_into().expect("a request")
    }

    /// The review `istioctl kube-inject` posts for a Deployment's pod template, as Go marshals
    /// it: no operation, the AdmissionRequest type as `kind`, empty resource and subresources,
    /// and a Pod without apiVersion or kind.
    fn kube_inject_body(pod: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": "",
                "kind": {"group": "admission.k8s.io", "version": "v1", "kind": "AdmissionRequest"},
                "resource": {"group": "", "version": "", "resource": ""},
                "namespace": "shop",
                "operation": "",
                "userInfo": {},
                "object": pod,
                "oldObject": null,
                "options": null
            }
        }))
        .expect("json")
    }

    /// istioctl kube-inject's review is read as a Pod being created: its patch makes of the
    /// template what `inject_pod` makes of it.
    #[test]
    fn kube_inject_reviews_are_pods_being_created() {
        let template = json!({
            "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:1", "resources": {}}]},
            "status": {}
        });
        let request = crate::webhook::read_review(&kube_inject_body(&template), kube_inject_review)
            .expect("istioctl's review is read");
        let response = review_pod(&request, &opts());
        assert!(response.allowed, "{:?}", response.result);
        let patch: json_patch::Patch =
            serde_json::from_slice(response.patch.as_deref().expect("a patch")).expect("patch");
        let mut patched = template.clone();
        json_patch::patch(&mut patched, &patch).expect("the patch applies to the template");
        let mut with_ns = template.clone();
        with_ns["metadata"]["namespace"] = json!("shop");
        let Outcome::Injected { pod: want, .. } =
            inject_pod(&with_ns, "web", &opts()).expect("injects")
        else {
            panic!("not injected");
        };
        assert_eq!(patched["spec"], want["spec"]);
        assert_eq!(
            patched["metadata"]["annotations"],
            want["metadata"]["annotations"]
        );
        // The API server's reviews keep their operation: an UPDATE is not taken for a create.
        let mut update: Value = serde_json::from_slice(&kube_inject_body(&template)).expect("json");
        update["request"]["operation"] = json!("UPDATE");
        update["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        let request = crate::webhook::read_review(
            &serde_json::to_vec(&update).expect("json"),
            kube_inject_review,
        )
        .expect("read");
        assert!(review_pod(&request, &opts()).patch.is_none());
    }

    /// What cannot be read is denied in an AdmissionReview that says why, with the request's
    /// uid when there is one.
    #[test]
    fn unreadable_reviews_are_denied_as_reviews() {
        let denied =
            crate::webhook::read_review(b"{not json", kube_inject_review).expect_err("not JSON");
        assert!(!denied.allowed);
        assert!(denied.result.message.contains("could not decode body"));
        let review = serde_json::to_value((*denied).into_review()).expect("json");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], false);

        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-7", "operation": "SHRED", "kind": {}, "resource": {}}
        });
        let denied = crate::webhook::read_review(&serde_json::to_vec(&body).expect("json"), |_| {})
            .expect_err("unknown operation");
        assert_eq!(denied.uid, "u-7");
        assert!(
            denied.result.message.contains("could not decode object"),
            "{}",
            denied.result.message
        );
        let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        assert!(
            crate::webhook::read_review(&serde_json::to_vec(&no_request).expect("json"), |_| {})
                .is_err()
        );
    }

    /// A template bowline does not have denies the pod, naming it, as istiod's webhook does.
    #[test]
    fn unknown_templates_deny_the_pod() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"inject.istio.io/templates": "waypoint"});
        let denied = review_pod(&review(p, "CREATE"), &opts());
        assert!(!denied.allowed);
        assert!(
            denied
                .result
                .message
                .contains("requested template \"waypoint\" not found"),
            "{}",
            denied.result.message
        );
    }

    /// The webhook's patch turns the pod into exactly what `inject_pod` makes of it.
    #[test]
    fn webhook_patch_is_the_mutation() {
        let mut p = pod();
        p["metadata"]
            .as_object_mut()
            .expect("meta")
            .remove("namespace");
        let response = review_pod(&review(p.clone(), "CREATE"), &opts());
        assert!(response.allowed);
        let patch: json_patch::Patch =
            serde_json::from_slice(response.patch.as_deref().expect("a patch")).expect("patch");
        let mut patched = p.clone();
        json_patch::patch(&mut patched, &patch).expect("patch applies");
        let mut expected_input = p.clone();
        expected_input["metadata"]["namespace"] = json!("shop");
        let mut expected = injected(&expected_input);
        expected["metadata"]
            .as_object_mut()
            .expect("meta")
            .remove("namespace");
        assert_eq!(patched, expected);

        // Updates, and injected or opted-out pods, pass unchanged.
        assert!(
            review_pod(&review(p.clone(), "UPDATE"), &opts())
                .patch
                .is_none()
        );
        let already = injected(&pod());
        assert!(
            review_pod(&review(already, "CREATE"), &opts())
                .patch
                .is_none()
        );
        // A bad annotation denies the pod, naming it.
        let mut bad = pod();
        bad["metadata"]["annotations"] =
            json!({"traffic.sidecar.istio.io/excludeInboundPorts": "ssh"});
        let denied = review_pod(&review(bad, "CREATE"), &opts());
        assert!(!denied.allowed);
        assert!(
            denied
                .result
                .message
                .contains("traffic.sidecar.istio.io/excludeInboundPorts"),
            "{}",
            denied.result.message
        );
    }
}
