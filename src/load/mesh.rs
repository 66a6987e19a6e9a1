//! The generated mesh: Istio and Kubernetes YAML for a scenario's services, written into the
//! config directory the server watches, and the changes of the timeline.
//!
//! Layout: `<dir>/<namespace>/<service>.yaml` holds one service (Service + EndpointSlice, or a
//! ServiceEntry) with its VirtualService and DestinationRule, so a change rewrites one file;
//! `<dir>/<namespace>/_sidecar.yaml` holds the namespace's Sidecar. Files are replaced
//! atomically (written under a hidden name, then renamed). Each change says what a proxy must
//! hold once it has converged on it (`Condition`s) and which proxies it reaches (`Applies`).
//!
//! Address plan: service `s` has the VIP `172.16.<s/256>.<s%256>` and its endpoint slot `j`
//! the IP `10.<s/256>.<s%256>.<j+1>`; proxy `p` is endpoint `p / services` of service
//! `p % services`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::LoadError;
use super::scenario::{Interception, MeshSpec, ProxySpec, RegistryKind, Scenario, is_http_name};

/// A file the generator owns; its presence lets a later run clear the directory.
const OWNER_FILE: &str = ".bowline-load";
const DOMAIN: &str = "cluster.local";
/// Reported as the proxies' ISTIO_VERSION (the release bowline follows).
const ISTIO_VERSION: &str = "1.28.0";

/// Which proxies a change reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    All,
    Namespace(String),
}

impl Applies {
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Applies::All => true,
            Applies::Namespace(ns) => ns == namespace,
        }
    }
}

/// What a converged proxy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Some route configuration contains these bytes.
    RouteContains(String),
    /// A cluster of this name exists.
    Cluster(String),
    /// The endpoint assignment of this cluster has (or lacks) this address.
    Endpoint {
        cluster: String,
        address: String,
        present: bool,
    },
}

/// One change of the mesh: the file to write and what it should lead to.
#[derive(Debug, Clone)]
pub struct Change {
    pub description: String,
    pub path: PathBuf,
    pub content: String,
    pub applies: Applies,
    pub conditions: Vec<Condition>,
}

/// A simulated proxy's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyIdentity {
    pub index: usize,
    pub node_id: String,
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub app: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
struct ServiceState {
    index: u32,
    name: String,
    namespace: String,
    /// Present endpoint slots, oldest first.
    endpoints: VecDeque<u32>,
    /// Next never-used slot (slots are not reused, so a removed address never comes back).
    next_slot: u32,
    /// Marker of the newest route edit.
    edit: Option<String>,
}

impl ServiceState {
    fn hostname(&self) -> String {
        format!("{}.{}.svc.{DOMAIN}", self.name, self.namespace)
    }
}

/// The generated mesh and its current state.
#[derive(Debug)]
pub struct Mesh {
    spec: MeshSpec,
    dir: PathBuf,
    services: Vec<ServiceState>,
    next_edit: u64,
    new_services: u32,
}

pub fn namespace_name(k: u32) -> String {
    format!("ns-{k}")
}

fn vip(s: u32) -> String {
    format!("172.16.{}.{}", (s >> 8) & 255, s & 255)
}

fn endpoint_ip(s: u32, slot: u32) -> String {
    format!("10.{}.{}.{}", (s >> 8) & 255, s & 255, slot + 1)
}

fn se_protocol(port_name: &str) -> &'static str {
    match port_name.split('-').next().unwrap_or_default() {
        "http" => "HTTP",
        "http2" => "HTTP2",
        "grpc" => "GRPC",
        "https" => "HTTPS",
        "tls" => "TLS",
        _ => "TCP",
    }
}

/// Writes `content` to `path` atomically (a hidden temporary file in the same directory, then
/// a rename), creating the parent directory.
pub fn write_atomic(path: &Path, content: &str) -> Result<(), LoadError> {
    let io = |what: String| move |source| LoadError::Io { what, source };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

impl Mesh {
    pub fn new(spec: &MeshSpec, dir: &Path) -> Mesh {
        let services = (0..spec.services)
            .map(|s| ServiceState {
                index: s,
                name: format!("svc-{s}"),
                namespace: namespace_name(s % spec.namespaces),
                endpoints: (0..spec.endpoints).collect(),
                next_slot: spec.endpoints,
                edit: None,
            })
            .collect();
        Mesh {
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            services,
            next_edit: 0,
            new_services: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Generated services (not counting those added by the timeline).
    pub fn generated(&self) -> u32 {
        self.spec.services
    }

    /// Prepares the directory: creates it, or clears it when a previous run owns it. A
    /// non-empty directory the generator does not own is refused.
    pub fn prepare_dir(&self) -> Result<(), LoadError> {
        let io = |what: String| move |source| LoadError::Io { what, source };
        let dir = &self.dir;
        if dir.exists() {
            let owned = dir.join(OWNER_FILE).exists();
            let mut entries =
                std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
            if !owned && entries.next().is_some() {
                return Err(LoadError::ConfigDir(format!(
                    "{} is not empty and was not written by bowline load",
                    dir.display()
                )));
            }
            if owned {
                for entry in
                    std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?
                {
                    let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
                    let path = entry.path();
                    let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    result.map_err(io(format!("removing {}", path.display())))?;
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        std::fs::write(
            dir.join(OWNER_FILE),
            "written by `bowline load`; the directory is cleared by the next run\n",
        )
        .map_err(io(format!("writing {}", dir.join(OWNER_FILE).display())))
    }

    /// Every file of the mesh, as (path, content).
    pub fn files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if self.spec.sidecar_scoping {
            for k in 0..self.spec.namespaces {
                let ns = namespace_name(k);
                out.push((
                    self.dir.join(&ns).join("_sidecar.yaml"),
                    format!(
                        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: {ns}\nspec:\n  egress:\n  - hosts:\n    - \"./*\"\n    - \"istio-system/*\"\n"
                    ),
                ));
            }
        }
        for s in &self.services {
            out.push((self.service_path(s), self.render(s)));
        }
        out
    }

    /// Writes the whole mesh.
    pub fn write_all(&self) -> Result<usize, LoadError> {
        let files = self.files();
        for (path, content) in &files {
            write_atomic(path, content)?;
        }
        Ok(files.len())
    }

    fn service_path(&self, s: &ServiceState) -> PathBuf {
        self.dir.join(&s.namespace).join(format!("{}.yaml", s.name))
    }

    fn applies(&self, s: &ServiceState) -> Applies {
        if self.spec.sidecar_scoping {
            Applies::Namespace(s.namespace.clone())
        } else {
            Applies::All
        }
    }

    fn cluster(&self, s: &ServiceState, port: u16) -> String {
        format!("outbound|{port}||{}", s.hostname())
    }

    /// The YAML of one service.
    fn render(&self, s: &ServiceState) -> String {
        let mut y = String::new();
        let host = s.hostname();
        let (name, ns) = (&s.name, &s.namespace);
        match self.spec.registry {
            RegistryKind::Kubernetes => {
                let _ = write!(
                    y,
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {}\n  selector:\n    app: {name}\n  ports:\n",
                    vip(s.index)
                );
                for p in &self.spec.ports {
                    let _ = writeln!(
                        y,
                        "  - name: {}\n    port: {}\n    targetPort: {}",
                        p.name, p.number, p.number
                    );
                }
                let _ = write!(
                    y,
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-slice\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n"
                );
                for p in &self.spec.ports {
                    let _ = writeln!(y, "- name: {}\n  port: {}", p.name, p.number);
                }
                if s.endpoints.is_empty() {
                    y.push_str("endpoints: []\n");
                } else {
                    y.push_str("endpoints:\n");
                }
                for slot in &s.endpoints {
                    let _ = writeln!(
                        y,
                        "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {name}-{slot}, namespace: {ns}}}",
                        endpoint_ip(s.index, *slot)
                    );
                }
            }
            RegistryKind::ServiceEntry => {
                let _ = write!(
                    y,
                    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [\"{host}\"]\n  addresses: [\"{}\"]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n",
                    vip(s.index)
                );
                for p in &self.spec.ports {
                    let _ = writeln!(
                        y,
                        "  - name: {}\n    number: {}\n    protocol: {}",
                        p.name,
                        p.number,
                        se_protocol(&p.name)
                    );
                }
                if s.endpoints.is_empty() {
                    y.push_str("  endpoints: []\n");
                } else {
                    y.push_str("  endpoints:\n");
                }
                for slot in &s.endpoints {
                    let _ = writeln!(
                        y,
                        "  - address: \"{}\"\n    labels: {{app: {name}}}",
                        endpoint_ip(s.index, *slot)
                    );
                }
            }
        }
        if self.spec.virtual_services {
            let _ = write!(
                y,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [\"{host}\"]\n  http:\n"
            );
            if let Some(marker) = &s.edit {
                let _ = writeln!(
                    y,
                    "  - name: {}\n    match: [{{uri: {{prefix: \"{marker}\"}}}}]\n    route: [{{destination: {{host: \"{host}\"}}}}]\n    timeout: 5s",
                    marker.trim_start_matches('/')
                );
            }
            let _ = writeln!(
                y,
                "  - route: [{{destination: {{host: \"{host}\"}}}}]\n    timeout: 10s"
            );
        }
        if self.spec.destination_rules {
            let _ = writeln!(
                y,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: \"{host}\"\n  trafficPolicy:\n    connectionPool:\n      http: {{http2MaxRequests: 1000, maxRequestsPerConnection: 100}}\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}"
            );
        }
        y
    }

    fn service(&self, index: u32) -> Result<usize, LoadError> {
        self.services
            .iter()
            .position(|s| s.index == index)
            .ok_or_else(|| LoadError::Step(format!("no service {index}")))
    }

    fn change(&self, i: usize, description: String, conditions: Vec<Condition>) -> Change {
        let s = &self.services[i];
        Change {
            description,
            path: self.service_path(s),
            content: self.render(s),
            applies: self.applies(s),
            conditions,
        }
    }

    /// Adds a uniquely named route to the service's VirtualService.
    pub fn route_edit(&mut self, service: u32) -> Result<Change, LoadError> {
        let i = self.service(service)?;
        self.next_edit += 1;
        // Zero-padded, so no marker is a prefix of another.
        let marker = format!("/bowline-load-edit-{:06}", self.next_edit);
        self.services[i].edit = Some(marker.clone());
        let name = self.services[i].name.clone();
        Ok(self.change(
            i,
            format!("route edit on {name}"),
            vec![Condition::RouteContains(marker)],
        ))
    }

    /// Adds `count` endpoints (fresh addresses) to a service.
    pub fn endpoint_add(&mut self, service: u32, count: u32) -> Result<Change, LoadError> {
        let i = self.service(service)?;
        let s = &mut self.services[i];
        if s.next_slot + count > super::scenario::MAX_ENDPOINTS_PER_SERVICE {
            return Err(LoadError::Step(format!(
                "{}: no free endpoint addresses left",
                s.name
            )));
        }
        let mut addresses = Vec::new();
        for _ in 0..count {
            s.endpoints.push_back(s.next_slot);
            addresses.push(endpoint_ip(s.index, s.next_slot));
            s.next_slot += 1;
        }
        let name = s.name.clone();
        let conditions = self.endpoint_conditions(i, &addresses, true);
        Ok(self.change(
            i,
            format!("{count} endpoint(s) added to {name}"),
            conditions,
        ))
    }

    /// Removes the `count` oldest endpoints of a service; `None` when it has none.
    pub fn endpoint_remove(
        &mut self,
        service: u32,
        count: u32,
    ) -> Result<Option<Change>, LoadError> {
        let i = self.service(service)?;
        let s = &mut self.services[i];
        let mut addresses = Vec::new();
        for _ in 0..count {
            if let Some(slot) = s.endpoints.pop_front() {
                addresses.push(endpoint_ip(s.index, slot));
            }
        }
        if addresses.is_empty() {
            return Ok(None);
        }
        let name = s.name.clone();
        let conditions = self.endpoint_conditions(i, &addresses, false);
        Ok(Some(self.change(
            i,
            format!("{} endpoint(s) removed from {name}", addresses.len()),
            conditions,
        )))
    }

    /// Whether a service can take one more endpoint.
    pub fn has_free_slot(&self, service: u32) -> bool {
        self.service(service)
            .is_ok_and(|i| self.services[i].next_slot < super::scenario::MAX_ENDPOINTS_PER_SERVICE)
    }

    fn endpoint_conditions(&self, i: usize, addresses: &[String], present: bool) -> Vec<Condition> {
        let s = &self.services[i];
        let mut out = Vec::new();
        for p in &self.spec.ports {
            for address in addresses {
                out.push(Condition::Endpoint {
                    cluster: self.cluster(s, p.number),
                    address: address.clone(),
                    present,
                });
            }
        }
        out
    }

    /// Adds a service in a generated namespace.
    pub fn new_service(&mut self, namespace: u32) -> Result<Change, LoadError> {
        if namespace >= self.spec.namespaces {
            return Err(LoadError::Step(format!("no namespace {namespace}")));
        }
        let index = self.spec.services + self.new_services;
        if index >= 60_000 {
            return Err(LoadError::Step(
                "too many services for the address plan".into(),
            ));
        }
        self.new_services += 1;
        let state = ServiceState {
            index,
            name: format!("new-{:06}", self.new_services),
            namespace: namespace_name(namespace),
            endpoints: (0..self.spec.endpoints).collect(),
            next_slot: self.spec.endpoints,
            edit: None,
        };
        let host = state.hostname();
        let mut conditions = Vec::new();
        for p in &self.spec.ports {
            let cluster = self.cluster(&state, p.number);
            conditions.push(Condition::Cluster(cluster.clone()));
            conditions.push(Condition::Endpoint {
                cluster,
                address: endpoint_ip(index, 0),
                present: true,
            });
        }
        if self.spec.ports.iter().any(|p| is_http_name(&p.name)) {
            conditions.push(Condition::RouteContains(host.clone()));
        }
        self.services.push(state);
        let i = self.services.len() - 1;
        Ok(self.change(i, format!("new service {host}"), conditions))
    }
}

/// The identities of a scenario's proxies.
pub fn proxies(scenario: &Scenario) -> Vec<ProxyIdentity> {
    let spec: &ProxySpec = &scenario.proxies;
    let services = scenario.mesh.services;
    (0..spec.count)
        .map(|p| {
            let (ip, pod, namespace, app) = if services > 0 {
                let s = p % services;
                let slot = p / services;
                (
                    endpoint_ip(s, slot),
                    format!("svc-{s}-{slot}"),
                    namespace_name(s % scenario.mesh.namespaces),
                    format!("svc-{s}"),
                )
            } else {
                (
                    format!("10.255.{}.{}", (p >> 8) & 255, p & 255),
                    format!("load-{p}"),
                    spec.namespace.clone(),
                    "load-client".to_string(),
                )
            };
            identity(p as usize, ip, pod, namespace, app, spec.interception)
        })
        .collect()
}

fn identity(
    index: usize,
    ip: String,
    pod: String,
    namespace: String,
    app: String,
    interception: Interception,
) -> ProxyIdentity {
    let node_id = format!("sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.{DOMAIN}");
    let metadata = serde_json::json!({
        "NAME": pod,
        "NAMESPACE": namespace,
        "LABELS": {"app": app, "version": "v1"},
        "SERVICE_ACCOUNT": app,
        "INSTANCE_IPS": ip,
        "ISTIO_VERSION": ISTIO_VERSION,
        "INTERCEPTION_MODE": interception.as_str(),
        "CLUSTER_ID": "Kubernetes",
        "WORKLOAD_NAME": app,
        "PROXY_CONFIG": {"proxyListenPort": 15001, "proxyInboundListenPort": 15006},
    });
    let metadata = match metadata {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    ProxyIdentity {
        index,
        node_id,
        namespace,
        pod,
        ip,
        app,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resource::parse_yaml;

    fn scenario(extra: &str) -> Scenario {
        Scenario::from_yaml(
            &format!(
                "name: t\nmesh: {{services: 4, namespaces: 2, endpoints: 2, sidecar_scoping: true, destination_rules: true{extra}}}\nproxies: {{count: 8}}\n"
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn generated_yaml_is_valid_istio_config() {
        for registry in ["", ", registry: service_entry"] {
            let s = scenario(registry);
            let mut mesh = Mesh::new(&s.mesh, Path::new("/nonexistent"));
            mesh.route_edit(1).unwrap();
            mesh.new_service(1).unwrap();
            for (path, content) in mesh.files() {
                for doc in parse_yaml(&content, &path.display().to_string()) {
                    assert!(
                        doc.diagnostics.iter().all(|d| !d.is_error()),
                        "{path:?}: {:?}\n{content}",
                        doc.diagnostics
                    );
                    assert!(doc.resource.is_some());
                }
            }
        }
    }

    #[test]
    fn changes_name_their_effects() {
        let s = scenario("");
        let mut mesh = Mesh::new(&s.mesh, Path::new("/d"));
        let edit = mesh.route_edit(3).unwrap();
        assert_eq!(edit.path, Path::new("/d/ns-1/svc-3.yaml"));
        assert_eq!(edit.applies, Applies::Namespace("ns-1".into()));
        assert_eq!(
            edit.conditions,
            vec![Condition::RouteContains("/bowline-load-edit-000001".into())]
        );
        assert!(edit.content.contains("/bowline-load-edit-000001"));
        let add = mesh.endpoint_add(2, 1).unwrap();
        assert_eq!(
            add.conditions,
            vec![Condition::Endpoint {
                cluster: "outbound|80||svc-2.ns-0.svc.cluster.local".into(),
                address: "10.0.2.3".into(),
                present: true
            }]
        );
        let removed = mesh.endpoint_remove(2, 1).unwrap().unwrap();
        assert!(!removed.content.contains("10.0.2.1\""));
        assert!(removed.content.contains("10.0.2.3"));
    }

    #[test]
    fn proxies_are_the_services_endpoints() {
        let s = scenario("");
        let p = proxies(&s);
        assert_eq!(p.len(), 8);
        assert_eq!(
            p[5].node_id,
            "sidecar~10.0.1.2~svc-1-1.ns-1~ns-1.svc.cluster.local"
        );
        let proxy = crate::model::Proxy::parse(
            &p[5].node_id,
            &serde_json::Value::Object(p[5].metadata.clone()),
        )
        .unwrap();
        assert_eq!(proxy.namespace, "ns-1");
        assert_eq!(proxy.labels["app"], "svc-1");
    }
}
