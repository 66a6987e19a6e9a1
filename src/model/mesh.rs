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
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            connect_timeout: std::time::Duration::from_secs(10),
            domain_suffix: "cluster.local".to_string(),
        }
    }
}
