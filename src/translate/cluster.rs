//! CDS: `outbound|<port>|<subset>|<host>` per imported service port and DestinationRule
//! subset, `inbound|<port>||` per workload port, and the fixed `BlackHoleCluster`,
//! `PassthroughCluster` and `InboundPassthroughCluster`, and clusters for the JWKS servers of
//! RequestAuthentications.
//!
//! A cluster's DestinationRule policy (see `policy`) becomes, as istiod builds it: circuit
//! breaker thresholds (istiod's unlimited defaults, lowered by `connectionPool`), the connect
//! timeout, TCP keepalive and HTTP protocol options; outlier detection and the panic threshold;
//! the load balancer (see `loadbalancer`); and an upstream TLS transport socket.

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::common::matcher::v3 as xds_matcher;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3 as dfp_cluster;
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3 as dfp_common;
use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3 as proxy_protocol;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3 as raw_buffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as type_matcher;
use envoy_types::pb::envoy::r#type::v3 as xds_type;
use envoy_types::pb::google::protobuf as pb;

use super::Part;
use super::authz;
use super::endpoint;
use super::loadbalancer;
use super::metadata::Istio;
use super::mtls;
use super::naming;
use super::policy::{self, At, Policy};
use super::scope::{InboundPort, RuleSubset, Scope};
use super::values;
use crate::envoy::pack;
use crate::model::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy,
    ProxyProtocolVersion, RetryBudget, SimpleLB,
};
use crate::model::proxy::{InterceptionMode, ProxyType};
use crate::model::registry::{Protocol, Resolution, Service};
use crate::model::{Kind, Spec};
use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Idle timeout istiod gives upstream HTTP connections of the passthrough clusters.
const PASSTHROUGH_IDLE_TIMEOUT_SECS: i64 = 300;

/// One outbound cluster to build: a service port, optionally narrowed to a subset, with the
/// DestinationRule policy in force for it.
#[derive(Debug)]
pub struct OutboundCluster<'a> {
    pub name: String,
    pub service: &'a Service,
    pub port: u16,
    pub subset: Option<RuleSubset<'a>>,
    pub policy: Policy<'a>,
}

impl OutboundCluster<'_> {
    /// Whether the cluster forwards to the original destination (no endpoints of its own):
    /// services without resolution, and `loadBalancer.simple: PASSTHROUGH` (on the merged
    /// policy, or on the subset's own policy, as istiod decides it for subsets).
    pub fn original_dst(&self) -> bool {
        let subset_own = self
            .subset
            .and_then(|s| s.subset.traffic_policy.as_ref())
            .and_then(|tp| tp.load_balancer.as_ref());
        self.service.resolution == Resolution::Passthrough
            || loadbalancer::simple(self.policy.load_balancer.as_ref().map(|l| l.value))
                == Some(SimpleLB::Passthrough)
            || loadbalancer::simple(subset_own) == Some(SimpleLB::Passthrough)
    }

    /// Whether the cluster is a dynamic forward proxy (a wildcard `DYNAMIC_DNS` service):
    /// Envoy resolves each host the traffic names, with the DNS cache of the service.
    pub fn dynamic_forward_proxy(&self) -> bool {
        self.service.dynamic_forward_proxy()
    }

    /// Whether the cluster's endpoints come over EDS (it then has a ClusterLoadAssignment).
    pub fn uses_eds(&self) -> bool {
        self.service.resolution == Resolution::Static && !self.original_dst()
    }
}

/// Every outbound cluster of the proxy (shared with EDS, which must cover the same set).
pub fn outbound<'a>(scope: &Scope<'a>) -> Vec<OutboundCluster<'a>> {
    outbound_of(scope, &|_| true)
}

/// The outbound clusters of the services `wanted` keeps.
pub fn outbound_of<'a>(
    scope: &Scope<'a>,
    wanted: &dyn Fn(&Service) -> bool,
) -> Vec<OutboundCluster<'a>> {
    let mut out = Vec::new();
    for service in scope.services().into_iter().filter(|s| wanted(s)) {
        let rule = scope.destination_rule(service);
        for port in &service.ports {
            out.push(OutboundCluster {
                name: naming::outbound_cluster(port.number, "", &service.hostname),
                service,
                port: port.number,
                subset: None,
                policy: policy::effective(rule.as_ref(), port.number, None),
            });
            // A dynamic forward proxy has no endpoints to divide: no subset clusters (istiod).
            if service.dynamic_forward_proxy() {
                continue;
            }
            for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
                out.push(OutboundCluster {
                    name: naming::outbound_cluster(
                        port.number,
                        &subset.subset.name,
                        &service.hostname,
                    ),
                    service,
                    port: port.number,
                    subset: Some(*subset),
                    policy: policy::effective(rule.as_ref(), port.number, Some(subset)),
                });
            }
        }
    }
    out
}

/// The clusters of every service port (and subset) the proxy imports, and
/// `BlackHoleCluster`: what sidecars and gateways both call.
pub fn outbound_clusters(scope: &Scope) -> Vec<xds_cluster::Cluster> {
    let connect_timeout = duration(scope.model.mesh.connect_timeout);
    let mut clusters: Vec<xds_cluster::Cluster> = outbound(scope)
        .iter()
        .map(|c| outbound_cluster(scope, c, &connect_timeout))
        .collect();
    clusters.push(xds_cluster::Cluster {
        name: naming::BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(connect_timeout),
        ..Default::default()
    });
    clusters
}

/// The JWKS servers of the RequestAuthentications that apply to the proxy, that `clusters`
/// does not already reach.
pub fn jwks_clusters(
    scope: &Scope,
    clusters: &[xds_cluster::Cluster],
) -> Vec<xds_cluster::Cluster> {
    let names: std::collections::BTreeSet<String> =
        clusters.iter().map(|c| c.name.clone()).collect();
    authz::jwks_clusters(scope, &names, duration(scope.model.mesh.connect_timeout))
}

pub fn build(scope: &Scope, part: Part) -> Vec<xds_cluster::Cluster> {
    let connect_timeout = duration(scope.model.mesh.connect_timeout);
    let mut clusters: Vec<xds_cluster::Cluster> = Vec::new();
    if part.outbound() {
        clusters.extend(outbound_clusters(scope));
        clusters.push(passthrough(
            naming::PASSTHROUGH_CLUSTER,
            &connect_timeout,
            None,
        ));
    }
    if !part.inbound() {
        return clusters;
    }
    if scope.proxy.interception_mode != InterceptionMode::None {
        clusters.push(passthrough(
            naming::INBOUND_PASSTHROUGH_CLUSTER,
            &connect_timeout,
            Some(naming::INBOUND_PASSTHROUGH_BIND_V4),
        ));
    }
    for inbound in scope.inbound() {
        clusters.push(inbound_cluster(scope, &inbound, &connect_timeout));
    }
    // The JWKS servers of RequestAuthentications that the registry does not already give a
    // cluster to (the outbound part's clusters count when only the inbound part is made).
    let mut jwks = jwks_clusters(scope, &clusters);
    if !part.outbound() && !jwks.is_empty() {
        let mut outbound_names: std::collections::BTreeSet<String> =
            outbound(scope).into_iter().map(|c| c.name).collect();
        outbound_names.insert(naming::BLACKHOLE_CLUSTER.to_string());
        outbound_names.insert(naming::PASSTHROUGH_CLUSTER.to_string());
        jwks.retain(|c| !outbound_names.contains(&c.name));
    }
    clusters.extend(jwks);
    clusters
}

fn duration(d: std::time::Duration) -> pb::Duration {
    values::proto_duration(d)
}

/// `ads: {}` as the config source.
pub fn ads_config_source() -> xds_core::ConfigSource {
    xds_core::ConfigSource {
        config_source_specifier: Some(xds_core::config_source::ConfigSourceSpecifier::Ads(
            xds_core::AggregatedConfigSource {},
        )),
        resource_api_version: xds_core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A cluster being built and its upstream HTTP protocol options, which become the cluster's
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` when set.
struct Building {
    cluster: xds_cluster::Cluster,
    http: Option<upstream_http::HttpProtocolOptions>,
}

impl Building {
    fn new(cluster: xds_cluster::Cluster) -> Building {
        Building {
            cluster,
            http: None,
        }
    }

    fn http(&mut self) -> &mut upstream_http::HttpProtocolOptions {
        self.http.get_or_insert_with(Default::default)
    }

    fn explicit_http2(&self) -> bool {
        use upstream_http::http_protocol_options::{UpstreamProtocolOptions, explicit_http_config};
        matches!(
            self.http
                .as_ref()
                .and_then(|h| h.upstream_protocol_options.as_ref()),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
                if matches!(e.protocol_config, Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)))
        )
    }

    /// Upstream HTTP/2 (unless the upstream protocol is already decided).
    fn set_http2(&mut self) {
        use upstream_http::http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        let http = self.http();
        if http.upstream_protocol_options.is_none() {
            http.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        xds_core::Http2ProtocolOptions::default(),
                    )),
                },
            ));
        }
    }

    /// Upstream HTTP version follows the downstream one.
    fn set_use_downstream_protocol(&mut self) {
        use upstream_http::http_protocol_options::{
            UpstreamProtocolOptions, UseDownstreamHttpConfig, explicit_http_config::ProtocolConfig,
        };
        let http = self.http();
        let http1 = match &http.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(o)) => o.clone(),
                _ => Default::default(),
            },
            _ => Default::default(),
        };
        http.upstream_protocol_options = Some(
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(http1),
                http2_protocol_options: Some(Default::default()),
                ..Default::default()
            }),
        );
    }

    fn finish(mut self) -> xds_cluster::Cluster {
        use upstream_http::http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        if let Some(mut http) = self.http {
            // Envoy requires an upstream protocol; HTTP/1.1 when nothing chose one.
            if http.upstream_protocol_options.is_none() {
                http.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                            Default::default(),
                        )),
                    },
                ));
            }
            self.cluster
                .typed_extension_protocol_options
                .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&http));
        }
        self.cluster
    }
}

/// The upstream protocol a port implies (istiod's `setUpstreamProtocol`): HTTP/2 for HTTP2 and
/// gRPC ports; for ports without a declared protocol on sidecars, whatever the downstream used.
fn set_upstream_protocol(scope: &Scope, b: &mut Building, protocol: Protocol) {
    if protocol.is_http2() {
        b.set_http2();
    } else if protocol == Protocol::Unsupported && scope.proxy.proxy_type == ProxyType::Sidecar {
        b.set_use_downstream_protocol();
    }
}

/// istiod's circuit breaker thresholds when nothing limits them: unlimited, so Envoy's low
/// defaults (1024 connections, 3 retries) never cut traffic the mesh did not ask to cut.
fn default_thresholds() -> xds_cluster::circuit_breakers::Thresholds {
    let max = Some(pb::UInt32Value { value: u32::MAX });
    xds_cluster::circuit_breakers::Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        track_remaining: true,
        ..Default::default()
    }
}

fn positive(v: i32) -> Option<pb::UInt32Value> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .map(|value| pb::UInt32Value { value })
}

/// `connectionPool` (istiod's `applyConnectionPool`, which runs for every cluster, with an
/// empty pool when the rule sets none) and `retryBudget`.
fn apply_connection_pool(
    scope: &Scope,
    b: &mut Building,
    pool: Option<&At<ConnectionPoolSettings>>,
    retry_budget: Option<&At<RetryBudget>>,
) {
    let mut thresholds = default_thresholds();
    if let Some(rb) = retry_budget {
        thresholds.retry_budget = Some(xds_cluster::circuit_breakers::thresholds::RetryBudget {
            budget_percent: Some(xds_type::Percent {
                value: rb.value.percent.unwrap_or(20.0),
            }),
            min_retry_concurrency: Some(pb::UInt32Value {
                value: rb
                    .value
                    .min_retry_concurrency
                    .filter(|v| *v > 0)
                    .unwrap_or(3),
            }),
            budget_interval: rb.duration(
                scope,
                "budgetInterval",
                rb.value.budget_interval.as_ref(),
            ),
        });
    }
    let mut idle_timeout = None;
    let mut max_requests_per_connection = None;
    let mut max_concurrent_streams = None;
    let mut max_connection_duration = None;
    let mut keepalive = None;
    let http = pool.and_then(|p| p.value.http.as_ref());
    let tcp = pool.and_then(|p| p.value.tcp.as_ref());
    if let (Some(p), Some(h)) = (pool, http) {
        if let Some(v) = positive(h.http2_max_requests) {
            thresholds.max_requests = Some(v);
        }
        if let Some(v) = positive(h.http1_max_pending_requests) {
            thresholds.max_pending_requests = Some(v);
        }
        if let Some(v) = positive(h.max_retries) {
            thresholds.max_retries = Some(v);
        }
        idle_timeout = p.duration(scope, "http.idleTimeout", h.idle_timeout.as_ref());
        max_requests_per_connection = positive(h.max_requests_per_connection);
        max_concurrent_streams = positive(h.max_concurrent_streams);
        keepalive = h
            .http2_keep_alive
            .as_ref()
            .map(|k| xds_core::KeepaliveSettings {
                interval: p.duration(scope, "http.http2KeepAlive.interval", k.interval.as_ref()),
                timeout: p.duration(scope, "http.http2KeepAlive.timeout", k.timeout.as_ref()),
                ..Default::default()
            });
    }
    b.cluster.connect_timeout = Some(duration(scope.model.mesh.connect_timeout));
    if let (Some(p), Some(t)) = (pool, tcp) {
        if let Some(d) = p.duration(scope, "tcp.connectTimeout", t.connect_timeout.as_ref()) {
            b.cluster.connect_timeout = Some(d);
        }
        if let Some(v) = positive(t.max_connections) {
            thresholds.max_connections = Some(v);
        }
        max_connection_duration = p.duration(
            scope,
            "tcp.maxConnectionDuration",
            t.max_connection_duration.as_ref(),
        );
        if idle_timeout.is_none() {
            idle_timeout = p.duration(scope, "tcp.idleTimeout", t.idle_timeout.as_ref());
        }
        if let Some(ka) = &t.tcp_keepalive {
            let seconds = |field, v: Option<&String>| {
                p.duration(scope, field, v).map(|d| pb::UInt32Value {
                    value: u32::try_from(d.seconds).unwrap_or(u32::MAX),
                })
            };
            let options = b
                .cluster
                .upstream_connection_options
                .get_or_insert_with(Default::default);
            let keepalive = options.tcp_keepalive.get_or_insert_with(Default::default);
            if ka.probes > 0 {
                keepalive.keepalive_probes = Some(pb::UInt32Value { value: ka.probes });
            }
            if let Some(v) = seconds("tcp.tcpKeepalive.time", ka.time.as_ref()) {
                keepalive.keepalive_time = Some(v);
            }
            if let Some(v) = seconds("tcp.tcpKeepalive.interval", ka.interval.as_ref()) {
                keepalive.keepalive_interval = Some(v);
            }
        }
    }
    b.cluster.circuit_breakers = Some(xds_cluster::CircuitBreakers {
        thresholds: vec![thresholds],
        ..Default::default()
    });
    if idle_timeout.is_some()
        || max_connection_duration.is_some()
        || max_requests_per_connection.is_some()
        || max_concurrent_streams.is_some()
        || keepalive.is_some()
    {
        let http2 = b.explicit_http2();
        let options = b.http();
        let common = options
            .common_http_protocol_options
            .get_or_insert_with(Default::default);
        if idle_timeout.is_some() {
            common.idle_timeout = idle_timeout;
        }
        if max_requests_per_connection.is_some() {
            common.max_requests_per_connection = max_requests_per_connection;
        }
        if max_connection_duration.is_some() {
            common.max_connection_duration = max_connection_duration;
        }
        if http2 {
            use upstream_http::http_protocol_options::{
                UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            };
            if let Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) =
                &mut options.upstream_protocol_options
                && let Some(ProtocolConfig::Http2ProtocolOptions(h2)) = &mut e.protocol_config
            {
                if max_concurrent_streams.is_some() {
                    h2.max_concurrent_streams = max_concurrent_streams;
                }
                if keepalive.is_some() {
                    h2.connection_keepalive = keepalive;
                }
            }
        }
    }
    if http.is_some_and(|h| h.use_client_protocol) {
        b.set_use_downstream_protocol();
    }
}

/// istiod's `shouldH2Upgrade`: `h2UpgradePolicy: UPGRADE` upgrades any port (the author vouches
/// that it is HTTP), unless `useClientProtocol`; the mesh default (`DO_NOT_UPGRADE`) leaves the
/// rest alone.
fn should_upgrade_h2(pool: Option<&At<ConnectionPoolSettings>>) -> bool {
    let Some(http) = pool.and_then(|p| p.value.http.as_ref()) else {
        return false;
    };
    !http.use_client_protocol && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
}

/// `outlierDetection` (istiod's `applyOutlierDetection`): success-rate ejection off, the
/// consecutive-error detectors enforced when their thresholds are non-zero, and the panic
/// threshold set to `minHealthPercent` (0 disables Envoy's panic mode).
fn apply_outlier_detection(
    scope: &Scope,
    b: &mut Building,
    od: &At<crate::model::networking::OutlierDetection>,
) {
    let o = od.value;
    let enforce = |v: u32| {
        Some(pb::UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    let mut out = xds_cluster::OutlierDetection {
        enforcing_success_rate: Some(pb::UInt32Value { value: 0 }),
        ..Default::default()
    };
    if let Some(v) = o.consecutive5xx_errors {
        out.consecutive_5xx = Some(pb::UInt32Value { value: v });
        out.enforcing_consecutive_5xx = enforce(v);
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(pb::UInt32Value { value: v });
        out.enforcing_consecutive_gateway_failure = enforce(v);
    }
    out.interval = od.duration(scope, "interval", o.interval.as_ref());
    out.base_ejection_time = od.duration(scope, "baseEjectionTime", o.base_ejection_time.as_ref());
    out.max_ejection_percent = positive(o.max_ejection_percent);
    if o.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = Some(pb::UInt32Value { value: v });
            out.enforcing_consecutive_local_origin_failure = Some(pb::UInt32Value { value: 100 });
        }
        out.enforcing_local_origin_success_rate = Some(pb::UInt32Value { value: 0 });
    }
    b.cluster.outlier_detection = Some(out);
    if o.min_health_percent >= 0 {
        b.cluster
            .common_lb_config
            .get_or_insert_with(Default::default)
            .healthy_panic_threshold = Some(xds_type::Percent {
            value: f64::from(o.min_health_percent),
        });
    }
    if !o.outlier_detection_http_error_codes.is_empty() {
        let rules: Vec<xds_matcher::MatchPredicate> = o
            .outlier_detection_http_error_codes
            .iter()
            .map(|code| xds_matcher::MatchPredicate {
                rule: Some(
                    xds_matcher::match_predicate::Rule::HttpResponseHeadersMatch(
                        xds_matcher::HttpHeadersMatch {
                            headers: vec![xds_route::HeaderMatcher {
                                name: ":status".to_string(),
                                header_match_specifier: Some(
                                    xds_route::header_matcher::HeaderMatchSpecifier::StringMatch(
                                        type_matcher::StringMatcher {
                                            match_pattern: Some(
                                                type_matcher::string_matcher::MatchPattern::Exact(
                                                    code.to_string(),
                                                ),
                                            ),
                                            ignore_case: false,
                                        },
                                    ),
                                ),
                                ..Default::default()
                            }],
                        },
                    ),
                ),
            })
            .collect();
        let predicate = match <[_; 1]>::try_from(rules) {
            Ok([one]) => one,
            Err(rules) => xds_matcher::MatchPredicate {
                rule: Some(xds_matcher::match_predicate::Rule::OrMatch(
                    xds_matcher::match_predicate::MatchSet { rules },
                )),
            },
        };
        b.http().outlier_detection = Some(upstream_http::http_protocol_options::OutlierDetection {
            error_matcher: Some(predicate),
        });
    }
}

/// istiod's mTLS SNI for a cluster.
fn outbound_sni(c: &OutboundCluster) -> String {
    naming::outbound_sni(
        c.port,
        c.subset.map(|s| s.subset.name.as_str()).unwrap_or_default(),
        &c.service.hostname,
    )
}

/// The SPIFFE IDs a service's workloads run as (istiod's secure naming): the service accounts
/// of its endpoints, and a ServiceEntry's `subjectAltNames`; each SPIFFE ID also in every
/// `trustDomainAliases` trust domain (istiod's `ExpandWithTrustDomains`). Empty when unknown:
/// any certificate of the mesh's trust domains is then accepted.
fn service_accounts(scope: &Scope, service: &Service) -> Vec<String> {
    let mesh = &scope.model.mesh;
    let mut ids: std::collections::BTreeSet<String> = service
        .service_accounts()
        .into_iter()
        .map(|sa| crate::model::identity::spiffe_id(&mesh.trust_domain, &service.namespace, sa))
        .collect();
    ids.extend(service_entry_sans(scope, service).iter().cloned());
    let aliased: Vec<String> = ids
        .iter()
        .filter_map(|id| crate::model::Identity::parse(id).ok())
        .flat_map(|id| {
            mesh.trust_domain_aliases.iter().map(move |td| {
                crate::model::identity::spiffe_id(td, &id.namespace, &id.service_account)
            })
        })
        .collect();
    ids.extend(aliased);
    ids.into_iter().collect()
}

/// Auto mTLS (istiod's `buildAutoMtlsSettings`): without TLS settings of its own, a cluster of
/// an in-mesh service sends mTLS to the endpoints labelled `security.istio.io/tlsMode: istio`
/// and plaintext to the others.
fn apply_auto_mtls(scope: &Scope, b: &mut Building, c: &OutboundCluster) {
    if !scope.proxy.workload_certificate
        || !scope.model.mesh.enable_auto_mtls
        || c.service.mesh_external
        || c.dynamic_forward_proxy()
        || b.cluster.transport_socket.is_some()
    {
        return;
    }
    let socket = mtls::upstream(
        scope.proxy.secret_source,
        &outbound_sni(c),
        &service_accounts(scope, c.service),
        &scope.model.mesh.trust_domains_for_validation(),
        b.explicit_http2(),
    );
    b.cluster.transport_socket_matches = mtls::auto_matches(socket);
}

/// The ServiceEntry `subjectAltNames` of a service, which istiod verifies upstream TLS against
/// when the rule lists none.
fn service_entry_sans<'a>(scope: &Scope<'a>, service: &Service) -> &'a [String] {
    if service.origin != Kind::ServiceEntry {
        return &[];
    }
    let model = scope.model;
    model
        .index()
        .service_entries_named(&service.namespace, &service.name)
        .iter()
        .filter_map(|p| model.resources.get(*p))
        .find_map(|r| match &r.spec {
            Spec::ServiceEntry(se) => Some(se.subject_alt_names.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `tls`: DISABLE sends plaintext; SIMPLE originates TLS (istiod's `constructUpstreamTLS`,
/// with the CA read from a file by Envoy instead of served by the agent over SDS); MUTUAL adds
/// the operator's client certificate and key files; ISTIO_MUTUAL uses the proxy's workload
/// certificate and the mesh trust bundle over SDS (see `mtls`), also for a proxy that holds no
/// certificate: its connections then fail (reported), never fall back to plaintext. Gateway
/// credentials (`credentialName`) are not supported here yet.
fn apply_tls(
    scope: &Scope,
    b: &mut Building,
    c: &OutboundCluster,
    t: &At<ClientTlsSettings>,
    has_selector: bool,
) {
    let settings = t.value;
    match settings.mode {
        None | Some(ClientTlsMode::Disable) => return,
        Some(ClientTlsMode::IstioMutual) => {
            // Never plaintext instead: the cluster needs the `default` secret, which a proxy
            // without identity is never served, so its connections fail until it has one.
            if !scope.proxy.workload_certificate {
                scope.report(t.warning(
                    "mode",
                    format!(
                        "ISTIO_MUTUAL needs a workload certificate and this proxy has none (it did not prove its identity on bowline's TLS port): connections to {} fail until it does",
                        c.name
                    ),
                ));
            }
            let dfp = c.dynamic_forward_proxy();
            let sni = match settings.sni.clone().filter(|s| !s.is_empty()) {
                Some(sni) => sni,
                // A dynamic forward proxy names each host it connects to (`auto_sni`).
                None if dfp => String::new(),
                None => outbound_sni(c),
            };
            let sans = if settings.subject_alt_names.is_empty() {
                service_accounts(scope, c.service)
            } else {
                settings.subject_alt_names.clone()
            };
            b.cluster.transport_socket = Some(mtls::upstream(
                scope.proxy.secret_source,
                &sni,
                &sans,
                &scope.model.mesh.trust_domains_for_validation(),
                b.explicit_http2(),
            ));
            if dfp {
                set_auto_sni_and_san(
                    b,
                    sni.is_empty(),
                    settings.insecure_skip_verify != Some(true),
                );
            }
            return;
        }
        Some(ClientTlsMode::Mutual) => {
            let missing: Vec<&str> = [
                ("clientCertificate", &settings.client_certificate),
                ("privateKey", &settings.private_key),
            ]
            .into_iter()
            .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
            .map(|(n, _)| n)
            .collect();
            let has_credential = settings
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty());
            if !missing.is_empty() && !has_credential {
                scope.report(t.warning(
                    "",
                    format!(
                        "MUTUAL needs {}; no TLS is originated",
                        missing.join(" and ")
                    ),
                ));
                return;
            }
        }
        Some(ClientTlsMode::Simple) => {}
    }
    if settings
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
    {
        let why = if has_selector {
            "credentialName needs the proxy to fetch a Kubernetes secret, which bowline does not serve to sidecars yet"
        } else {
            "credentialName is for gateways (istiod ignores it on sidecars unless the rule has a workloadSelector)"
        };
        scope.report(t.warning("credentialName", format!("{why}; no TLS is originated")));
        return;
    }
    let insecure = settings.insecure_skip_verify == Some(true);
    let auto_sni = settings.sni.as_deref().is_none_or(str::is_empty);
    // A dynamic forward proxy verifies each host it resolves unless told not to verify.
    let auto_san = !insecure
        && (c.dynamic_forward_proxy() || (auto_sni && settings.subject_alt_names.is_empty()));
    set_auto_sni_and_san(b, auto_sni, auto_san);
    let mut sans: &[String] = &settings.subject_alt_names;
    if sans.is_empty() {
        sans = service_entry_sans(scope, c.service);
    }
    let validation = if insecure {
        tls::CertificateValidationContext::default()
    } else {
        tls::CertificateValidationContext {
            trusted_ca: Some(file_source(
                settings
                    .ca_certificates
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(values::SYSTEM_CA_BUNDLE),
            )),
            match_typed_subject_alt_names: san_matchers(sans),
            crl: settings
                .ca_crl
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(file_source),
            ..Default::default()
        }
    };
    let client_certificate = match (
        settings.mode,
        settings.client_certificate.as_deref(),
        settings.private_key.as_deref(),
    ) {
        (Some(ClientTlsMode::Mutual), Some(cert), Some(key)) => vec![tls::TlsCertificate {
            certificate_chain: Some(file_source(cert)),
            private_key: Some(file_source(key)),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    let context = tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificates: client_certificate,
            tls_params: Some(tls::TlsParameters {
                tls_minimum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            alpn_protocols: if b.explicit_http2() {
                vec!["h2".to_string()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }),
        sni: settings.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    b.cluster.transport_socket = Some(xds_core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
            &context,
        ))),
    });
}

/// Upstream SNI from the request's host (`auto_sni`) and the peer certificate checked against
/// it (`auto_san_validation`).
fn set_auto_sni_and_san(b: &mut Building, auto_sni: bool, auto_san: bool) {
    if auto_sni || auto_san {
        let upstream = b
            .http()
            .upstream_http_protocol_options
            .get_or_insert_with(Default::default);
        upstream.auto_sni |= auto_sni;
        upstream.auto_san_validation |= auto_san;
    }
}

/// Exact matchers for subject alternative names of any type: what istiod's untyped matchers
/// (Envoy's deprecated `match_subject_alt_names`) mean, spelled as Envoy now wants them.
pub(crate) fn san_matchers(sans: &[String]) -> Vec<tls::SubjectAltNameMatcher> {
    use tls::subject_alt_name_matcher::SanType;
    sans.iter()
        .flat_map(|san| {
            [
                SanType::Dns,
                SanType::Uri,
                SanType::Email,
                SanType::IpAddress,
            ]
            .map(|t| tls::SubjectAltNameMatcher {
                san_type: t as i32,
                matcher: Some(type_matcher::StringMatcher {
                    match_pattern: Some(type_matcher::string_matcher::MatchPattern::Exact(
                        san.clone(),
                    )),
                    ignore_case: false,
                }),
                ..Default::default()
            })
        })
        .collect()
}

pub(crate) fn file_source(path: &str) -> xds_core::DataSource {
    xds_core::DataSource {
        specifier: Some(xds_core::data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// `proxyProtocol`: the upstream connection starts with a PROXY protocol header, around the TLS
/// (or plaintext) transport.
fn apply_proxy_protocol(b: &mut Building, pp: &At<crate::model::networking::ProxyProtocol>) {
    let inner = b
        .cluster
        .transport_socket
        .take()
        .unwrap_or_else(|| xds_core::TransportSocket {
            name: "envoy.transport_sockets.raw_buffer".to_string(),
            config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
                &raw_buffer::RawBuffer {},
            ))),
        });
    let version = match pp.value.version {
        Some(ProxyProtocolVersion::V2) => xds_core::proxy_protocol_config::Version::V2,
        Some(ProxyProtocolVersion::V1) | None => xds_core::proxy_protocol_config::Version::V1,
    };
    b.cluster.transport_socket = Some(xds_core::TransportSocket {
        name: "envoy.transport_sockets.upstream_proxy_protocol".to_string(),
        config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
            &proxy_protocol::ProxyProtocolUpstreamTransport {
                config: Some(xds_core::ProxyProtocolConfig {
                    version: version as i32,
                    ..Default::default()
                }),
                transport_socket: Some(inner),
                ..Default::default()
            },
        ))),
    });
}

fn is_original_dst(cluster: &xds_cluster::Cluster) -> bool {
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

fn outbound_cluster(
    scope: &Scope,
    c: &OutboundCluster,
    connect_timeout: &pb::Duration,
) -> xds_cluster::Cluster {
    let mut b = Building::new(xds_cluster::Cluster {
        name: c.name.clone(),
        connect_timeout: Some(*connect_timeout),
        common_lb_config: Some(Default::default()),
        ..Default::default()
    });
    let dfp = c.dynamic_forward_proxy();
    let kind = match c.service.resolution {
        _ if dfp => DiscoveryType::StrictDns,
        _ if c.original_dst() => DiscoveryType::OriginalDst,
        Resolution::Static => DiscoveryType::Eds,
        Resolution::Dns | Resolution::DynamicDns => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => DiscoveryType::LogicalDns,
        Resolution::Passthrough => DiscoveryType::OriginalDst,
    };
    b.cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
    if dfp {
        // The custom cluster type; its config is completed once TLS is known (below).
        b.cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        b.cluster.common_lb_config = None;
    }
    if !dfp && matches!(kind, DiscoveryType::StrictDns | DiscoveryType::LogicalDns) {
        b.cluster.dns_lookup_family = xds_cluster::cluster::DnsLookupFamily::V4Only as i32;
        let mut assignment: xds_endpoint::ClusterLoadAssignment = endpoint::assignment(scope, c);
        if kind == DiscoveryType::LogicalDns {
            // LOGICAL_DNS takes exactly one host.
            for group in &mut assignment.endpoints {
                group.lb_endpoints.truncate(1);
            }
            assignment.endpoints.retain(|g| !g.lb_endpoints.is_empty());
            assignment.endpoints.truncate(1);
        }
        b.cluster.load_assignment = Some(assignment);
    }
    let protocol = c
        .service
        .port(c.port)
        .map(|p| p.protocol)
        .unwrap_or(Protocol::Unsupported);
    set_upstream_protocol(scope, &mut b, protocol);

    let p = &c.policy;
    if should_upgrade_h2(p.connection_pool.as_ref()) {
        b.set_http2();
    }
    apply_connection_pool(
        scope,
        &mut b,
        p.connection_pool.as_ref(),
        p.retry_budget.as_ref(),
    );
    if let Some(od) = &p.outlier_detection {
        apply_outlier_detection(scope, &mut b, od);
    }
    // A dynamic forward proxy balances itself (CLUSTER_PROVIDED): istiod applies no load
    // balancer settings to it.
    if !dfp {
        let locality = loadbalancer::locality_setting(scope, p.load_balancer.as_ref());
        loadbalancer::apply_locality_to_cluster(
            &mut b.cluster,
            locality.as_ref(),
            p.outlier_detection.is_some(),
        );
        loadbalancer::apply_lb_policy(scope, &mut b.cluster, p.load_balancer.as_ref());
    }
    let has_selector = scope
        .destination_rule(c.service)
        .is_some_and(|r| r.has_selector);
    match &p.tls {
        Some(t) if t.value.mode.is_some() => apply_tls(scope, &mut b, c, t, has_selector),
        _ => apply_auto_mtls(scope, &mut b, c),
    }
    if let Some(pp) = &p.proxy_protocol {
        apply_proxy_protocol(&mut b, pp);
    }
    if let Some(t) = &p.tunnel {
        scope.report(t.warning(
            "",
            "tunneling to the destination is not supported yet; traffic is sent directly",
        ));
    }
    if is_original_dst(&b.cluster) {
        b.cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    }
    if dfp {
        set_dynamic_forward_proxy(&mut b, &c.service.hostname);
    }
    if b.cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    {
        let mut source = ads_config_source();
        source.initial_fetch_timeout = Some(pb::Duration::default());
        b.cluster.eds_cluster_config = Some(xds_cluster::cluster::EdsClusterConfig {
            eds_config: Some(source),
            service_name: c.name.clone(),
        });
    }
    b.cluster.metadata = outbound_metadata(scope, c);
    b.finish()
}

/// istiod's `istio` metadata of an outbound cluster: its service (`services`), `external` for
/// a mesh-external one, and with a DestinationRule the rule (`config`, the merged rule's first),
/// the `subset`, and `alpn_override` under SIMPLE or MUTUAL TLS.
fn outbound_metadata(scope: &Scope, c: &OutboundCluster) -> Option<xds_core::Metadata> {
    let mut istio = Istio::default().services([c.service]);
    if c.service.mesh_external {
        istio = istio.field("external", serde_json::Value::Bool(true));
    }
    if let Some(rule) = scope.destination_rule(c.service) {
        istio = istio.config(rule.resource);
        if let Some(s) = &c.subset {
            istio = istio.subset(&s.subset.name);
        }
        let mode = c.policy.tls.as_ref().and_then(|t| t.value.mode);
        if matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)) {
            istio = istio.field("alpn_override", serde_json::Value::from("false"));
        }
    }
    istio.build()
}

/// The DNS cache of a dynamic forward proxy service, as its cluster and its listener filters
/// share it (IPv4, as bowline's DNS clusters resolve).
pub fn dns_cache_config(host: &str) -> dfp_common::DnsCacheConfig {
    dfp_common::DnsCacheConfig {
        name: naming::dns_cache(host),
        dns_lookup_family: xds_cluster::cluster::DnsLookupFamily::V4Only as i32,
        ..Default::default()
    }
}

/// istiod's dynamic forward proxy cluster (`envoy.clusters.dynamic_forward_proxy` with the
/// service's DNS cache). Envoy refuses upstream TLS on such a cluster unless it sets SNI and
/// verifies the SAN per host (`auto_sni`, `auto_san_validation`); when the TLS settings pin
/// either, the cluster allows it explicitly (`allow_insecure_cluster_options`), as istiod does.
fn set_dynamic_forward_proxy(b: &mut Building, host: &str) {
    let tls =
        b.cluster.transport_socket.is_some() || !b.cluster.transport_socket_matches.is_empty();
    let automatic = b
        .http
        .as_ref()
        .and_then(|h| h.upstream_http_protocol_options.as_ref())
        .is_some_and(|o| o.auto_sni && o.auto_san_validation);
    let config = dfp_cluster::ClusterConfig {
        cluster_implementation_specifier: Some(
            dfp_cluster::cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(
                dns_cache_config(host),
            ),
        ),
        allow_insecure_cluster_options: tls && !automatic,
        ..Default::default()
    };
    b.cluster.cluster_discovery_type = Some(ClusterDiscoveryType::ClusterType(
        xds_cluster::cluster::CustomClusterType {
            name: "envoy.clusters.dynamic_forward_proxy".to_string(),
            typed_config: Some(pack(&config)),
        },
    ));
}

/// `PassthroughCluster` and `InboundPassthroughCluster`: original destination, the upstream
/// HTTP version of the downstream, and istiod's unlimited circuit breakers.
fn passthrough(
    name: &str,
    connect_timeout: &pb::Duration,
    bind: Option<&str>,
) -> xds_cluster::Cluster {
    let mut b = Building::new(xds_cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(*connect_timeout),
        upstream_bind_config: bind.map(|b| xds_core::BindConfig {
            source_address: Some(values::socket(b, 0)),
            ..Default::default()
        }),
        circuit_breakers: Some(xds_cluster::CircuitBreakers {
            thresholds: vec![default_thresholds()],
            ..Default::default()
        }),
        ..Default::default()
    });
    b.set_use_downstream_protocol();
    b.http().common_http_protocol_options = Some(xds_core::HttpProtocolOptions {
        idle_timeout: Some(pb::Duration {
            seconds: PASSTHROUGH_IDLE_TIMEOUT_SECS,
            nanos: 0,
        }),
        ..Default::default()
    });
    b.finish()
}

/// The connection pool and retry budget for an inbound port (istiod's `buildInboundCluster`):
/// from the DestinationRule of the service the port serves (rule-wide or for the service
/// port), with the pool replaced by the Sidecar's `ingress[].connectionPool` for the port or
/// its `inboundConnectionPool`.
fn inbound_policy<'a>(
    scope: &Scope<'a>,
    inbound: &InboundPort,
) -> (
    Option<At<'a, ConnectionPoolSettings>>,
    Option<At<'a, RetryBudget>>,
) {
    let service_port = scope
        .served_ports()
        .into_iter()
        .find(|(_, _, target)| *target == inbound.port)
        .map(|(s, p, _)| (s, p.number));
    let policy = service_port
        .and_then(|(service, port)| {
            policy::for_service(scope.inbound_destination_rule(service).as_ref(), port)
        })
        .unwrap_or_default();
    let mut pool = policy.connection_pool;
    if let Some(r) = scope.sidecar
        && let Spec::Sidecar(s) = &r.spec
    {
        let ingress =
            s.ingress.iter().enumerate().find(|(_, i)| {
                i.port.number == u32::from(inbound.port) && i.connection_pool.is_some()
            });
        if let Some((i, ing)) = ingress
            && let Some(cp) = &ing.connection_pool
        {
            pool = Some(At {
                value: cp,
                resource: r,
                path: format!("spec.ingress[{i}].connectionPool"),
            });
        } else if let Some(cp) = &s.inbound_connection_pool {
            pool = Some(At {
                value: cp,
                resource: r,
                path: "spec.inboundConnectionPool".to_string(),
            });
        }
    }
    (pool, policy.retry_budget)
}

fn inbound_cluster(
    scope: &Scope,
    inbound: &InboundPort,
    connect_timeout: &pb::Duration,
) -> xds_cluster::Cluster {
    let name = naming::inbound_cluster(inbound.port);
    let cluster = match &inbound.endpoint {
        Some(target) => xds_cluster::Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(*connect_timeout),
            load_assignment: Some(endpoint::static_assignment(&name, target, scope)),
            ..Default::default()
        },
        None => xds_cluster::Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: LbPolicy::ClusterProvided as i32,
            connect_timeout: Some(*connect_timeout),
            upstream_bind_config: Some(xds_core::BindConfig {
                source_address: Some(values::socket(naming::INBOUND_PASSTHROUGH_BIND_V4, 0)),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let mut b = Building::new(xds_cluster::Cluster {
        common_lb_config: Some(Default::default()),
        ..cluster
    });
    set_upstream_protocol(scope, &mut b, inbound.protocol);
    let (pool, retry_budget) = inbound_policy(scope, inbound);
    apply_connection_pool(scope, &mut b, pool.as_ref(), retry_budget.as_ref());
    b.cluster.metadata = inbound_metadata(scope, inbound);
    b.finish()
}

/// istiod's `istio` metadata of an inbound cluster: the services the port serves (`services`;
/// with a Sidecar ingress listener only the first, as istiod finds it) and the DestinationRule
/// of the first whose top-level traffic policy applies (`config`). None when the port serves no
/// service, or a mesh-external one first.
fn inbound_metadata(scope: &Scope, inbound: &InboundPort) -> Option<xds_core::Metadata> {
    let served = scope.served_ports();
    let mut at_port = served
        .iter()
        .filter(|(_, _, target)| *target == inbound.port)
        .map(|(s, p, _)| (s.as_ref(), p.number));
    let (first, service_port) = at_port.next()?;
    if first.mesh_external {
        return None;
    }
    let mut services: Vec<&Service> = vec![first];
    if scope.sidecar_ingress().is_none() {
        for (s, port) in at_port {
            if port == service_port && !services.iter().any(|o| o.hostname == s.hostname) {
                services.push(s);
            }
        }
    }
    let mut istio = Istio::default().services(services);
    if let Some(rule) = scope.inbound_destination_rule(first)
        && rule.traffic_policy.is_some()
    {
        istio = istio.config(rule.resource);
    }
    istio.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Proxy;

    /// The `istio` metadata of each cluster of a sidecar `web` in `ns` (labels `app: web`).
    fn istio_metadata(yaml: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
        let model = crate::model::testing::model(yaml);
        let proxy = Proxy::parse(
            "sidecar~10.0.0.1~web.ns~ns.svc.cluster.local",
            &serde_json::json!({"NAMESPACE": "ns", "LABELS": {"app": "web"}}),
        )
        .expect("proxy");
        let scope = Scope::new(&model, &proxy);
        build(&scope, Part::All)
            .into_iter()
            .map(|c| {
                let istio = c
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get(super::super::metadata::ISTIO))
                    .map(crate::envoy::struct_to_json)
                    .unwrap_or_default();
                (c.name, istio)
            })
            .collect()
    }

    const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: ns}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-alias, namespace: ns}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
";

    #[test]
    fn merged_rules_are_named_by_the_first() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: a-old, namespace: ns, creationTimestamp: \"2024-01-01T00:00:00Z\"}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b-new, namespace: ns, creationTimestamp: \"2025-01-01T00:00:00Z\"}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: SIMPLE}}}}
  subsets: [{{name: v2, labels: {{version: v2}}}}]
"
        );
        let md = istio_metadata(&yaml);
        let dr = "/apis/networking.istio.io/v1/namespaces/ns/destination-rule/a-old";
        let service = serde_json::json!([{
            "host": "reviews.ns.svc.cluster.local", "name": "reviews", "namespace": "ns"
        }]);
        assert_eq!(
            md["outbound|80||reviews.ns.svc.cluster.local"],
            serde_json::json!({"config": dr, "services": service, "alpn_override": "false"})
        );
        // A subset of the later rule is still the merged rule's: the first one's name.
        assert_eq!(
            md["outbound|80|v2|reviews.ns.svc.cluster.local"],
            serde_json::json!({
                "config": dr, "subset": "v2", "services": service, "alpn_override": "false"
            })
        );
        assert_eq!(
            md["outbound|80|v1|reviews.ns.svc.cluster.local"]["subset"],
            serde_json::json!("v1")
        );
        // No rule: the service only; no DestinationRule with a traffic policy for the
        // workload's services: its inbound cluster lists both services of the port.
        assert_eq!(
            md["outbound|80||web.ns.svc.cluster.local"],
            serde_json::json!({"services": [{
                "host": "web.ns.svc.cluster.local", "name": "web", "namespace": "ns"
            }]})
        );
        let mut inbound = md["inbound|8080||"]["services"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        inbound.sort_by_key(|s| s["name"].as_str().map(str::to_string));
        assert_eq!(
            serde_json::Value::Array(inbound),
            serde_json::json!([
                {"host": "web.ns.svc.cluster.local", "name": "web", "namespace": "ns"},
                {"host": "web-alias.ns.svc.cluster.local", "name": "web-alias", "namespace": "ns"},
            ])
        );
        for fixed in [
            naming::BLACKHOLE_CLUSTER,
            naming::PASSTHROUGH_CLUSTER,
            naming::INBOUND_PASSTHROUGH_CLUSTER,
        ] {
            assert_eq!(md[fixed], serde_json::Value::Null, "{fixed}");
        }
    }

    /// The rule of the port's first service (either of the two here) with a top-level
    /// traffic policy.
    #[test]
    fn inbound_clusters_name_a_rule_with_a_traffic_policy() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: ns}}
spec:
  host: \"*.ns.svc.cluster.local\"
  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 5}}}}}}
"
        );
        let md = istio_metadata(&yaml);
        assert_eq!(
            md["inbound|8080||"]["config"],
            serde_json::json!("/apis/networking.istio.io/v1/namespaces/ns/destination-rule/web")
        );
    }
}
