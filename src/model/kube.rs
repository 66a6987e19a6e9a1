//! The Kubernetes kinds bowline reads (Service, EndpointSlice, Pod, Namespace, Secret), from
//! files or from the API server: only the fields the service registry, the proxies' inbound
//! ports and the gateways' credentials use. Other fields are accepted and ignored, as the API
//! server and kubectl add many. A Secret's values never leave through `Debug` or `Serialize`:
//! both show its keys only.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Pods (and WorkloadEntries) with these labels back the service.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: i64,
    /// A number, or the name of a container (or WorkloadEntry) port.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// The L4 protocol: TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// A `discovery.k8s.io/v1` EndpointSlice (its fields sit at the top level of the object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub address_type: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
}

/// Unset conditions mean "ready" and "serving", as the Kubernetes API documents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Pod: what an endpoint of its EndpointSlice inherits (labels come from the metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    /// Only their ports are read: a Service's named `targetPort` is looked up there.
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
}

impl PodSpec {
    /// The ports of the pod's containers and of its native sidecars (init containers with
    /// `restartPolicy: Always`), in that order, as istiod's `FindPort` searches them.
    pub fn ports(&self) -> impl Iterator<Item = &ContainerPort> {
        self.containers
            .iter()
            .chain(
                self.init_containers
                    .iter()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
            .flat_map(|c| &c.ports)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// `Always` on an init container makes it a native sidecar.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: Option<i64>,
    /// TCP (the default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// A Kubernetes L4 protocol as the API server defaults it (`TCP` when unset).
pub fn l4_protocol(protocol: Option<&str>) -> String {
    protocol
        .filter(|p| !p.is_empty())
        .unwrap_or("TCP")
        .to_ascii_uppercase()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
}

/// The pod label istiod reads a workload's locality from (`region.zone.subzone`).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// A core v1 Secret, as the API server stores it: `stringData` merged into `data` (a
/// `stringData` value wins over a `data` value of the same key), the type `Opaque` when unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Secret {
    #[serde(rename = "type")]
    pub type_: String,
    pub data: SecretData,
}

/// The type of a Secret without one.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
/// The type of a Secret holding a certificate and its key (`tls.crt`, `tls.key`).
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

/// A Secret document's own fields (they sit at the top level of the object), before decoding.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    /// Values are read as any JSON value, so that a wrong one is reported without showing it.
    #[serde(default)]
    data: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    string_data: BTreeMap<String, serde_json::Value>,
}

impl SecretObject {
    /// Decodes `data` (base64) and merges `stringData` into it. `Err` names the field whose
    /// value is not a string or not base64, never the value.
    pub fn decode(self) -> Result<Secret, (String, String)> {
        let invalid = |field: &str, key: &str, message: &str| {
            (format!("{field}[{key}]"), message.to_string())
        };
        let mut data = BTreeMap::new();
        for (key, value) in self.data {
            let serde_json::Value::String(text) = value else {
                return Err(invalid("data", &key, "value is not a string"));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| invalid("data", &key, "value is not valid base64"))?;
            data.insert(key, bytes);
        }
        for (key, value) in self.string_data {
            let serde_json::Value::String(text) = value else {
                return Err(invalid("stringData", &key, "value is not a string"));
            };
            data.insert(key, text.into_bytes());
        }
        Ok(Secret {
            type_: self
                .type_
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| SECRET_TYPE_OPAQUE.to_string()),
            data: SecretData(data),
        })
    }
}

/// A Secret's decoded values by key. `Debug` and `Serialize` show the keys with every value
/// replaced by `[redacted]`; the bytes are zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl SecretData {
    /// The value of `key`, if the Secret has that key (possibly empty).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every key and value, for a content hash (never to show).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

impl Serialize for SecretData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.keys().map(|k| (k, "[redacted]")))
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            value.iter_mut().for_each(|b| *b = 0);
            std::hint::black_box(&value);
        }
    }
}
