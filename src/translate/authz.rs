//! Authorization and request authentication on a proxy's inbound side, as istiod builds them:
//! AuthorizationPolicy → Envoy RBAC (HTTP filter `envoy.filters.http.rbac` in the inbound HTTP
//! connection manager, network filter `envoy.filters.network.rbac` in inbound TCP chains), CUSTOM
//! policies → an RBAC filter in shadow mode marking the requests `ext_authz` must check, and
//! RequestAuthentication → `envoy.filters.http.jwt_authn` whose verified payload (dynamic
//! metadata `payload` under the filter's name) RBAC matches request principals and claims on.
//!
//! Order, istiod's: CUSTOM (RBAC + ext_authz), jwt_authn, AUDIT, DENY, ALLOW; then the
//! listener's own fault, cors and router filters.
//!
//! Policies that apply to a proxy: those in its namespace and in the root namespace whose
//! `selector` matches its labels (no selector: all); policies with `targetRef(s)` apply only to
//! Kubernetes Gateway API gateways (workloads labelled `gateway.networking.k8s.io/gateway-name`),
//! never to sidecars. Pure: everything here reads the scope and returns values.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as ext_authz_http;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as jwt;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_http;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as ext_authz_tcp;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as rbac_tcp;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3 as uri_template;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as envoy_type;
use envoy_types::pb::google::protobuf as pb;

use super::IntoWarning;
use super::naming;
use super::scope::Scope;
use crate::envoy::pack;
use crate::model::mesh::{Authorizer, ExtAuthzGrpc, ExtAuthzHttp, RequestBody};
use crate::model::networking::{TypeWorkloadSelector, parse_duration};
use crate::model::registry;
use crate::model::security::{
    Action, AuthorizationPolicy, JwtPresence, JwtRule, PolicyTargetReference,
    RequestAuthentication, Rule,
};
use crate::model::validation::security::{
    self as attrs, ANNOTATION_DRY_RUN, parse_go_bool, parse_jwks_uri, parse_port,
};
use crate::model::{Kind, Resource, Spec};

/// Payload key jwt_authn writes verified JWT claims under (`payload_in_metadata`).
pub const JWT_PAYLOAD_KEY: &str = "payload";
/// The label that makes a workload a Kubernetes Gateway API gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Where generated HTTPS JWKS clusters find trusted roots.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A syntactically valid key set no token verifies against: what a rule without usable keys
/// gets, so presented tokens fail closed (istiod does the same when it cannot fetch keys).
const FAKE_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"bowline-no-keys","alg":"RS256","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;

/// The authorization and authentication filters of one proxy's inbound chains, computed once
/// and shared by every inbound chain of the proxy.
#[derive(Debug, Default, Clone)]
pub struct Inbound {
    /// HTTP filters to put in front of the inbound connection manager's own filters.
    pub http: Vec<hcm::HttpFilter>,
    /// Network filters to put in front of an inbound TCP chain's tcp_proxy.
    pub tcp: Vec<xds_listener::Filter>,
}

impl Inbound {
    /// Builds the inbound filters of the scope's proxy; problems become warnings in the scope.
    pub fn build(scope: &Scope) -> Inbound {
        let policies = authorization_policies(scope);
        let bundle = trust_domains(scope);
        let mut by_action: BTreeMap<Action, Vec<Selected>> = BTreeMap::new();
        for p in policies {
            by_action.entry(p.spec.action()).or_default().push(p);
        }
        let take = |a: Action| by_action.get(&a).map(Vec::as_slice).unwrap_or_default();
        let custom = Custom::new(scope, take(Action::Custom), &bundle);

        let mut http = custom.http();
        http.extend(jwt_filter(scope));
        let mut tcp = custom.tcp();
        for (action, rbac_action) in [
            (Action::Audit, rbac::rbac::Action::Log),
            (Action::Deny, rbac::rbac::Action::Deny),
            (Action::Allow, rbac::rbac::Action::Allow),
        ] {
            let selected = take(action);
            if selected.is_empty() {
                continue;
            }
            for for_tcp in [false, true] {
                let built = build_rules(selected, rbac_action, for_tcp, None, &bundle);
                let shadow_prefix = match action {
                    Action::Allow if built.shadow.is_some() => naming::RBAC_DRY_RUN_ALLOW_PREFIX,
                    Action::Deny if built.shadow.is_some() => naming::RBAC_DRY_RUN_DENY_PREFIX,
                    _ => "",
                };
                if for_tcp {
                    tcp.push(network_filter(
                        naming::RBAC_NETWORK_FILTER,
                        &rbac_tcp::Rbac {
                            rules: built.enforce,
                            shadow_rules: built.shadow,
                            shadow_rules_stat_prefix: shadow_prefix.to_string(),
                            stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                            ..Default::default()
                        },
                    ));
                } else {
                    http.push(http_filter(
                        naming::RBAC_HTTP_FILTER,
                        &rbac_http::Rbac {
                            rules: built.enforce,
                            shadow_rules: built.shadow,
                            shadow_rules_stat_prefix: shadow_prefix.to_string(),
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        Inbound { http, tcp }
    }
}

fn http_filter<T: prost::Name + prost::Message>(name: &str, config: &T) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(config))),
        ..Default::default()
    }
}

fn network_filter<T: prost::Name + prost::Message>(name: &str, config: &T) -> xds_listener::Filter {
    xds_listener::Filter {
        name: name.to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(config))),
    }
}

// ---------------------------------------------------------------------------------------------
// Which policies apply
// ---------------------------------------------------------------------------------------------

/// An AuthorizationPolicy that applies to the proxy.
#[derive(Clone, Copy)]
struct Selected<'a> {
    resource: &'a Resource,
    spec: &'a AuthorizationPolicy,
    dry_run: bool,
}

/// Whether a policy with this selector and these target references, in `namespace`, applies to
/// the proxy (istiod's workload policy matcher).
fn attaches(
    scope: &Scope,
    namespace: &str,
    selector: Option<&TypeWorkloadSelector>,
    target_refs: &[&PolicyTargetReference],
) -> bool {
    let proxy = scope.proxy;
    if namespace != proxy.namespace && namespace != scope.model.mesh.root_namespace {
        return false;
    }
    let selected = || selector.is_none_or(|s| registry::selects(&s.match_labels, &proxy.labels));
    let Some(gateway) = proxy.labels.get(GATEWAY_NAME_LABEL) else {
        // Sidecars: selector only; a policy with target references is not for them.
        return target_refs.is_empty() && selected();
    };
    if target_refs.is_empty() {
        return selected();
    }
    namespace == proxy.namespace
        && target_refs.iter().any(|t| {
            t.group.as_deref() == Some("gateway.networking.k8s.io")
                && t.kind == "Gateway"
                && &t.name == gateway
                && t.namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == proxy.namespace)
        })
}

/// Root-namespace policies first, then the proxy's namespace; oldest first within each.
fn authorization_policies<'a>(scope: &Scope<'a>) -> Vec<Selected<'a>> {
    let root = scope.model.mesh.root_namespace.as_str();
    let mut namespaces = vec![root];
    if scope.proxy.namespace != root {
        namespaces.push(scope.proxy.namespace.as_str());
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in scope.model.of_kind(Kind::AuthorizationPolicy) {
            let Spec::AuthorizationPolicy(spec) = &r.spec else {
                continue;
            };
            if r.meta.namespace != ns
                || !attaches(scope, ns, spec.selector.as_ref(), &spec.target_refs())
            {
                continue;
            }
            let dry_run = r
                .meta
                .annotations
                .get(ANNOTATION_DRY_RUN)
                .and_then(|v| parse_go_bool(v))
                .unwrap_or(false);
            out.push(Selected {
                resource: r.as_ref(),
                spec: spec.as_ref(),
                dry_run,
            });
        }
    }
    out
}

/// The mesh trust domain and its aliases: principals naming any of them (or `cluster.local`)
/// match all of them.
fn trust_domains(scope: &Scope) -> Vec<String> {
    let mesh = &scope.model.mesh;
    let mut out = vec![mesh.trust_domain.clone()];
    out.extend(mesh.trust_domain_aliases.iter().cloned());
    out
}

// ---------------------------------------------------------------------------------------------
// Rules → RBAC policies
// ---------------------------------------------------------------------------------------------

/// What an Istio attribute becomes in RBAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    DestIp,
    DestPort,
    ConnSni,
    EnvoyFilter,
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcTrustDomain,
    SrcServiceAccount,
    SrcPrincipal,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestHeader,
    RequestClaims,
    Host,
    Path,
    Method,
}

impl Attr {
    /// Attributes whose values are matched as one list (an OR inside a single matcher).
    fn extended(self) -> bool {
        matches!(
            self,
            Attr::EnvoyFilter
                | Attr::RequestPrincipal
                | Attr::RequestAudiences
                | Attr::RequestPresenter
                | Attr::RequestClaims
        )
    }

    /// Attributes only an HTTP request has.
    fn http_only(self) -> bool {
        matches!(
            self,
            Attr::RequestPrincipal
                | Attr::RequestAudiences
                | Attr::RequestPresenter
                | Attr::RequestHeader
                | Attr::RequestClaims
                | Attr::Host
                | Attr::Path
                | Attr::Method
        )
    }
}

/// One condition of a rule: an attribute, the values it must match and those it must not.
#[derive(Debug, Clone)]
struct Cond {
    attr: Attr,
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
}

/// A rule consolidated into RBAC's shape: one permission list per `to` (or one), one principal
/// list per `from` (or one); the conditions of a list are ANDed.
#[derive(Debug, Default)]
struct RuleModel {
    permissions: Vec<Vec<Cond>>,
    principals: Vec<Vec<Cond>>,
}

fn cond(attr: Attr, key: &str, values: &[String], not_values: &[String]) -> Option<Cond> {
    (!values.is_empty() || !not_values.is_empty()).then(|| Cond {
        attr,
        key: key.to_string(),
        values: values.to_vec(),
        not_values: not_values.to_vec(),
    })
}

/// Consolidates a rule. `from` and `to` conditions come first (in istiod's order), `when`
/// conditions after them.
fn rule_model(rule: &Rule, bundle: &[String]) -> Result<RuleModel, String> {
    let mut base_permission = Vec::new();
    let mut base_principal = Vec::new();
    for w in &rule.when {
        let k = w.key.as_str();
        let (attr, principal) = match k {
            attrs::ATTR_DEST_IP => (Attr::DestIp, false),
            attrs::ATTR_DEST_PORT => (Attr::DestPort, false),
            attrs::ATTR_CONN_SNI => (Attr::ConnSni, false),
            _ if k.starts_with(attrs::ATTR_EXPERIMENTAL) => (Attr::EnvoyFilter, false),
            attrs::ATTR_SRC_IP => (Attr::SrcIp, true),
            attrs::ATTR_REMOTE_IP => (Attr::RemoteIp, true),
            attrs::ATTR_SRC_NAMESPACE => (Attr::SrcNamespace, true),
            attrs::ATTR_SRC_TRUST_DOMAIN => (Attr::SrcTrustDomain, true),
            attrs::ATTR_SRC_SERVICE_ACCOUNT => (Attr::SrcServiceAccount, true),
            attrs::ATTR_SRC_PRINCIPAL => (Attr::SrcPrincipal, true),
            attrs::ATTR_REQUEST_PRINCIPAL => (Attr::RequestPrincipal, true),
            attrs::ATTR_REQUEST_AUDIENCES => (Attr::RequestAudiences, true),
            attrs::ATTR_REQUEST_PRESENTER => (Attr::RequestPresenter, true),
            _ if k.starts_with(attrs::ATTR_REQUEST_HEADER) => (Attr::RequestHeader, true),
            _ if k.starts_with(attrs::ATTR_REQUEST_CLAIMS) => (Attr::RequestClaims, true),
            _ => return Err(format!("unknown attribute {k}")),
        };
        let target = if principal {
            &mut base_principal
        } else {
            &mut base_permission
        };
        target.extend(cond(attr, k, &w.values, &w.not_values));
    }
    let mut model = RuleModel::default();
    for from in &rule.from {
        let mut list = Vec::new();
        if let Some(s) = &from.source {
            let items = [
                cond(
                    Attr::SrcPrincipal,
                    attrs::ATTR_SRC_PRINCIPAL,
                    &s.principals,
                    &s.not_principals,
                ),
                cond(
                    Attr::RequestPrincipal,
                    attrs::ATTR_REQUEST_PRINCIPAL,
                    &s.request_principals,
                    &s.not_request_principals,
                ),
                cond(
                    Attr::SrcServiceAccount,
                    attrs::ATTR_SRC_SERVICE_ACCOUNT,
                    &s.service_accounts,
                    &s.not_service_accounts,
                ),
                cond(
                    Attr::SrcTrustDomain,
                    attrs::ATTR_SRC_TRUST_DOMAIN,
                    &s.trust_domains,
                    &s.not_trust_domains,
                ),
                cond(
                    Attr::SrcNamespace,
                    attrs::ATTR_SRC_NAMESPACE,
                    &s.namespaces,
                    &s.not_namespaces,
                ),
                cond(
                    Attr::RemoteIp,
                    attrs::ATTR_REMOTE_IP,
                    &s.remote_ip_blocks,
                    &s.not_remote_ip_blocks,
                ),
                cond(
                    Attr::SrcIp,
                    attrs::ATTR_SRC_IP,
                    &s.ip_blocks,
                    &s.not_ip_blocks,
                ),
            ];
            list.extend(items.into_iter().flatten());
        }
        list.extend(base_principal.iter().cloned());
        model.principals.push(list);
    }
    if rule.from.is_empty() {
        model.principals.push(base_principal);
    }
    for to in &rule.to {
        let mut list = Vec::new();
        if let Some(o) = &to.operation {
            let items = [
                cond(Attr::Host, ":authority", &o.hosts, &o.not_hosts),
                cond(Attr::Method, ":method", &o.methods, &o.not_methods),
                cond(Attr::Path, "path-matcher", &o.paths, &o.not_paths),
                cond(
                    Attr::DestPort,
                    attrs::ATTR_DEST_PORT,
                    &o.ports,
                    &o.not_ports,
                ),
            ];
            list.extend(items.into_iter().flatten());
        }
        list.extend(base_permission.iter().cloned());
        model.permissions.push(list);
    }
    if rule.to.is_empty() {
        model.permissions.push(base_permission);
    }
    migrate_trust_domains(&mut model, bundle);
    Ok(model)
}

/// Principals naming the mesh's trust domain, one of its aliases or `cluster.local` (a
/// trust-domain pattern matching one counts) are rewritten to every trust domain of the mesh;
/// trust-domain values naming one are expanded to all of them.
fn migrate_trust_domains(model: &mut RuleModel, bundle: &[String]) {
    for c in model.principals.iter_mut().flatten() {
        match c.attr {
            Attr::SrcPrincipal => {
                c.values = replace_trust_domains(&c.values, bundle);
                c.not_values = replace_trust_domains(&c.not_values, bundle);
            }
            Attr::SrcTrustDomain => {
                c.values = expand_trust_domains(&c.values, bundle);
                c.not_values = expand_trust_domains(&c.not_values, bundle);
            }
            _ => {}
        }
    }
}

/// istiod's trust-domain migration of principals (`<td>/ns/<ns>/sa/<sa>`). A principal whose
/// trust domain is enforced (not `*`) and matches one of `bundle` (the mesh's trust domain and
/// its aliases, see [`trust_domain_matches`]) or is `cluster.local` becomes one principal per
/// trust domain of the bundle: the trust domain replaced by that one, or kept as written when it
/// is a `*suffix` pattern that one ends with. Anything else (`*/ns/...`, another trust domain,
/// not a five-part SPIFFE path) is kept as written.
fn replace_trust_domains(principals: &[String], bundle: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in principals {
        let parts: Vec<&str> = p.split('/').collect();
        if parts.len() != 5 || parts[0] == "*" {
            out.push(p.clone());
            continue;
        }
        let td = parts[0];
        if !(trust_domain_matches(td, bundle) || td == "cluster.local") {
            out.push(p.clone());
            continue;
        }
        let mut expanded: Vec<String> = Vec::new();
        for b in bundle {
            let candidate = if suffix_pattern_matches(b, td) {
                p.clone()
            } else {
                format!("{b}/{}", parts[1..].join("/"))
            };
            if !expanded.contains(&candidate) {
                expanded.push(candidate);
            }
        }
        out.extend(expanded);
    }
    out
}

/// Whether trust domain `td` matches one of `list`, where either side may be a pattern: equal,
/// a lone `*` in the list, or one side `prefix*` or `*suffix` matching the other (istiod's
/// trust-domain `stringMatch`).
fn trust_domain_matches(td: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        td == s
            || s == "*"
            || prefix_pattern_matches(td, s)
            || prefix_pattern_matches(s, td)
            || suffix_pattern_matches(td, s)
            || suffix_pattern_matches(s, td)
    })
}

/// `pattern` is `prefix*` and `value` starts with `prefix`.
fn prefix_pattern_matches(value: &str, pattern: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| value.starts_with(prefix))
}

/// `pattern` is `*suffix` and `value` ends with `suffix`.
fn suffix_pattern_matches(value: &str, pattern: &str) -> bool {
    pattern
        .strip_prefix('*')
        .is_some_and(|suffix| value.ends_with(suffix))
}

fn expand_trust_domains(values: &[String], bundle: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let items: Vec<String> = if bundle.contains(v) {
            bundle.to_vec()
        } else {
            vec![v.clone()]
        };
        for i in items {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

// --- Envoy matchers ----------------------------------------------------------------------

/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn sm(pattern: matcher::string_matcher::MatchPattern, ignore_case: bool) -> matcher::StringMatcher {
    matcher::StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    }
}

fn sm_exact(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Exact(v.to_string()),
        ignore_case,
    )
}

fn sm_prefix(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Prefix(v.to_string()),
        ignore_case,
    )
}

fn sm_suffix(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Suffix(v.to_string()),
        ignore_case,
    )
}

fn sm_regex(re: &str) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: re.to_string(),
            ..Default::default()
        }),
        false,
    )
}

/// `*` (presence, `.+`), `*suffix`, `prefix*` or an exact value, with `prefix` prepended to
/// what is matched (not to a lone `*`).
fn string_matcher_with_prefix(v: &str, prefix: &str) -> matcher::StringMatcher {
    if v == "*" {
        sm_regex(".+")
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            sm_suffix(suffix, false)
        } else {
            sm_regex(&format!("{prefix}.*{}", quote_meta(suffix)))
        }
    } else if let Some(p) = v.strip_suffix('*') {
        sm_prefix(&format!("{prefix}{p}"), false)
    } else {
        sm_exact(&format!("{prefix}{v}"), false)
    }
}

fn string_matcher(v: &str) -> matcher::StringMatcher {
    string_matcher_with_prefix(v, "")
}

/// A header matcher: `*` is presence, otherwise suffix, prefix or exact.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> xds_route::HeaderMatcher {
    use xds_route::header_matcher::HeaderMatchSpecifier;
    let spec = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else if let Some(s) = v.strip_prefix('*') {
        HeaderMatchSpecifier::StringMatch(sm_suffix(s, ignore_case))
    } else if let Some(p) = v.strip_suffix('*') {
        HeaderMatchSpecifier::StringMatch(sm_prefix(p, ignore_case))
    } else {
        HeaderMatchSpecifier::StringMatch(sm_exact(v, ignore_case))
    };
    xds_route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn value_string(m: matcher::StringMatcher) -> matcher::ValueMatcher {
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(m)),
    }
}

fn value_or(mut matchers: Vec<matcher::ValueMatcher>) -> matcher::ValueMatcher {
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::OrMatch(
            matcher::OrMatcher {
                value_matchers: matchers,
            },
        )),
    }
}

fn value_list_one_of(v: matcher::ValueMatcher) -> matcher::ValueMatcher {
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::ListMatch(Box::new(
            matcher::ListMatcher {
                match_pattern: Some(matcher::list_matcher::MatchPattern::OneOf(Box::new(v))),
            },
        ))),
    }
}

fn metadata_matcher(
    filter: &str,
    keys: &[&str],
    value: matcher::ValueMatcher,
) -> matcher::MetadataMatcher {
    matcher::MetadataMatcher {
        filter: filter.to_string(),
        path: keys
            .iter()
            .map(|k| matcher::metadata_matcher::PathSegment {
                segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
                    k.to_string(),
                )),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// A JWT claim in jwt_authn's metadata, matching a string claim or any element of a list claim.
fn jwt_claim_matcher(claims: &[&str], values: &[String]) -> matcher::MetadataMatcher {
    let v = value_or(
        values
            .iter()
            .map(|x| value_string(string_matcher(x)))
            .collect(),
    );
    let mut keys = vec![JWT_PAYLOAD_KEY];
    keys.extend_from_slice(claims);
    metadata_matcher(
        naming::JWT_AUTHN_FILTER,
        &keys,
        value_or(vec![value_list_one_of(v.clone()), v]),
    )
}

fn jwt_string_claim(claim: &str, m: matcher::StringMatcher) -> rbac::Principal {
    principal_metadata(metadata_matcher(
        naming::JWT_AUTHN_FILTER,
        &[JWT_PAYLOAD_KEY, claim],
        value_string(m),
    ))
}

/// `10.0.0.0/8` or a bare address (a /32 or /128); the address is kept as written.
fn cidr_range(v: &str) -> Result<xds_core::CidrRange, String> {
    let (addr, len) = if v.contains('/') {
        let net: ipnet::IpNet = v.parse().map_err(|e| format!("bad CIDR {v:?}: {e}"))?;
        (net.addr(), net.prefix_len())
    } else {
        let ip: std::net::IpAddr = v.parse().map_err(|_| format!("bad IP address {v:?}"))?;
        (ip, if ip.is_ipv4() { 32 } else { 128 })
    };
    Ok(xds_core::CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(pb::UInt32Value {
            value: u32::from(len),
        }),
    })
}

/// `[a]` → `a`.
fn name_in_brackets(s: &str) -> Result<String, String> {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(str::to_string)
        .ok_or_else(|| format!("expecting format [<NAME>], but found {s}"))
}

/// `[a][b]` → `[a, b]`; anything else as [`name_in_brackets`].
fn names_in_nested_brackets(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').and_then(|r| {
            let end = r.find(']')?;
            (!r[..end].contains('[')).then_some((&r[..end], &r[end + 1..]))
        });
        match inner {
            Some((name, tail)) => {
                out.push(name.to_string());
                rest = tail;
            }
            None => return name_in_brackets(s).map(|n| vec![n]),
        }
    }
    Ok(out)
}

fn permission(rule: rbac::permission::Rule) -> rbac::Permission {
    rbac::Permission { rule: Some(rule) }
}

fn principal(id: rbac::principal::Identifier) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(id),
    }
}

fn permission_or(rules: Vec<rbac::Permission>) -> rbac::Permission {
    permission(rbac::permission::Rule::OrRules(rbac::permission::Set {
        rules,
    }))
}

fn permission_and(rules: Vec<rbac::Permission>) -> rbac::Permission {
    permission(rbac::permission::Rule::AndRules(rbac::permission::Set {
        rules,
    }))
}

fn permission_not(p: rbac::Permission) -> rbac::Permission {
    permission(rbac::permission::Rule::NotRule(Box::new(p)))
}

fn principal_or(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::OrIds(rbac::principal::Set {
        ids,
    }))
}

fn principal_and(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::AndIds(rbac::principal::Set {
        ids,
    }))
}

fn principal_not(p: rbac::Principal) -> rbac::Principal {
    principal(rbac::principal::Identifier::NotId(Box::new(p)))
}

/// A dynamic metadata matcher (`sourced_metadata`: the non-deprecated form of istiod's
/// `metadata`, with the same meaning).
fn dynamic_metadata(m: matcher::MetadataMatcher) -> rbac::SourcedMetadata {
    rbac::SourcedMetadata {
        metadata_matcher: Some(m),
        metadata_source: rbac::MetadataSource::Dynamic as i32,
    }
}

fn principal_metadata(m: matcher::MetadataMatcher) -> rbac::Principal {
    principal(rbac::principal::Identifier::SourcedMetadata(
        dynamic_metadata(m),
    ))
}

/// The peer's identity: the URI SAN of its client certificate (so only over mutual TLS).
fn authenticated(m: matcher::StringMatcher) -> rbac::Principal {
    principal(rbac::principal::Identifier::Authenticated(
        rbac::principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

fn http_only(c: &Cond, tcp: bool) -> Result<(), String> {
    if tcp && c.attr.http_only() {
        Err(format!("{:?} is HTTP only", c.key))
    } else {
        Ok(())
    }
}

/// One value of a per-value permission attribute.
fn value_permission(c: &Cond, v: &str, tcp: bool) -> Result<rbac::Permission, String> {
    use rbac::permission::Rule as P;
    http_only(c, tcp)?;
    Ok(match c.attr {
        Attr::DestIp => permission(P::DestinationIp(cidr_range(v)?)),
        Attr::DestPort => permission(P::DestinationPort(u32::from(
            parse_port(v).ok_or_else(|| format!("invalid port {v}"))?,
        ))),
        Attr::ConnSni => permission(P::RequestedServerName(string_matcher(v))),
        Attr::Host => permission(P::Header(header_matcher(":authority", v, true))),
        Attr::Method => permission(P::Header(header_matcher(":method", v, false))),
        Attr::Path => {
            if v.contains("{*}") || v.contains("{**}") {
                let template = v.replace("{**}", "**").replace("{*}", "*");
                permission(P::UriTemplate(xds_core::TypedExtensionConfig {
                    name: "uri-template".to_string(),
                    typed_config: Some(pack(&uri_template::UriTemplateMatchConfig {
                        path_template: template,
                    })),
                }))
            } else {
                permission(P::UrlPath(matcher::PathMatcher {
                    rule: Some(matcher::path_matcher::Rule::Path(string_matcher(v))),
                }))
            }
        }
        _ => return Err("unimplemented".to_string()),
    })
}

/// One value of a per-value principal attribute.
fn value_principal(
    c: &Cond,
    v: &str,
    tcp: bool,
    policy_namespace: &str,
) -> Result<rbac::Principal, String> {
    use rbac::principal::Identifier as I;
    http_only(c, tcp)?;
    Ok(match c.attr {
        Attr::SrcIp => principal(I::DirectRemoteIp(cidr_range(v)?)),
        Attr::RemoteIp => principal(I::RemoteIp(cidr_range(v)?)),
        Attr::SrcNamespace => {
            let ns: Vec<String> = v.split('*').map(quote_meta).collect();
            authenticated(sm_regex(&format!(".*/ns/{}/.*", ns.join(".*"))))
        }
        Attr::SrcServiceAccount => {
            let (ns, sa) = v.split_once('/').unwrap_or((policy_namespace, v));
            authenticated(sm_regex(&format!(
                "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                quote_meta(ns),
                quote_meta(sa)
            )))
        }
        Attr::SrcTrustDomain => {
            let m = if v == "*" {
                sm_prefix(naming::SPIFFE_PREFIX, false)
            } else if !v.contains('*') {
                sm_prefix(&format!("{}{v}/", naming::SPIFFE_PREFIX), false)
            } else {
                let (a, b) = v.split_once('*').unwrap_or((v, ""));
                sm_regex(&format!(
                    "{}{}[^/]*{}/.*",
                    naming::SPIFFE_PREFIX,
                    quote_meta(a),
                    quote_meta(b)
                ))
            };
            authenticated(m)
        }
        Attr::SrcPrincipal => authenticated(string_matcher_with_prefix(v, naming::SPIFFE_PREFIX)),
        Attr::RequestHeader => {
            let header = name_in_brackets(&c.key[attrs::ATTR_REQUEST_HEADER.len()..])?;
            principal(I::Header(header_matcher(&header, v, false)))
        }
        _ => return Err("unimplemented".to_string()),
    })
}

/// A list attribute's permission (only `experimental.envoy.filters.*`).
fn extended_permission(c: &Cond, values: &[String], tcp: bool) -> Result<rbac::Permission, String> {
    http_only(c, tcp)?;
    if c.attr != Attr::EnvoyFilter {
        return Err("unimplemented".to_string());
    }
    let key = c.key.strip_prefix("experimental.").unwrap_or(&c.key);
    let key = key.strip_suffix(']').unwrap_or(key);
    let Some((filter, field)) = key.split_once('[') else {
        return Err(format!("invalid key: {}", c.key));
    };
    let matchers = values
        .iter()
        .map(
            |v| match v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(inner) => value_list_one_of(value_string(string_matcher(inner))),
                None => value_string(string_matcher(v)),
            },
        )
        .collect();
    Ok(permission(rbac::permission::Rule::SourcedMetadata(
        dynamic_metadata(metadata_matcher(filter, &[field], value_or(matchers))),
    )))
}

/// `<iss>/<sub>` as two claim matchers (the last `/` splits: issuers are often URLs).
fn request_principal(v: &str) -> rbac::Principal {
    let any = || sm_regex(".+");
    let (found, iss, sub) = match v.rfind('/') {
        Some(i) => (true, &v[..i], &v[i + 1..]),
        None => (false, v, ""),
    };
    let (m_iss, m_sub) = if v == "*" {
        (any(), any())
    } else if let Some(rest) = v.strip_prefix('*') {
        if found {
            let m_iss = if iss == "*" {
                any()
            } else {
                sm_suffix(iss.trim_start_matches('*'), false)
            };
            (m_iss, sm_exact(sub, false))
        } else {
            (any(), sm_suffix(rest, false))
        }
    } else if let Some(stripped) = v.strip_suffix('*') {
        if found {
            let m_sub = if sub == "*" {
                any()
            } else {
                sm_prefix(sub.trim_end_matches('*'), false)
            };
            (sm_exact(iss, false), m_sub)
        } else {
            (sm_prefix(stripped, false), any())
        }
    } else {
        (sm_exact(iss, false), sm_exact(sub, false))
    };
    principal_and(vec![
        jwt_string_claim("iss", m_iss),
        jwt_string_claim("sub", m_sub),
    ])
}

/// A list attribute's principal (request principal, audiences, presenter, claims).
fn extended_principal(c: &Cond, values: &[String], tcp: bool) -> Result<rbac::Principal, String> {
    http_only(c, tcp)?;
    Ok(match c.attr {
        Attr::RequestPrincipal => {
            let mut or: Vec<rbac::Principal> =
                values.iter().map(|v| request_principal(v)).collect();
            if or.len() == 1 {
                or.remove(0)
            } else {
                principal_or(or)
            }
        }
        Attr::RequestAudiences => principal_metadata(jwt_claim_matcher(&["aud"], values)),
        Attr::RequestPresenter => principal_metadata(jwt_claim_matcher(&["azp"], values)),
        Attr::RequestClaims => {
            let claims = names_in_nested_brackets(&c.key[attrs::ATTR_REQUEST_CLAIMS.len()..])?;
            let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
            principal_metadata(jwt_claim_matcher(&claims, values))
        }
        _ => return Err("unimplemented".to_string()),
    })
}

/// How a generation error is handled: ALLOW drops the whole rule (a narrower allow), DENY,
/// AUDIT and CUSTOM drop only the failing value (a wider deny).
fn keep<T>(allow: bool, r: Result<T, String>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if allow => Err(e),
        Err(_) => Ok(None),
    }
}

fn cond_permissions(c: &Cond, tcp: bool, allow: bool) -> Result<Vec<rbac::Permission>, String> {
    let mut out = Vec::new();
    for (values, negate) in [(&c.values, false), (&c.not_values, true)] {
        if values.is_empty() {
            continue;
        }
        let p = if c.attr.extended() {
            keep(allow, extended_permission(c, values, tcp))?
        } else {
            let mut or = Vec::new();
            for v in values {
                or.extend(keep(allow, value_permission(c, v, tcp))?);
            }
            (!or.is_empty()).then(|| permission_or(or))
        };
        out.extend(p.map(|p| if negate { permission_not(p) } else { p }));
    }
    Ok(out)
}

fn cond_principals(
    c: &Cond,
    tcp: bool,
    allow: bool,
    ns: &str,
) -> Result<Vec<rbac::Principal>, String> {
    let mut out = Vec::new();
    for (values, negate) in [(&c.values, false), (&c.not_values, true)] {
        if values.is_empty() {
            continue;
        }
        let p = if c.attr.extended() {
            keep(allow, extended_principal(c, values, tcp))?
        } else {
            let mut or = Vec::new();
            for v in values {
                or.extend(keep(allow, value_principal(c, v, tcp, ns))?);
            }
            (!or.is_empty()).then(|| principal_or(or))
        };
        out.extend(p.map(|p| if negate { principal_not(p) } else { p }));
    }
    Ok(out)
}

/// The RBAC policy of one consolidated rule, or why the rule is skipped.
fn generate(
    model: &RuleModel,
    tcp: bool,
    action: rbac::rbac::Action,
    policy_namespace: &str,
) -> Result<rbac::Policy, String> {
    let allow = action == rbac::rbac::Action::Allow;
    let mut permissions = Vec::new();
    for list in &model.permissions {
        let mut and = Vec::new();
        for c in list {
            and.extend(cond_permissions(c, tcp, allow)?);
        }
        if and.is_empty() {
            and.push(permission(rbac::permission::Rule::Any(true)));
        }
        permissions.push(permission_and(and));
    }
    let mut principals = Vec::new();
    for list in &model.principals {
        let mut and = Vec::new();
        for c in list {
            and.extend(cond_principals(c, tcp, allow, policy_namespace)?);
        }
        if and.is_empty() {
            and.push(principal(rbac::principal::Identifier::Any(true)));
        }
        principals.push(principal_and(and));
    }
    Ok(rbac::Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// A policy that never matches: what a policy without rules becomes (so an ALLOW without rules
/// allows nothing, and a DENY without rules denies nothing).
fn match_never() -> rbac::Policy {
    rbac::Policy {
        permissions: vec![permission_not(permission(rbac::permission::Rule::Any(
            true,
        )))],
        principals: vec![principal_not(principal(rbac::principal::Identifier::Any(
            true,
        )))],
        ..Default::default()
    }
}

/// Enforced and dry-run (shadow) rules of one action.
#[derive(Debug, Default)]
struct Built {
    enforce: Option<rbac::Rbac>,
    shadow: Option<rbac::Rbac>,
}

fn build_rules(
    policies: &[Selected],
    action: rbac::rbac::Action,
    tcp: bool,
    provider: Option<&str>,
    bundle: &[String],
) -> Built {
    let empty = || rbac::Rbac {
        action: action as i32,
        ..Default::default()
    };
    let mut built = Built::default();
    for p in policies {
        let target = if p.dry_run {
            built.shadow.get_or_insert_with(empty)
        } else {
            built.enforce.get_or_insert_with(empty)
        };
        let (ns, name) = (&p.resource.meta.namespace, &p.resource.meta.name);
        for (i, rule) in p.spec.rules.iter().enumerate() {
            let policy_name = naming::rbac_policy(ns, name, i, provider);
            // A rule that cannot be consolidated or generated (an HTTP-only field of an ALLOW
            // rule on a TCP chain) is skipped, as istiod skips it.
            let Ok(model) = rule_model(rule, bundle) else {
                continue;
            };
            if let Ok(policy) = generate(&model, tcp, action, ns) {
                target.policies.insert(policy_name, policy);
            }
        }
        if p.spec.rules.is_empty() {
            target
                .policies
                .insert(naming::rbac_policy(ns, name, 0, provider), match_never());
        }
    }
    built
}

// ---------------------------------------------------------------------------------------------
// CUSTOM: ext_authz
// ---------------------------------------------------------------------------------------------

/// A resolved ext_authz provider.
struct ExtAuthz {
    http: ext_authz_http::ExtAuthz,
    /// Only gRPC providers work on TCP chains.
    tcp: Option<ext_authz_tcp::ExtAuthz>,
}

/// CUSTOM policies grouped by provider.
struct Custom {
    /// Per provider (sorted): HTTP filters and TCP filters.
    providers: Vec<(Vec<hcm::HttpFilter>, Vec<xds_listener::Filter>)>,
}

impl Custom {
    fn new(scope: &Scope, policies: &[Selected], bundle: &[String]) -> Custom {
        let mut by_provider: BTreeMap<&str, Vec<Selected>> = BTreeMap::new();
        for p in policies {
            let name = p.spec.provider.as_ref().map(|p| p.name.as_str());
            by_provider
                .entry(name.unwrap_or_default())
                .or_default()
                .push(*p);
        }
        let many = by_provider.len() > 1;
        let mut providers = Vec::new();
        for (name, selected) in &by_provider {
            let resolved = if many {
                Err(format!(
                    "a workload may use only one CUSTOM authorization provider, found {}: {}",
                    by_provider.len(),
                    by_provider.keys().copied().collect::<Vec<_>>().join(", ")
                ))
            } else {
                resolve_provider(scope, name)
            };
            let rules = |tcp: bool| {
                build_rules(selected, rbac::rbac::Action::Deny, tcp, Some(name), bundle)
            };
            match resolved {
                Err(e) => {
                    for p in selected {
                        scope.report(
                            p.resource
                                .diagnostic(
                                    "spec.provider.name",
                                    format!("{e}; requests this policy selects are denied"),
                                )
                                .into_warning(),
                        );
                    }
                    let deny = |tcp: bool| bad_custom_deny(rules(tcp).enforce);
                    providers.push((
                        vec![http_filter(
                            naming::RBAC_HTTP_FILTER,
                            &rbac_http::Rbac {
                                rules: Some(deny(false)),
                                ..Default::default()
                            },
                        )],
                        vec![network_filter(
                            naming::RBAC_NETWORK_FILTER,
                            &rbac_tcp::Rbac {
                                rules: Some(deny(true)),
                                stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                                ..Default::default()
                            },
                        )],
                    ));
                }
                Ok(mut ext) => {
                    let http_rules = rules(false);
                    let mut http = ext.http.clone();
                    http.filter_enabled_metadata =
                        Some(ext_authz_enabled(naming::RBAC_HTTP_FILTER, name));
                    let http_filters = vec![
                        http_filter(
                            naming::RBAC_HTTP_FILTER,
                            &rbac_http::Rbac {
                                shadow_rules: Some(http_rules.enforce.unwrap_or_else(|| {
                                    rbac::Rbac {
                                        action: rbac::rbac::Action::Deny as i32,
                                        ..Default::default()
                                    }
                                })),
                                shadow_rules_stat_prefix: naming::RBAC_EXT_AUTHZ_PREFIX.to_string(),
                                rules: http_rules.shadow.filter(|s| !s.policies.is_empty()),
                                ..Default::default()
                            },
                        ),
                        http_filter(naming::EXT_AUTHZ_HTTP_FILTER, &http),
                    ];
                    let mut tcp_filters = Vec::new();
                    if let Some(tcp) = ext.tcp.as_mut() {
                        let tcp_rules = rules(true);
                        tcp.filter_enabled_metadata =
                            Some(ext_authz_enabled(naming::RBAC_NETWORK_FILTER, name));
                        tcp_filters.push(network_filter(
                            naming::RBAC_NETWORK_FILTER,
                            &rbac_tcp::Rbac {
                                shadow_rules: Some(tcp_rules.enforce.unwrap_or_else(|| {
                                    rbac::Rbac {
                                        action: rbac::rbac::Action::Deny as i32,
                                        ..Default::default()
                                    }
                                })),
                                shadow_rules_stat_prefix: naming::RBAC_EXT_AUTHZ_PREFIX.to_string(),
                                stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                                rules: tcp_rules.shadow.filter(|s| !s.policies.is_empty()),
                                ..Default::default()
                            },
                        ));
                        tcp_filters.push(network_filter(naming::EXT_AUTHZ_NETWORK_FILTER, tcp));
                    }
                    providers.push((http_filters, tcp_filters));
                }
            }
        }
        Custom { providers }
    }

    fn http(&self) -> Vec<hcm::HttpFilter> {
        self.providers
            .iter()
            .flat_map(|(h, _)| h.iter().cloned())
            .collect()
    }

    fn tcp(&self) -> Vec<xds_listener::Filter> {
        self.providers
            .iter()
            .flat_map(|(_, t)| t.iter().cloned())
            .collect()
    }
}

/// The enforced rules of a CUSTOM policy that cannot be built, turned into DENY rules.
fn bad_custom_deny(rules: Option<rbac::Rbac>) -> rbac::Rbac {
    rbac::Rbac {
        action: rbac::rbac::Action::Deny as i32,
        policies: rules
            .map(|r| r.policies)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (format!("{k}{}", naming::BAD_CUSTOM_ACTION_SUFFIX), v))
            .collect(),
        ..Default::default()
    }
}

/// ext_authz runs only when the CUSTOM RBAC filter's shadow rules matched one of this
/// provider's policies.
fn ext_authz_enabled(rbac_filter: &str, provider: &str) -> matcher::MetadataMatcher {
    let key = format!(
        "{}{}",
        naming::RBAC_EXT_AUTHZ_PREFIX,
        naming::RBAC_SHADOW_EFFECTIVE_POLICY_ID
    );
    metadata_matcher(
        rbac_filter,
        &[&key],
        value_string(sm_prefix(
            &format!("{}-{provider}", naming::EXT_AUTHZ_POLICY_PREFIX),
            false,
        )),
    )
}

/// A service of the registry named as an extension provider names it (`<host>` unique across
/// namespaces, or `<namespace>/<host>`): its host name.
fn lookup_service(scope: &Scope, service: &str) -> Result<String, String> {
    let registry = &scope.model.registry;
    if let Some((ns, host)) = service.split_once('/') {
        if let Some(s) = registry.by_hostname(host).find(|s| s.namespace == ns) {
            return Ok(s.hostname.clone());
        }
    } else {
        let namespaces: BTreeSet<&str> = registry
            .by_hostname(service)
            .map(|s| s.namespace.as_str())
            .collect();
        match namespaces.len() {
            1 => return Ok(service.to_string()),
            0 => {}
            _ => {
                return Err(format!(
                    "found {service} in multiple namespaces {namespaces:?}, specify the namespace \
                     explicitly in the format of <Namespace>/<Hostname>"
                ));
            }
        }
    }
    Err(format!(
        "could not find service {service} in the service registry"
    ))
}

/// Whether the proxy has the outbound cluster of this service port (its Sidecar imports it).
fn has_cluster(scope: &Scope, hostname: &str, port: u16) -> bool {
    scope
        .services()
        .iter()
        .any(|s| s.hostname == hostname && s.ports.iter().any(|p| p.number == port))
}

fn duration(d: std::time::Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

/// The provider's timeout, 600s when unset.
fn provider_timeout(t: Option<&str>) -> pb::Duration {
    t.and_then(|t| parse_duration(t).ok())
        .map(duration)
        .unwrap_or(pb::Duration {
            seconds: 600,
            nanos: 0,
        })
}

fn status_on_error(s: Option<&str>) -> Result<Option<envoy_type::HttpStatus>, String> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let code = s
        .parse::<i32>()
        .ok()
        .filter(|c| envoy_type::StatusCode::try_from(*c).is_ok())
        .ok_or_else(|| format!("unsupported statusOnError {s:?}"))?;
    Ok(Some(envoy_type::HttpStatus { code }))
}

fn with_body(b: Option<&RequestBody>) -> Option<ext_authz_http::BufferSettings> {
    b.map(|b| ext_authz_http::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    })
}

/// `x-prefix*`, `*-suffix` or an exact header name, case-insensitive.
fn header_list(headers: &[String]) -> Option<matcher::ListStringMatcher> {
    if headers.is_empty() {
        return None;
    }
    Some(matcher::ListStringMatcher {
        patterns: headers
            .iter()
            .map(|h| {
                if let Some(s) = h.strip_prefix('*') {
                    sm_suffix(s, true)
                } else if let Some(p) = h.strip_suffix('*') {
                    sm_prefix(p, true)
                } else {
                    sm_exact(h, true)
                }
            })
            .collect(),
    })
}

fn resolve_provider(scope: &Scope, name: &str) -> Result<ExtAuthz, String> {
    let provider = scope.model.mesh.authorizer(name)?;
    let check_cluster = |service: &str, port: u32| -> Result<(String, String), String> {
        let hostname = lookup_service(scope, service)?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port must be in the range [1, 65535], found: {port}"))?;
        if !has_cluster(scope, &hostname, port) {
            return Err(format!(
                "the proxy has no cluster for {hostname}:{port} (its Sidecar does not import the service, or the service has no such port)"
            ));
        }
        let cluster = naming::outbound_cluster(port, "", &hostname);
        Ok((hostname, cluster))
    };
    match provider {
        Authorizer::Http(p) => {
            let (hostname, cluster) = check_cluster(&p.service, p.port)?;
            Ok(ExtAuthz {
                http: http_ext_authz(p, &hostname, &cluster)?,
                tcp: None,
            })
        }
        Authorizer::Grpc(p) => {
            let (hostname, cluster) = check_cluster(&p.service, p.port)?;
            grpc_ext_authz(p, &hostname, &cluster)
        }
    }
}

fn http_ext_authz(
    p: &ExtAuthzHttp,
    hostname: &str,
    cluster: &str,
) -> Result<ext_authz_http::ExtAuthz, String> {
    let headers_to_add: Vec<xds_core::HeaderValue> = p
        .include_additional_headers_in_check
        .iter()
        .map(|(k, v)| xds_core::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        })
        .collect();
    let response = [
        &p.headers_to_upstream_on_allow,
        &p.headers_to_downstream_on_deny,
        &p.headers_to_downstream_on_allow,
    ]
    .iter()
    .any(|h| !h.is_empty())
    .then(|| ext_authz_http::AuthorizationResponse {
        allowed_upstream_headers: header_list(&p.headers_to_upstream_on_allow),
        allowed_client_headers: header_list(&p.headers_to_downstream_on_deny),
        allowed_client_headers_on_success: header_list(&p.headers_to_downstream_on_allow),
        ..Default::default()
    });
    let service = ext_authz_http::HttpService {
        path_prefix: p.path_prefix.clone().unwrap_or_default(),
        server_uri: Some(xds_core::HttpUri {
            uri: format!("http://{hostname}"),
            timeout: Some(provider_timeout(p.timeout.as_deref())),
            http_upstream_type: Some(xds_core::http_uri::HttpUpstreamType::Cluster(
                cluster.to_string(),
            )),
        }),
        authorization_request: (!headers_to_add.is_empty()).then(|| {
            ext_authz_http::AuthorizationRequest {
                headers_to_add,
                ..Default::default()
            }
        }),
        authorization_response: response,
        ..Default::default()
    };
    let allowed = if p.include_request_headers_in_check.is_empty() {
        &p.include_headers_in_check
    } else {
        &p.include_request_headers_in_check
    };
    Ok(ext_authz_http::ExtAuthz {
        status_on_error: status_on_error(p.status_on_error.as_deref())?,
        failure_mode_allow: p.fail_open,
        transport_api_version: xds_core::ApiVersion::V3 as i32,
        services: Some(ext_authz_http::ext_authz::Services::HttpService(service)),
        with_request_body: with_body(p.include_request_body_in_check.as_ref()),
        allowed_headers: header_list(allowed),
        ..Default::default()
    })
}

fn grpc_ext_authz(p: &ExtAuthzGrpc, hostname: &str, cluster: &str) -> Result<ExtAuthz, String> {
    let grpc = xds_core::GrpcService {
        target_specifier: Some(xds_core::grpc_service::TargetSpecifier::EnvoyGrpc(
            xds_core::grpc_service::EnvoyGrpc {
                cluster_name: cluster.to_string(),
                authority: hostname.to_string(),
                ..Default::default()
            },
        )),
        timeout: Some(provider_timeout(p.timeout.as_deref())),
        ..Default::default()
    };
    Ok(ExtAuthz {
        http: ext_authz_http::ExtAuthz {
            status_on_error: status_on_error(p.status_on_error.as_deref())?,
            failure_mode_allow: p.fail_open,
            transport_api_version: xds_core::ApiVersion::V3 as i32,
            services: Some(ext_authz_http::ext_authz::Services::GrpcService(
                grpc.clone(),
            )),
            with_request_body: with_body(p.include_request_body_in_check.as_ref()),
            ..Default::default()
        },
        tcp: Some(ext_authz_tcp::ExtAuthz {
            stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
            failure_mode_allow: p.fail_open,
            transport_api_version: xds_core::ApiVersion::V3 as i32,
            grpc_service: Some(grpc),
            ..Default::default()
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// RequestAuthentication: jwt_authn
// ---------------------------------------------------------------------------------------------

/// The JWT rules of every RequestAuthentication that applies to the proxy, sorted by issuer
/// (stable, so equal issuers keep their policy order), each with its policy.
fn jwt_rules<'a>(scope: &Scope<'a>) -> Vec<(&'a Resource, usize, &'a JwtRule)> {
    let root = scope.model.mesh.root_namespace.as_str();
    let mut namespaces = vec![scope.proxy.namespace.as_str()];
    if scope.proxy.namespace != root {
        namespaces.push(root);
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in scope.model.of_kind(Kind::RequestAuthentication) {
            let Spec::RequestAuthentication(spec) = &r.spec else {
                continue;
            };
            let spec: &RequestAuthentication = spec;
            if r.meta.namespace != ns
                || !attaches(scope, ns, spec.selector.as_ref(), &spec.target_refs())
            {
                continue;
            }
            out.extend(
                spec.jwt_rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| (r.as_ref(), i, rule)),
            );
        }
    }
    out.sort_by(|a, b| a.2.issuer.cmp(&b.2.issuer));
    out
}

/// Where a rule's keys come from: inline, or fetched by Envoy from a cluster.
enum Jwks {
    Inline(String),
    Remote {
        uri: String,
        cluster: String,
        host: String,
        port: u16,
        tls: bool,
    },
}

fn jwks_source(rule: &JwtRule) -> Result<Jwks, String> {
    if let Some(inline) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
        return Ok(Jwks::Inline(inline.to_string()));
    }
    let Some(uri) = rule.jwks_uri() else {
        return Err(
            "neither jwks nor jwksUri is set; Envoy cannot discover keys from the issuer \
             (OpenID discovery), so tokens of this issuer are rejected"
                .to_string(),
        );
    };
    let parsed = parse_jwks_uri(uri)?;
    Ok(Jwks::Remote {
        uri: uri.to_string(),
        cluster: naming::outbound_cluster(parsed.port, "", &parsed.host),
        host: parsed.host,
        port: parsed.port,
        tls: parsed.tls,
    })
}

fn jwt_filter(scope: &Scope) -> Option<hcm::HttpFilter> {
    use jwt::jwt_requirement::RequiresType;
    let rules = jwt_rules(scope);
    if rules.is_empty() {
        return None;
    }
    let mut providers = std::collections::HashMap::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, (resource, index, rule)) in rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{index}]");
        if rule.presence == Some(JwtPresence::Required) {
            scope.report(
                resource
                    .diagnostic(
                        format!("{field}.presence"),
                        "presence: REQUIRED is not enforced (istiod does not enforce it either); \
                         require a token with an AuthorizationPolicy on requestPrincipals",
                    )
                    .into_warning(),
            );
        }
        let timeout = rule
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(duration)
            .unwrap_or(pb::Duration {
                seconds: 5,
                nanos: 0,
            });
        let source = match jwks_source(rule) {
            Ok(Jwks::Inline(keys)) => local_jwks(keys),
            Ok(Jwks::Remote { uri, cluster, .. }) => {
                jwt::jwt_provider::JwksSourceSpecifier::RemoteJwks(jwt::RemoteJwks {
                    http_uri: Some(xds_core::HttpUri {
                        uri,
                        timeout: Some(timeout),
                        http_upstream_type: Some(xds_core::http_uri::HttpUpstreamType::Cluster(
                            cluster,
                        )),
                    }),
                    cache_duration: Some(pb::Duration {
                        seconds: 300,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }
            Err(e) => {
                scope.report(resource.diagnostic(field.clone(), e).into_warning());
                local_jwks(FAKE_JWKS.to_string())
            }
        };
        let mut space_delimited: BTreeSet<String> =
            rule.space_delimited_claims.iter().cloned().collect();
        space_delimited.extend(["permission".to_string(), "scope".to_string()]);
        let provider = jwt::JwtProvider {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            forward: rule.forward_original_token,
            forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
            payload_in_metadata: JWT_PAYLOAD_KEY.to_string(),
            normalize_payload_in_metadata: Some(jwt::jwt_provider::NormalizePayload {
                space_delimited_claims: space_delimited.into_iter().collect(),
            }),
            claim_to_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| jwt::JwtClaimToHeader {
                    header_name: c.header.clone(),
                    claim_name: c.claim.clone(),
                    ..Default::default()
                })
                .collect(),
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| jwt::JwtHeader {
                    name: h.name.clone(),
                    value_prefix: h.prefix.clone().unwrap_or_default(),
                })
                .collect(),
            from_params: rule.from_params.clone(),
            from_cookies: rule.from_cookies.clone(),
            jwks_source_specifier: Some(source),
            ..Default::default()
        };
        let name = naming::jwt_provider(i);
        providers.insert(name.clone(), provider);
        let by_name = || jwt::JwtRequirement {
            requires_type: Some(RequiresType::ProviderName(name.clone())),
        };
        inner_and.push(jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(jwt::JwtRequirementOrList {
                requirements: vec![
                    by_name(),
                    jwt::JwtRequirement {
                        requires_type: Some(RequiresType::AllowMissing(pb::Empty {})),
                    },
                ],
            })),
        });
        outer_or.push(by_name());
    }
    // One issuer: that issuer or no token. Several: any one issuer's valid token, or every
    // presented token valid (providers may share a location, so the AND alone would fail).
    let requires = if inner_and.len() == 1 {
        inner_and.remove(0)
    } else {
        outer_or.push(jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAll(jwt::JwtRequirementAndList {
                requirements: inner_and,
            })),
        });
        jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(jwt::JwtRequirementOrList {
                requirements: outer_or,
            })),
        }
    };
    let config = jwt::JwtAuthentication {
        providers,
        rules: vec![jwt::RequirementRule {
            r#match: Some(xds_route::RouteMatch {
                path_specifier: Some(xds_route::route_match::PathSpecifier::Prefix(
                    "/".to_string(),
                )),
                ..Default::default()
            }),
            requirement_type: Some(jwt::requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    Some(http_filter(naming::JWT_AUTHN_FILTER, &config))
}

fn local_jwks(keys: String) -> jwt::jwt_provider::JwksSourceSpecifier {
    jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(xds_core::DataSource {
        specifier: Some(xds_core::data_source::Specifier::InlineString(keys)),
        ..Default::default()
    })
}

/// Clusters for the JWKS servers of the proxy's JWT rules that `existing` lacks: istiod's
/// cluster name (`outbound|<port>||<host>`) when the host is not a service the proxy already
/// has a cluster for; STRICT_DNS (STATIC for an address), TLS with the host as SNI and
/// verified against the system CA bundle for `https`.
pub fn jwks_clusters(
    scope: &Scope,
    existing: &BTreeSet<String>,
    connect_timeout: pb::Duration,
) -> Vec<xds_cluster::Cluster> {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    let mut out: BTreeMap<String, xds_cluster::Cluster> = BTreeMap::new();
    for (_, _, rule) in jwt_rules(scope) {
        let Ok(Jwks::Remote {
            cluster,
            host,
            port,
            tls,
            ..
        }) = jwks_source(rule)
        else {
            continue;
        };
        if existing.contains(&cluster) || out.contains_key(&cluster) {
            continue;
        }
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let kind = if is_ip {
            DiscoveryType::Static
        } else {
            DiscoveryType::StrictDns
        };
        let transport_socket = tls.then(|| {
            let context = tls::UpstreamTlsContext {
                sni: if is_ip { String::new() } else { host.clone() },
                common_tls_context: Some(tls::CommonTlsContext {
                    validation_context_type: Some(
                        tls::common_tls_context::ValidationContextType::ValidationContext(
                            tls::CertificateValidationContext {
                                trusted_ca: Some(xds_core::DataSource {
                                    specifier: Some(xds_core::data_source::Specifier::Filename(
                                        SYSTEM_CA_BUNDLE.to_string(),
                                    )),
                                    ..Default::default()
                                }),
                                match_typed_subject_alt_names: vec![tls::SubjectAltNameMatcher {
                                    san_type: if is_ip {
                                        tls::subject_alt_name_matcher::SanType::IpAddress
                                    } else {
                                        tls::subject_alt_name_matcher::SanType::Dns
                                    } as i32,
                                    matcher: Some(sm_exact(&host, false)),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            xds_core::TransportSocket {
                name: "envoy.transport_sockets.tls".to_string(),
                config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
                    &context,
                ))),
            }
        });
        out.insert(
            cluster.clone(),
            xds_cluster::Cluster {
                name: cluster.clone(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
                connect_timeout: Some(connect_timeout),
                dns_lookup_family: xds_cluster::cluster::DnsLookupFamily::V4Only as i32,
                load_assignment: Some(xds_endpoint::ClusterLoadAssignment {
                    cluster_name: cluster,
                    endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                        lb_endpoints: vec![xds_endpoint::LbEndpoint {
                            host_identifier: Some(
                                xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                                    xds_endpoint::Endpoint {
                                        address: Some(super::endpoint::socket_address(&host, port)),
                                        ..Default::default()
                                    },
                                ),
                            ),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                transport_socket,
                ..Default::default()
            },
        );
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use matcher::string_matcher::MatchPattern as M;

    fn pattern(m: &matcher::StringMatcher) -> (String, String) {
        match &m.match_pattern {
            Some(M::Exact(v)) => ("exact".into(), v.clone()),
            Some(M::Prefix(v)) => ("prefix".into(), v.clone()),
            Some(M::Suffix(v)) => ("suffix".into(), v.clone()),
            Some(M::SafeRegex(r)) => ("regex".into(), r.regex.clone()),
            other => panic!("unexpected pattern {other:?}"),
        }
    }

    fn p(kind: &str, v: &str) -> (String, String) {
        (kind.to_string(), v.to_string())
    }

    #[test]
    fn string_matchers_follow_istio_wildcards() {
        assert_eq!(pattern(&string_matcher("*")), p("regex", ".+"));
        assert_eq!(pattern(&string_matcher("*.com")), p("suffix", ".com"));
        assert_eq!(pattern(&string_matcher("/api/*")), p("prefix", "/api/"));
        assert_eq!(pattern(&string_matcher("/x")), p("exact", "/x"));
        let spiffe = |v| pattern(&string_matcher_with_prefix(v, "spiffe://"));
        assert_eq!(spiffe("td/ns/a/sa/b"), p("exact", "spiffe://td/ns/a/sa/b"));
        assert_eq!(spiffe("td/ns/a/*"), p("prefix", "spiffe://td/ns/a/"));
        assert_eq!(spiffe("*/sa/b.c"), p("regex", "spiffe://.*/sa/b\\.c"));
        assert_eq!(spiffe("*"), p("regex", ".+"));
    }

    #[test]
    fn header_and_host_matchers() {
        use xds_route::header_matcher::HeaderMatchSpecifier as H;
        let h = header_matcher(":authority", "*", true);
        assert_eq!(h.header_match_specifier, Some(H::PresentMatch(true)));
        let h = header_matcher(":authority", "*.example.com", true);
        let Some(H::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match expected")
        };
        assert!(m.ignore_case);
        assert_eq!(pattern(&m), p("suffix", ".example.com"));
        let h = header_matcher(":method", "GET", false);
        let Some(H::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match expected")
        };
        assert!(!m.ignore_case);
        assert_eq!(pattern(&m), p("exact", "GET"));
    }

    /// The (iss, sub) matchers of a request principal.
    fn iss_sub(v: &str) -> ((String, String), (String, String)) {
        let Some(rbac::principal::Identifier::AndIds(set)) = request_principal(v).identifier else {
            panic!("and_ids expected")
        };
        let claim = |i: usize| {
            let Some(rbac::principal::Identifier::SourcedMetadata(s)) = &set.ids[i].identifier
            else {
                panic!("sourced metadata expected")
            };
            let m = s.metadata_matcher.as_ref().unwrap();
            assert_eq!(m.filter, naming::JWT_AUTHN_FILTER);
            let Some(matcher::value_matcher::MatchPattern::StringMatch(sm)) =
                &m.value.as_ref().unwrap().match_pattern
            else {
                panic!("string match expected")
            };
            pattern(sm)
        };
        (claim(0), claim(1))
    }

    #[test]
    fn request_principals_split_on_the_last_slash() {
        assert_eq!(
            iss_sub("https://example.com/alice"),
            (p("exact", "https://example.com"), p("exact", "alice"))
        );
        assert_eq!(
            iss_sub("https://example.com/*"),
            (p("exact", "https://example.com"), p("regex", ".+"))
        );
        assert_eq!(iss_sub("*"), (p("regex", ".+"), p("regex", ".+")));
        assert_eq!(iss_sub("*/alice"), (p("regex", ".+"), p("exact", "alice")));
        assert_eq!(
            iss_sub("*.example.com/alice"),
            (p("suffix", ".example.com"), p("exact", "alice"))
        );
        assert_eq!(iss_sub("iss-*"), (p("prefix", "iss-"), p("regex", ".+")));
        assert_eq!(iss_sub("*-sub"), (p("regex", ".+"), p("suffix", "-sub")));
    }

    #[test]
    fn claim_names_in_brackets() {
        assert_eq!(names_in_nested_brackets("[a][b]").unwrap(), vec!["a", "b"]);
        assert_eq!(names_in_nested_brackets("[a.b]").unwrap(), vec!["a.b"]);
        assert!(names_in_nested_brackets("a]").is_err());
        assert_eq!(name_in_brackets("[x-user]").unwrap(), "x-user");
    }

    #[test]
    fn trust_domain_aliases() {
        let bundle = vec!["example.com".to_string(), "old.example".to_string()];
        let got = replace_trust_domains(
            &[
                "cluster.local/ns/a/sa/b".to_string(),
                "*/ns/a/sa/b".to_string(),
                "other.td/ns/a/sa/b".to_string(),
                "not-a-spiffe-id".to_string(),
            ],
            &bundle,
        );
        assert_eq!(
            got,
            vec![
                "example.com/ns/a/sa/b",
                "old.example/ns/a/sa/b",
                "*/ns/a/sa/b",
                "other.td/ns/a/sa/b",
                "not-a-spiffe-id"
            ]
        );
        assert_eq!(
            expand_trust_domains(&["old.example".to_string(), "x".to_string()], &bundle),
            vec!["example.com", "old.example", "x"]
        );
    }

    /// Principals against a trust domain and its aliases, as istiod rewrites them: a trust
    /// domain written with a wildcard (`td*`, `*td`) that matches any of the mesh's trust domains
    /// (or `cluster.local`) is rewritten to each of them, kept as written where its suffix
    /// pattern already covers one.
    #[test]
    fn trust_domain_wildcards() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (what, the mesh's trust domains, principals as written, principals generated)
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "no aliases",
                &["cluster.local"],
                &["cluster.local/ns/foo/sa/bar"],
                &["cluster.local/ns/foo/sa/bar"],
            ),
            ("lone *", &["cluster.local"], &["*"], &["*"]),
            (
                "any trust domain",
                &["cluster.local"],
                &["*/ns/foo/sa/bar"],
                &["*/ns/foo/sa/bar"],
            ),
            (
                "one alias",
                &["td2", "td1"],
                &["td1/ns/foo/sa/bar"],
                &["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
            ),
            (
                "cluster.local names the mesh",
                &["td1", "cluster.local"],
                &["cluster.local/ns/foo/sa/bar", "cluster.local/ns/yyy/sa/zzz"],
                &[
                    "td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                    "td1/ns/yyy/sa/zzz",
                    "cluster.local/ns/yyy/sa/zzz",
                ],
            ),
            (
                "wildcards kept",
                &["td1", "cluster.local"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
            ),
            (
                "suffix pattern matching an alias",
                &["td2", "foo-td1", "cluster.local"],
                &["*-td1/ns/foo/sa/bar"],
                &[
                    "td2/ns/foo/sa/bar",
                    "*-td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                ],
            ),
            (
                "no match",
                &["td1", "td2"],
                &["some-td/ns/foo/sa/bar"],
                &["some-td/ns/foo/sa/bar"],
            ),
            (
                "matches one alias",
                &["new-td", "td2", "td3"],
                &["td1/ns/some-ns/sa/some-sa", "td2/ns/foo/sa/bar"],
                &[
                    "td1/ns/some-ns/sa/some-sa",
                    "new-td/ns/foo/sa/bar",
                    "td2/ns/foo/sa/bar",
                    "td3/ns/foo/sa/bar",
                ],
            ),
            (
                "empty trust domain",
                &["new-td", "td2"],
                &["/ns/some-ns/sa/some-sa"],
                &["/ns/some-ns/sa/some-sa"],
            ),
            (
                "suffix pattern, once",
                &["new-td", "old-td"],
                &["*-td/ns/some-ns/sa/some-sa"],
                &["*-td/ns/some-ns/sa/some-sa"],
            ),
            // Prefix patterns are never kept: each trust domain replaces them.
            (
                "prefix pattern",
                &["cluster.local"],
                &["cluster*/ns/foo/sa/x"],
                &["cluster.local/ns/foo/sa/x"],
            ),
            (
                "prefix pattern, aliases",
                &["td1", "td2"],
                &["td*/ns/foo/sa/x"],
                &["td1/ns/foo/sa/x", "td2/ns/foo/sa/x"],
            ),
            (
                "prefix pattern matching one alias",
                &["example.org", "old-td"],
                &["old*/ns/foo/sa/x"],
                &["example.org/ns/foo/sa/x", "old-td/ns/foo/sa/x"],
            ),
            (
                "prefix pattern matching cluster.local only",
                &["example.org"],
                &["clu*/ns/foo/sa/x"],
                &["clu*/ns/foo/sa/x"],
            ),
            (
                "suffix pattern covering the trust domain",
                &["cluster.local"],
                &["*local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
                &["*local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
            ),
            (
                "suffix pattern, aliases",
                &["cluster.local", "foobar"],
                &["*bar/ns/foo/sa/x"],
                &["cluster.local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
            ),
            // A wildcard alias matches the principal's trust domain, and replaces it.
            (
                "wildcard alias",
                &["example.org", "*.corp"],
                &["a.corp/ns/foo/sa/x"],
                &["example.org/ns/foo/sa/x", "*.corp/ns/foo/sa/x"],
            ),
            (
                "not a SPIFFE ID",
                &["td1", "td2"],
                &["sa/bar", "spiffe://td1/ns/foo/sa/bar"],
                &["sa/bar", "spiffe://td1/ns/foo/sa/bar"],
            ),
        ];
        for (name, bundle, principals, want) in cases {
            assert_eq!(
                replace_trust_domains(&s(principals), &s(bundle)),
                s(want),
                "{name}"
            );
        }
    }

    fn source_principal(attr: Attr, v: &str) -> (String, String) {
        let c = Cond {
            attr,
            key: String::new(),
            values: vec![v.to_string()],
            not_values: vec![],
        };
        let Some(rbac::principal::Identifier::Authenticated(a)) =
            value_principal(&c, v, false, "policy-ns")
                .unwrap()
                .identifier
        else {
            panic!("authenticated expected")
        };
        pattern(a.principal_name.as_ref().unwrap())
    }

    #[test]
    fn peer_identity_matchers() {
        assert_eq!(
            source_principal(Attr::SrcNamespace, "team-*"),
            p("regex", ".*/ns/team-.*/.*")
        );
        assert_eq!(
            source_principal(Attr::SrcServiceAccount, "sa.1"),
            p("regex", "spiffe://.+/ns/policy-ns/(.+/|)sa/sa\\.1(/.+)?")
        );
        assert_eq!(
            source_principal(Attr::SrcServiceAccount, "other/sa"),
            p("regex", "spiffe://.+/ns/other/(.+/|)sa/sa(/.+)?")
        );
        assert_eq!(
            source_principal(Attr::SrcTrustDomain, "*"),
            p("prefix", "spiffe://")
        );
        assert_eq!(
            source_principal(Attr::SrcTrustDomain, "example.com"),
            p("prefix", "spiffe://example.com/")
        );
        assert_eq!(
            source_principal(Attr::SrcTrustDomain, "*.corp"),
            p("regex", "spiffe://[^/]*\\.corp/.*")
        );
    }

    #[test]
    fn addresses() {
        let c = cidr_range("10.1.0.0/16").unwrap();
        assert_eq!(c.address_prefix, "10.1.0.0");
        assert_eq!(c.prefix_len.unwrap().value, 16);
        assert_eq!(
            cidr_range("2001:db8::1").unwrap().prefix_len.unwrap().value,
            128
        );
        assert!(cidr_range("nope").is_err());
        assert_eq!(quote_meta("a.b*c(d)"), "a\\.b\\*c\\(d\\)");
    }

    fn rule(yaml: &str) -> Rule {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn http_only_fields_on_tcp() {
        let r = rule("to: [{operation: {paths: [/admin], ports: [\"80\"]}}]");
        let model = rule_model(&r, &[]).unwrap();
        // ALLOW: the rule cannot match a connection, so it is dropped.
        assert!(generate(&model, true, rbac::rbac::Action::Allow, "ns").is_err());
        // DENY: the path is dropped, the port stays (a wider deny).
        let policy = generate(&model, true, rbac::rbac::Action::Deny, "ns").unwrap();
        let Some(rbac::permission::Rule::AndRules(set)) = &policy.permissions[0].rule else {
            panic!("and_rules expected")
        };
        assert_eq!(set.rules.len(), 1);
        let Some(rbac::permission::Rule::OrRules(ports)) = &set.rules[0].rule else {
            panic!("or_rules expected")
        };
        assert_eq!(
            ports.rules[0].rule,
            Some(rbac::permission::Rule::DestinationPort(80))
        );
        // HTTP: both.
        let policy = generate(&model, false, rbac::rbac::Action::Allow, "ns").unwrap();
        let Some(rbac::permission::Rule::AndRules(set)) = &policy.permissions[0].rule else {
            panic!("and_rules expected")
        };
        assert_eq!(set.rules.len(), 2);
    }

    #[test]
    fn rule_shape_and_order() {
        let r = rule(
            "from: [{source: {principals: [a/ns/b/sa/c], ipBlocks: [1.2.3.4]}}, {source: {namespaces: [x]}}]\n\
             to: [{operation: {methods: [GET], hosts: [h]}}]\n\
             when: [{key: source.ip, values: [5.6.7.8]}, {key: destination.port, values: [\"81\"]}]",
        );
        let m = rule_model(&r, &[]).unwrap();
        let attrs = |l: &Vec<Cond>| l.iter().map(|c| c.attr).collect::<Vec<_>>();
        // One principal list per `from`, each followed by the `when` principal conditions.
        assert_eq!(m.principals.len(), 2);
        assert_eq!(
            attrs(&m.principals[0]),
            vec![Attr::SrcPrincipal, Attr::SrcIp, Attr::SrcIp]
        );
        assert_eq!(
            attrs(&m.principals[1]),
            vec![Attr::SrcNamespace, Attr::SrcIp]
        );
        assert_eq!(m.permissions.len(), 1);
        assert_eq!(
            attrs(&m.permissions[0]),
            vec![Attr::Host, Attr::Method, Attr::DestPort]
        );
        // An empty rule matches everything.
        let any = generate(
            &rule_model(&Rule::default(), &[]).unwrap(),
            false,
            rbac::rbac::Action::Allow,
            "ns",
        )
        .unwrap();
        assert_eq!(any.permissions.len(), 1);
        assert_eq!(any.principals.len(), 1);
    }

    #[test]
    fn path_templates_become_uri_templates() {
        let c = Cond {
            attr: Attr::Path,
            key: "path-matcher".into(),
            values: vec![],
            not_values: vec![],
        };
        let Some(rbac::permission::Rule::UriTemplate(t)) =
            value_permission(&c, "/a/{*}/b/{**}", false).unwrap().rule
        else {
            panic!("uri template expected")
        };
        assert_eq!(t.name, "uri-template");
        let any = t.typed_config.unwrap();
        let cfg =
            <uri_template::UriTemplateMatchConfig as prost::Message>::decode(any.value.as_slice())
                .unwrap();
        assert_eq!(cfg.path_template, "/a/*/b/**");
    }
}
