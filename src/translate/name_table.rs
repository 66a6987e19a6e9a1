//! The name table (NDS) of a proxy whose agent answers DNS (pilot-agent's DNS proxy,
//! `ISTIO_META_DNS_CAPTURE`), as istiod builds it: every service the proxy's Sidecar scope
//! imports, by hostname, with
//!
//! - its virtual IPs (CIDRs left out);
//! - for a ServiceEntry without addresses, the address allocated to it (`model::auto_address`),
//!   when the proxy captures DNS;
//! - for a headless Kubernetes Service (no cluster IP, passthrough), the addresses of its ready
//!   endpoints on its first port, as Kubernetes DNS answers;
//!
//! and, for a Kubernetes Service, its name and namespace, from which the agent also answers the
//! short forms. A host declared by several ServiceEntries gets all their addresses; a Kubernetes
//! Service wins over ServiceEntries of the same host. A host with no address is left out (the
//! agent forwards such queries upstream).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::scope::Scope;
use crate::model::registry::{Health, Resolution, Service};
use crate::model::{Kind, Model, Proxy};

/// Generated from `proto/istio/networking/nds/v1/nds.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("istio.networking.nds.v1");

    impl prost::Name for NameTable {
        const NAME: &'static str = "NameTable";
        const PACKAGE: &'static str = "istio.networking.nds.v1";
    }
}

use pb::NameTable;
use pb::name_table::NameInfo;

const KUBERNETES: &str = "Kubernetes";
const EXTERNAL: &str = "External";

/// The name table of `proxy`.
pub fn build(model: &Model, proxy: &Proxy) -> NameTable {
    let scope = Scope::new(model, proxy);
    let mut table = NameTable::default();
    let mut seen = BTreeSet::new();
    for service in scope.egress.iter().flat_map(|e| e.services.iter()) {
        // A service imported by several egress listeners counts once.
        if !seen.insert(std::sync::Arc::as_ptr(service)) {
            continue;
        }
        let ips = addresses(&scope, service);
        if ips.is_empty() {
            continue;
        }
        let kubernetes = service.origin == Kind::Service;
        let registry = if kubernetes { KUBERNETES } else { EXTERNAL };
        match table.table.get_mut(&service.hostname) {
            None => {
                let mut info = NameInfo {
                    ips,
                    registry: registry.to_string(),
                    ..Default::default()
                };
                if kubernetes {
                    info.shortname = service.name.clone();
                    info.namespace = service.namespace.clone();
                }
                table.table.insert(service.hostname.clone(), info);
            }
            Some(info) if info.registry != KUBERNETES => {
                if kubernetes {
                    *info = NameInfo {
                        ips,
                        registry: KUBERNETES.to_string(),
                        shortname: service.name.clone(),
                        namespace: service.namespace.clone(),
                    };
                } else {
                    info.ips.extend(ips);
                }
            }
            Some(_) => {}
        }
    }
    table
}

/// What a query for the service's host is answered with.
fn addresses(scope: &Scope, service: &Service) -> Vec<String> {
    let addresses = scope.addresses(service);
    if !addresses.is_empty() {
        return addresses;
    }
    if service.origin == Kind::Service
        && service.resolution == Resolution::Passthrough
        && let Some(port) = service.ports.first()
    {
        return service
            .endpoints
            .get(&port.number)
            .into_iter()
            .flatten()
            .filter(|e| e.health == Health::Healthy && e.address.parse::<IpAddr>().is_ok())
            .map(|e| e.address.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::model;
    use serde_json::json;

    fn proxy(namespace: &str, dns_capture: bool) -> Proxy {
        Proxy::parse(
            &format!("sidecar~10.0.0.9~p.{namespace}~{namespace}.svc.cluster.local"),
            &json!({"ENVOY_STATUS_PORT": 15021, "DNS_CAPTURE": dns_capture.to_string()}),
        )
        .unwrap()
    }

    const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.7
  ports: [{port: 9080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 5432, name: tcp}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: nets, namespace: shop}
spec:
  hosts: [nets.example.com]
  addresses: [192.168.0.0/16]
  ports: [{number: 5000, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: other}
spec:
  hosts: [hidden.example.com]
  exportTo: ["."]
  addresses: [10.9.9.9]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.1.0.2}]
"#;

    #[test]
    fn services_the_proxy_sees_by_hostname() {
        let model = model(CONFIG);
        let table = build(&model, &proxy("shop", true)).table;
        let reviews = &table["reviews.shop.svc.cluster.local"];
        assert_eq!(reviews.ips, ["10.96.0.7"]);
        assert_eq!(reviews.registry, "Kubernetes");
        assert_eq!(
            (reviews.shortname.as_str(), reviews.namespace.as_str()),
            ("reviews", "shop")
        );
        // An addressless ServiceEntry host gets its allocated address.
        let api = &table["api.example.com"];
        assert_eq!(api.registry, "External");
        assert_eq!(
            api.ips,
            [model
                .index()
                .auto_address("shop", "api.example.com")
                .unwrap()
                .to_string()]
        );
        assert!(api.shortname.is_empty());
        // CIDRs are no answer; a headless Service without endpoints has none either; a
        // ServiceEntry not exported to the proxy's namespace is not in its table.
        for absent in [
            "nets.example.com",
            "db.shop.svc.cluster.local",
            "hidden.example.com",
        ] {
            assert!(!table.contains_key(absent), "{absent}: {table:?}");
        }
    }

    #[test]
    fn allocated_addresses_only_for_proxies_that_capture_dns() {
        let model = model(CONFIG);
        let table = build(&model, &proxy("shop", false)).table;
        assert!(!table.contains_key("api.example.com"));
        assert!(table.contains_key("reviews.shop.svc.cluster.local"));
    }
}
