//! istiod's debug views of the registry, the mesh and the connections, with istiod's JSON
//! field names: `/debug/connections`, `/debug/mesh`, `/debug/push_status` and
//! `/debug/registryz`, `/debug/endpointz` (and its newer name `/debug/endpointShardz`), and
//! the pieces other views share (a service, a client). `debug` dispatches to them.
//!
//! Contract: each answer is built from what bowline holds (the connection registry, the model
//! in force); fields istiod has and bowline does not know are left out, never invented. Debug
//! callers on the ADS stream are not connections (they are never registered), so they are not
//! listed.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::model::registry::{Endpoint, Health, Protocol, Resolution, Service};
use crate::model::{Kind, MeshConfig};
use crate::xds::status::Connection;

/// The cluster bowline serves (istiod's default `CLUSTER_ID`).
pub const CLUSTER_ID: &str = "Kubernetes";

/// `/debug/connections`: istiod's `AdsClients` (`totalClients`, and `clients` when any, each
/// with `connectionId` `<node id>-<n>`, `connectedAt` (RFC 3339) and `address`).
pub fn connections(connections: &[std::sync::Arc<Connection>]) -> Value {
    let clients: Vec<Value> = connections.iter().map(|c| client(c)).collect();
    let mut out = json!({ "totalClients": clients.len() });
    if !clients.is_empty() {
        out["clients"] = clients.into();
    }
    out
}

/// One client as istiod's `AdsClient` names it: `connectionId` `<node id>-<n>`, `connectedAt`
/// (RFC 3339) and `address`.
pub fn client(c: &Connection) -> Value {
    json!({
        "connectionId": format!("{}-{}", c.proxy.id, c.id),
        "connectedAt": rfc3339(c.connected_at),
        "address": c.peer.map(|p| p.to_string()).unwrap_or_default(),
    })
}

/// `/debug/mesh`: the mesh config in force, as istiod's MeshConfig JSON (the fields bowline
/// honours).
pub fn mesh(mesh: &MeshConfig) -> Value {
    let mode = mesh.outbound_traffic_policy.as_str();
    let providers: Vec<Value> = mesh
        .extension_providers
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p.provider).unwrap_or_default();
            // Istio's oneof field names; bowline's placeholders for other kinds carry no body.
            if !v.is_object() || v.get("other").is_some() || v.get("invalid").is_some() {
                v = json!({});
            }
            v["name"] = p.name.clone().into();
            v
        })
        .collect();
    json!({
        "rootNamespace": mesh.root_namespace,
        "trustDomain": mesh.trust_domain,
        "trustDomainAliases": mesh.trust_domain_aliases,
        "outboundTrafficPolicy": { "mode": mode },
        "connectTimeout": duration(mesh.connect_timeout),
        "enableAutoMtls": mesh.enable_auto_mtls,
        "extensionProviders": providers,
    })
}

/// `/debug/push_status`: istiod's `ProxyStatus` map, keyed by a metric name then by the
/// resource concerned, each entry `{"proxy", "message"}`. bowline reports what went wrong
/// generating the connected proxies' configuration under `pilot_translation_diagnostics`,
/// keyed `<kind>/<namespace>/<name>`; no problem is an empty object, as istiod's.
pub fn push_status(connections: &[std::sync::Arc<Connection>]) -> Value {
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for c in connections {
        for d in c.diagnostics() {
            let key = format!("{}/{}/{}", d.kind, d.namespace, d.name);
            entries
                .entry(key)
                .or_insert_with(|| json!({ "proxy": c.proxy.short_id(), "message": d.message }));
        }
    }
    let mut out = json!({});
    if !entries.is_empty() {
        out["pilot_translation_diagnostics"] = json!(entries);
    }
    out
}

/// `/debug/registryz`: the services, in istiod's `model.Service` JSON shape.
pub fn registryz(services: &[std::sync::Arc<Service>]) -> Value {
    services.iter().map(|s| service(s)).collect()
}

/// One service in istiod's `model.Service` JSON shape.
pub fn service(s: &Service) -> Value {
    let registry = match s.origin {
        Kind::ServiceEntry => "External",
        _ => "Kubernetes",
    };
    let export_to: BTreeMap<&str, Value> = s
        .export_to
        .iter()
        .map(|n| (n.as_str(), json!({})))
        .collect();
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "port": p.number,
                "protocol": protocol(p.protocol),
            })
        })
        .collect();
    let mut attributes = json!({
        "ServiceRegistry": registry,
        "Name": s.name,
        "Namespace": s.namespace,
        "Labels": null,
        "ExportTo": if export_to.is_empty() { Value::Null } else { json!(export_to) },
        "LabelSelectors": s.selector,
    });
    if s.selector.is_none() {
        attributes["LabelSelectors"] = Value::Null;
    }
    let mut out = json!({
        "Attributes": attributes,
        "hostname": s.hostname,
        "Resolution": resolution(s.resolution),
        "MeshExternal": s.mesh_external,
    });
    if !ports.is_empty() {
        out["ports"] = ports.into();
    }
    let accounts: Vec<&str> = s.service_accounts().into_iter().collect();
    if !accounts.is_empty() {
        out["serviceAccounts"] = json!(accounts);
    }
    if let Some(vip) = s.addresses.first() {
        out["defaultAddress"] = vip.clone().into();
        out["clusterVIPs"] = json!({ "Addresses": { "Kubernetes": s.addresses } });
    }
    out
}

/// `/debug/endpointz`: istiod's endpoint shards, keyed by hostname then namespace, each
/// `{"Shards": {"<registry>/<cluster>": [IstioEndpoint...]}, "ServiceAccounts": {...}}`.
pub fn endpointz(services: &[std::sync::Arc<Service>]) -> Value {
    let mut out: BTreeMap<&str, BTreeMap<&str, Value>> = BTreeMap::new();
    for s in services {
        let registry = match s.origin {
            Kind::ServiceEntry => "External",
            _ => "Kubernetes",
        };
        let endpoints: Vec<Value> = s
            .endpoints
            .iter()
            .flat_map(|(number, endpoints)| {
                let port_name = s.port(*number).map(|p| p.name.as_str()).unwrap_or("");
                endpoints
                    .iter()
                    .map(move |e| endpoint(e, port_name, &s.namespace))
            })
            .collect();
        let accounts: BTreeMap<&str, Value> = s
            .service_accounts()
            .into_iter()
            .map(|sa| (sa, json!({})))
            .collect();
        out.entry(s.hostname.as_str()).or_default().insert(
            s.namespace.as_str(),
            json!({
                "Shards": { format!("{registry}/{CLUSTER_ID}"): endpoints },
                "ServiceAccounts": accounts,
            }),
        );
    }
    json!(out)
}

fn endpoint(e: &Endpoint, port_name: &str, namespace: &str) -> Value {
    let health = match e.health {
        Health::Healthy => 1,
        Health::Unhealthy => 2,
        Health::Draining => 3,
    };
    json!({
        "Labels": e.labels,
        "Addresses": [e.address],
        "ServicePortName": port_name,
        "ServiceAccount": e.service_account.clone().unwrap_or_default(),
        "Locality": {
            "Label": e.locality.clone().unwrap_or_default(),
            "ClusterID": "Kubernetes",
        },
        "EndpointPort": e.port,
        "LbWeight": e.weight,
        "TLSMode": e.labels.get("security.istio.io/tlsMode").cloned().unwrap_or_default(),
        "Namespace": namespace,
        "HealthStatus": health,
    })
}

/// istiod's protocol names (`protocol.Instance`).
pub fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "HTTP",
        Protocol::Http2 => "HTTP2",
        Protocol::Grpc => "GRPC",
        Protocol::GrpcWeb => "GRPC-Web",
        Protocol::Https => "HTTPS",
        Protocol::Tls => "TLS",
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Mongo => "Mongo",
        Protocol::Redis => "Redis",
        Protocol::Mysql => "MySQL",
        Protocol::Unsupported => "UnsupportedProtocol",
    }
}

/// istiod's `model.Resolution` values (serialized as numbers).
fn resolution(r: Resolution) -> u8 {
    match r {
        Resolution::Static => 0,
        Resolution::Dns => 1,
        Resolution::Passthrough => 2,
        Resolution::DnsRoundRobin => 3,
        Resolution::DynamicDns => 5,
    }
}

/// A protobuf JSON duration: seconds with an `s`.
fn duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let n = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
        format!("{}s", n.trim_end_matches('0'))
    }
}

/// RFC 3339 in UTC, with nanoseconds when any (Go's `time.Time` JSON).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t.max(SystemTime::UNIX_EPOCH));
    let nanos = t.nanosecond();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::Proxy;
    use crate::xds::Transport;

    #[test]
    fn connections_in_istiods_shape() {
        assert_eq!(connections(&[]), json!({"totalClients": 0}));
        let proxy =
            Proxy::parse("sidecar~10.0.0.1~a-0.ns~ns.svc.cluster.local", &json!({})).unwrap();
        let c = Connection::new(3, proxy, false, Transport::Plaintext)
            .with_peer(Some("10.0.0.1:40000".parse().unwrap()));
        let v = connections(&[Arc::new(c)]);
        assert_eq!(v["totalClients"], 1);
        let client = &v["clients"][0];
        assert_eq!(
            client["connectionId"],
            "sidecar~10.0.0.1~a-0.ns~ns.svc.cluster.local-3"
        );
        assert_eq!(client["address"], "10.0.0.1:40000");
        assert!(client["connectedAt"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rfc3339_matches_go() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn mesh_in_istiods_field_names() {
        let v = mesh(&MeshConfig::default());
        assert_eq!(v["rootNamespace"], "istio-system");
        assert_eq!(v["trustDomain"], "cluster.local");
        assert_eq!(v["outboundTrafficPolicy"]["mode"], "ALLOW_ANY");
        assert_eq!(v["connectTimeout"], "10s");
        assert_eq!(v["enableAutoMtls"], true);
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn push_status_without_problems_is_empty() {
        assert_eq!(push_status(&[]), json!({}));
    }
}
