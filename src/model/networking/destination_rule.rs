//! `DestinationRule.spec`: subsets and traffic policies (per rule and per port) with their
//! load balancer (simple, consistent hash, locality and zone-aware settings, warmup), outlier
//! detection, upstream (client) TLS, tunnel, PROXY protocol and retry budget settings. The
//! connection pool settings, shared with Sidecar, are in `common`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// `DestinationRule.spec`: policies applied to traffic for `host` after routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// Required.
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<TypeWorkloadSelector>,
}

/// Load balancing, connection pool, outlier detection, TLS and tunnel settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policy for one port of the destination; overrides the rule-wide policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnels TCP to the destination through a proxy (HTTP CONNECT or POST).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Required.
    #[serde(default)]
    pub target_host: String,
    /// Required.
    #[serde(default)]
    pub target_port: u32,
}

/// Upstream PROXY protocol settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// A limit on concurrent retries relative to active requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<String>,
}

/// A named set of endpoints of the service (by labels) with its own traffic policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Required.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// The load balancing algorithm (`oneof lb_policy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LbPolicy {
    Simple(SimpleLB),
    ConsistentHash(ConsistentHashLB),
}

/// Load balancer settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LoadBalancerSettingsRaw", into = "LoadBalancerSettingsRaw")]
pub struct LoadBalancerSettings {
    pub lb_policy: Option<LbPolicy>,
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated duration string; use `warmup`.
    pub warmup_duration_secs: Option<String>,
    pub warmup: Option<WarmupConfiguration>,
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoadBalancerSettingsRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    simple: Option<SimpleLB>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consistent_hash: Option<ConsistentHashLB>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warmup: Option<WarmupConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
}

impl TryFrom<LoadBalancerSettingsRaw> for LoadBalancerSettings {
    type Error = String;
    fn try_from(r: LoadBalancerSettingsRaw) -> Result<Self, String> {
        let lb_policy = one_of(
            "a load balancer",
            [
                ("simple", r.simple.map(LbPolicy::Simple)),
                (
                    "consistentHash",
                    r.consistent_hash.map(LbPolicy::ConsistentHash),
                ),
            ],
        )?;
        Ok(LoadBalancerSettings {
            lb_policy,
            locality_lb_setting: r.locality_lb_setting,
            warmup_duration_secs: r.warmup_duration_secs,
            warmup: r.warmup,
            zone_aware_lb_setting: r.zone_aware_lb_setting,
        })
    }
}

impl From<LoadBalancerSettings> for LoadBalancerSettingsRaw {
    fn from(l: LoadBalancerSettings) -> Self {
        let (simple, consistent_hash) = match l.lb_policy {
            Some(LbPolicy::Simple(s)) => (Some(s), None),
            Some(LbPolicy::ConsistentHash(c)) => (None, Some(c)),
            None => (None, None),
        };
        LoadBalancerSettingsRaw {
            simple,
            consistent_hash,
            locality_lb_setting: l.locality_lb_setting,
            warmup_duration_secs: l.warmup_duration_secs,
            warmup: l.warmup,
            zone_aware_lb_setting: l.zone_aware_lb_setting,
        }
    }
}

/// Standard load balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLB {
    Unspecified,
    /// Deprecated; same as `LEAST_REQUEST`.
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// What the consistent hash is computed from (`oneof hash_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashKey {
    HttpHeaderName(String),
    HttpCookie(HttpCookie),
    UseSourceIp(bool),
    HttpQueryParameterName(String),
}

/// The consistent hash algorithm (`oneof hash_algorithm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashAlgorithm {
    RingHash(RingHash),
    Maglev(MagLev),
}

/// Consistent-hash (session affinity) load balancing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsistentHashLBRaw", into = "ConsistentHashLBRaw")]
pub struct ConsistentHashLB {
    pub hash_key: Option<HashKey>,
    pub hash_algorithm: Option<HashAlgorithm>,
    /// Deprecated; use `ringHash.minimumRingSize`.
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConsistentHashLBRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_cookie: Option<HttpCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maglev: Option<MagLev>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum_ring_size: Option<u64>,
}

impl TryFrom<ConsistentHashLBRaw> for ConsistentHashLB {
    type Error = String;
    fn try_from(r: ConsistentHashLBRaw) -> Result<Self, String> {
        let hash_key = one_of(
            "consistentHash",
            [
                (
                    "httpHeaderName",
                    r.http_header_name.map(HashKey::HttpHeaderName),
                ),
                ("httpCookie", r.http_cookie.map(HashKey::HttpCookie)),
                ("useSourceIp", r.use_source_ip.map(HashKey::UseSourceIp)),
                (
                    "httpQueryParameterName",
                    r.http_query_parameter_name
                        .map(HashKey::HttpQueryParameterName),
                ),
            ],
        )?;
        let hash_algorithm = one_of(
            "consistentHash",
            [
                ("ringHash", r.ring_hash.map(HashAlgorithm::RingHash)),
                ("maglev", r.maglev.map(HashAlgorithm::Maglev)),
            ],
        )?;
        Ok(ConsistentHashLB {
            hash_key,
            hash_algorithm,
            minimum_ring_size: r.minimum_ring_size,
        })
    }
}

impl From<ConsistentHashLB> for ConsistentHashLBRaw {
    fn from(c: ConsistentHashLB) -> Self {
        let mut r = ConsistentHashLBRaw {
            minimum_ring_size: c.minimum_ring_size,
            ..ConsistentHashLBRaw::default()
        };
        match c.hash_key {
            Some(HashKey::HttpHeaderName(h)) => r.http_header_name = Some(h),
            Some(HashKey::HttpCookie(h)) => r.http_cookie = Some(h),
            Some(HashKey::UseSourceIp(b)) => r.use_source_ip = Some(b),
            Some(HashKey::HttpQueryParameterName(q)) => r.http_query_parameter_name = Some(q),
            None => {}
        }
        match c.hash_algorithm {
            Some(HashAlgorithm::RingHash(h)) => r.ring_hash = Some(h),
            Some(HashAlgorithm::Maglev(m)) => r.maglev = Some(m),
            None => {}
        }
        r
    }
}

/// Ring hash settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// The cookie a consistent hash is computed from (created by Envoy when `ttl` is set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Required.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<HttpCookieAttribute>,
}

/// An extra cookie attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookieAttribute {
    /// Required.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Slow start: traffic to new endpoints ramps up over `duration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Required duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Locality-weighted load balancing: distribute, failover or failover priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from locality `from` split over the localities of `to` by weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    #[serde(default)]
    pub from: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Traffic from region `from` fails over to region `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Zone-aware load balancing settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLoadBalancerSetting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u32>,
}

/// Circuit breaking: ejection of misbehaving hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated; use `consecutive5xxErrors` / `consecutiveGatewayErrors`.
    #[serde(default)]
    pub consecutive_errors: i32,
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive5xx_errors: Option<u32>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: i32,
    #[serde(default)]
    pub min_health_percent: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// TLS settings for connections to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Upstream TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancer_oneof() {
        let e = serde_json::from_str::<LoadBalancerSettings>(
            r#"{"simple":"RANDOM","consistentHash":{"useSourceIp":true}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`simple`"), "{e}");
        let e = serde_json::from_str::<ConsistentHashLB>(
            r#"{"useSourceIp":true,"httpHeaderName":"x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only one of"), "{e}");
        let lb: LoadBalancerSettings = serde_json::from_str(
            r#"{"consistentHash":{"httpCookie":{"name":"c","ttl":"0s"},"maglev":{"tableSize":65537}}}"#,
        )
        .unwrap();
        let Some(LbPolicy::ConsistentHash(c)) = &lb.lb_policy else {
            panic!("expected consistent hash")
        };
        assert!(matches!(c.hash_key, Some(HashKey::HttpCookie(_))));
        let back = serde_json::to_value(&lb).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"consistentHash":{"httpCookie":{"name":"c","ttl":"0s"},"maglev":{"tableSize":65537}}})
        );
    }
}
