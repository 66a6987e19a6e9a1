//! A load scenario as written in YAML (`testdata/load/*.yaml`): the mesh to generate, the
//! simulated proxies, the server settings (when `bowline load` spawns the server) and the
//! timeline of changes. Unknown fields are rejected; limits are checked before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::LoadError;

/// Upper bounds that keep a scenario within what one machine (and the address plan of the
/// generated mesh) can hold.
pub const MAX_SERVICES: u32 = 50_000;
pub const MAX_PROXIES: u32 = 20_000;
/// Endpoints per service, including those added by the timeline (the address plan gives each
/// service a /24).
pub const MAX_ENDPOINTS_PER_SERVICE: u32 = 250;
pub const MAX_NAMESPACES: u32 = 1_000;
pub const MAX_STEPS: usize = 10_000;
/// Changes one `churn` step may make.
pub const MAX_CHURN_CHANGES: u64 = 100_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub mesh: MeshSpec,
    pub proxies: ProxySpec,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub timeline: Vec<Step>,
    /// Longest wait for the proxies to converge after one change (or to connect at start).
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub timeout: Duration,
    /// Quiet time (no response received by any proxy) that ends a step.
    #[serde(
        default = "default_settle",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub settle: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_settle() -> Duration {
    Duration::from_millis(500)
}

/// Where services and their endpoints are declared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryKind {
    /// Kubernetes Service + EndpointSlice (what bowline reads in file mode).
    #[default]
    Kubernetes,
    /// ServiceEntry with inline endpoints (what istiod reads from a `fs://` config source).
    ServiceEntry,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    /// Number of generated services, spread round-robin over the namespaces.
    #[serde(default)]
    pub services: u32,
    #[serde(default = "one")]
    pub namespaces: u32,
    /// Endpoints per service.
    #[serde(default = "one")]
    pub endpoints: u32,
    /// Ports of every service; the name's prefix gives the protocol (`http`, `grpc`, `tcp`).
    #[serde(default = "default_ports")]
    pub ports: Vec<PortSpec>,
    /// A Sidecar per namespace that imports only that namespace (`./*`) and `istio-system`.
    #[serde(default)]
    pub sidecar_scoping: bool,
    /// A VirtualService per service (route edits change it).
    #[serde(default = "yes")]
    pub virtual_services: bool,
    /// A DestinationRule per service.
    #[serde(default)]
    pub destination_rules: bool,
    #[serde(default)]
    pub registry: RegistryKind,
    /// One of istiod's benchmark configs (Go templates), expanded and written as well.
    #[serde(default)]
    pub istio_benchmark: Option<IstioBenchmark>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn default_ports() -> Vec<PortSpec> {
    vec![PortSpec {
        name: "http".into(),
        number: 80,
    }]
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub number: u16,
}

/// istiod's push benchmark inputs (`pilot/pkg/xds/testdata/benchmarks/*.yaml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IstioBenchmark {
    /// The template file; relative paths are relative to the scenario file.
    pub file: PathBuf,
    /// `.Services` in the template.
    #[serde(default = "default_template_services")]
    pub services: u32,
    /// `.Instances` in the template.
    #[serde(default = "default_template_instances")]
    pub instances: u32,
}

fn default_template_services() -> u32 {
    100
}

fn default_template_instances() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsMode {
    Sotw,
    #[default]
    Delta,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Interception {
    #[default]
    #[serde(rename = "REDIRECT")]
    Redirect,
    #[serde(rename = "NONE")]
    None,
}

impl Interception {
    pub fn as_str(self) -> &'static str {
        match self {
            Interception::Redirect => "REDIRECT",
            Interception::None => "NONE",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Simulated proxies. Proxy `i` is endpoint `i / services` of service `i % services`
    /// (its IP, namespace and labels), so they spread over services and namespaces.
    pub count: u32,
    #[serde(default)]
    pub mode: XdsMode,
    #[serde(default)]
    pub interception: Interception,
    /// New connections per second at start (all at once when absent).
    #[serde(default)]
    pub connect_rate: Option<f64>,
    /// Namespace of the proxies when the mesh has no generated services.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Stuck proxies: the first `stalled` proxies stop reading responses once they are in
    /// sync, holding their streams open (a proxy that hangs, or a slow network). They are
    /// not expected to converge; every other proxy must converge as if they were not there.
    #[serde(default)]
    pub stalled: u32,
}

fn default_namespace() -> String {
    "default".into()
}

/// Settings of a server that `bowline load --spawn` starts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// `--debounce-after` of the spawned bowline.
    #[serde(
        default = "default_debounce",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub debounce_after: Duration,
}

fn default_debounce() -> Duration {
    Duration::from_millis(100)
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            debounce_after: default_debounce(),
        }
    }
}

/// One step of the timeline. Service indexes refer to generated services (`0..services`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Adds a uniquely named route (`/bowline-load-edit-NNNNNN`) to the service's
    /// VirtualService, replacing the previous edit's route.
    RouteEdit(ServiceRef),
    /// Adds endpoints to the service.
    EndpointAdd(EndpointChange),
    /// Removes the service's newest endpoints.
    EndpointRemove(EndpointChange),
    /// Adds a service (with the mesh's ports, endpoints and VirtualService) in a namespace.
    NewService(NewService),
    /// Kills and restarts the server (needs `--spawn` or `--server-cmd`).
    Restart(Empty),
    /// Waits.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    Pause(Duration),
    /// Endpoint changes at a fixed rate plus periodic route edits, without waiting for
    /// convergence in between.
    Churn(Churn),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    #[serde(default)]
    pub service: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointChange {
    #[serde(default)]
    pub service: u32,
    #[serde(default = "one")]
    pub count: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    #[serde(default)]
    pub namespace: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Endpoint changes per second (alternately an add and a removal, each on another
    /// service).
    pub endpoint_changes_per_second: f64,
    /// A route edit this often (none when absent).
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub route_edit_every: Option<Duration>,
}

impl Churn {
    pub fn endpoint_changes(&self) -> u64 {
        (self.duration.as_secs_f64() * self.endpoint_changes_per_second).floor() as u64
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::model::networking::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| crate::model::networking::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Scenario, LoadError> {
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| LoadError::Scenario {
            file: origin.to_string(),
            message: e.to_string(),
        })?;
        scenario.check().map_err(|message| LoadError::Scenario {
            file: origin.to_string(),
            message,
        })?;
        Ok(scenario)
    }

    /// Reads a scenario file; a relative `istio_benchmark.file` is resolved against the
    /// scenario's directory.
    pub fn load(path: &std::path::Path) -> Result<Scenario, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            what: format!("reading scenario {}", path.display()),
            source: e,
        })?;
        let mut scenario = Scenario::from_yaml(&text, &path.display().to_string())?;
        if let Some(b) = scenario.mesh.istio_benchmark.as_mut()
            && b.file.is_relative()
            && let Some(dir) = path.parent()
        {
            b.file = dir.join(&b.file);
        }
        Ok(scenario)
    }

    /// Checks limits and references; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let m = &self.mesh;
        if m.services > MAX_SERVICES {
            return Err(format!("mesh.services: at most {MAX_SERVICES}"));
        }
        if m.namespaces == 0 || m.namespaces > MAX_NAMESPACES {
            return Err(format!("mesh.namespaces: between 1 and {MAX_NAMESPACES}"));
        }
        if m.endpoints == 0 || m.endpoints > MAX_ENDPOINTS_PER_SERVICE {
            return Err(format!(
                "mesh.endpoints: between 1 and {MAX_ENDPOINTS_PER_SERVICE}"
            ));
        }
        if m.ports.is_empty() {
            return Err("mesh.ports: at least one port".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &m.ports {
            if p.number == 0 || !seen.insert(p.number) {
                return Err(format!(
                    "mesh.ports: port {} is zero or listed twice",
                    p.number
                ));
            }
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(format!(
                    "mesh.ports: name {:?} must be lowercase letters, digits and '-'",
                    p.name
                ));
            }
        }
        if let Some(b) = &m.istio_benchmark
            && (b.services > MAX_SERVICES || b.instances > MAX_ENDPOINTS_PER_SERVICE)
        {
            return Err("mesh.istio_benchmark: services or instances out of range".into());
        }
        let p = &self.proxies;
        if p.count == 0 || p.count > MAX_PROXIES {
            return Err(format!("proxies.count: between 1 and {MAX_PROXIES}"));
        }
        if m.services > 0 && u64::from(p.count) > u64::from(m.services) * u64::from(m.endpoints) {
            return Err(format!(
                "proxies.count: {} proxies need {} services x endpoints; the mesh has {}",
                p.count,
                p.count,
                u64::from(m.services) * u64::from(m.endpoints)
            ));
        }
        if m.services == 0 && p.count > 65_000 {
            return Err("proxies.count: too many for the address plan".into());
        }
        if let Some(rate) = p.connect_rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("proxies.connect_rate: a positive number".into());
        }
        if p.namespace.is_empty() {
            return Err("proxies.namespace: empty".into());
        }
        if p.stalled >= p.count && p.count > 0 {
            return Err(format!(
                "proxies.stalled: {} of {} proxies leaves none to measure",
                p.stalled, p.count
            ));
        }
        if self.timeline.len() > MAX_STEPS {
            return Err(format!("timeline: at most {MAX_STEPS} steps"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err("timeout: between 1ms and 1h".into());
        }
        if self.settle > Duration::from_secs(60) {
            return Err("settle: at most 60s".into());
        }
        let mut added: std::collections::BTreeMap<u32, u64> = Default::default();
        for (i, step) in self.timeline.iter().enumerate() {
            let at = |field: &str, why: &str| format!("timeline[{i}].{field}: {why}");
            let service = |s: u32| {
                if s >= m.services {
                    Err(at(
                        "service",
                        &format!("no generated service {s} (the mesh has {})", m.services),
                    ))
                } else {
                    Ok(())
                }
            };
            match step {
                Step::RouteEdit(r) => {
                    service(r.service)?;
                    if !m.virtual_services {
                        return Err(at("route_edit", "needs mesh.virtual_services"));
                    }
                    if !m.ports.iter().any(|p| is_http_name(&p.name)) {
                        return Err(at("route_edit", "needs an HTTP port"));
                    }
                }
                Step::EndpointAdd(c) => {
                    service(c.service)?;
                    let total = added.entry(c.service).or_default();
                    *total += u64::from(c.count);
                    if c.count == 0
                        || *total + u64::from(m.endpoints) > u64::from(MAX_ENDPOINTS_PER_SERVICE)
                    {
                        return Err(at(
                            "count",
                            &format!(
                                "a service holds at most {MAX_ENDPOINTS_PER_SERVICE} endpoints"
                            ),
                        ));
                    }
                }
                Step::EndpointRemove(c) => {
                    service(c.service)?;
                    if c.count == 0 || c.count > MAX_ENDPOINTS_PER_SERVICE {
                        return Err(at("count", "out of range"));
                    }
                }
                Step::NewService(n) => {
                    if n.namespace >= m.namespaces {
                        return Err(at("namespace", "no such generated namespace"));
                    }
                }
                Step::Restart(_) => {}
                Step::Pause(d) => {
                    if *d > Duration::from_secs(3600) {
                        return Err(at("pause", "at most 1h"));
                    }
                }
                Step::Churn(c) => {
                    if m.services == 0 {
                        return Err(at("churn", "needs generated services"));
                    }
                    if c.duration.is_zero() || c.duration > Duration::from_secs(3600) {
                        return Err(at("duration", "between 1ms and 1h"));
                    }
                    if !(c.endpoint_changes_per_second.is_finite()
                        && c.endpoint_changes_per_second > 0.0
                        && c.endpoint_changes_per_second <= 1000.0)
                    {
                        return Err(at("endpoint_changes_per_second", "between 0 and 1000"));
                    }
                    if c.endpoint_changes() > MAX_CHURN_CHANGES {
                        return Err(at("churn", "too many changes"));
                    }
                    if let Some(every) = c.route_edit_every {
                        if every < Duration::from_millis(10) {
                            return Err(at("route_edit_every", "at least 10ms"));
                        }
                        if !m.virtual_services {
                            return Err(at("route_edit_every", "needs mesh.virtual_services"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a port name declares HTTP (istiod's port-name convention).
pub fn is_http_name(name: &str) -> bool {
    let prefix = name.split('-').next().unwrap_or_default();
    matches!(prefix, "http" | "http2" | "grpc" | "grpc-web")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scenario_with_defaults() {
        let s = Scenario::from_yaml(
            r#"
name: t
mesh: {services: 10, namespaces: 2, endpoints: 2, sidecar_scoping: true}
proxies: {count: 20, mode: sotw}
timeline:
  - route_edit: {service: 3}
  - endpoint_add: {service: 1}
  - pause: 1s
  - new_service: {namespace: 1}
  - restart: {}
  - churn: {duration: 2s, endpoint_changes_per_second: 5, route_edit_every: 1s}
"#,
            "t.yaml",
        )
        .unwrap();
        assert_eq!(s.mesh.ports[0].number, 80);
        assert_eq!(s.proxies.mode, XdsMode::Sotw);
        assert_eq!(s.proxies.interception, Interception::Redirect);
        assert_eq!(s.timeline.len(), 6);
        assert!(matches!(s.timeline[2], Step::Pause(d) if d == Duration::from_secs(1)));
        assert!(matches!(&s.timeline[5], Step::Churn(c) if c.endpoint_changes() == 10));
    }

    #[test]
    fn rejects_bad_references_and_limits() {
        let bad = [
            "name: t\nmesh: {services: 1}\nproxies: {count: 2}\n",
            "name: t\nmesh: {services: 2}\nproxies: {count: 1}\ntimeline: [{route_edit: {service: 2}}]\n",
            "name: t\nmesh: {services: 2}\nproxies: {count: 1}\nbogus: 1\n",
            "name: t\nmesh: {services: 2, namespaces: 0}\nproxies: {count: 1}\n",
        ];
        for text in bad {
            assert!(Scenario::from_yaml(text, "t").is_err(), "{text}");
        }
    }
}
