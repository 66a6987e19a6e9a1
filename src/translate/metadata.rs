//! `metadata.filter_metadata["istio"]`: what istiod records on the resources it builds about
//! the configuration that shaped them, and that Istio's clients read back (`istioctl
//! proxy-config`'s DESTINATION RULE and VIRTUAL SERVICE columns, `istioctl x describe`).
//!
//! - clusters: `services` (the service, or on an inbound cluster the services of its port),
//!   `config` (the DestinationRule, as merged: the rule the merge started from), `subset`,
//!   `external` (mesh-external services) and `alpn_override` (`"false"` under SIMPLE or MUTUAL
//!   TLS);
//! - routes built from a VirtualService's HTTP rules: `config` (the root, for a delegate's
//!   rules);
//! - outbound filter chains built from a VirtualService's TLS or TCP rules: `config`.
//!
//! Contract: a function of the resources named (name, namespace, kind) and the services; no
//! other input.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use serde_json::{Map, Value};

use crate::envoy::json_to_struct;
use crate::model::Kind;
use crate::model::Resource;
use crate::model::registry::Service;

/// The `filter_metadata` key istiod's metadata is under.
pub const ISTIO: &str = "istio";

/// istiod's path of a configuration resource:
/// `/apis/<group>/<version>/namespaces/<namespace>/<kebab-kind>/<name>`, with the version
/// istiod stores the kind at (`v1` for every networking and security kind), whatever version
/// the resource was written in.
pub fn config_path(kind: Kind, namespace: &str, name: &str) -> String {
    let (group, versions) = kind.group_versions();
    let version = versions.first().copied().unwrap_or("v1");
    format!(
        "/apis/{group}/{version}/namespaces/{namespace}/{}/{name}",
        kebab(kind.as_str())
    )
}

/// [`config_path`] of a resource.
pub fn config_path_of(resource: &Resource) -> String {
    config_path(resource.kind, &resource.meta.namespace, &resource.meta.name)
}

/// `DestinationRule` → `destination-rule`.
fn kebab(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 4);
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of one resource's `istio` metadata, built up.
#[derive(Debug, Default, Clone)]
pub struct Istio(Map<String, Value>);

impl Istio {
    /// `config`: the path of `resource`.
    pub fn config(self, resource: &Resource) -> Istio {
        self.config_path(config_path_of(resource))
    }

    /// `config`: a path made by [`config_path`].
    pub fn config_path(mut self, path: String) -> Istio {
        self.0.insert("config".to_string(), Value::String(path));
        self
    }

    /// `subset`: the DestinationRule subset a cluster is for.
    pub fn subset(mut self, name: &str) -> Istio {
        self.0
            .insert("subset".to_string(), Value::String(name.to_string()));
        self
    }

    /// `services`: `{host, name, namespace}` of each service (a ServiceEntry's host is its
    /// service's name, as istiod names it).
    pub fn services<'s>(mut self, services: impl IntoIterator<Item = &'s Service>) -> Istio {
        let list = services
            .into_iter()
            .map(|s| {
                let name = if s.origin == Kind::ServiceEntry {
                    &s.hostname
                } else {
                    &s.name
                };
                serde_json::json!({"host": s.hostname, "name": name, "namespace": s.namespace})
            })
            .collect();
        self.0.insert("services".to_string(), Value::Array(list));
        self
    }

    /// Any other field istiod sets (`external`, `alpn_override`).
    pub fn field(mut self, key: &str, value: Value) -> Istio {
        self.0.insert(key.to_string(), value);
        self
    }

    /// The Envoy metadata, `None` when no field is set (istiod leaves it unset).
    pub fn build(self) -> Option<xds_core::Metadata> {
        if self.0.is_empty() {
            return None;
        }
        Some(xds_core::Metadata {
            filter_metadata: [(ISTIO.to_string(), json_to_struct(&self.0))].into(),
            ..Default::default()
        })
    }
}

/// Metadata naming the one resource a route or filter chain was built from.
pub fn config(resource: &Resource) -> Option<xds_core::Metadata> {
    Istio::default().config(resource).build()
}

/// Metadata naming a resource by its [`config_path`].
pub fn config_of_path(path: String) -> Option<xds_core::Metadata> {
    Istio::default().config_path(path).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::struct_to_json;

    #[test]
    fn config_paths_as_istiod_writes_them() {
        assert_eq!(
            config_path(Kind::DestinationRule, "default", "reviews"),
            "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"
        );
        assert_eq!(
            config_path(Kind::VirtualService, "bookinfo", "reviews-route"),
            "/apis/networking.istio.io/v1/namespaces/bookinfo/virtual-service/reviews-route"
        );
        assert_eq!(
            config_path(Kind::Sidecar, "ns", "default"),
            "/apis/networking.istio.io/v1/namespaces/ns/sidecar/default"
        );
        assert_eq!(kebab("AuthorizationPolicy"), "authorization-policy");
    }

    #[test]
    fn empty_metadata_is_unset() {
        assert!(Istio::default().build().is_none());
        let m = Istio::default()
            .subset("v1")
            .field("external", Value::Bool(true))
            .build()
            .unwrap();
        assert_eq!(
            struct_to_json(&m.filter_metadata[ISTIO]),
            serde_json::json!({"subset": "v1", "external": true})
        );
    }
}
