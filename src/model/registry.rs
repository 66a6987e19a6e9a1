//! The service registry: services and their endpoints, from Kubernetes Services and
//! EndpointSlices and from ServiceEntries and WorkloadEntries, as istiod builds it.
//!
//! A Kubernetes Service becomes `<name>.<namespace>.svc.<domain>`; its endpoints come from its
//! EndpointSlices and from WorkloadEntries its selector picks in its namespace, each service port
//! on the entry's port istiod maps it to (`Port::workload_entry_target`). Each host of a
//! ServiceEntry becomes a service; its endpoints are the inline `endpoints` or the
//! WorkloadEntries its `workloadSelector` picks. The other side, the ports of a proxy's own
//! workload its service ports deliver to, is `workload::WorkloadPorts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::kube::{self, IntOrString};
use super::mesh::MeshConfig;
use super::networking::{self, Labels};

use super::resource::{Kind, Resource, Spec};

/// Application protocol of a service port, inferred as istiod infers it: the explicit
/// protocol (ServiceEntry), `appProtocol`, or the port name's prefix (`http-web` → HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Not declared: istiod detects HTTP on such ports.
    Unsupported,
}

impl Protocol {
    /// Parses a protocol name (case-insensitive); unknown names are `Unsupported`.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" => Protocol::Http,
            "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// From a Kubernetes port: `appProtocol` wins, then the name's prefix before `-`.
    pub fn from_kubernetes(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        if let Some(p) = app_protocol.map(Protocol::parse)
            && p != Protocol::Unsupported
        {
            return p;
        }
        let Some(name) = name else {
            return Protocol::Unsupported;
        };
        let lower = name.to_ascii_lowercase();
        if lower == "grpc-web" || lower.starts_with("grpc-web-") {
            return Protocol::GrpcWeb;
        }
        Protocol::parse(lower.split('-').next().unwrap_or_default())
    }

    /// Ports whose traffic is routed per request (HTTP connection manager).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Ports whose upstream connections speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// Where a service endpoint's port comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Port {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
    /// The workload port traffic for this port is delivered to, when known as a number.
    pub target_port: Option<u16>,
    /// A Kubernetes `targetPort` given by name: each workload's port of that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port_name: Option<NamedTargetPort>,
}

/// A Service's `targetPort` that names a port of its workloads (`targetPort: http-web`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NamedTargetPort {
    pub name: String,
    /// The service port's L4 protocol (`TCP`, `SCTP`): a container port must have the same.
    pub protocol: String,
}

impl Port {
    /// The port a WorkloadEntry with these `ports` serves this service port on, as istiod maps
    /// it: for a named `targetPort` the entry's port of that name (`None`: the entry does not
    /// serve the port); otherwise the entry's port named like the service port, else the
    /// target port, else the port number.
    pub fn workload_entry_target(&self, ports: &BTreeMap<String, u32>) -> Option<u16> {
        let named = |name: &str| {
            ports
                .get(name)
                .and_then(|n| u16::try_from(*n).ok())
                .filter(|n| *n != 0)
        };
        match &self.target_port_name {
            Some(target) => named(&target.name),
            None => Some(
                named(&self.name)
                    .or(self.target_port)
                    .unwrap_or(self.number),
            ),
        }
    }
}

/// How the proxy finds a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Endpoints are known addresses, delivered over EDS.
    Static,
    /// Endpoints are DNS names resolved by Envoy, all addresses used (STRICT_DNS).
    Dns,
    /// Endpoints are DNS names, one address used per connection (LOGICAL_DNS).
    DnsRoundRobin,
    /// No endpoints: connections go to the address the client dialled (ORIGINAL_DST).
    Passthrough,
    /// No endpoints: the proxy resolves the host each request names (HTTP `Host`, TLS SNI)
    /// with DNS (a ServiceEntry `DYNAMIC_DNS` with a wildcard host: a dynamic forward proxy).
    DynamicDns,
}

/// A service of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    /// Name of the resource that declared it.
    pub name: String,
    pub origin: Kind,
    pub ports: Vec<Port>,
    /// Virtual IPs (and CIDRs, for ServiceEntries).
    pub addresses: Vec<String>,
    pub resolution: Resolution,
    pub mesh_external: bool,
    /// Namespaces that can see the service (`*` all, `.` its own, `~` none).
    pub export_to: Vec<String>,
    /// Workloads (by labels, in the service's namespace) that implement the service.
    pub selector: Option<Labels>,
    /// Endpoints per service port number.
    pub endpoints: BTreeMap<u16, Vec<Endpoint>>,
}

impl Service {
    /// Whether the proxy reaches this service through a dynamic forward proxy: a wildcard host
    /// with `DYNAMIC_DNS` resolution (istiod builds these clusters for wildcard hosts only).
    pub fn dynamic_forward_proxy(&self) -> bool {
        self.resolution == Resolution::DynamicDns && self.hostname.starts_with('*')
    }

    /// The service accounts its endpoints run as (the identities a client verifies).
    pub fn service_accounts(&self) -> std::collections::BTreeSet<&str> {
        self.endpoints
            .values()
            .flatten()
            .filter_map(|e| e.service_account.as_deref())
            .filter(|sa| !sa.is_empty())
            .collect()
    }

    pub fn port(&self, number: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Whether a proxy in `namespace` may see this service.
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || (e == "." && self.namespace == namespace) || e == namespace)
    }
}

/// Health of an endpoint as sent to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Draining,
}

/// One address of a service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// An IP, a DNS name (DNS resolution) or `unix://` path.
    pub address: String,
    pub port: u16,
    pub labels: Labels,
    pub service_account: Option<String>,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    pub weight: u32,
    pub health: Health,
}

/// Every service, ordered by hostname then namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    pub services: Vec<Arc<Service>>,
}

impl Registry {
    /// Builds the registry from valid resources.
    pub fn build(resources: &[Arc<Resource>], mesh: &MeshConfig) -> Registry {
        let workload_entries: Vec<(&Resource, &networking::WorkloadEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::WorkloadEntry(we) => Some((r.as_ref(), we.as_ref())),
                _ => None,
            })
            .collect();
        let pods: Pods = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Pod(p) => Some((
                    (r.meta.namespace.as_str(), r.meta.name.as_str()),
                    (r.as_ref(), p.as_ref()),
                )),
                _ => None,
            })
            .collect();
        let mut slices: BTreeMap<(&str, &str), Vec<&kube::EndpointSlice>> = BTreeMap::new();
        for r in resources {
            if let Spec::EndpointSlice(slice) = &r.spec
                && let Some(service) = r.meta.labels.get(kube::SERVICE_NAME_LABEL)
            {
                slices
                    .entry((r.meta.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        let mut services = Vec::new();
        for r in resources {
            match &r.spec {
                Spec::Service(spec) => {
                    let found = slices
                        .get(&(r.meta.namespace.as_str(), r.meta.name.as_str()))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    services.push(kubernetes_service(
                        r,
                        spec,
                        found,
                        &pods,
                        &workload_entries,
                        mesh,
                    ));
                }
                Spec::ServiceEntry(se) => {
                    services.extend(service_entry(r, se, &workload_entries));
                }
                _ => {}
            }
        }
        services.sort_by(|a, b| {
            (a.hostname.as_str(), a.namespace.as_str())
                .cmp(&(b.hostname.as_str(), b.namespace.as_str()))
        });
        Registry {
            services: services.into_iter().map(Arc::new).collect(),
        }
    }

    /// Services with this hostname (one per declaring namespace).
    pub fn by_hostname<'a>(&'a self, hostname: &'a str) -> impl Iterator<Item = &'a Arc<Service>> {
        let start = self
            .services
            .partition_point(|s| s.hostname.as_str() < hostname);
        self.services[start..]
            .iter()
            .take_while(move |s| s.hostname == hostname)
    }
}

pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn to_port(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Pods by (namespace, name).
type Pods<'a> = BTreeMap<(&'a str, &'a str), (&'a Resource, &'a kube::Pod)>;

/// What an EndpointSlice endpoint inherits from the Pod it names: labels, service account
/// (Kubernetes' default is `default`) and locality (the `istio-locality` label, else the
/// slice's zone).
fn pod_identity(
    pods: &Pods,
    namespace: &str,
    ep: &kube::Endpoint,
) -> (Labels, Option<String>, Option<String>) {
    let zone = ep.zone.as_ref().map(|z| format!("/{z}"));
    let pod = ep
        .target_ref
        .as_ref()
        .filter(|t| t.kind.as_deref() == Some("Pod"))
        .and_then(|t| {
            let ns = t.namespace.as_deref().unwrap_or(namespace);
            pods.get(&(ns, t.name.as_deref()?))
        });
    let Some((meta, pod)) = pod else {
        return (Labels::new(), None, zone);
    };
    let locality = meta
        .meta
        .labels
        .get(kube::LOCALITY_LABEL)
        .map(|l| l.replace('.', "/"))
        .or(zone);
    let service_account = pod
        .spec
        .service_account_name
        .clone()
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| "default".to_string());
    (meta.meta.labels.clone(), Some(service_account), locality)
}

fn kubernetes_service(
    r: &Resource,
    spec: &kube::ServiceSpec,
    slices: &[&kube::EndpointSlice],
    pods: &Pods,
    workload_entries: &[(&Resource, &networking::WorkloadEntry)],
    mesh: &MeshConfig,
) -> Service {
    // UDP ports are not modelled; a port without a valid number is dropped.
    let ports: Vec<Port> = spec
        .ports
        .iter()
        .filter(|p| kube::l4_protocol(p.protocol.as_deref()) != "UDP")
        .filter_map(|p| {
            let number = to_port(p.port)?;
            let (target_port, target_port_name) = match &p.target_port {
                Some(IntOrString::Int(n)) => (to_port(*n), None),
                Some(IntOrString::String(name)) => (
                    None,
                    Some(NamedTargetPort {
                        name: name.clone(),
                        protocol: kube::l4_protocol(p.protocol.as_deref()),
                    }),
                ),
                // The API server defaults it to the port.
                None => (Some(number), None),
            };
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                number,
                protocol: Protocol::from_kubernetes(p.name.as_deref(), p.app_protocol.as_deref()),
                target_port,
                target_port_name,
            })
        })
        .collect();
    let hostname = format!(
        "{}.{}.svc.{}",
        r.meta.name, r.meta.namespace, mesh.domain_suffix
    );
    let mut addresses: Vec<String> = spec
        .cluster_ips
        .iter()
        .chain(spec.cluster_ip.iter())
        .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
        .cloned()
        .collect();
    addresses.sort();
    addresses.dedup();
    let export_to = r
        .meta
        .annotations
        .get("networking.istio.io/exportTo")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let external = spec.type_.as_deref() == Some("ExternalName");
    let mut endpoints: BTreeMap<u16, Vec<Endpoint>> = BTreeMap::new();
    for port in &ports {
        let list = endpoints.entry(port.number).or_default();
        if external {
            if let Some(name) = &spec.external_name {
                list.push(Endpoint {
                    address: name.clone(),
                    port: port.number,
                    labels: Labels::new(),
                    service_account: None,
                    locality: None,
                    weight: 1,
                    health: Health::Healthy,
                });
            }
            continue;
        }
        for slice in slices {
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|sp| sp.name.as_deref().unwrap_or_default() == port.name)
                .and_then(|sp| sp.port.and_then(to_port));
            let Some(target) = slice_port else { continue };
            for ep in &slice.endpoints {
                let health = match (ep.conditions.ready, ep.conditions.terminating) {
                    (_, Some(true)) => Health::Draining,
                    (Some(false), _) => Health::Unhealthy,
                    _ => Health::Healthy,
                };
                let (labels, service_account, locality) = pod_identity(pods, &r.meta.namespace, ep);
                for address in &ep.addresses {
                    list.push(Endpoint {
                        address: address.clone(),
                        port: target,
                        labels: labels.clone(),
                        service_account: service_account.clone(),
                        locality: locality.clone(),
                        weight: 1,
                        health,
                    });
                }
            }
        }
        if let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            for (wr, we) in workload_entries {
                if wr.meta.namespace != r.meta.namespace || !selects(selector, &we.labels) {
                    continue;
                }
                if let Some(target) = port.workload_entry_target(&we.ports) {
                    list.push(workload_endpoint(we, target));
                }
            }
        }
        list.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        list.dedup();
    }
    Service {
        hostname,
        namespace: r.meta.namespace.clone(),
        name: r.meta.name.clone(),
        origin: Kind::Service,
        ports,
        addresses,
        resolution: if external {
            Resolution::Dns
        } else if spec.cluster_ip.as_deref() == Some("None") {
            Resolution::Passthrough
        } else {
            Resolution::Static
        },
        mesh_external: external,
        export_to,
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        endpoints,
    }
}

fn workload_endpoint(we: &networking::WorkloadEntry, port: u16) -> Endpoint {
    Endpoint {
        address: we.address.clone(),
        port,
        labels: we.labels.clone(),
        service_account: we.service_account.clone(),
        locality: we.locality.clone(),
        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        health: Health::Healthy,
    }
}

fn service_entry(
    r: &Resource,
    se: &networking::ServiceEntry,
    workload_entries: &[(&Resource, &networking::WorkloadEntry)],
) -> Vec<Service> {
    let resolution = match se.resolution.unwrap_or(networking::Resolution::None) {
        networking::Resolution::None => Resolution::Passthrough,
        networking::Resolution::Static => Resolution::Static,
        networking::Resolution::Dns => Resolution::Dns,
        networking::Resolution::DynamicDns => Resolution::DynamicDns,
        networking::Resolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    };
    let ports: Vec<(Port, Option<u16>)> = se
        .ports
        .iter()
        .filter_map(|p| {
            let number = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
            let protocol = p
                .protocol
                .as_deref()
                .map(Protocol::parse)
                .unwrap_or(Protocol::Unsupported);
            let target = p
                .target_port
                .and_then(|t| u16::try_from(t).ok())
                .filter(|t| *t != 0);
            Some((
                Port {
                    name: p.name.clone(),
                    number,
                    protocol,
                    target_port: target,
                    target_port_name: None,
                },
                target,
            ))
        })
        .collect();
    let mut selected: Vec<&networking::WorkloadEntry> = se.endpoints.iter().collect();
    if let Some(selector) = &se.workload_selector {
        selected.extend(
            workload_entries
                .iter()
                .filter(|(wr, we)| {
                    wr.meta.namespace == r.meta.namespace && selects(&selector.labels, &we.labels)
                })
                .map(|(_, we)| *we),
        );
    }
    se.hosts
        .iter()
        .map(|host| {
            let mut endpoints = BTreeMap::new();
            for (port, target) in &ports {
                let mut list: Vec<Endpoint> = selected
                    .iter()
                    .filter_map(|we| {
                        Some(workload_endpoint(
                            we,
                            port.workload_entry_target(&we.ports)?,
                        ))
                    })
                    .collect();
                // DNS resolution without endpoints resolves the host itself.
                if list.is_empty()
                    && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                    && !host.starts_with('*')
                {
                    list.push(Endpoint {
                        address: host.clone(),
                        port: target.unwrap_or(port.number),
                        labels: Labels::new(),
                        service_account: None,
                        locality: None,
                        weight: 1,
                        health: Health::Healthy,
                    });
                }
                endpoints.insert(port.number, list);
            }
            Service {
                hostname: host.clone(),
                namespace: r.meta.namespace.clone(),
                name: r.meta.name.clone(),
                origin: Kind::ServiceEntry,
                ports: ports.iter().map(|(p, _)| p.clone()).collect(),
                addresses: se.addresses.clone(),
                resolution,
                mesh_external: se.location != Some(networking::Location::MeshInternal),
                export_to: se.export_to.clone(),
                selector: se.workload_selector.as_ref().map(|w| w.labels.clone()),
                endpoints,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_inference() {
        assert_eq!(
            Protocol::from_kubernetes(Some("http-web"), None),
            Protocol::Http
        );
        assert_eq!(
            Protocol::from_kubernetes(Some("grpc"), None),
            Protocol::Grpc
        );
        assert_eq!(
            Protocol::from_kubernetes(Some("grpc-web"), None),
            Protocol::GrpcWeb
        );
        assert_eq!(
            Protocol::from_kubernetes(Some("web"), None),
            Protocol::Unsupported
        );
        assert_eq!(
            Protocol::from_kubernetes(Some("web"), Some("http2")),
            Protocol::Http2
        );
        assert_eq!(Protocol::from_kubernetes(None, None), Protocol::Unsupported);
        assert_eq!(Protocol::parse("HTTPS"), Protocol::Https);
    }

    /// The registry of valid resources in `yaml`.
    fn registry(yaml: &str) -> Registry {
        Registry::build(
            &crate::model::testing::resources(yaml),
            &MeshConfig::default(),
        )
    }

    /// `address:port` of the endpoints of a service port.
    fn endpoints(r: &Registry, host: &str, port: u16) -> Vec<String> {
        let service = r.by_hostname(host).next().expect("the service");
        service
            .endpoints
            .get(&port)
            .map(|list| {
                list.iter()
                    .map(|e| format!("{}:{}", e.address, e.port))
                    .collect()
            })
            .unwrap_or_default()
    }

    const WORKLOAD_ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a, namespace: shop}
spec:
  address: 10.0.0.1
  labels: {app: web}
  ports: {http: 9080, http-alt: 9081}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b, namespace: shop}
spec:
  address: 10.0.0.2
  labels: {app: web}
"#;

    /// A UDP port (not modelled) before TCP ports leaves each TCP port its own target port.
    #[test]
    fn workload_entry_ports_follow_their_own_service_port() {
        let r = registry(&format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353}}
  - {{name: grpc, port: 90, targetPort: 9090}}
  - {{name: tcp-db, port: 91, protocol: TCP, targetPort: 9191}}
---{WORKLOAD_ENTRIES}"#
        ));
        let host = "web.shop.svc.cluster.local";
        let service = r.by_hostname(host).next().expect("the service");
        assert_eq!(
            service.ports.iter().map(|p| p.number).collect::<Vec<_>>(),
            vec![90, 91]
        );
        assert_eq!(
            endpoints(&r, host, 90),
            vec!["10.0.0.1:9090", "10.0.0.2:9090"]
        );
        assert_eq!(
            endpoints(&r, host, 91),
            vec!["10.0.0.1:9191", "10.0.0.2:9191"]
        );
    }

    /// istiod's mapping of a Service port onto a WorkloadEntry: the entry's port named like the
    /// service port wins over a numeric targetPort; a named targetPort is the entry's port of
    /// that name, and an entry without one does not serve the service port.
    #[test]
    fn workload_entry_ports_as_istiod_maps_them() {
        let r = registry(&format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: web, port: 81, targetPort: http-alt}}
  - {{name: admin, port: 82, targetPort: missing}}
  - {{name: plain, port: 83}}
---{WORKLOAD_ENTRIES}"#
        ));
        let host = "web.shop.svc.cluster.local";
        assert_eq!(
            endpoints(&r, host, 80),
            vec!["10.0.0.1:9080", "10.0.0.2:8080"]
        );
        assert_eq!(endpoints(&r, host, 81), vec!["10.0.0.1:9081"]);
        assert_eq!(endpoints(&r, host, 82), Vec::<String>::new());
        assert_eq!(endpoints(&r, host, 83), vec!["10.0.0.1:83", "10.0.0.2:83"]);
    }
}
