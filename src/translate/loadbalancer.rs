//! Load balancing from DestinationRule `loadBalancer`, as istiod applies it: the cluster's
//! `lb_policy` and `lb_config` (least request by default, round robin, random, original
//! destination for PASSTHROUGH, ring hash or maglev for `consistentHash`, slow start for
//! `warmup`); the route `hash_policy` that feeds a consistent hash; and locality-aware load
//! balancing (`localityLbSetting`): endpoint priorities and weights relative to the proxy's
//! own locality.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
use envoy_types::pb::envoy::r#type::v3 as xds_type;
use envoy_types::pb::google::protobuf as pb;

use super::naming;
use super::policy::At;
use super::scope::Scope;
use crate::model::networking::{
    ConsistentHashLB, HashAlgorithm, HashKey, LbPolicy, LoadBalancerSettings, LocalityDistribute,
    LocalityFailover, SimpleLB,
};
use crate::model::proxy::{LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE, Locality};
use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy as XdsLbPolicy};

/// Envoy's default ring size, which istiod sets explicitly for the deprecated form.
const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// `warmup.minimumPercent` default (Envoy's).
const DEFAULT_WARMUP_MIN_PERCENT: f64 = 10.0;
/// `warmup.aggression` default: a linear ramp.
const DEFAULT_WARMUP_AGGRESSION: f64 = 1.0;
/// istiod pins slow-start aggression to its configured value with a runtime key no one can
/// set.
const FIXED_RUNTIME_KEY: &str = "(";

/// The simple algorithm of a load balancer setting, if it names one.
pub fn simple(lb: Option<&LoadBalancerSettings>) -> Option<SimpleLB> {
    match lb?.lb_policy.as_ref()? {
        LbPolicy::Simple(s) => Some(*s),
        LbPolicy::ConsistentHash(_) => None,
    }
}

fn consistent_hash(lb: &LoadBalancerSettings) -> Option<&ConsistentHashLB> {
    match lb.lb_policy.as_ref()? {
        LbPolicy::ConsistentHash(c) => Some(c),
        LbPolicy::Simple(_) => None,
    }
}

/// Sets the cluster's load balancing policy (istiod's `applyLoadBalancer` after the locality
/// part): original-destination clusters keep `CLUSTER_PROVIDED`; `PASSTHROUGH` turns the
/// cluster into one; otherwise least request (the default and `LEAST_REQUEST`/`LEAST_CONN`),
/// round robin or random, with `warmup` as slow start on the first two; `consistentHash`
/// selects ring hash or maglev.
pub fn apply_lb_policy(
    scope: &Scope,
    cluster: &mut xds_cluster::Cluster,
    lb: Option<&At<LoadBalancerSettings>>,
) {
    if is_original_dst(cluster) {
        cluster.lb_policy = XdsLbPolicy::ClusterProvided as i32;
        return;
    }
    match simple(lb.map(|l| l.value)) {
        Some(SimpleLB::Random) => cluster.lb_policy = XdsLbPolicy::Random as i32,
        Some(SimpleLB::RoundRobin) => {
            cluster.lb_policy = XdsLbPolicy::RoundRobin as i32;
            if let Some(slow_start) = lb.and_then(|lb| slow_start(scope, lb)) {
                cluster.lb_config = Some(xds_cluster::cluster::LbConfig::RoundRobinLbConfig(
                    xds_cluster::cluster::RoundRobinLbConfig {
                        slow_start_config: Some(slow_start),
                    },
                ));
            }
        }
        Some(SimpleLB::Passthrough) => {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.lb_policy = XdsLbPolicy::ClusterProvided as i32;
            cluster.load_assignment = None;
            cluster.eds_cluster_config = None;
            return;
        }
        Some(SimpleLB::LeastRequest | SimpleLB::LeastConn | SimpleLB::Unspecified) | None => {
            cluster.lb_policy = XdsLbPolicy::LeastRequest as i32;
            if let Some(slow_start) = lb.and_then(|lb| slow_start(scope, lb)) {
                cluster.lb_config = Some(xds_cluster::cluster::LbConfig::LeastRequestLbConfig(
                    xds_cluster::cluster::LeastRequestLbConfig {
                        slow_start_config: Some(slow_start),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    let Some(ch) = lb.and_then(|lb| consistent_hash(lb.value)) else {
        return;
    };
    use xds_cluster::cluster::LbConfig;
    match &ch.hash_algorithm {
        Some(HashAlgorithm::Maglev(m)) => {
            cluster.lb_policy = XdsLbPolicy::Maglev as i32;
            if let Some(size) = m.table_size.filter(|s| *s != 0) {
                cluster.lb_config = Some(LbConfig::MaglevLbConfig(
                    xds_cluster::cluster::MaglevLbConfig {
                        table_size: Some(pb::UInt64Value { value: size }),
                    },
                ));
            }
        }
        Some(HashAlgorithm::RingHash(r)) => {
            cluster.lb_policy = XdsLbPolicy::RingHash as i32;
            if let Some(size) = r.minimum_ring_size.filter(|s| *s != 0) {
                cluster.lb_config = Some(LbConfig::RingHashLbConfig(ring_hash_config(size)));
            }
        }
        None => {
            cluster.lb_policy = XdsLbPolicy::RingHash as i32;
            let size = ch
                .minimum_ring_size
                .filter(|s| *s != 0)
                .unwrap_or(DEFAULT_MINIMUM_RING_SIZE);
            cluster.lb_config = Some(LbConfig::RingHashLbConfig(ring_hash_config(size)));
        }
    }
}

fn ring_hash_config(minimum: u64) -> xds_cluster::cluster::RingHashLbConfig {
    xds_cluster::cluster::RingHashLbConfig {
        minimum_ring_size: Some(pb::UInt64Value { value: minimum }),
        ..Default::default()
    }
}

fn is_original_dst(cluster: &xds_cluster::Cluster) -> bool {
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

/// `warmup` (or the deprecated `warmupDurationSecs`) as Envoy slow start.
fn slow_start(
    scope: &Scope,
    lb: &At<LoadBalancerSettings>,
) -> Option<xds_cluster::cluster::SlowStartConfig> {
    if let Some(w) = &lb.value.warmup {
        return Some(xds_cluster::cluster::SlowStartConfig {
            slow_start_window: lb.duration(scope, "warmup.duration", w.duration.as_ref()),
            aggression: Some(xds_core::RuntimeDouble {
                default_value: w.aggression.unwrap_or(DEFAULT_WARMUP_AGGRESSION),
                runtime_key: FIXED_RUNTIME_KEY.to_string(),
            }),
            min_weight_percent: Some(xds_type::Percent {
                value: w.minimum_percent.unwrap_or(DEFAULT_WARMUP_MIN_PERCENT),
            }),
        });
    }
    let window = lb.value.warmup_duration_secs.as_ref()?;
    Some(xds_cluster::cluster::SlowStartConfig {
        slow_start_window: lb.duration(scope, "warmupDurationSecs", Some(window)),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Consistent hashing on routes
// ---------------------------------------------------------------------------------------------

/// The consistent hash of a destination (istiod's `HashForHTTPDestination`): the subset's
/// port-level setting, else the subset's, else the rule's port-level setting, else the rule's.
fn consistent_hash_for<'a>(
    scope: &Scope<'a>,
    host: &str,
    port: u16,
    subset: Option<&str>,
) -> Option<(At<'a, LoadBalancerSettings>, &'a ConsistentHashLB)> {
    let service = scope
        .egress
        .iter()
        .flat_map(|e| e.services.iter())
        .find(|s| s.hostname == host)?;
    let rule = scope.destination_rule(service)?;
    // (policy, path) → the consistent hash of its load balancer and of its entry for `port`.
    let hashes = |resource, path: String, tp: &'a crate::model::networking::TrafficPolicy| {
        let whole = tp.load_balancer.as_ref().and_then(|lb| {
            consistent_hash(lb).map(|ch| {
                (
                    At {
                        value: lb,
                        resource,
                        path: format!("{path}.loadBalancer"),
                    },
                    ch,
                )
            })
        });
        let port_level = tp
            .port_level_settings
            .iter()
            .enumerate()
            .find(|(_, p)| {
                p.port
                    .as_ref()
                    .is_some_and(|sel| sel.number == u32::from(port))
            })
            .and_then(|(i, p)| {
                let lb = p.load_balancer.as_ref()?;
                consistent_hash(lb).map(|ch| {
                    (
                        At {
                            value: lb,
                            resource,
                            path: format!("{path}.portLevelSettings[{i}].loadBalancer"),
                        },
                        ch,
                    )
                })
            });
        (whole, port_level)
    };
    let (top, top_port) = match rule.traffic_policy {
        Some((r, tp)) => hashes(r, "spec.trafficPolicy".to_string(), tp),
        None => (None, None),
    };
    let (sub, sub_port) = match subset
        .and_then(|name| rule.subset(name))
        .and_then(|s| s.subset.traffic_policy.as_ref().map(|tp| (s, tp)))
    {
        Some((s, tp)) => hashes(
            s.resource,
            format!("spec.subsets[{}].trafficPolicy", s.index),
            tp,
        ),
        None => (None, None),
    };
    sub_port.or(sub).or(top_port).or(top)
}

/// The route hash policy for traffic to `host:port` (optionally a subset): what the
/// destination's DestinationRule `consistentHash` hashes on. Empty when it has none.
pub fn hash_policy(
    scope: &Scope,
    host: &str,
    port: u16,
    subset: Option<&str>,
) -> Vec<xds_route::route_action::HashPolicy> {
    consistent_hash_for(scope, host, port, subset)
        .and_then(|(at, ch)| route_hash_policy(scope, &at, ch))
        .into_iter()
        .collect()
}

/// [`hash_policy`] for an outbound cluster name (`outbound|<port>|<subset>|<host>`).
pub fn hash_policy_for_cluster(
    scope: &Scope,
    cluster: &str,
) -> Vec<xds_route::route_action::HashPolicy> {
    match naming::parse_outbound_cluster(cluster) {
        Some((port, subset, host)) => {
            hash_policy(scope, host, port, Some(subset).filter(|s| !s.is_empty()))
        }
        None => Vec::new(),
    }
}

/// Adds the destinations' hash policies to a VirtualService route action, as istiod does: for a
/// single destination, its hash policy, and retries then stay on the same host (no
/// `previous_hosts` predicate); for weighted destinations, every destination's hash policy in
/// order.
pub fn apply_consistent_hash(scope: &Scope, action: &mut xds_route::RouteAction) {
    use xds_route::route_action::ClusterSpecifier;
    match &action.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            let hash = hash_policy_for_cluster(scope, name);
            if !hash.is_empty() {
                if let Some(retry) = &mut action.retry_policy {
                    retry.retry_host_predicate.clear();
                }
                action.hash_policy = hash;
            }
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let hash: Vec<_> = w
                .clusters
                .iter()
                .flat_map(|c| hash_policy_for_cluster(scope, &c.name))
                .collect();
            action.hash_policy.extend(hash);
        }
        _ => {}
    }
}

/// [`apply_consistent_hash`] on an action being built.
pub fn with_consistent_hash(
    scope: &Scope,
    mut action: xds_route::RouteAction,
) -> xds_route::RouteAction {
    apply_consistent_hash(scope, &mut action);
    action
}

fn route_hash_policy(
    scope: &Scope,
    at: &At<LoadBalancerSettings>,
    ch: &ConsistentHashLB,
) -> Option<xds_route::route_action::HashPolicy> {
    use xds_route::route_action::hash_policy::{self, PolicySpecifier};
    let specifier = match ch.hash_key.as_ref()? {
        HashKey::HttpHeaderName(name) => PolicySpecifier::Header(hash_policy::Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashKey::HttpCookie(c) => PolicySpecifier::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            ttl: at.duration(scope, "consistentHash.httpCookie.ttl", c.ttl.as_ref()),
            path: c.path.clone().unwrap_or_default(),
            attributes: c
                .attributes
                .iter()
                .map(|a| hash_policy::CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        HashKey::UseSourceIp(source_ip) => {
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: *source_ip,
            })
        }
        HashKey::HttpQueryParameterName(name) => {
            PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
        }
    };
    Some(xds_route::route_action::HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    })
}

/// What the destination's DestinationRule sets on an outbound `tcp_proxy` (istiod reads the
/// rule-wide policy only): `connectionPool.tcp.idleTimeout` and `maxConnectionDuration`, and a
/// source-IP hash when `consistentHash.useSourceIp` is in force for the subset.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TcpProxyPolicy {
    pub idle_timeout: Option<pb::Duration>,
    pub max_downstream_connection_duration: Option<pb::Duration>,
    pub hash_policy: Vec<xds_type::HashPolicy>,
}

impl TcpProxyPolicy {
    /// The policy for a `tcp_proxy` to an outbound cluster.
    pub fn for_cluster(scope: &Scope, cluster: &str) -> TcpProxyPolicy {
        let Some((_, subset, host)) = naming::parse_outbound_cluster(cluster) else {
            return TcpProxyPolicy::default();
        };
        let Some(rule) = scope
            .egress
            .iter()
            .flat_map(|e| e.services.iter())
            .find(|s| s.hostname == host)
            .and_then(|s| scope.destination_rule(s))
        else {
            return TcpProxyPolicy::default();
        };
        let mut out = TcpProxyPolicy::default();
        if let Some((resource, tp)) = rule.traffic_policy
            && let Some(cp) = &tp.connection_pool
        {
            let at = At {
                value: cp,
                resource,
                path: "spec.trafficPolicy.connectionPool".to_string(),
            };
            if let Some(tcp) = &cp.tcp {
                out.idle_timeout = at.duration(scope, "tcp.idleTimeout", tcp.idle_timeout.as_ref());
                out.max_downstream_connection_duration = at.duration(
                    scope,
                    "tcp.maxConnectionDuration",
                    tcp.max_connection_duration.as_ref(),
                );
            }
        }
        let source_ip = |lb: Option<&LoadBalancerSettings>| {
            lb.and_then(consistent_hash)
                .is_some_and(|ch| ch.hash_key == Some(HashKey::UseSourceIp(true)))
        };
        let mut use_source_ip = source_ip(
            rule.traffic_policy
                .and_then(|(_, tp)| tp.load_balancer.as_ref()),
        );
        if let Some(lb) = rule
            .subset(subset)
            .and_then(|s| s.subset.traffic_policy.as_ref())
            .and_then(|tp| tp.load_balancer.as_ref())
        {
            use_source_ip = source_ip(Some(lb));
        }
        if use_source_ip {
            out.hash_policy = vec![xds_type::HashPolicy {
                policy_specifier: Some(xds_type::hash_policy::PolicySpecifier::SourceIp(
                    xds_type::hash_policy::SourceIp {},
                )),
            }];
        }
        out
    }

    /// Sets the policy on a `tcp_proxy`.
    pub fn apply(self, proxy: &mut tcp_proxy::TcpProxy) {
        proxy.idle_timeout = self.idle_timeout.or(proxy.idle_timeout);
        proxy.max_downstream_connection_duration = self.max_downstream_connection_duration;
        proxy.hash_policy = self.hash_policy;
    }
}

// ---------------------------------------------------------------------------------------------
// Locality load balancing
// ---------------------------------------------------------------------------------------------

/// The locality load balancing setting in force (istiod's `GetEffectiveLbSetting` with the
/// mesh default `localityLbSetting: {enabled: true}`): the rule's, or the empty default.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalitySetting<'a> {
    pub distribute: &'a [LocalityDistribute],
    pub failover: &'a [LocalityFailover],
    pub failover_priority: &'a [String],
}

/// The locality setting of a cluster's load balancer; `None` when the rule disables locality
/// load balancing (`enabled: false`).
pub fn locality_setting<'a>(
    scope: &Scope,
    lb: Option<&At<'a, LoadBalancerSettings>>,
) -> Option<LocalitySetting<'a>> {
    let Some(lb) = lb else {
        return Some(LocalitySetting::default());
    };
    if lb.value.zone_aware_lb_setting.is_some() {
        scope.report(lb.warning(
            "zoneAwareLbSetting",
            "zone-aware load balancing is not supported (it needs the proxy's own cluster as \
             Envoy's local cluster); ignored",
        ));
    }
    match &lb.value.locality_lb_setting {
        Some(l) if l.enabled == Some(false) => None,
        Some(l) => Some(LocalitySetting {
            distribute: &l.distribute,
            failover: &l.failover,
            failover_priority: &l.failover_priority,
        }),
        None => Some(LocalitySetting::default()),
    }
}

/// Locality-weighted load balancing on the cluster, when the setting distributes weights or
/// fails over (the latter only with outlier detection, which failover needs to ever happen).
pub fn apply_locality_to_cluster(
    cluster: &mut xds_cluster::Cluster,
    setting: Option<&LocalitySetting>,
    outlier_detection: bool,
) {
    let Some(s) = setting else { return };
    let failover = outlier_detection && (!s.failover.is_empty() || !s.failover_priority.is_empty());
    if failover || !s.distribute.is_empty() {
        let common = cluster
            .common_lb_config
            .get_or_insert_with(Default::default);
        common.locality_config_specifier = Some(
            xds_cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                xds_cluster::cluster::common_lb_config::LocalityWeightedLbConfig {},
            ),
        );
    }
}

/// An endpoint and its labels, including the topology labels of its locality (as istiod adds
/// them) for `failoverPriority`.
pub type LabeledEndpoint = (xds_endpoint::LbEndpoint, BTreeMap<String, String>);

/// Endpoints of one locality, before they become a `LocalityLbEndpoints`.
#[derive(Debug, Clone)]
pub struct Group {
    pub locality: Locality,
    pub weight: u32,
    pub priority: u32,
    pub endpoints: Vec<LabeledEndpoint>,
}

impl Group {
    fn endpoint_weight(e: &xds_endpoint::LbEndpoint) -> u32 {
        e.load_balancing_weight.as_ref().map_or(0, |w| w.value)
    }

    /// Sum of the endpoint weights (saturating).
    pub fn endpoint_weight_sum(&self) -> u32 {
        self.endpoints.iter().fold(0u32, |acc, (e, _)| {
            acc.saturating_add(Self::endpoint_weight(e))
        })
    }
}

/// Labels with the topology labels of a locality added (istiod's `AugmentLabels`).
pub fn with_topology_labels(
    labels: &BTreeMap<String, String>,
    locality: &Locality,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for (key, value) in [
        (LABEL_REGION, &locality.region),
        (LABEL_ZONE, &locality.zone),
        (LABEL_SUBZONE, &locality.subzone),
    ] {
        if !value.is_empty() {
            out.insert(key.to_string(), value.clone());
        }
    }
    out
}

/// Applies locality load balancing to the groups of one assignment, relative to the proxy:
/// `distribute` sets locality weights (always); otherwise, with outlier detection, priorities
/// from `failoverPriority` labels and/or locality proximity with `failover` regions
/// (istiod's `ApplyLocalityLoadBalancer`).
pub fn apply_locality(
    groups: &mut Vec<Group>,
    setting: &LocalitySetting,
    proxy_locality: &Locality,
    proxy_labels: &BTreeMap<String, String>,
    outlier_detection: bool,
) {
    if !setting.distribute.is_empty() {
        apply_distribute(groups, proxy_locality, setting.distribute);
    } else if outlier_detection {
        if !setting.failover_priority.is_empty() {
            apply_failover_priority(groups, proxy_labels, setting.failover_priority);
            if !setting.failover.is_empty() {
                apply_failover(groups, proxy_locality, setting.failover);
            }
        } else {
            apply_failover(groups, proxy_locality, setting.failover);
        }
    }
}

/// Whether a locality matches a rule locality (`region/zone/subzone`, `*` wildcards, missing
/// parts match anything).
fn locality_matches(locality: &Locality, rule: &str) -> bool {
    let mut parts = rule.split('/');
    let region = parts.next().unwrap_or_default();
    let zone = parts.next().unwrap_or_default();
    let subzone = parts.next().unwrap_or_default();
    (region == "*" || locality.region == region)
        && (zone == "*" || zone.is_empty() || locality.zone == zone)
        && (subzone == "*" || subzone.is_empty() || locality.subzone == subzone)
}

/// `distribute`: for the first entry whose `from` matches the proxy, each `to` locality gets its
/// percentage of the traffic (split among the groups it matches in proportion to their
/// weights); groups no `to` matches get no endpoints.
fn apply_distribute(groups: &mut [Group], proxy: &Locality, distribute: &[LocalityDistribute]) {
    let Some(rule) = distribute.iter().find(|d| locality_matches(proxy, &d.from)) else {
        return;
    };
    let mut unmatched: Vec<bool> = vec![true; groups.len()];
    for (to, weight) in &rule.to {
        let matched: Vec<usize> = (0..groups.len())
            .filter(|i| unmatched[*i] && locality_matches(&groups[*i].locality, to))
            .collect();
        let total: u64 = matched.iter().map(|i| u64::from(groups[*i].weight)).sum();
        for i in &matched {
            unmatched[*i] = false;
        }
        if total == 0 {
            continue;
        }
        for i in matched {
            let share = u64::from(groups[i].weight) * u64::from(*weight);
            let value = share.div_ceil(total);
            if value > 0 {
                groups[i].weight = u32::try_from(value).unwrap_or(u32::MAX);
            }
        }
    }
    for (i, group) in groups.iter_mut().enumerate() {
        if unmatched[i] {
            group.endpoints.clear();
        }
    }
}

/// Proximity of an endpoint locality to the proxy's: 0 same subzone, 1 same zone, 2 same
/// region, 3 elsewhere.
fn proximity(proxy: &Locality, endpoint: &Locality) -> u32 {
    if proxy.region != endpoint.region {
        3
    } else if proxy.zone != endpoint.zone {
        2
    } else if proxy.subzone != endpoint.subzone {
        1
    } else {
        0
    }
}

/// Priorities by proximity; a region with a `failover` entry for the proxy's region sends
/// its traffic to the `to` region next, and other regions after that. Composes with priorities
/// already set (by `failoverPriority`), then renumbers them 0..N without gaps.
fn apply_failover(groups: &mut [Group], proxy: &Locality, failover: &[LocalityFailover]) {
    for group in groups.iter_mut() {
        let mut p = proximity(proxy, &group.locality);
        if p == 3
            && let Some(f) = failover.iter().find(|f| f.from == proxy.region)
            && group.locality.region != f.to
        {
            p = 4;
        }
        group.priority = group.priority.saturating_mul(5).saturating_add(p);
    }
    compact_priorities(groups);
}

/// Renumbers priorities to 0..N in order, without gaps.
fn compact_priorities(groups: &mut [Group]) {
    let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
    used.sort_unstable();
    used.dedup();
    for g in groups.iter_mut() {
        g.priority = u32::try_from(used.partition_point(|p| *p < g.priority)).unwrap_or(u32::MAX);
    }
}

/// `failoverPriority`: endpoints whose labels match the proxy's on the first N listed labels
/// (a `label=value` entry matches that value instead of the proxy's) come before those that
/// match fewer; each locality group splits by priority. A mismatch on a leading
/// `topology.istio.io/network` label is ignored, but orders the endpoint after every
/// priority of its network.
fn apply_failover_priority(
    groups: &mut Vec<Group>,
    proxy_labels: &BTreeMap<String, String>,
    priorities: &[String],
) {
    if proxy_labels.is_empty() || groups.is_empty() {
        return;
    }
    let lowest = priorities.len();
    let includes_network = priorities
        .first()
        .is_some_and(|p| p == "topology.istio.io/network");
    let keys: Vec<(&str, Option<&str>)> = priorities
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !v.contains('=') => (k, Some(v)),
            Some((k, _)) => (k, None),
            None => (p.as_str(), None),
        })
        .collect();
    let mut out = Vec::new();
    for group in groups.drain(..) {
        let mut by_priority: BTreeMap<usize, Vec<LabeledEndpoint>> = BTreeMap::new();
        for (endpoint, labels) in group.endpoints {
            let mut priority = 0;
            let mut adjust = 0;
            for (j, (key, fixed)) in keys.iter().enumerate() {
                let wanted = fixed.or_else(|| proxy_labels.get(*key).map(String::as_str));
                if wanted.unwrap_or_default()
                    != labels.get(*key).map(String::as_str).unwrap_or_default()
                {
                    if j == 0 && includes_network {
                        adjust = lowest;
                        continue;
                    }
                    priority = lowest - j;
                    break;
                }
            }
            by_priority
                .entry(priority + adjust)
                .or_default()
                .push((endpoint, labels));
        }
        for (priority, endpoints) in by_priority {
            let mut g = Group {
                locality: group.locality.clone(),
                weight: 0,
                priority: u32::try_from(priority).unwrap_or(u32::MAX),
                endpoints,
            };
            g.weight = g.endpoint_weight_sum();
            out.push(g);
        }
    }
    compact_priorities(&mut out);
    *groups = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(locality: &str, weights: &[u32]) -> Group {
        let endpoints: Vec<_> = weights
            .iter()
            .map(|w| {
                (
                    xds_endpoint::LbEndpoint {
                        load_balancing_weight: Some(pb::UInt32Value { value: *w }),
                        ..Default::default()
                    },
                    with_topology_labels(&BTreeMap::new(), &Locality::parse(locality)),
                )
            })
            .collect();
        let mut g = Group {
            locality: Locality::parse(locality),
            weight: 0,
            priority: 0,
            endpoints,
        };
        g.weight = g.endpoint_weight_sum();
        g
    }

    fn priorities(groups: &[Group]) -> Vec<(String, u32)> {
        groups
            .iter()
            .map(|g| (g.locality.to_string(), g.priority))
            .collect()
    }

    #[test]
    fn failover_by_proximity_and_region() {
        let mut groups = vec![
            group("eu/a", &[1]),
            group("us/a/r1", &[1]),
            group("us/a/r2", &[1]),
            group("us/b", &[1]),
            group("ap/x", &[1]),
        ];
        let proxy = Locality::parse("us/a/r1");
        let failover = [LocalityFailover {
            from: "us".into(),
            to: "eu".into(),
        }];
        apply_failover(&mut groups, &proxy, &failover);
        assert_eq!(
            priorities(&groups),
            vec![
                ("eu/a".into(), 3),
                ("us/a/r1".into(), 0),
                ("us/a/r2".into(), 1),
                ("us/b".into(), 2),
                ("ap/x".into(), 4),
            ]
        );
        // Without a failover entry, every other region shares the last priority.
        let mut groups = vec![
            group("eu/a", &[1]),
            group("us/b", &[1]),
            group("ap/x", &[1]),
        ];
        apply_failover(&mut groups, &proxy, &[]);
        assert_eq!(
            priorities(&groups),
            vec![("eu/a".into(), 1), ("us/b".into(), 0), ("ap/x".into(), 1)]
        );
    }

    #[test]
    fn distribute_splits_weights_and_drops_unlisted() {
        let mut groups = vec![
            group("us/a", &[1, 1]),
            group("us/b", &[1]),
            group("eu/c", &[3]),
        ];
        let distribute = [LocalityDistribute {
            from: "us/*".into(),
            to: BTreeMap::from([("us/*".into(), 80), ("ap/*".into(), 20)]),
        }];
        apply_distribute(&mut groups, &Locality::parse("us/a"), &distribute);
        // us/a has weight 2 and us/b 1 of the 80: ceil(160/3)=54, ceil(80/3)=27.
        assert_eq!(groups[0].weight, 54);
        assert_eq!(groups[1].weight, 27);
        assert!(groups[2].endpoints.is_empty());
        assert_eq!(groups[2].weight, 3);
    }

    #[test]
    fn failover_priority_splits_groups() {
        let mut groups = vec![
            group("us/a", &[1]),
            group("us/b", &[2]),
            group("eu/c", &[1]),
        ];
        // The second endpoint group gets a "track: canary" label matching the proxy's.
        groups[1]
            .endpoints
            .iter_mut()
            .for_each(|(_, l)| drop(l.insert("track".into(), "canary".into())));
        let proxy = BTreeMap::from([
            ("track".to_string(), "canary".to_string()),
            (LABEL_REGION.to_string(), "us".to_string()),
        ]);
        apply_failover_priority(
            &mut groups,
            &proxy,
            &["track".to_string(), LABEL_REGION.to_string()],
        );
        // us/b matches both labels (priority 0); us/a and eu/c miss the first label (2),
        // renumbered to 1.
        assert_eq!(
            priorities(&groups),
            vec![("us/a".into(), 1), ("us/b".into(), 0), ("eu/c".into(), 1)]
        );
        assert_eq!(groups[1].weight, 2);
    }

    #[test]
    fn locality_matching() {
        let l = Locality::parse("us/a/r1");
        assert!(locality_matches(&l, "us"));
        assert!(locality_matches(&l, "us/*"));
        assert!(locality_matches(&l, "us/a/*"));
        assert!(locality_matches(&l, "*"));
        assert!(!locality_matches(&l, "us/b"));
        assert!(!locality_matches(&l, "eu/*"));
    }
}
