//! RDS: one route configuration per outbound HTTP port, a virtual host per service
//! (`<host>:<port>`, with the short names istiod adds as domains), VirtualService HTTP routes
//! (or istiod's default route), and the `allow_any` / `block_all` fallback.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf as pb;

use super::listener::{self, RoutePlan};
use super::naming;
use super::scope::{Scope, resolve_host};
use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::networking::{self, StringMatch, parse_duration};
use crate::model::registry::{self, Service};
use crate::model::{Diagnostic, Kind, Resource};

/// istiod's default retry conditions.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

pub fn build(scope: &Scope) -> Vec<xds_route::RouteConfiguration> {
    listener::route_plans(scope)
        .iter()
        .map(|plan| route_configuration(scope, plan))
        .collect()
}

fn route_configuration(scope: &Scope, plan: &RoutePlan) -> xds_route::RouteConfiguration {
    let mut used_domains = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    let mut services: Vec<&Service> = plan.services.iter().map(|s| s.as_ref()).collect();
    services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    for service in services {
        let domains: Vec<String> = domains(scope, service, plan.port)
            .into_iter()
            .filter(|d| used_domains.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        virtual_hosts.push(xds_route::VirtualHost {
            name: naming::virtual_host(&service.hostname, plan.port),
            domains,
            routes: routes_for(scope, service, plan.port),
            include_request_attempt_count: true,
            ..Default::default()
        });
    }
    virtual_hosts.push(fallback_virtual_host(scope));
    xds_route::RouteConfiguration {
        name: plan.name.clone(),
        virtual_hosts,
        validate_clusters: Some(pb::BoolValue { value: false }),
        ..Default::default()
    }
}

fn fallback_virtual_host(scope: &Scope) -> xds_route::VirtualHost {
    let (name, action) = match scope.outbound_policy {
        OutboundTrafficPolicy::AllowAny => (
            naming::ALLOW_ANY_VHOST,
            xds_route::route::Action::Route(xds_route::RouteAction {
                cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(
                    naming::PASSTHROUGH_CLUSTER.to_string(),
                )),
                timeout: Some(pb::Duration::default()),
                ..Default::default()
            }),
        ),
        OutboundTrafficPolicy::RegistryOnly => (
            naming::BLOCK_ALL_VHOST,
            xds_route::route::Action::DirectResponse(xds_route::DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        ),
    };
    xds_route::VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![xds_route::Route {
            name: name.to_string(),
            r#match: Some(prefix_match("/")),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// The names a client may use for a service on a port: the FQDN, the shorter forms for
/// Kubernetes services (`name.ns.svc`, `name.ns`, and `name` from the same namespace), and the
/// virtual IPs, each bare and with `:port`.
fn domains(scope: &Scope, service: &Service, port: u16) -> Vec<String> {
    let mut names = vec![service.hostname.clone()];
    if service.origin == Kind::Service {
        names.push(format!("{}.{}.svc", service.name, service.namespace));
        names.push(format!("{}.{}", service.name, service.namespace));
        if service.namespace == scope.proxy.namespace {
            names.push(service.name.clone());
        }
    }
    names.extend(
        service
            .addresses
            .iter()
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .cloned(),
    );
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

/// Routes for a service on a port: from the oldest VirtualService for the host, or the
/// default route.
fn routes_for(scope: &Scope, service: &Service, port: u16) -> Vec<xds_route::Route> {
    let default_cluster = naming::outbound_cluster(port, "", &service.hostname);
    for (resource, vs) in scope.virtual_services(&service.hostname) {
        if vs.http.is_empty() {
            continue;
        }
        let routes = http_routes(scope, resource, vs, service, port);
        return routes;
    }
    vec![xds_route::Route {
        name: "default".to_string(),
        r#match: Some(prefix_match("/")),
        action: Some(xds_route::route::Action::Route(xds_route::RouteAction {
            hash_policy: super::loadbalancer::hash_policy_for_cluster(scope, &default_cluster),
            cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(
                default_cluster,
            )),
            timeout: Some(pb::Duration::default()),
            retry_policy: Some(default_retry_policy()),
            max_stream_duration: Some(grpc_timeout_cap()),
            ..Default::default()
        })),
        ..Default::default()
    }]
}

/// istiod's retry policy when a route sets none.
pub fn default_retry_policy() -> xds_route::RetryPolicy {
    retry_policy(DEFAULT_RETRY_ON, DEFAULT_RETRY_ATTEMPTS, None)
}

fn retry_policy(
    retry_on: &str,
    attempts: u32,
    per_try: Option<pb::Duration>,
) -> xds_route::RetryPolicy {
    // Numeric entries are status codes; Envoy wants them separately, with
    // `retriable-status-codes` among the conditions.
    let mut conditions: Vec<String> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(part.to_string()),
        }
    }
    if conditions.iter().any(|c| c == "retriable-status-codes") && codes.is_empty() {
        codes.push(503);
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".to_string());
    }
    xds_route::RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(pb::UInt32Value { value: attempts }),
        per_try_timeout: per_try,
        retry_host_predicate: vec![xds_route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(xds_route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                super::envoy::pack(
                    &envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate {},
                ),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: codes,
        ..Default::default()
    }
}

/// gRPC's `grpc-timeout` header is honoured without a cap (istiod's setting).
fn grpc_timeout_cap() -> xds_route::route_action::MaxStreamDuration {
    xds_route::route_action::MaxStreamDuration {
        grpc_timeout_header_max: Some(pb::Duration::default()),
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> xds_route::RouteMatch {
    xds_route::RouteMatch {
        path_specifier: Some(xds_route::route_match::PathSpecifier::Prefix(
            prefix.to_string(),
        )),
        ..Default::default()
    }
}

fn proto_duration(d: std::time::Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<matcher::StringMatcher> {
    use matcher::string_matcher::MatchPattern;
    let pattern = match m {
        StringMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatch::Regex(v) => MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        }),
        StringMatch::Empty => return None,
    };
    Some(matcher::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> xds_route::HeaderMatcher {
    use xds_route::header_matcher::HeaderMatchSpecifier;
    let specifier = match string_matcher(m, false) {
        Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
        None => HeaderMatchSpecifier::PresentMatch(true),
    };
    xds_route::HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// Whether a match block applies to this proxy and port at all.
fn match_applies(scope: &Scope, m: &networking::HttpMatchRequest, port: u16) -> bool {
    m.port.is_none_or(|p| p == u32::from(port))
        && registry::selects(&m.source_labels, &scope.proxy.labels)
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == scope.proxy.namespace)
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
}

fn route_match(m: &networking::HttpMatchRequest) -> xds_route::RouteMatch {
    use xds_route::route_match::PathSpecifier;
    let path = match &m.uri {
        Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => PathSpecifier::SafeRegex(matcher::RegexMatcher {
            regex: r.clone(),
            ..Default::default()
        }),
        Some(StringMatch::Empty) | None => PathSpecifier::Prefix("/".to_string()),
    };
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(v) = value {
            headers.push(header_matcher(name, v, false));
        }
    }
    for (name, v) in &m.headers {
        headers.push(header_matcher(&name.to_ascii_lowercase(), v, false));
    }
    for (name, v) in &m.without_headers {
        headers.push(header_matcher(&name.to_ascii_lowercase(), v, true));
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, v)| xds_route::QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(v, false) {
                Some(sm) => {
                    xds_route::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        sm,
                    )
                }
                None => {
                    xds_route::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(
                        true,
                    )
                }
            }),
        })
        .collect();
    xds_route::RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_uri_case.then_some(pb::BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The cluster a VirtualService destination names.
fn destination_cluster(
    scope: &Scope,
    resource: &Resource,
    d: &networking::Destination,
    listener_port: u16,
) -> String {
    let host = resolve_host(&d.host, &resource.meta.namespace, scope.domain_suffix());
    let port = match d
        .port
        .as_ref()
        .and_then(|p| u16::try_from(p.number).ok())
        .filter(|p| *p != 0)
    {
        Some(p) => p,
        None => {
            // A destination without a port uses the service's only port, else the port the
            // request arrived on.
            let mut found = scope.model.registry.by_hostname(&host);
            match found.next() {
                Some(s) if s.ports.len() == 1 => s.ports[0].number,
                _ => listener_port,
            }
        }
    };
    naming::outbound_cluster(port, d.subset.as_deref().unwrap_or_default(), &host)
}

fn http_routes(
    scope: &Scope,
    resource: &Resource,
    vs: &networking::VirtualService,
    service: &Service,
    port: u16,
) -> Vec<xds_route::Route> {
    let mut out = Vec::new();
    for (i, rule) in vs.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        let unsupported: Vec<&str> = [
            ("redirect", rule.redirect.is_some()),
            ("directResponse", rule.direct_response.is_some()),
            ("delegate", rule.delegate.is_some()),
            ("rewrite", rule.rewrite.is_some()),
            ("fault", rule.fault.is_some()),
            ("mirror", rule.mirror.is_some() || !rule.mirrors.is_empty()),
            ("corsPolicy", rule.cors_policy.is_some()),
            (
                "headers",
                rule.headers.is_some() || rule.route.iter().any(|r| r.headers.is_some()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !unsupported.is_empty() {
            scope.report(
                resource
                    .diagnostic(
                        &field,
                        format!("not translated yet, ignored: {}", unsupported.join(", ")),
                    )
                    .into_warning(),
            );
        }
        let Some(action) = route_action(scope, resource, rule, port, &field) else {
            continue;
        };
        let matches: Vec<xds_route::RouteMatch> = if rule.match_.is_empty() {
            vec![prefix_match("/")]
        } else {
            rule.match_
                .iter()
                .filter(|m| match_applies(scope, m, port))
                .map(route_match)
                .collect()
        };
        for (j, m) in matches.into_iter().enumerate() {
            let name = rule
                .name
                .clone()
                .or_else(|| rule.match_.get(j).and_then(|m| m.name.clone()))
                .unwrap_or_default();
            out.push(xds_route::Route {
                name,
                r#match: Some(m),
                action: Some(xds_route::route::Action::Route(action.clone())),
                ..Default::default()
            });
        }
        let _ = service;
    }
    out
}

fn route_action(
    scope: &Scope,
    resource: &Resource,
    rule: &networking::HttpRoute,
    port: u16,
    field: &str,
) -> Option<xds_route::RouteAction> {
    use xds_route::route_action::ClusterSpecifier;
    if rule.route.is_empty() {
        scope.report(
            resource
                .diagnostic(field, "route has no destination; skipped")
                .into_warning(),
        );
        return None;
    }
    let specifier = if rule.route.len() == 1 {
        ClusterSpecifier::Cluster(destination_cluster(
            scope,
            resource,
            &rule.route[0].destination,
            port,
        ))
    } else {
        let clusters: Vec<xds_route::weighted_cluster::ClusterWeight> = rule
            .route
            .iter()
            .filter(|d| d.weight > 0)
            .map(|d| xds_route::weighted_cluster::ClusterWeight {
                name: destination_cluster(scope, resource, &d.destination, port),
                weight: Some(pb::UInt32Value {
                    value: u32::try_from(d.weight).unwrap_or_default(),
                }),
                ..Default::default()
            })
            .collect();
        if clusters.is_empty() {
            scope.report(resource.diagnostic(
                format!("{field}.route"),
                "every destination has weight 0; skipped",
            ));
            return None;
        }
        ClusterSpecifier::WeightedClusters(xds_route::WeightedCluster {
            clusters,
            ..Default::default()
        })
    };
    let timeout = match rule.timeout.as_deref().map(parse_duration) {
        Some(Ok(d)) => proto_duration(d),
        Some(Err(e)) => {
            scope.report(resource.diagnostic(format!("{field}.timeout"), e));
            pb::Duration::default()
        }
        None => pb::Duration::default(),
    };
    let retry = match &rule.retries {
        None => Some(default_retry_policy()),
        Some(r) if r.attempts <= 0 => None,
        Some(r) => {
            let per_try = match r.per_try_timeout.as_deref().map(parse_duration) {
                Some(Ok(d)) => Some(proto_duration(d)),
                Some(Err(e)) => {
                    scope.report(resource.diagnostic(format!("{field}.retries.perTryTimeout"), e));
                    None
                }
                None => None,
            };
            Some(retry_policy(
                r.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON),
                u32::try_from(r.attempts).unwrap_or_default(),
                per_try,
            ))
        }
    };
    Some(super::loadbalancer::with_consistent_hash(
        scope,
        xds_route::RouteAction {
            cluster_specifier: Some(specifier),
            timeout: Some(timeout),
            retry_policy: retry,
            max_stream_duration: Some(grpc_timeout_cap()),
            ..Default::default()
        },
    ))
}

/// The virtual host of an inbound HTTP port: everything to the inbound cluster.
pub fn inbound_virtual_host(port: u16, cluster: &str) -> xds_route::VirtualHost {
    xds_route::VirtualHost {
        name: format!("inbound|http|{port}"),
        domains: vec!["*".to_string()],
        routes: vec![xds_route::Route {
            name: "default".to_string(),
            r#match: Some(prefix_match("/")),
            action: Some(xds_route::route::Action::Route(xds_route::RouteAction {
                cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(
                    cluster.to_string(),
                )),
                timeout: Some(pb::Duration::default()),
                max_stream_duration: Some(grpc_timeout_cap()),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Diagnostics raised during translation about a resource.
trait IntoWarning {
    fn into_warning(self) -> Diagnostic;
}

impl IntoWarning for Diagnostic {
    fn into_warning(mut self) -> Diagnostic {
        self.severity = crate::model::Severity::Warning;
        self
    }
}
