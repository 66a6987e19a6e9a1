//! `Proxy`: who is asking for configuration, parsed from the Envoy node id and node metadata as
//! istiod reads them.
//!
//! Node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<dns-domain>`. Metadata keys:
//! `NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`, `INSTANCE_IPS`, `ISTIO_VERSION`, `PROXY_CONFIG`,
//! `INTERCEPTION_MODE`, `POD_PORTS` (the pod's container ports, a JSON list in a string). The locality comes from the topology labels (as istiod reads them),
//! else from the Envoy node's `locality` ([`Proxy::set_node_locality`]).

use std::collections::BTreeMap;

use serde::Serialize;

/// The longest node id accepted, in bytes (Istio's are well under 300).
pub const MAX_NODE_ID: usize = 1024;

/// Errors in a node id or node metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error(
        "node id: {0} bytes with control characters or longer than {MAX_NODE_ID} bytes (expected type~ip~pod.namespace~domain)"
    )]
    IdText(usize),
    #[error("node id {0:?}: expected 4 parts separated by '~' (type~ip~pod.namespace~domain)")]
    IdParts(String),
    #[error("node id {0:?}: unknown proxy type {1:?} (expected sidecar or router)")]
    IdType(String, String),
    #[error("node id {0:?}: empty pod name")]
    IdPod(String),
    #[error("node metadata {field}: {message}")]
    Metadata {
        field: &'static str,
        message: String,
    },
    #[error(
        "node metadata says namespace {namespace:?}, service account {service_account:?}, but the caller proved {identity}"
    )]
    IdentityMismatch {
        namespace: String,
        service_account: String,
        identity: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    Sidecar,
    Router,
}

impl ProxyType {
    /// The node type's name (`sidecar`, `router`), as istiod and the node id spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Sidecar => "sidecar",
            ProxyType::Router => "router",
        }
    }
}

/// How traffic reaches the proxy: captured by iptables (REDIRECT, TPROXY) or sent to it
/// explicitly (NONE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
    None,
}

/// The subset of Istio's ProxyConfig that shapes generated config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProxyConfig {
    /// Port of the `virtualOutbound` listener (`proxyListenPort`).
    pub proxy_listen_port: u16,
    /// Port of the `virtualInbound` listener (`proxyInboundListenPort`).
    pub proxy_inbound_listen_port: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            proxy_listen_port: 15001,
            proxy_inbound_listen_port: 15006,
        }
    }
}

/// Label keys istiod reads a workload's locality from.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_SUBZONE: &str = "topology.istio.io/subzone";
/// `region/zone/subzone` in one label (`.` stands for `/`, which label values cannot hold).
pub const LABEL_LOCALITY: &str = "topology.istio.io/locality";
/// The older spelling of [`LABEL_LOCALITY`].
pub const LABEL_LOCALITY_LEGACY: &str = "istio-locality";

/// Where a workload runs: region, zone and subzone, each possibly empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// Parses `region/zone/subzone` (trailing parts optional; extra `/` stay in the subzone).
    pub fn parse(s: &str) -> Locality {
        let mut parts = s.splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or_default().to_string(),
            zone: parts.next().unwrap_or_default().to_string(),
            subzone: parts.next().unwrap_or_default().to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// The locality a workload's labels declare, as istiod's `localityFromProxyLabels` reads
    /// them: the region, zone and subzone labels if any is present, else the locality label.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
        let region = labels.get(LABEL_REGION);
        let zone = labels.get(LABEL_ZONE);
        let subzone = labels.get(LABEL_SUBZONE);
        if region.is_none() && zone.is_none() && subzone.is_none() {
            let label = labels
                .get(LABEL_LOCALITY)
                .or_else(|| labels.get(LABEL_LOCALITY_LEGACY))
                .filter(|l| !l.is_empty())?;
            let label = if label.contains('/') {
                label.clone()
            } else {
                label.replace('.', "/")
            };
            return Some(Locality::parse(&label));
        }
        Some(Locality {
            region: region.cloned().unwrap_or_default(),
            zone: zone.cloned().unwrap_or_default(),
            subzone: subzone.cloned().unwrap_or_default(),
        })
    }
}

impl std::fmt::Display for Locality {
    /// istiod's `LocalityToString`: `region`, `region/zone` or `region/zone/subzone`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.region)?;
        if self.zone.is_empty() {
            return Ok(());
        }
        write!(f, "/{}", self.zone)?;
        if !self.subzone.is_empty() {
            write!(f, "/{}", self.subzone)?;
        }
        Ok(())
    }
}

/// A named port of a pod's containers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodPort {
    pub name: String,
    /// The L4 protocol (`TCP`, `UDP`, `SCTP`).
    pub protocol: String,
    pub number: u16,
}

/// A connected (or described) proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proxy {
    /// The full node id.
    pub id: String,
    pub proxy_type: ProxyType,
    /// Pod (or workload) name.
    pub name: String,
    pub namespace: String,
    /// DNS domain from the node id (`<namespace>.svc.cluster.local`).
    pub dns_domain: String,
    pub ip_addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub istio_version: Option<String>,
    pub interception_mode: InterceptionMode,
    pub proxy_config: ProxyConfig,
    /// From the topology labels, else the Envoy node's locality; empty when unknown.
    pub locality: Locality,
    /// The named container ports of the proxy's pod as it reports them (`POD_PORTS`): where a
    /// Service's named `targetPort` is looked up when the Pod itself is not known.
    pub pod_ports: Vec<PodPort>,
    /// The identity the proxy proved (set by xds after authentication, never read from
    /// metadata).
    pub identity: Option<crate::model::Identity>,
    /// Whether the proxy is served a workload certificate (`default` secret): it proved its
    /// identity on the TLS port. Only then is mutual TLS part of its configuration.
    pub workload_certificate: bool,
    /// Where its workload certificate and trust bundle come from.
    pub secret_source: SecretSource,
    /// Whether the proxy's agent answers DNS from bowline's name table (`DNS_CAPTURE`): then
    /// ServiceEntry hosts without addresses are given allocated ones (istiod's default).
    pub dns_capture: bool,
}

/// Where a proxy gets its workload certificate (`default`) and trust bundle (`ROOTCA`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SecretSource {
    /// bowline serves them over the proxy's ADS stream (a stock Envoy started from bowline's
    /// bootstrap or injection): bowline makes the key.
    #[default]
    Ads,
    /// Istio's pilot-agent serves them from the key it made and the certificate it obtained
    /// from bowline's CA, over its own SDS socket (the bootstrap's `sds-grpc` cluster), as
    /// istiod configures every proxy. bowline never makes a key for such a proxy.
    Agent,
}

/// The inputs of translation that come from the proxy. Proxies with equal classes, and equal
/// workload ports in the model (`workload::WorkloadPorts`, which their inbound ports depend
/// on), get byte-identical configuration, so generated resources are shared between them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProxyClass {
    pub proxy_type: ProxyType,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub interception_mode: InterceptionMode,
    pub proxy_config: ProxyConfig,
    /// The workload address; only part of the class when listeners bind to it (interception
    /// mode NONE), so replicas of one workload share config otherwise.
    pub bind_ip: Option<String>,
    /// Endpoint priorities and weights are relative to the proxy's locality.
    pub locality: Locality,
    /// Whether mutual TLS is configured (the proxy holds a workload certificate).
    pub workload_certificate: bool,
    /// Where the configuration's SDS references point.
    pub secret_source: SecretSource,
    /// Outbound listeners of ServiceEntry hosts without addresses bind the allocated ones.
    pub dns_capture: bool,
}

impl Proxy {
    /// Parses a node id and its metadata (the node's `metadata` Struct as JSON).
    pub fn parse(node_id: &str, metadata: &serde_json::Value) -> Result<Proxy, ProxyError> {
        // The id reaches logs and debug views: printable and short, or refused.
        if node_id.len() > MAX_NODE_ID || node_id.chars().any(char::is_control) {
            return Err(ProxyError::IdText(node_id.len()));
        }
        let parts: Vec<&str> = node_id.split('~').collect();
        let [kind, ip, pod, domain] = parts.as_slice() else {
            return Err(ProxyError::IdParts(node_id.to_string()));
        };
        let proxy_type = match *kind {
            "sidecar" => ProxyType::Sidecar,
            "router" => ProxyType::Router,
            other => return Err(ProxyError::IdType(node_id.to_string(), other.to_string())),
        };
        let (name, id_namespace) = match pod.split_once('.') {
            Some((n, ns)) => (n, ns),
            None => (*pod, ""),
        };
        if name.is_empty() {
            return Err(ProxyError::IdPod(node_id.to_string()));
        }
        let meta_str = |key: &'static str| -> Result<Option<String>, ProxyError> {
            match metadata.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ProxyError::Metadata {
                    field: key,
                    message: format!("expected a string, got {other}"),
                }),
            }
        };
        let namespace = match meta_str("NAMESPACE")? {
            Some(ns) if !ns.is_empty() => ns,
            _ if !id_namespace.is_empty() => id_namespace.to_string(),
            _ => "default".to_string(),
        };
        let mut labels = BTreeMap::new();
        match metadata.get("LABELS") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                for (k, v) in map {
                    let Some(v) = v.as_str() else {
                        return Err(ProxyError::Metadata {
                            field: "LABELS",
                            message: format!("label {k:?} is not a string"),
                        });
                    };
                    labels.insert(k.clone(), v.to_string());
                }
            }
            Some(other) => {
                return Err(ProxyError::Metadata {
                    field: "LABELS",
                    message: format!("expected a map of strings, got {other}"),
                });
            }
        }
        let mut ip_addresses: Vec<String> = meta_str("INSTANCE_IPS")?
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if ip_addresses.is_empty() && !ip.is_empty() {
            ip_addresses.push(ip.to_string());
        }
        for addr in &ip_addresses {
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(ProxyError::Metadata {
                    field: "INSTANCE_IPS",
                    message: format!("{addr:?} is not an IP address"),
                });
            }
        }
        let interception_mode = match meta_str("INTERCEPTION_MODE")?.as_deref() {
            None | Some("") | Some("REDIRECT") => InterceptionMode::Redirect,
            Some("TPROXY") => InterceptionMode::Tproxy,
            Some("NONE") => InterceptionMode::None,
            Some(other) => {
                return Err(ProxyError::Metadata {
                    field: "INTERCEPTION_MODE",
                    message: format!("unknown mode {other:?} (expected REDIRECT, TPROXY or NONE)"),
                });
            }
        };
        let pod_ports = match meta_str("POD_PORTS")? {
            Some(text) if !text.is_empty() => parse_pod_ports(&text)?,
            _ => Vec::new(),
        };
        let mut proxy_config = ProxyConfig::default();
        if let Some(pc) = metadata.get("PROXY_CONFIG").filter(|v| !v.is_null()) {
            let port = |key: &str, default: u16| -> Result<u16, ProxyError> {
                match pc.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(default),
                    Some(v) => v
                        .as_u64()
                        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as u64))
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0)
                        .ok_or_else(|| ProxyError::Metadata {
                            field: "PROXY_CONFIG",
                            message: format!("{key}: {v} is not a port number"),
                        }),
                }
            };
            proxy_config.proxy_listen_port = port("proxyListenPort", 15001)?;
            proxy_config.proxy_inbound_listen_port = port("proxyInboundListenPort", 15006)?;
        }
        // pilot-agent's bootstrap always reports the port of Envoy's readiness listener, which
        // its template defines; bowline's bootstrap never does.
        let secret_source = if metadata
            .get("ENVOY_STATUS_PORT")
            .is_some_and(|v| !v.is_null())
        {
            SecretSource::Agent
        } else {
            SecretSource::Ads
        };
        let flag = |key: &'static str| -> Result<bool, ProxyError> {
            match metadata.get(key) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(serde_json::Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" | "" => Ok(false),
                    _ => Err(ProxyError::Metadata {
                        field: key,
                        message: format!("expected true or false, got {s:?}"),
                    }),
                },
                Some(other) => Err(ProxyError::Metadata {
                    field: key,
                    message: format!("expected true or false, got {other}"),
                }),
            }
        };
        Ok(Proxy {
            id: node_id.to_string(),
            proxy_type,
            name: name.to_string(),
            namespace,
            dns_domain: domain.to_string(),
            ip_addresses,
            service_account: meta_str("SERVICE_ACCOUNT")?.filter(|s| !s.is_empty()),
            istio_version: meta_str("ISTIO_VERSION")?,
            interception_mode,
            proxy_config,
            locality: Locality::from_labels(&labels).unwrap_or_default(),
            labels,
            pod_ports,
            identity: None,
            workload_certificate: false,
            secret_source,
            dns_capture: flag("DNS_CAPTURE")?,
        })
    }

    /// Uses the locality the Envoy node reports (`node.locality`) unless the proxy's labels
    /// already declare one, as istiod does.
    pub fn set_node_locality(&mut self, locality: Locality) {
        if Locality::from_labels(&self.labels).is_none() {
            self.locality = locality;
        }
    }

    /// The proxy's Pod as (namespace, name): the node id's `<pod>.<namespace>` when that
    /// namespace is the proxy's, as istiod reads it.
    pub fn pod_key(&self) -> Option<(&str, &str)> {
        let (name, namespace) = self.id.split('~').nth(2)?.split_once('.')?;
        (namespace == self.namespace).then_some((namespace, name))
    }

    /// `<pod>.<namespace>`, the id `istioctl` and `/debug/config_dump?proxyID=` use.
    pub fn short_id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    pub fn class(&self) -> ProxyClass {
        ProxyClass {
            proxy_type: self.proxy_type,
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            interception_mode: self.interception_mode,
            proxy_config: self.proxy_config.clone(),
            bind_ip: (self.interception_mode == InterceptionMode::None)
                .then(|| self.ip_addresses.first().cloned())
                .flatten(),
            locality: self.locality.clone(),
            workload_certificate: self.workload_certificate,
            secret_source: self.secret_source,
            dns_capture: self.dns_capture,
        }
    }

    /// istiod's check of a proven identity against the node: the metadata namespace (else the
    /// node id's) and, when set, the metadata service account must be the identity's.
    pub fn check_identity(&self, identity: &crate::model::Identity) -> Result<(), ProxyError> {
        let sa_ok = self
            .service_account
            .as_deref()
            .is_none_or(|sa| sa == identity.service_account);
        if self.namespace == identity.namespace && sa_ok {
            return Ok(());
        }
        Err(ProxyError::IdentityMismatch {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone().unwrap_or_default(),
            identity: identity.spiffe_id(),
        })
    }
}

/// `POD_PORTS`: a string holding a JSON list of `{name, containerPort, protocol}`; the named
/// ports are kept (only they can be a Service's `targetPort`).
fn parse_pod_ports(text: &str) -> Result<Vec<PodPort>, ProxyError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        #[serde(default)]
        name: Option<String>,
        container_port: u16,
        #[serde(default)]
        protocol: Option<String>,
    }
    let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| ProxyError::Metadata {
        field: "POD_PORTS",
        message: format!("expected a JSON list of container ports: {e}"),
    })?;
    Ok(entries
        .into_iter()
        .filter(|e| e.container_port != 0)
        .filter_map(|e| {
            Some(PodPort {
                name: e.name.filter(|n| !n.is_empty())?,
                protocol: crate::model::kube::l4_protocol(e.protocol.as_deref()),
                number: e.container_port,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_sidecar_node() {
        let p = Proxy::parse(
            "sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local",
            &json!({
                "NAMESPACE": "default",
                "LABELS": {"app": "reviews", "version": "v1"},
                "INSTANCE_IPS": "10.1.2.3,fd00::3",
                "SERVICE_ACCOUNT": "bookinfo-reviews",
                "INTERCEPTION_MODE": "NONE",
                "PROXY_CONFIG": {"proxyListenPort": 16001}
            }),
        )
        .unwrap();
        assert_eq!(p.proxy_type, ProxyType::Sidecar);
        assert_eq!(p.short_id(), "reviews-v1-abc.default");
        assert_eq!(p.ip_addresses, vec!["10.1.2.3", "fd00::3"]);
        assert_eq!(p.labels["version"], "v1");
        assert_eq!(p.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(p.interception_mode, InterceptionMode::None);
        assert_eq!(p.proxy_config.proxy_listen_port, 16001);
        assert_eq!(p.proxy_config.proxy_inbound_listen_port, 15006);
        assert_eq!(p.class().bind_ip.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn a_pilot_agent_node_reads_secrets_from_its_agent() {
        // What pilot-agent's bootstrap reports (an excerpt).
        let agent = Proxy::parse(
            "sidecar~10.1.2.3~a-0.mesh~mesh.svc.cluster.local",
            &json!({
                "ENVOY_STATUS_PORT": 15021,
                "ENVOY_PROMETHEUS_PORT": 15090,
                "DNS_CAPTURE": "true",
                "ISTIO_VERSION": "1.31-dev",
            }),
        )
        .unwrap();
        assert_eq!(agent.secret_source, SecretSource::Agent);
        assert!(agent.dns_capture);
        assert_eq!(agent.class().secret_source, SecretSource::Agent);
        let own = Proxy::parse(
            "sidecar~10.1.2.3~b-0.mesh~mesh.svc.cluster.local",
            &json!({"ISTIO_VERSION": "1.31-dev", "PROXY_CONFIG": {}}),
        )
        .unwrap();
        assert_eq!(own.secret_source, SecretSource::Ads);
        assert!(!own.dns_capture);
        assert_ne!(agent.class(), own.class());
        assert!(matches!(
            Proxy::parse("sidecar~1.1.1.1~a.b~c", &json!({"DNS_CAPTURE": "maybe"})),
            Err(ProxyError::Metadata {
                field: "DNS_CAPTURE",
                ..
            })
        ));
    }

    #[test]
    fn locality_from_labels_then_node() {
        let mut p = Proxy::parse(
            "sidecar~1.1.1.1~a.ns~ns.svc.cluster.local",
            &json!({"LABELS": {"topology.istio.io/locality": "us-east.zone-1.rack-2"}}),
        )
        .unwrap();
        assert_eq!(p.locality.to_string(), "us-east/zone-1/rack-2");
        p.set_node_locality(Locality::parse("eu/z"));
        assert_eq!(p.locality.to_string(), "us-east/zone-1/rack-2");
        let mut p = Proxy::parse(
            "sidecar~1.1.1.1~a.ns~ns.svc.cluster.local",
            &json!({"LABELS": {"topology.kubernetes.io/region": "us", "topology.kubernetes.io/zone": "a"}}),
        )
        .unwrap();
        assert_eq!(p.locality.to_string(), "us/a");
        let mut q = Proxy::parse("sidecar~1.1.1.1~a.ns~ns.svc.cluster.local", &json!({})).unwrap();
        assert!(q.locality.is_empty());
        q.set_node_locality(Locality::parse("eu/z"));
        assert_eq!(q.class().locality, Locality::parse("eu/z"));
        p.set_node_locality(Locality::parse("eu/z"));
        assert_eq!(p.locality.region, "us");
    }

    #[test]
    fn identity_must_match_namespace_and_service_account() {
        let p = Proxy::parse(
            "sidecar~1.1.1.1~a.shop~shop.svc.cluster.local",
            &json!({"NAMESPACE": "shop", "SERVICE_ACCOUNT": "cart"}),
        )
        .unwrap();
        let id = |ns: &str, sa: &str| crate::model::Identity::new("cluster.local", ns, sa).unwrap();
        assert!(p.check_identity(&id("shop", "cart")).is_ok());
        assert!(matches!(
            p.check_identity(&id("shop", "admin")),
            Err(ProxyError::IdentityMismatch { .. })
        ));
        assert!(p.check_identity(&id("kube-system", "cart")).is_err());
        let no_sa = Proxy::parse("sidecar~1.1.1.1~a.shop~x", &json!({})).unwrap();
        assert!(no_sa.check_identity(&id("shop", "anything")).is_ok());
    }

    #[test]
    fn pod_ports_and_pod_key() {
        let p = Proxy::parse(
            "sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local",
            &json!({
                "NAMESPACE": "shop",
                "POD_PORTS": r#"[{"name":"http-web","containerPort":8080,"protocol":"TCP"},{"containerPort":9090},{"name":"dns","containerPort":53,"protocol":"UDP"}]"#,
            }),
        )
        .unwrap();
        let ports: Vec<(&str, &str, u16)> = p
            .pod_ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol.as_str(), p.number))
            .collect();
        assert_eq!(ports, vec![("http-web", "TCP", 8080), ("dns", "UDP", 53)]);
        assert_eq!(p.pod_key(), Some(("shop", "web-0")));
        // The node id's namespace is not the proxy's: no Pod is named.
        let other =
            Proxy::parse("sidecar~10.0.0.1~web-0.shop~x", &json!({"NAMESPACE": "db"})).unwrap();
        assert_eq!(other.pod_key(), None);
        assert!(matches!(
            Proxy::parse(
                "sidecar~10.0.0.1~web-0.shop~x",
                &json!({"POD_PORTS": "[{\"name\": \"http\"}]"})
            ),
            Err(ProxyError::Metadata {
                field: "POD_PORTS",
                ..
            })
        ));
    }

    #[test]
    fn namespace_falls_back_to_node_id() {
        let p = Proxy::parse("router~1.1.1.1~gw.istio-system~x", &json!({})).unwrap();
        assert_eq!(p.namespace, "istio-system");
        assert_eq!(p.interception_mode, InterceptionMode::Redirect);
        assert_eq!(p.ip_addresses, vec!["1.1.1.1"]);
    }

    #[test]
    fn rejects_bad_ids_and_metadata() {
        assert!(matches!(
            Proxy::parse("sidecar~1.1.1.1", &json!({})),
            Err(ProxyError::IdParts(_))
        ));
        let forged = "sidecar~1.1.1.1~a.b~c\nERROR forged";
        assert_eq!(
            Proxy::parse(forged, &json!({})),
            Err(ProxyError::IdText(forged.len()))
        );
        let long = format!("sidecar~1.1.1.1~{}.b~c", "a".repeat(2000));
        assert_eq!(
            Proxy::parse(&long, &json!({})),
            Err(ProxyError::IdText(long.len()))
        );
        assert!(matches!(
            Proxy::parse("waypoint~1.1.1.1~a.b~c", &json!({})),
            Err(ProxyError::IdType(..))
        ));
        assert!(matches!(
            Proxy::parse(
                "sidecar~1.1.1.1~a.b~c",
                &json!({"INTERCEPTION_MODE": "MAGIC"})
            ),
            Err(ProxyError::Metadata { .. })
        ));
        assert!(matches!(
            Proxy::parse("sidecar~1.1.1.1~a.b~c", &json!({"LABELS": {"a": 1}})),
            Err(ProxyError::Metadata { .. })
        ));
        assert!(matches!(
            Proxy::parse(
                "sidecar~1.1.1.1~a.b~c",
                &json!({"PROXY_CONFIG": {"proxyListenPort": 70000}})
            ),
            Err(ProxyError::Metadata { .. })
        ));
    }
}
