//! Mesh-wide settings: the subset of Istio's MeshConfig that bowline honours, with istiod's
//! defaults.

use serde::Serialize;

/// What a sidecar does with traffic to destinations outside the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Forward to `PassthroughCluster` (istiod's default).
    AllowAny,
    /// Drop into `BlackHoleCluster`.
    RegistryOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshConfig {
    /// Namespace whose Sidecar (without selector) and other mesh-wide resources apply to all.
    pub root_namespace: String,
    pub trust_domain: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Upstream connect timeout for generated clusters.
    pub connect_timeout: std::time::Duration,
    /// Kubernetes DNS domain suffix (`cluster.local`).
    pub domain_suffix: String,
    /// `enableAutoMtls`: clusters without TLS settings send mTLS to endpoints labelled
    /// `security.istio.io/tlsMode: istio` (istiod's default: on).
    pub enable_auto_mtls: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            connect_timeout: std::time::Duration::from_secs(10),
            domain_suffix: "cluster.local".to_string(),
            enable_auto_mtls: true,
        }
    }
}

/// Errors in a mesh configuration file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeshError {
    #[error("mesh config: invalid YAML: {0}")]
    Yaml(String),
    #[error("mesh config: {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

impl MeshConfig {
    /// Parses the YAML of istiod's `mesh` ConfigMap key. The fields bowline honours are read
    /// and checked; the many others MeshConfig has are accepted and ignored.
    pub fn from_yaml(text: &str) -> Result<MeshConfig, MeshError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| MeshError::Yaml(e.to_string()))?;
        let mut mesh = MeshConfig::default();
        if value.is_null() {
            return Ok(mesh);
        }
        let Some(obj) = value.as_object() else {
            return Err(MeshError::Yaml("expected a mapping".to_string()));
        };
        let string = |field: &'static str| -> Result<Option<String>, MeshError> {
            match obj.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(MeshError::Field {
                    field,
                    message: format!("expected a non-empty string, got {other}"),
                }),
            }
        };
        if let Some(ns) = string("rootNamespace")? {
            mesh.root_namespace = ns;
        }
        if let Some(td) = string("trustDomain")? {
            mesh.trust_domain = td;
        }
        if let Some(t) = string("connectTimeout")? {
            mesh.connect_timeout =
                super::networking::parse_duration(&t).map_err(|message| MeshError::Field {
                    field: "connectTimeout",
                    message,
                })?;
        }
        match obj.get("enableAutoMtls") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(b)) => mesh.enable_auto_mtls = *b,
            Some(other) => {
                return Err(MeshError::Field {
                    field: "enableAutoMtls",
                    message: format!("expected true or false, got {other}"),
                });
            }
        }
        if let Some(policy) = obj.get("outboundTrafficPolicy").filter(|v| !v.is_null()) {
            match policy.get("mode").and_then(|m| m.as_str()) {
                None | Some("ALLOW_ANY") => {
                    mesh.outbound_traffic_policy = OutboundTrafficPolicy::AllowAny
                }
                Some("REGISTRY_ONLY") => {
                    mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
                }
                Some(other) => {
                    return Err(MeshError::Field {
                        field: "outboundTrafficPolicy.mode",
                        message: format!("{other:?} is not ALLOW_ANY or REGISTRY_ONLY"),
                    });
                }
            }
        }
        Ok(mesh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_fields_and_ignores_the_rest() {
        let mesh = MeshConfig::from_yaml(
            "rootNamespace: mesh-root\ntrustDomain: example.org\nconnectTimeout: 2s\n\
             outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nenableTracing: true\nenableAutoMtls: false\n",
        )
        .unwrap();
        assert_eq!(mesh.root_namespace, "mesh-root");
        assert_eq!(mesh.trust_domain, "example.org");
        assert_eq!(mesh.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficPolicy::RegistryOnly
        );
        assert!(!mesh.enable_auto_mtls);
        assert_eq!(MeshConfig::from_yaml("").unwrap(), MeshConfig::default());
        assert!(MeshConfig::default().enable_auto_mtls);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            MeshConfig::from_yaml("outboundTrafficPolicy: {mode: SOMETIMES}"),
            Err(MeshError::Field {
                field: "outboundTrafficPolicy.mode",
                ..
            })
        ));
        assert!(matches!(
            MeshConfig::from_yaml("connectTimeout: soon"),
            Err(MeshError::Field {
                field: "connectTimeout",
                ..
            })
        ));
        assert!(matches!(
            MeshConfig::from_yaml("[1, 2"),
            Err(MeshError::Yaml(_))
        ));
    }
}
