//! RDS: one route configuration per outbound HTTP port, a virtual host per service
//! (`<host>:<port>`, with the short names istiod adds as domains), VirtualService HTTP routes
//! (or istiod's default route), and the `allow_any` / `block_all` fallback.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3 as previous_hosts;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3 as previous_priorities;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf as pb;

use super::outbound::{self, RoutePlan};
use super::scope::Scope;
use super::values::{integer_fraction, percent_fraction, proto_duration, string_matcher};
use super::virtual_service::{self, Rule};
use super::{IntoWarning, cors, fault, metadata, naming};
use crate::envoy::pack;
use crate::model::Kind;
use crate::model::gateway::{MESH, resolve_gateway_name};
use crate::model::mesh::OutboundTrafficPolicy;
use crate::model::networking::{self, StringMatch, parse_duration};
use crate::model::registry::{self, Service};

/// istiod's default retry conditions (since Istio 1.24 without status code 503).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// The largest direct response body, as validation allows it.
pub(super) const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;

pub fn build(scope: &Scope) -> Vec<xds_route::RouteConfiguration> {
    outbound::plan(scope)
        .1
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
        // istiod's limit (Envoy's default is 4 KiB): direct response bodies up to 1 MiB.
        max_direct_response_body_size_bytes: Some(pb::UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
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
    names.extend(scope.addresses(service));
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

/// Routes for a service on a port: from the first VirtualService for the host (in istiod's
/// precedence) that yields a route on this port, or the default route.
fn routes_for(scope: &Scope, service: &Service, port: u16) -> Vec<xds_route::Route> {
    let candidates = virtual_service::for_host(scope, &service.hostname);
    for (i, (resource, vs)) in candidates.iter().enumerate() {
        if vs.http.is_empty() {
            continue;
        }
        let rules = virtual_service::http_rules(scope, resource, vs);
        let routes = http_routes(scope, &rules, port, Binding::Mesh);
        if routes.is_empty() {
            continue;
        }
        for (other, other_vs) in &candidates[i + 1..] {
            if other_vs.http.is_empty() {
                continue;
            }
            scope.report(
                other
                    .diagnostic(
                        "spec.hosts",
                        format!(
                            "host {} is routed by VirtualService {}/{}, which takes precedence; \
                             VirtualServices for one host are not merged",
                            service.hostname, resource.meta.namespace, resource.meta.name
                        ),
                    )
                    .into_warning(),
            );
        }
        return routes;
    }
    let default_cluster = naming::outbound_cluster(port, "", &service.hostname);
    let hash_policy = super::loadbalancer::hash_policy_for_cluster(scope, &default_cluster);
    let hashed = !hash_policy.is_empty();
    vec![xds_route::Route {
        name: "default".to_string(),
        r#match: Some(prefix_match("/")),
        action: Some(xds_route::route::Action::Route(xds_route::RouteAction {
            hash_policy,
            cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(
                default_cluster,
            )),
            retry_policy: retry_policy(None, hashed),
            ..timed_action(pb::Duration::default())
        })),
        ..Default::default()
    }]
}

/// The retry policy of a rule: istiod's default when `retries` is unset, none when `attempts`
/// is 0. With consistent hashing the previous-hosts predicate is left out, so retries stay on
/// the hashed host.
fn retry_policy(
    r: Option<&networking::HttpRetry>,
    consistent_hash: bool,
) -> Option<xds_route::RetryPolicy> {
    let mut out = xds_route::RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        num_retries: Some(pb::UInt32Value {
            value: DEFAULT_RETRY_ATTEMPTS,
        }),
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    };
    let Some(r) = r else {
        return Some(out);
    };
    let attempts = u32::try_from(r.attempts).ok().filter(|a| *a > 0)?;
    out.num_retries = Some(pb::UInt32Value { value: attempts });
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let (conditions, codes) = parse_retry_on(retry_on);
        out.retry_on = conditions;
        out.retriable_status_codes = codes;
    }
    // Durations are validated with the resource; one that slipped through is left out.
    out.per_try_timeout = r
        .per_try_timeout
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .map(proto_duration);
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(xds_route::retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(
                xds_route::retry_policy::retry_priority::ConfigType::TypedConfig(pack(
                    &previous_priorities::PreviousPrioritiesConfig {
                        update_frequency: 2,
                    },
                )),
            ),
        });
    }
    out.retry_back_off = r
        .backoff
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .map(|d| xds_route::retry_policy::RetryBackOff {
            base_interval: Some(proto_duration(d)),
            ..Default::default()
        });
    Some(out)
}

fn previous_hosts() -> xds_route::retry_policy::RetryHostPredicate {
    xds_route::retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_string(),
        config_type: Some(
            xds_route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack(
                &previous_hosts::PreviousHostsPredicate {},
            )),
        ),
    }
}

/// Splits `retryOn` into Envoy's conditions and the status codes among them (which need the
/// `retriable-status-codes` condition).
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(part),
        }
    }
    let mut joined = conditions.join(",");
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str("retriable-status-codes");
    }
    (joined, codes)
}

/// A route action with its `timeout`, and the same value as the cap of gRPC's `grpc-timeout`
/// header (uncapped when 0), as istiod sets them: the deprecated `max_grpc_timeout`. Its
/// replacement, `max_stream_duration`, must not be set: any value there switches Envoy's router to
/// its "new timeouts", which ignore the route's `timeout` altogether.
#[allow(deprecated)]
fn timed_action(timeout: pb::Duration) -> xds_route::RouteAction {
    xds_route::RouteAction {
        timeout: Some(timeout),
        max_grpc_timeout: Some(timeout),
        ..Default::default()
    }
}

pub(super) fn prefix_match(prefix: &str) -> xds_route::RouteMatch {
    xds_route::RouteMatch {
        path_specifier: Some(xds_route::route_match::PathSpecifier::Prefix(
            prefix.to_string(),
        )),
        ..Default::default()
    }
}

/// A header or query parameter condition that only asks for presence: no match type, or the
/// regex `*` (not a valid RE2 regex; Istio reads it as "present").
fn presence_only(m: &StringMatch) -> bool {
    match m {
        StringMatch::Empty => true,
        StringMatch::Regex(r) => r == "*",
        _ => false,
    }
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> xds_route::HeaderMatcher {
    use xds_route::header_matcher::HeaderMatchSpecifier;
    let specifier = match string_matcher(m, false).filter(|_| !presence_only(m)) {
        Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
        None => HeaderMatchSpecifier::PresentMatch(true),
    };
    xds_route::HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        // `withoutHeaders` on a value also holds when the header is absent.
        treat_missing_header_as_empty: invert && !presence_only(m),
        header_match_specifier: Some(specifier),
    }
}

/// Whether a match block applies to this proxy and port at all: `port`, and either `gateways`
/// (naming what the routes are bound to, resolved in the namespace of the VirtualService) or
/// `sourceLabels` and `sourceNamespace`.
fn match_applies(
    scope: &Scope,
    m: &networking::HttpMatchRequest,
    port: u16,
    binding: Binding,
    namespace: &str,
) -> bool {
    if m.port.is_some_and(|p| p != 0 && p != u32::from(port)) {
        return false;
    }
    if !m.gateways.is_empty() {
        return binding.named_in(&m.gateways, namespace);
    }
    registry::selects(&m.source_labels, &scope.proxy.labels)
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns.is_empty() || ns == scope.proxy.namespace)
}

fn route_match(m: &networking::HttpMatchRequest) -> xds_route::RouteMatch {
    use xds_route::query_parameter_matcher::QueryParameterMatchSpecifier;
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
            query_parameter_match_specifier: Some(
                match string_matcher(v, false).filter(|_| !presence_only(v)) {
                    Some(sm) => QueryParameterMatchSpecifier::StringMatch(sm),
                    None => QueryParameterMatchSpecifier::PresentMatch(true),
                },
            ),
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

/// A route that matches every request: no route after it is ever reached.
pub(super) fn is_catch_all(m: &xds_route::RouteMatch) -> bool {
    use xds_route::route_match::PathSpecifier;
    let any_path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    any_path
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// What routes are made for: the sidecars of the mesh, or one Gateway (`namespace/name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    Mesh,
    Gateway(&'a str),
}

impl Binding<'_> {
    /// Whether a `gateways` list (of a VirtualService in `namespace`) names this binding.
    pub fn named_in(self, gateways: &[String], namespace: &str) -> bool {
        let wanted = match self {
            Binding::Mesh => MESH,
            Binding::Gateway(g) => g,
        };
        gateways
            .iter()
            .any(|g| resolve_gateway_name(g, namespace) == wanted)
    }
}

/// The Envoy routes of a VirtualService's rules on a port, for `binding`: one per applicable
/// match block, stopping after a route that matches everything (as istiod does).
pub fn http_routes(
    scope: &Scope,
    rules: &[Rule],
    port: u16,
    binding: Binding,
) -> Vec<xds_route::Route> {
    let mut out = Vec::new();
    for rule in rules {
        let r = &rule.route;
        let matches: Vec<Option<&networking::HttpMatchRequest>> = if r.match_.is_empty() {
            vec![None]
        } else {
            r.match_
                .iter()
                .filter(|m| match_applies(scope, m, port, binding, &rule.origin.meta.namespace))
                .map(Some)
                .collect()
        };
        if matches.is_empty() {
            continue;
        }
        let Some(base) = rule_route(scope, rule, port) else {
            if r.match_.is_empty() {
                break;
            }
            continue;
        };
        for m in matches {
            let mut route = base.clone();
            let match_name = m.and_then(|m| m.name.as_deref()).filter(|n| !n.is_empty());
            route.name = match (r.name.as_deref().unwrap_or_default(), match_name) {
                (rule_name, Some(match_name)) => format!("{rule_name}.{match_name}"),
                (rule_name, None) => rule_name.to_string(),
            };
            route.r#match = Some(m.map(route_match).unwrap_or_else(|| prefix_match("/")));
            route.stat_prefix = m.and_then(|m| m.stat_prefix.clone()).unwrap_or_default();
            route.metadata = metadata::config(rule.root);
            let catch_all = route.r#match.as_ref().is_some_and(is_catch_all);
            out.push(route);
            if catch_all {
                return out;
            }
        }
    }
    out
}

/// Everything a rule's routes share: the action, header operations and per-filter settings.
/// `None` (with a diagnostic) when the rule cannot become a route.
fn rule_route(scope: &Scope, rule: &Rule, port: u16) -> Option<xds_route::Route> {
    let r = &rule.route;
    let mut route = xds_route::Route::default();
    let mut authority = None;
    if let Some(h) = &r.headers {
        let ops = HeaderOps::of(h);
        authority = ops.authority.clone();
        ops.apply_to_route(&mut route);
    }
    let action = if let Some(redirect) = &r.redirect {
        xds_route::route::Action::Redirect(redirect_action(scope, rule, redirect, port)?)
    } else if let Some(direct) = &r.direct_response {
        xds_route::route::Action::DirectResponse(direct_response(scope, rule, direct))
    } else {
        xds_route::route::Action::Route(route_action(scope, rule, port, authority, &mut route)?)
    };
    route.action = Some(action);
    if let Some(f) = &r.fault {
        let (fault, problems) = fault::per_route(f);
        for (field, message) in problems {
            scope.report(
                rule.origin
                    .diagnostic(format!("{}.fault.{field}", rule.field), message)
                    .into_warning(),
            );
        }
        if let Some(fault) = fault {
            route
                .typed_per_filter_config
                .insert(fault::FILTER_NAME.to_string(), pack(&fault));
        }
    }
    if let Some(c) = &r.cors_policy {
        let (policy, problem) = cors::per_route(c);
        if let Some(message) = problem {
            scope.report(
                rule.origin
                    .diagnostic(format!("{}.corsPolicy.maxAge", rule.field), message)
                    .into_warning(),
            );
        }
        route
            .typed_per_filter_config
            .insert(cors::FILTER_NAME.to_string(), pack(&policy));
    }
    Some(route)
}

fn route_action(
    scope: &Scope,
    rule: &Rule,
    port: u16,
    mut authority: Option<String>,
    route: &mut xds_route::Route,
) -> Option<xds_route::RouteAction> {
    use xds_route::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let r = &rule.route;
    let field = &rule.field;
    if r.route.is_empty() {
        scope.report(
            rule.origin
                .diagnostic(field, "route has no destination; skipped")
                .into_warning(),
        );
        return None;
    }
    let timeout = match r.timeout.as_deref().map(parse_duration) {
        Some(Ok(d)) => proto_duration(d),
        Some(Err(e)) => {
            scope.report(rule.origin.diagnostic(format!("{field}.timeout"), e));
            pb::Duration::default()
        }
        None => pb::Duration::default(),
    };
    let mut action = timed_action(timeout);
    if let Some(rw) = &r.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(matcher::RegexMatchAndSubstitute {
                pattern: Some(matcher::RegexMatcher {
                    regex: rr.match_.clone(),
                    ..Default::default()
                }),
                substitution: rr.rewrite.clone(),
            });
        } else if let Some(uri) = rw.uri.as_deref().filter(|u| !u.is_empty()) {
            // Envoy swaps the matched prefix, or the whole path for exact and regex matches.
            action.prefix_rewrite = uri.to_string();
        }
        if let Some(a) = rw.authority.as_deref().filter(|a| !a.is_empty()) {
            authority = Some(a.to_string());
        }
    }
    action.host_rewrite_specifier = authority.map(HostRewriteSpecifier::HostRewriteLiteral);
    action.request_mirror_policies = mirror_policies(scope, r, port);
    let specifier = if let [only] = r.route.as_slice() {
        if let Some(h) = &only.headers {
            let ops = HeaderOps::of(h);
            if action.host_rewrite_specifier.is_none() {
                action.host_rewrite_specifier = ops
                    .authority
                    .clone()
                    .map(HostRewriteSpecifier::HostRewriteLiteral);
            }
            ops.apply_to_route(route);
        }
        ClusterSpecifier::Cluster(scope.qualified_destination_cluster(&only.destination, port))
    } else {
        let clusters: Vec<xds_route::weighted_cluster::ClusterWeight> = r
            .route
            .iter()
            .filter(|d| d.weight > 0)
            .map(|d| {
                let mut weight = xds_route::weighted_cluster::ClusterWeight {
                    name: scope.qualified_destination_cluster(&d.destination, port),
                    weight: Some(pb::UInt32Value {
                        value: u32::try_from(d.weight).unwrap_or_default(),
                    }),
                    ..Default::default()
                };
                if let Some(h) = &d.headers {
                    HeaderOps::of(h).apply_to_cluster(&mut weight);
                }
                weight
            })
            .collect();
        if clusters.is_empty() {
            scope.report(rule.origin.diagnostic(
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
    action.cluster_specifier = Some(specifier);
    action.retry_policy = retry_policy(r.retries.as_ref(), false);
    // The destinations' consistent-hash policies (DestinationRule); a single hashed destination
    // keeps its retries on the same host.
    super::loadbalancer::apply_consistent_hash(scope, &mut action);
    Some(action)
}

/// `mirror` (with `mirrorPercentage`, or the deprecated `mirrorPercent`) and `mirrors` (each
/// with its own `percentage`); 100% when unset, none at 0%. Envoy appends `-shadow` to the
/// mirrored request's authority.
fn mirror_policies(
    scope: &Scope,
    r: &networking::HttpRoute,
    port: u16,
) -> Vec<xds_route::route_action::RequestMirrorPolicy> {
    let fraction = |percentage: Option<f64>, integer: Option<u32>| match (percentage, integer) {
        (Some(p), _) => (p > 0.0).then(|| percent_fraction(p)),
        (None, Some(p)) => (p > 0).then(|| integer_fraction(i32::try_from(p).unwrap_or(100))),
        (None, None) => Some(integer_fraction(100)),
    };
    let policy = |d: &networking::Destination, f: FractionalPercent| {
        xds_route::route_action::RequestMirrorPolicy {
            cluster: scope.qualified_destination_cluster(d, port),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(f),
                ..Default::default()
            }),
            trace_sampled: Some(pb::BoolValue { value: false }),
            ..Default::default()
        }
    };
    let mut out = Vec::new();
    if let Some(m) = &r.mirror
        && let Some(f) = fraction(
            r.mirror_percentage.as_ref().map(|p| p.value),
            r.mirror_percent,
        )
    {
        out.push(policy(m, f));
    }
    for m in &r.mirrors {
        if let Some(f) = fraction(m.percentage.as_ref().map(|p| p.value), None) {
            out.push(policy(&m.destination, f));
        }
    }
    out
}

fn redirect_action(
    scope: &Scope,
    rule: &Rule,
    rd: &networking::HttpRedirect,
    port: u16,
) -> Option<xds_route::RedirectAction> {
    use networking::{RedirectPort, RedirectPortSelection};
    use xds_route::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let response_code = match rd.redirect_code.unwrap_or(0) {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        other => {
            scope.report(rule.origin.diagnostic(
                format!("{}.redirect.redirectCode", rule.field),
                format!("Envoy cannot send redirect code {other} (only 301, 302, 303, 307, 308); rule skipped"),
            ));
            return None;
        }
    };
    let mut port_redirect = match rd.redirect_port {
        Some(RedirectPort::Port(p)) => p,
        // Envoy cannot copy the request's port; routes are per listener port, so use that.
        Some(RedirectPort::DerivePort(RedirectPortSelection::FromRequestPort)) => u32::from(port),
        Some(RedirectPort::DerivePort(RedirectPortSelection::FromProtocolDefault)) | None => 0,
    };
    if rd.redirect_port.is_some() {
        // No explicit port for the scheme's default.
        let scheme = nonempty(&rd.scheme).unwrap_or_else(|| "http".to_string());
        if (port_redirect == 80 && scheme == "http") || (port_redirect == 443 && scheme == "https")
        {
            port_redirect = 0;
        }
    }
    Some(xds_route::RedirectAction {
        host_redirect: nonempty(&rd.authority).unwrap_or_default(),
        port_redirect,
        response_code: response_code as i32,
        scheme_rewrite_specifier: nonempty(&rd.scheme).map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: nonempty(&rd.prefix_rewrite)
            .map(PathRewriteSpecifier::PrefixRewrite)
            .or_else(|| nonempty(&rd.uri).map(PathRewriteSpecifier::PathRedirect)),
        ..Default::default()
    })
}

fn direct_response(
    scope: &Scope,
    rule: &Rule,
    d: &networking::HttpDirectResponse,
) -> xds_route::DirectResponseAction {
    use xds_core::data_source::Specifier;
    let body = match &d.body {
        Some(networking::HttpBody::String(s)) => Some(Specifier::InlineString(s.clone())),
        Some(networking::HttpBody::Bytes(b)) => match decode_base64(b) {
            Some(bytes) => Some(Specifier::InlineBytes(bytes)),
            None => {
                scope.report(rule.origin.diagnostic(
                    format!("{}.directResponse.body.bytes", rule.field),
                    "bytes must be valid base64; body left empty",
                ));
                None
            }
        },
        Some(networking::HttpBody::Empty) | None => None,
    };
    xds_route::DirectResponseAction {
        status: d.status,
        body: body.map(|specifier| xds_core::DataSource {
            specifier: Some(specifier),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Decodes base64 as protobuf JSON accepts it for `bytes`: the standard or URL-safe alphabet,
/// padding optional.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Header operations of a `headers` block, as istiod renders them: `set` overwrites, `add`
/// appends, each sorted by name; `:authority`/`host` become an authority rewrite instead, and
/// other pseudo-headers are dropped.
#[derive(Debug, Default)]
struct HeaderOps {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
    authority: Option<String>,
}

impl HeaderOps {
    fn of(h: &networking::Headers) -> HeaderOps {
        let empty = networking::HeaderOperations::default();
        let request = h.request.as_ref().unwrap_or(&empty);
        let response = h.response.as_ref().unwrap_or(&empty);
        let is_authority =
            |k: &str| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host");
        let internal = |k: &str| k.starts_with(':') || k.eq_ignore_ascii_case("host");
        let options = |ops: &networking::HeaderOperations| -> Vec<HeaderValueOption> {
            [
                (&ops.set, HeaderAppendAction::OverwriteIfExistsOrAdd),
                (&ops.add, HeaderAppendAction::AppendIfExistsOrAdd),
            ]
            .into_iter()
            .flat_map(|(map, action)| {
                map.iter()
                    .filter(|(k, _)| !internal(k))
                    .map(move |(k, v)| HeaderValueOption {
                        header: Some(xds_core::HeaderValue {
                            key: k.clone(),
                            value: v.clone(),
                            ..Default::default()
                        }),
                        append_action: action as i32,
                        ..Default::default()
                    })
            })
            .collect()
        };
        let removals = |ops: &networking::HeaderOperations| -> Vec<String> {
            ops.remove
                .iter()
                .filter(|k| !internal(k))
                .cloned()
                .collect()
        };
        // `set` wins over `add` for the authority.
        let authority = [&request.set, &request.add].into_iter().find_map(|m| {
            m.iter()
                .filter(|(k, _)| is_authority(k))
                .map(|(_, v)| v.clone())
                .next_back()
        });
        HeaderOps {
            request_add: options(request),
            request_remove: removals(request),
            response_add: options(response),
            response_remove: removals(response),
            authority,
        }
    }

    fn apply_to_route(self, route: &mut xds_route::Route) {
        route.request_headers_to_add.extend(self.request_add);
        route.request_headers_to_remove.extend(self.request_remove);
        route.response_headers_to_add.extend(self.response_add);
        route
            .response_headers_to_remove
            .extend(self.response_remove);
    }

    fn apply_to_cluster(self, cluster: &mut xds_route::weighted_cluster::ClusterWeight) {
        use xds_route::weighted_cluster::cluster_weight::HostRewriteSpecifier;
        cluster.request_headers_to_add = self.request_add;
        cluster.request_headers_to_remove = self.request_remove;
        cluster.response_headers_to_add = self.response_add;
        cluster.response_headers_to_remove = self.response_remove;
        cluster.host_rewrite_specifier =
            self.authority.map(HostRewriteSpecifier::HostRewriteLiteral);
    }
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
                ..timed_action(pb::Duration::default())
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Proxy;
    use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
    use networking::{HeaderOperations, Headers, HttpMatchRequest};

    /// The routes of `host` (in namespace `ns`, port 80) for a plain sidecar in `ns`, and the
    /// translation's diagnostics.
    fn routes(yaml: &str, ns: &str, host: &str) -> (Vec<xds_route::Route>, Vec<String>) {
        let model = crate::model::testing::model(yaml);
        let id = format!("sidecar~10.0.0.1~client.{ns}~{ns}.svc.cluster.local");
        let proxy = Proxy::parse(&id, &serde_json::json!({"NAMESPACE": ns})).expect("proxy");
        let scope = Scope::new(&model, &proxy);
        let hostname = format!("{host}.{ns}.svc.cluster.local");
        let service = model
            .registry
            .by_hostname(&hostname)
            .next()
            .expect("service")
            .clone();
        let routes = routes_for(&scope, &service, 80);
        let diagnostics = scope
            .take_diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect();
        (routes, diagnostics)
    }

    fn action(r: &xds_route::Route) -> &xds_route::RouteAction {
        match &r.action {
            Some(xds_route::route::Action::Route(a)) => a,
            other => panic!("not a route action: {other:?}"),
        }
    }

    const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team}
spec: {ports: [{name: http, port: 80}]}
";

    #[test]
    fn uri_rewrite_swaps_what_matched() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: ns}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /v1}}}}, {{uri: {{exact: /status}}}}]
    rewrite: {{uri: /v2, authority: new.example}}
    route: [{{destination: {{host: web}}}}]
  - rewrite: {{uriRegexRewrite: {{match: ^/x/(.*)$, rewrite: /y/\\1}}}}
    route: [{{destination: {{host: web}}}}]
"
        );
        let (routes, diagnostics) = routes(&yaml, "ns", "web");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(routes.len(), 3);
        // One prefix_rewrite for both: Envoy swaps the matched prefix, or the whole path when
        // the route matched the exact path.
        for r in &routes[..2] {
            let a = action(r);
            assert_eq!(a.prefix_rewrite, "/v2");
            assert_eq!(
                a.host_rewrite_specifier,
                Some(
                    xds_route::route_action::HostRewriteSpecifier::HostRewriteLiteral(
                        "new.example".into()
                    )
                )
            );
        }
        let a = action(&routes[2]);
        assert_eq!(a.prefix_rewrite, "");
        let rr = a.regex_rewrite.as_ref().expect("regex rewrite");
        assert_eq!(rr.substitution, "/y/\\1");
        assert_eq!(
            rr.pattern.as_ref().map(|p| p.regex.as_str()),
            Some("^/x/(.*)$")
        );
    }

    #[test]
    fn delegate_rules_merge_under_the_root() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: ns}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    delegate: {{name: api, namespace: team}}
    timeout: 4s
  - route: [{{destination: {{host: web}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:
  - match: [{{uri: {{prefix: /api/v1}}}}]
    route: [{{destination: {{host: api}}}}]
  - match: [{{uri: {{prefix: /elsewhere}}}}]
    route: [{{destination: {{host: api}}}}]
"
        );
        let (routes, diagnostics) = routes(&yaml, "ns", "web");
        assert_eq!(routes.len(), 2);
        let a = action(&routes[0]);
        // The delegate's short host is its own namespace's; the root's timeout is inherited.
        assert_eq!(
            a.cluster_specifier,
            Some(xds_route::route_action::ClusterSpecifier::Cluster(
                "outbound|80||api.team.svc.cluster.local".into()
            ))
        );
        assert_eq!(
            a.timeout,
            Some(pb::Duration {
                seconds: 4,
                nanos: 0
            })
        );
        assert_eq!(
            routes[0]
                .r#match
                .as_ref()
                .and_then(|m| m.path_specifier.clone()),
            Some(xds_route::route_match::PathSpecifier::Prefix(
                "/api/v1".into()
            ))
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0].contains("team/api: spec.http[1]"),
            "{diagnostics:?}"
        );
        // Every route names the root VirtualService, the delegate's as well (as istiod does).
        for r in &routes {
            let istio = &r.metadata.as_ref().expect("metadata").filter_metadata["istio"];
            assert_eq!(
                crate::envoy::struct_to_json(istio),
                serde_json::json!({
                    "config": "/apis/networking.istio.io/v1/namespaces/ns/virtual-service/web"
                })
            );
        }
    }

    #[test]
    fn the_oldest_virtual_service_routes_a_host() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-newer, namespace: ns, creationTimestamp: \"2025-01-01T00:00:00Z\"}}
spec:
  hosts: [web]
  http: [{{name: newer, route: [{{destination: {{host: web}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-older, namespace: ns, creationTimestamp: \"2024-01-01T00:00:00Z\"}}
spec:
  hosts: [web.ns.svc.cluster.local]
  http: [{{name: older, route: [{{destination: {{host: web}}}}]}}]
"
        );
        let (routes, diagnostics) = routes(&yaml, "ns", "web");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].name, "older");
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].contains("ns/b-newer"), "{diagnostics:?}");
    }

    #[test]
    fn percentages_as_istiod_converts_them() {
        let p = percent_fraction(0.1);
        assert_eq!(
            (p.numerator, p.denominator),
            (1000, DenominatorType::Million as i32)
        );
        assert_eq!(percent_fraction(100.0).numerator, 1_000_000);
        assert_eq!(percent_fraction(0.0001).numerator, 1);
        // Truncated, not rounded; nonsense saturates instead of wrapping.
        assert_eq!(percent_fraction(12.345_678_9).numerator, 123_456);
        assert_eq!(percent_fraction(-1.0).numerator, 0);
        let p = integer_fraction(20);
        assert_eq!(
            (p.numerator, p.denominator),
            (20, DenominatorType::Hundred as i32)
        );
        assert_eq!(integer_fraction(-5).numerator, 0);
    }

    #[test]
    fn retry_on_splits_status_codes() {
        assert_eq!(
            parse_retry_on("5xx, 503,gateway-error"),
            (
                "5xx,gateway-error,retriable-status-codes".to_string(),
                vec![503]
            )
        );
        assert_eq!(
            parse_retry_on("retriable-status-codes,429"),
            ("retriable-status-codes".to_string(), vec![429])
        );
        assert_eq!(
            parse_retry_on("404"),
            ("retriable-status-codes".to_string(), vec![404])
        );
        assert_eq!(parse_retry_on("reset"), ("reset".to_string(), vec![]));
    }

    #[test]
    fn retry_defaults_and_overrides() {
        let default = retry_policy(None, false).expect("default policy");
        assert_eq!(default.retry_on, DEFAULT_RETRY_ON);
        assert!(default.retriable_status_codes.is_empty());
        assert_eq!(default.retry_host_predicate.len(), 1);
        assert!(retry_policy(None, true).is_some_and(|p| p.retry_host_predicate.is_empty()));
        let off = networking::HttpRetry::default();
        assert!(retry_policy(Some(&off), false).is_none());
        let custom = networking::HttpRetry {
            attempts: 3,
            retry_remote_localities: Some(true),
            retry_ignore_previous_hosts: Some(false),
            backoff: Some("25ms".into()),
            ..Default::default()
        };
        let p = retry_policy(Some(&custom), false).expect("policy");
        assert_eq!(p.num_retries, Some(pb::UInt32Value { value: 3 }));
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert!(p.retry_host_predicate.is_empty());
        assert!(p.retry_priority.is_some());
        assert_eq!(
            p.retry_back_off.and_then(|b| b.base_interval),
            Some(pb::Duration {
                seconds: 0,
                nanos: 25_000_000
            })
        );
    }

    /// Envoy only enforces a route's `timeout` while `max_stream_duration` is unset (otherwise
    /// its router uses the "new timeouts" and ignores `timeout`), so the gRPC cap goes in
    /// `max_grpc_timeout`, as istiod puts it, on every kind of route.
    #[test]
    #[allow(deprecated)]
    fn route_timeouts_stay_in_force() {
        let yaml = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: ns}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /slow}}}}]
    timeout: 1.5s
    route: [{{destination: {{host: web}}}}]
  - route: [{{destination: {{host: web}}}}]
"
        );
        let (with_vs, diagnostics) = routes(&yaml, "ns", "web");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let (default, _) = routes(SERVICES, "ns", "web");
        let inbound = inbound_virtual_host(8080, "inbound|8080||").routes;
        let timeouts: Vec<(Option<pb::Duration>, Option<pb::Duration>, bool)> = with_vs
            .iter()
            .chain(&default)
            .chain(&inbound)
            .map(action)
            .map(|a| {
                (
                    a.timeout,
                    a.max_grpc_timeout,
                    a.max_stream_duration.is_some(),
                )
            })
            .collect();
        let zero = Some(pb::Duration::default());
        let slow = Some(pb::Duration {
            seconds: 1,
            nanos: 500_000_000,
        });
        assert_eq!(
            timeouts,
            [
                (slow, slow, false),
                (zero, zero, false),
                (zero, zero, false),
                (zero, zero, false)
            ]
        );
    }

    #[test]
    fn base64_bodies() {
        assert_eq!(
            decode_base64("aGVsbG8gd29ybGQ="),
            Some(b"hello world".to_vec())
        );
        assert_eq!(
            decode_base64("aGVsbG8gd29ybGQ"),
            Some(b"hello world".to_vec())
        );
        assert_eq!(decode_base64("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64(""), Some(vec![]));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("ab!="), None);
    }

    #[test]
    fn header_operations() {
        let h = Headers {
            request: Some(HeaderOperations {
                set: [
                    ("x-b".to_string(), "2".to_string()),
                    ("Host".to_string(), "set.example".to_string()),
                ]
                .into(),
                add: [
                    ("x-a".to_string(), "1".to_string()),
                    (":authority".to_string(), "add.example".to_string()),
                ]
                .into(),
                remove: vec!["x-c".into(), ":path".into()],
            }),
            response: None,
        };
        let ops = HeaderOps::of(&h);
        // `set` wins the authority; pseudo-headers and Host never become header operations.
        assert_eq!(ops.authority.as_deref(), Some("set.example"));
        let keys: Vec<(&str, i32)> = ops
            .request_add
            .iter()
            .filter_map(|o| Some((o.header.as_ref()?.key.as_str(), o.append_action)))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("x-b", HeaderAppendAction::OverwriteIfExistsOrAdd as i32),
                ("x-a", HeaderAppendAction::AppendIfExistsOrAdd as i32),
            ]
        );
        assert_eq!(ops.request_remove, vec!["x-c".to_string()]);
        assert!(ops.response_add.is_empty());
    }

    #[test]
    fn without_headers_hold_when_absent() {
        let m = HttpMatchRequest {
            without_headers: [
                ("x-a".to_string(), StringMatch::Exact("1".into())),
                ("x-b".to_string(), StringMatch::Empty),
                ("x-c".to_string(), StringMatch::Regex("*".into())),
            ]
            .into(),
            headers: [("X-D".to_string(), StringMatch::Empty)].into(),
            ..Default::default()
        };
        let out = route_match(&m);
        let by_name = |n: &str| {
            out.headers
                .iter()
                .find(|h| h.name == n)
                .cloned()
                .unwrap_or_default()
        };
        let present = Some(xds_route::header_matcher::HeaderMatchSpecifier::PresentMatch(true));
        let a = by_name("x-a");
        assert!(a.invert_match && a.treat_missing_header_as_empty);
        for n in ["x-b", "x-c"] {
            let h = by_name(n);
            assert!(h.invert_match && !h.treat_missing_header_as_empty);
            assert_eq!(h.header_match_specifier, present);
        }
        let d = by_name("x-d");
        assert!(!d.invert_match);
        assert_eq!(d.header_match_specifier, present);
        assert!(!is_catch_all(&out));
        assert!(is_catch_all(&route_match(&HttpMatchRequest::default())));
    }
}
