//! AuthorizationPolicy rules → Envoy RBAC policies, as istiod generates them. Each rule is
//! consolidated into RBAC's shape (one permission list per `to`, one principal list per `from`,
//! the `when` conditions added to each; principals migrated to the mesh's trust domains), each
//! attribute value becomes a permission or a principal (request principals, audiences, presenters
//! and claims match jwt_authn's verified payload), and the rules of the policies of one action are
//! gathered into enforced and dry-run (shadow) RBAC configs. What cannot be generated (an
//! HTTP-only attribute on a TCP chain, a bad value) drops the whole rule of an ALLOW policy (a
//! narrower allow) and only the value otherwise (a wider deny).

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3 as uri_template;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;

use super::jwt::JWT_PAYLOAD_KEY;
use super::matchers::{
    authenticated, cidr_range, dynamic_metadata, header_matcher, metadata_matcher,
    name_in_brackets, names_in_nested_brackets, permission, permission_and, permission_not,
    permission_or, principal, principal_and, principal_metadata, principal_not, principal_or,
    quote_meta, sm_exact, sm_prefix, sm_regex, sm_suffix, string_matcher,
    string_matcher_with_prefix, value_list_one_of, value_or, value_string,
};
use super::select::Selected;
use super::trust_domain::{expand_trust_domains, replace_trust_domains};
use crate::envoy::pack;
use crate::model::security::Rule;
use crate::model::validation::security::{self as attrs, parse_port};
use crate::translate::naming;

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
pub(super) struct Built {
    pub(super) enforce: Option<rbac::Rbac>,
    pub(super) shadow: Option<rbac::Rbac>,
}

pub(super) fn build_rules(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::authz::matchers::tests::{p, pattern};

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
