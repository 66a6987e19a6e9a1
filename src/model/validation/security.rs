//! Validation of the `security.istio.io` kinds: what istiod's webhook checks for
//! AuthorizationPolicy, PeerAuthentication and RequestAuthentication, together with the CRD
//! schema's constraints (lengths, patterns, `x-kubernetes-validations` rules).

use std::net::IpAddr;

use super::super::networking::TypeWorkloadSelector;
use super::super::security::*;
use super::{Ctx, Dur, is_dns1123_label, validate_fqdn};

/// Istio attribute keys usable in `when` conditions.
pub const ATTR_REQUEST_HEADER: &str = "request.headers";
pub const ATTR_SRC_IP: &str = "source.ip";
pub const ATTR_REMOTE_IP: &str = "remote.ip";
pub const ATTR_SRC_NAMESPACE: &str = "source.namespace";
pub const ATTR_SRC_SERVICE_ACCOUNT: &str = "source.serviceAccount";
pub const ATTR_SRC_PRINCIPAL: &str = "source.principal";
pub const ATTR_SRC_TRUST_DOMAIN: &str = "source.trustDomain";
pub const ATTR_REQUEST_PRINCIPAL: &str = "request.auth.principal";
pub const ATTR_REQUEST_AUDIENCES: &str = "request.auth.audiences";
pub const ATTR_REQUEST_PRESENTER: &str = "request.auth.presenter";
pub const ATTR_REQUEST_CLAIMS: &str = "request.auth.claims";
pub const ATTR_DEST_IP: &str = "destination.ip";
pub const ATTR_DEST_PORT: &str = "destination.port";
pub const ATTR_CONN_SNI: &str = "connection.sni";
pub const ATTR_EXPERIMENTAL: &str = "experimental.envoy.filters.";

/// The dry-run annotation: an ALLOW or DENY policy evaluated in shadow mode only.
pub const ANNOTATION_DRY_RUN: &str = "istio.io/dry-run";

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// An address or a CIDR block as Go's `netip` parses them.
pub fn validate_ip_or_cidr(v: &str) -> Result<(), String> {
    if v.contains('/') {
        v.parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|e| format!("bad CIDR range ({v}): {e}"))
    } else {
        v.parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("bad IP address ({v})"))
    }
}

/// A port number as a string, 0..=65535.
pub fn parse_port(v: &str) -> Option<u16> {
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse::<u16>().ok()
}

fn check_empty(key: &str, values: &[String]) -> Result<(), String> {
    if values.iter().any(String::is_empty) {
        return Err(format!("empty value not allowed, found in {key}"));
    }
    Ok(())
}

fn check_wildcards(key: &str, values: &[String]) -> Result<(), String> {
    check_empty(key, values)?;
    for v in values {
        let count = v.matches('*').count();
        if count > 1 {
            return Err(format!(
                "at most one wildcard is allowed, found in {key}: {v:?}"
            ));
        }
        if count == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*') {
            return Err(format!(
                "wildcard is only allowed at the start or end, found in {key}: {v:?}"
            ));
        }
    }
    Ok(())
}

fn check_trust_domains(key: &str, values: &[String]) -> Result<(), String> {
    check_wildcards(key, values)?;
    if let Some(v) = values.iter().find(|v| v.contains('/')) {
        return Err(format!(
            "trust domain must not contain '/', found in {key}: {v:?}"
        ));
    }
    Ok(())
}

fn check_service_accounts(key: &str, values: &[String]) -> Result<(), String> {
    if values.len() > 16 {
        return Err(format!("{key} may not have more than 16 values"));
    }
    for v in values {
        if v.is_empty() {
            return Err(format!("empty value not allowed, found in {key}"));
        }
        if v.contains('*') {
            return Err(format!("wildcard not allowed, found in {key}"));
        }
        if v.len() > 320 {
            return Err(format!(
                "value cannot exceed 320 characters, found {v:?} in {key}"
            ));
        }
        let bad = match v.split_once('/') {
            Some((ns, sa)) => ns.is_empty() || sa.is_empty() || sa.contains('/'),
            None => false,
        };
        if bad {
            return Err(format!(
                "expected format 'serviceAccount' or 'namespace/serviceAccount', found {v:?} in {key}"
            ));
        }
    }
    Ok(())
}

fn check_ips(values: &[String]) -> Result<(), String> {
    let errors: Vec<String> = values
        .iter()
        .filter_map(|v| validate_ip_or_cidr(v).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn check_ports(values: &[String]) -> Result<(), String> {
    match values.iter().find(|p| parse_port(p).is_none()) {
        Some(p) => Err(format!("bad port ({p}): must be a number in 0..65535")),
        None => Ok(()),
    }
}

/// `{*}` matches one path segment and `{**}` any number (only as the last operator); other
/// braces are refused, and segments of a template must be valid RFC 3986 path characters.
fn check_path_templates(key: &str, paths: &[String]) -> Result<(), String> {
    fn literal(seg: &str) -> bool {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c))
    }
    for path in paths {
        let template = path.contains("{*}") || path.contains("{**}");
        let mut any_seen = false;
        for glob in path.trim_matches('/').split('/') {
            match glob {
                "{*}" | "{**}" if any_seen => {
                    return Err(format!(
                        "invalid or unsupported path {path}, found in {key}. {{**}} is not the last operator"
                    ));
                }
                "{*}" => continue,
                "{**}" => {
                    any_seen = true;
                    continue;
                }
                _ => {}
            }
            if glob.contains(['{', '}']) {
                return Err(format!(
                    "invalid or unsupported path {path}, found in {key}. Contains '{{' or '}}' beyond a supported path template"
                ));
            }
            if template && !literal(glob) {
                return Err(format!(
                    "invalid or unsupported path {path}, found in {key}. Contains segment {glob} with invalid string literal"
                ));
            }
        }
    }
    Ok(())
}

/// `a[b]`: a map key in brackets after a non-empty name.
fn check_map_key(key: &str) -> Result<(), String> {
    match key.find('[') {
        Some(open) if key.ends_with(']') && open > 0 && open + 2 < key.len() => Ok(()),
        _ => Err(format!("bad key ({key}): should have format a[b]")),
    }
}

/// The values a `when` key accepts.
fn check_attribute(key: &str, values: &[String]) -> Result<(), String> {
    check_empty(key, values)?;
    match key {
        ATTR_SRC_IP | ATTR_REMOTE_IP | ATTR_DEST_IP => check_ips(values),
        ATTR_SRC_SERVICE_ACCOUNT => check_service_accounts(key, values),
        ATTR_SRC_TRUST_DOMAIN => check_wildcards(key, values),
        ATTR_DEST_PORT => check_ports(values),
        ATTR_SRC_NAMESPACE
        | ATTR_SRC_PRINCIPAL
        | ATTR_REQUEST_PRINCIPAL
        | ATTR_REQUEST_AUDIENCES
        | ATTR_REQUEST_PRESENTER
        | ATTR_CONN_SNI => Ok(()),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        k if k.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        k if k.starts_with(ATTR_REQUEST_HEADER)
            || k.starts_with(ATTR_REQUEST_CLAIMS)
            || k.starts_with(ATTR_EXPERIMENTAL) =>
        {
            check_map_key(key)
        }
        _ => Err(format!("unknown attribute: {key}")),
    }
}

/// A JWKS URL as istiod parses it: `http` or `https`, a host, an optional numeric port.
pub struct JwksUri {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

pub fn parse_jwks_uri(uri: &str) -> Result<JwksUri, String> {
    if uri.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("invalid URL {uri:?}: contains control characters"));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!("URL {uri:?} must have scheme http:// or https://"));
    };
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (false, 80),
        "https" => (true, 443),
        other => return Err(format!("URI scheme {other:?} is not supported")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, tail)) = v6.split_once(']') else {
            return Err(format!("invalid URL {uri:?}: unclosed IPv6 address"));
        };
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {p:?} in URL {uri:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("URL {uri:?} has no host"));
    }
    Ok(JwksUri {
        host: host.to_string(),
        port,
        tls,
    })
}

/// Checks a JSON Web Key Set (or a single JSON Web Key) the way a JWK parser would: a JSON
/// object, each key with a known `kty` and that type's required members. Returns whether any
/// key holds private material.
pub fn check_jwks(text: &str) -> Result<bool, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("jwks parse error: {e}"))?;
    let keys: Vec<&serde_json::Value> = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("jwks parse error: `keys` must be an array".into()),
        None if value.is_object() => vec![&value],
        None => return Err("jwks parse error: expected a JSON object".into()),
    };
    let mut private = false;
    for (i, key) in keys.iter().enumerate() {
        let Some(obj) = key.as_object() else {
            return Err(format!("jwks parse error: key {i} is not an object"));
        };
        let kty = obj.get("kty").and_then(|v| v.as_str()).unwrap_or_default();
        let required: &[&str] = match kty {
            "RSA" => &["n", "e"],
            "EC" => &["crv", "x", "y"],
            "OKP" => &["crv", "x"],
            "oct" => &["k"],
            "" => return Err(format!("jwks parse error: key {i} has no `kty`")),
            other => {
                return Err(format!(
                    "jwks parse error: key {i} has unsupported kty {other:?}"
                ));
            }
        };
        for member in required {
            let ok = obj
                .get(*member)
                .and_then(|v| v.as_str())
                .is_some_and(|s| !s.is_empty());
            if !ok {
                return Err(format!(
                    "jwks parse error: {kty} key {i} lacks required member {member:?}"
                ));
            }
        }
        for (member, v) in obj {
            let b64 = matches!(
                member.as_str(),
                "n" | "e" | "x" | "y" | "d" | "k" | "p" | "q" | "dp" | "dq" | "qi"
            );
            if b64
                && !v.as_str().is_some_and(|s| {
                    s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'='))
                })
            {
                return Err(format!(
                    "jwks parse error: key {i} member {member:?} is not base64url"
                ));
            }
        }
        private |= kty == "oct" || obj.contains_key("d");
    }
    Ok(private)
}

impl Ctx<'_> {
    /// `selector.matchLabels` of the security kinds.
    fn security_selector(&mut self, selector: Option<&TypeWorkloadSelector>) {
        if let Some(sel) = selector {
            self.type_selector("spec.selector", sel);
        }
    }

    /// `selector`, `targetRef` and `targetRefs` of AuthorizationPolicy and
    /// RequestAuthentication.
    fn policy_targets(
        &mut self,
        selector: Option<&TypeWorkloadSelector>,
        target_ref: Option<&PolicyTargetReference>,
        target_refs: &[PolicyTargetReference],
    ) {
        let set = usize::from(selector.is_some())
            + usize::from(target_ref.is_some())
            + usize::from(!target_refs.is_empty());
        if set > 1 {
            self.err("spec", "only one of targetRefs or selector can be set");
        }
        self.security_selector(selector);
        if let Some(r) = target_ref {
            self.target_ref("spec.targetRef", r);
        }
        if target_refs.len() > 16 {
            self.err(
                "spec.targetRefs",
                "at most 16 target references are allowed",
            );
        }
        for (i, r) in target_refs.iter().enumerate() {
            self.target_ref(&format!("spec.targetRefs[{i}]"), r);
        }
    }

    fn target_ref(&mut self, p: &str, r: &PolicyTargetReference) {
        if r.name.is_empty() {
            self.err(format!("{p}.name"), "Required value");
        } else if r.name.len() > 253 {
            self.err(format!("{p}.name"), "may not exceed 253 characters");
        }
        let kind_ok = {
            let b = r.kind.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphabetic()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if r.kind.is_empty() {
            self.err(format!("{p}.kind"), "Required value");
        } else if !kind_ok {
            self.err(
                format!("{p}.kind"),
                format!("spec.targetRef.kind in body should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$', found {:?}", r.kind),
            );
        }
        let group = r.group.as_deref().unwrap_or_default();
        if !group.is_empty()
            && (group.len() > 253
                || !group
                    .split('.')
                    .all(|l| is_dns1123_label(l) && l == l.to_ascii_lowercase()))
        {
            self.err(
                format!("{p}.group"),
                format!("spec.targetRef.group in body should match a lowercase DNS subdomain, found {group:?}"),
            );
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            self.err(
                format!("{p}.namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
        let canonical = if group.is_empty() { "core" } else { group };
        let allowed = matches!(
            (canonical, r.kind.as_str()),
            ("core", "Service")
                | ("networking.istio.io", "ServiceEntry")
                | ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
        );
        if !allowed && kind_ok {
            self.err(
                p,
                format!(
                    "targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, \
                     gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass but was {group}/{}",
                    r.kind
                ),
            );
        }
    }

    fn dry_run_annotation(&mut self, action: Action) {
        let Some(v) = self
            .resource
            .meta
            .annotations
            .get(ANNOTATION_DRY_RUN)
            .cloned()
        else {
            return;
        };
        match action {
            Action::Allow | Action::Deny => {
                if parse_go_bool(&v).is_none() {
                    self.err(
                        "metadata.annotations",
                        format!("annotation {ANNOTATION_DRY_RUN} has invalid value {v:?} (expected true or false)"),
                    );
                }
            }
            other => self.err(
                "metadata.annotations",
                format!(
                    "the annotation {ANNOTATION_DRY_RUN} currently only supports action ALLOW/DENY, found action {}",
                    other.as_str()
                ),
            ),
        }
    }

    pub(super) fn authorization_policy(&mut self, ap: &AuthorizationPolicy) {
        self.policy_targets(
            ap.selector.as_ref(),
            ap.target_ref.as_ref(),
            &ap.target_refs,
        );
        let action = ap.action();
        self.dry_run_annotation(action);
        if action == Action::Custom {
            if ap.rules.is_empty() {
                self.err(
                    "spec.rules",
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                     add an empty rule `{}` if you want it be triggered for every request",
                );
            } else if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                self.err("spec.provider.name", "`provider.name` must not be empty");
            }
            for (i, rule) in ap.rules.iter().enumerate() {
                self.custom_rule(&format!("spec.rules[{i}]"), rule);
            }
        } else if ap.provider.is_some() {
            self.err(
                "spec.provider",
                format!(
                    "`provider` must not be with non CUSTOM action, found {}",
                    action.as_str()
                ),
            );
        }
        if action == Action::Deny && ap.rules.is_empty() {
            self.err(
                "spec.rules",
                "DENY action without `rules` is meaningless as it will never be triggered, \
                 add an empty rule `{}` if you want it be triggered for every request",
            );
        }
        if ap.rules.len() > 512 {
            self.err("spec.rules", "at most 512 rules are allowed");
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            self.authz_rule(&format!("spec.rules[{i}]"), rule, action);
        }
    }

    /// Fields CUSTOM cannot use: ext_authz runs before the identity of the peer and of the
    /// request is known.
    fn custom_rule(&mut self, p: &str, rule: &Rule) {
        for (j, from) in rule.from.iter().enumerate() {
            let Some(s) = &from.source else { continue };
            let f = format!("{p}.from[{j}].source");
            for (set, name) in [
                (!s.namespaces.is_empty(), "From.Namespaces"),
                (!s.not_namespaces.is_empty(), "From.NotNamespaces"),
                (!s.service_accounts.is_empty(), "From.ServiceAccounts"),
                (
                    !s.not_service_accounts.is_empty(),
                    "From.NotServiceAccounts",
                ),
                (!s.trust_domains.is_empty(), "From.TrustDomains"),
                (!s.not_trust_domains.is_empty(), "From.NotTrustDomains"),
                (!s.principals.is_empty(), "From.Principals"),
                (!s.not_principals.is_empty(), "From.NotPrincipals"),
                (!s.request_principals.is_empty(), "From.RequestPrincipals"),
                (
                    !s.not_request_principals.is_empty(),
                    "From.NotRequestPrincipals",
                ),
            ] {
                if set {
                    self.err(
                        &f,
                        format!("{name} is currently not supported with CUSTOM action"),
                    );
                }
            }
        }
        for (j, when) in rule.when.iter().enumerate() {
            let k = when.key.as_str();
            if matches!(
                k,
                ATTR_SRC_NAMESPACE
                    | ATTR_SRC_SERVICE_ACCOUNT
                    | ATTR_SRC_TRUST_DOMAIN
                    | ATTR_SRC_PRINCIPAL
            ) || k.starts_with("request.auth.")
            {
                self.err(
                    format!("{p}.when[{j}].key"),
                    format!("{k} is currently not supported with CUSTOM action"),
                );
            }
        }
    }

    fn authz_rule(&mut self, p: &str, rule: &Rule, action: Action) {
        let mut tcp_in_from = false;
        let mut tcp_in_to = false;
        if rule.from.len() > 512 {
            self.err(format!("{p}.from"), "at most 512 sources are allowed");
        }
        for (j, from) in rule.from.iter().enumerate() {
            let f = format!("{p}.from[{j}].source");
            let Some(s) = &from.source else {
                self.err(&f, "`from.source` must not be nil");
                continue;
            };
            let has_identity = !(s.principals.is_empty()
                && s.not_principals.is_empty()
                && s.namespaces.is_empty()
                && s.not_namespaces.is_empty());
            let has_accounts =
                !(s.service_accounts.is_empty() && s.not_service_accounts.is_empty());
            if has_identity && has_accounts {
                self.err(
                    &f,
                    "Cannot set serviceAccounts with namespaces or principals",
                );
            }
            if s.is_empty() {
                self.err(&f, "`from.source` must not be empty");
            }
            for (field, values) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                let r = check_empty(field, values).and_then(|()| check_ips(values));
                self.check(&format!("{f}.{field}"), r);
            }
            for (field, values) in [
                ("principals", &s.principals),
                ("requestPrincipals", &s.request_principals),
                ("namespaces", &s.namespaces),
                ("notPrincipals", &s.not_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("notNamespaces", &s.not_namespaces),
            ] {
                self.check(&format!("{f}.{field}"), check_empty(field, values));
            }
            for (field, values) in [
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                self.check(
                    &format!("{f}.{field}"),
                    check_service_accounts(field, values),
                );
            }
            for (field, values) in [
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
            ] {
                self.check(&format!("{f}.{field}"), check_trust_domains(field, values));
            }
            tcp_in_from |= !(s.principals.is_empty()
                && s.not_principals.is_empty()
                && s.ip_blocks.is_empty()
                && s.not_ip_blocks.is_empty()
                && s.namespaces.is_empty()
                && s.not_namespaces.is_empty()
                && s.remote_ip_blocks.is_empty()
                && s.not_remote_ip_blocks.is_empty()
                && s.service_accounts.is_empty()
                && s.not_service_accounts.is_empty());
        }
        for (j, to) in rule.to.iter().enumerate() {
            let f = format!("{p}.to[{j}].operation");
            let Some(op) = &to.operation else {
                self.err(&f, "`to.operation` must not be nil");
                continue;
            };
            if op.is_empty() {
                self.err(&f, "`to.operation` must not be empty");
            }
            for (field, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
                let r = check_empty(field, values).and_then(|()| check_ports(values));
                self.check(&format!("{f}.{field}"), r);
            }
            for (field, values) in [
                ("methods", &op.methods),
                ("hosts", &op.hosts),
                ("notMethods", &op.not_methods),
                ("notHosts", &op.not_hosts),
            ] {
                self.check(&format!("{f}.{field}"), check_empty(field, values));
            }
            for (field, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
                let r =
                    check_empty(field, values).and_then(|()| check_path_templates(field, values));
                self.check(&format!("{f}.{field}"), r);
            }
            tcp_in_to |= !(op.ports.is_empty() && op.not_ports.is_empty());
        }
        for (j, c) in rule.when.iter().enumerate() {
            let f = format!("{p}.when[{j}]");
            if c.key.is_empty() {
                self.err(format!("{f}.key"), "`key` must not be empty");
                continue;
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                self.err(
                    &f,
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        c.key
                    ),
                );
                continue;
            }
            if let Err(e) = check_attribute(&c.key, &c.values) {
                self.err(
                    format!("{f}.values"),
                    format!("invalid `value` for `key` {}: {e}", c.key),
                );
            }
            if let Err(e) = check_attribute(&c.key, &c.not_values) {
                self.err(
                    format!("{f}.notValues"),
                    format!("invalid `notValue` for `key` {}: {e}", c.key),
                );
            }
        }
        let from_exists = rule.from.iter().any(|f| f.source.is_some());
        let to_exists = rule.to.iter().any(|t| t.operation.is_some());
        if action == Action::Deny
            && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        {
            self.warn(
                p,
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope \
                 due to the use of only HTTP attributes in a DENY rule; it is recommended to \
                 explicitly specify the port",
            );
        }
    }

    pub(super) fn peer_authentication(&mut self, pa: &PeerAuthentication) {
        self.security_selector(pa.selector.as_ref());
        let no_selector = pa
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty());
        let Some(ports) = &pa.port_level_mtls else {
            return;
        };
        if ports.is_empty() {
            self.err(
                "spec.portLevelMtls",
                "port level mTLS, if defined, must have at least one element",
            );
        } else if no_selector {
            self.err(
                "spec.portLevelMtls",
                "portLevelMtls requires selector (mesh/namespace peer authentication cannot have port level mTLS)",
            );
        }
        for key in ports.keys() {
            let f = format!("spec.portLevelMtls.{key}");
            match key.parse::<u64>() {
                Err(_) => self.err(
                    f,
                    format!("type conversion error from {key:?} to a port number"),
                ),
                Ok(n) if n == 0 || n > 65535 => {
                    self.err(f, "port must be between 1-65535");
                }
                Ok(_) => {}
            }
        }
    }

    pub(super) fn request_authentication(&mut self, ra: &RequestAuthentication) {
        self.policy_targets(
            ra.selector.as_ref(),
            ra.target_ref.as_ref(),
            &ra.target_refs,
        );
        if ra.jwt_rules.len() > 4096 {
            self.err("spec.jwtRules", "at most 4096 JWT rules are allowed");
        }
        for (i, rule) in ra.jwt_rules.iter().enumerate() {
            self.jwt_rule(&format!("spec.jwtRules[{i}]"), rule);
        }
    }

    fn jwt_rule(&mut self, p: &str, r: &JwtRule) {
        for (j, a) in r.audiences.iter().enumerate() {
            if a.is_empty() {
                self.err(
                    format!("{p}.audiences[{j}]"),
                    "audience must be non-empty string",
                );
            }
        }
        let uri = r.jwks_uri();
        if r.issuer.is_empty() && uri.is_none() {
            self.err(
                format!("{p}.issuer"),
                "issuer or jwksUri must be non-empty string",
            );
        }
        let sources = usize::from(r.jwks_uri.is_some())
            + usize::from(r.jwks_uri_proto_name.is_some())
            + usize::from(r.jwks.is_some());
        if sources > 1 {
            self.err(p, "only one of jwks or jwksUri can be set");
        }
        for (field, value) in [
            ("jwksUri", r.jwks_uri.as_deref()),
            ("jwks_uri", r.jwks_uri_proto_name.as_deref()),
        ] {
            let Some(u) = value else { continue };
            let f = format!("{p}.{field}");
            if u.is_empty() {
                self.err(f, "jwksUri must be at least 1 chars long");
            } else if u.len() > 2048 {
                self.err(f, "jwksUri may not exceed 2048 characters");
            } else if let Err(e) = parse_jwks_uri(u) {
                self.err(f, e);
            }
        }
        if let Some(jwks) = r.jwks.as_deref().filter(|j| !j.is_empty()) {
            match check_jwks(jwks) {
                Err(e) => self.err(format!("{p}.jwks"), e),
                Ok(true) => self.warn(
                    format!("{p}.jwks"),
                    "jwks contains private key material; only public keys are used for verification",
                ),
                Ok(false) => {}
            }
        }
        for (j, h) in r.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                self.err(
                    format!("{p}.fromHeaders[{j}].name"),
                    "Required value: location header name must be non-empty string",
                );
            }
        }
        for (j, q) in r.from_params.iter().enumerate() {
            if q.is_empty() {
                self.err(
                    format!("{p}.fromParams[{j}]"),
                    "location query must be non-empty string",
                );
            }
        }
        for (j, c) in r.from_cookies.iter().enumerate() {
            if c.is_empty() {
                self.err(
                    format!("{p}.fromCookies[{j}]"),
                    "cookie name must be non-empty string",
                );
            }
        }
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            let f = format!("{p}.outputClaimToHeaders[{j}]");
            if c.claim.is_empty() || c.header.is_empty() {
                self.err(
                    f,
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
                continue;
            }
            if !c
                .header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                self.err(
                    format!("{f}.header"),
                    format!(
                        "header name {} is not a valid header name (header in body should match '^[-_A-Za-z0-9]+$')",
                        c.header
                    ),
                );
            }
        }
        if let Some(h) = r
            .output_payload_to_header
            .as_deref()
            .filter(|h| !h.is_empty())
            && !super::is_header_name(h)
        {
            self.err(
                format!("{p}.outputPayloadToHeader"),
                format!("header name {h:?} is not a valid header name"),
            );
        }
        self.duration(&format!("{p}.timeout"), r.timeout.as_ref(), Dur::Istio);
        if r.space_delimited_claims.len() > 64 {
            self.err(
                format!("{p}.spaceDelimitedClaims"),
                "at most 64 claims are allowed",
            );
        }
        for (j, c) in r.space_delimited_claims.iter().enumerate() {
            if c.is_empty() {
                self.err(
                    format!("{p}.spaceDelimitedClaims[{j}]"),
                    "spaceDelimitedClaims[] in body should be at least 1 chars long",
                );
            }
        }
    }
}

/// A MeshConfig extension provider's `service`: a host name, an IP address, or
/// `<namespace>/<host>`.
pub fn validate_provider_service(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("service must not be empty".into());
    }
    match service.split_once('/') {
        None => {
            if validate_fqdn(service).is_err() && service.parse::<IpAddr>().is_err() {
                return Err(format!("invalid service fmt {service}"));
            }
            Ok(())
        }
        Some((ns, host)) => {
            if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                return Err(format!("invalid namespace {ns:?} in service {service:?}"));
            }
            super::validate_wildcard_domain(host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resource::parse_yaml;

    /// `field: message` of every error of one document.
    fn errors(kind: &str, spec: &str, annotations: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p, namespace: ns{annotations}}}\nspec:\n{spec}"
        );
        parse_yaml(&yaml, "t.yaml")
            .into_iter()
            .flat_map(|p| p.diagnostics)
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect()
    }

    #[track_caller]
    fn assert_err(kind: &str, spec: &str, field: &str, needle: &str) {
        let e = errors(kind, spec, "");
        assert!(
            e.iter()
                .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(needle)),
            "expected an error at {field} containing {needle:?}, got {e:#?}"
        );
    }

    #[track_caller]
    fn assert_ok(kind: &str, spec: &str) {
        let e = errors(kind, spec, "");
        assert!(e.is_empty(), "unexpected errors: {e:#?}");
    }

    const AP: &str = "AuthorizationPolicy";

    #[test]
    fn authorization_policy_rules() {
        assert_ok(AP, "  {}\n");
        assert_ok(AP, "  action: DENY\n  rules: [{}]\n");
        assert_err(
            AP,
            "  action: DENY\n",
            "spec.rules",
            "DENY action without `rules`",
        );
        assert_err(
            AP,
            "  action: CUSTOM\n  rules: [{}]\n",
            "spec.provider.name",
            "must not be empty",
        );
        assert_err(
            AP,
            "  action: CUSTOM\n  provider: {name: x}\n",
            "spec.rules",
            "CUSTOM action without",
        );
        assert_err(
            AP,
            "  action: CUSTOM\n  provider: {name: x}\n  rules: [{from: [{source: {principals: [a]}}]}]\n",
            "spec.rules[0].from[0].source",
            "From.Principals is currently not supported with CUSTOM action",
        );
        assert_err(
            AP,
            "  action: CUSTOM\n  provider: {name: x}\n  rules: [{when: [{key: \"request.auth.claims[a]\", values: [b]}]}]\n",
            "spec.rules[0].when[0].key",
            "not supported with CUSTOM",
        );
        assert_err(
            AP,
            "  provider: {name: x}\n  rules: [{}]\n",
            "spec.provider",
            "non CUSTOM action",
        );
        assert_err(
            AP,
            "  rules: [{from: [{}]}]\n",
            "spec.rules[0].from[0].source",
            "must not be nil",
        );
        assert_err(
            AP,
            "  rules: [{from: [{source: {}}]}]\n",
            "spec.rules[0].from[0].source",
            "must not be empty",
        );
        assert_err(
            AP,
            "  rules: [{to: [{operation: {}}]}]\n",
            "spec.rules[0].to[0].operation",
            "must not be empty",
        );
        assert_err(
            AP,
            "  rules: [{from: [{source: {ipBlocks: [1.2.3.256]}}]}]\n",
            "spec.rules[0].from[0].source.ipBlocks",
            "bad IP address",
        );
        assert_err(
            AP,
            "  rules: [{to: [{operation: {ports: [\"70000\"]}}]}]\n",
            "spec.rules[0].to[0].operation.ports",
            "bad port",
        );
        assert_err(
            AP,
            "  rules: [{to: [{operation: {paths: [\"/a/{x}\"]}}]}]\n",
            "spec.rules[0].to[0].operation.paths",
            "beyond a supported path template",
        );
        assert_err(
            AP,
            "  rules: [{when: [{key: \"destination.labels[app]\", values: [a]}]}]\n",
            "spec.rules[0].when[0].values",
            "replaced by the workload selector",
        );
        assert_err(
            AP,
            "  rules: [{when: [{key: request.headers, values: [a]}]}]\n",
            "spec.rules[0].when[0].values",
            "should have format a[b]",
        );
        assert_err(
            AP,
            "  rules: [{when: [{key: source.ip}]}]\n",
            "spec.rules[0].when[0]",
            "at least one of",
        );
        assert_err(
            AP,
            "  rules: [{when: [{key: foo, values: [a]}]}]\n",
            "spec.rules[0].when[0].values",
            "unknown attribute",
        );
        assert_err(
            AP,
            "  rules: [{from: [{source: {trustDomains: [a/b]}}]}]\n",
            "spec.rules[0].from[0].source.trustDomains",
            "must not contain '/'",
        );
        assert_err(
            AP,
            "  selector: {matchLabels: {a: b}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}\n",
            "spec",
            "only one of targetRefs or selector",
        );
        assert_err(
            AP,
            "  targetRefs: [{kind: Pod, name: g}]\n",
            "spec.targetRefs[0]",
            "targetRef must be to one of",
        );
        assert_err(
            AP,
            "  rules: [{bogus: 1}]\n",
            "spec.rules[0].bogus",
            "unknown field `bogus`",
        );
    }

    #[test]
    fn dry_run_annotation() {
        let with = |v: &str, spec: &str| {
            errors(
                AP,
                spec,
                &format!(", annotations: {{istio.io/dry-run: \"{v}\"}}"),
            )
        };
        assert!(with("true", "  rules: [{}]\n").is_empty());
        assert!(with("maybe", "  rules: [{}]\n")[0].contains("invalid value"));
        assert!(
            with("true", "  action: AUDIT\n  rules: [{}]\n")[0]
                .contains("only supports action ALLOW/DENY")
        );
        let pa = errors(
            "PeerAuthentication",
            "  mtls: {mode: STRICT}\n",
            ", annotations: {istio.io/dry-run: \"true\"}",
        );
        assert!(
            pa[0].contains("only supported on AuthorizationPolicy"),
            "{pa:?}"
        );
    }

    #[test]
    fn peer_and_request_authentication() {
        const PA: &str = "PeerAuthentication";
        const RA: &str = "RequestAuthentication";
        assert_ok(
            PA,
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls: {\"8080\": {mode: DISABLE}}\n",
        );
        assert_err(
            PA,
            "  portLevelMtls: {\"8080\": {mode: DISABLE}}\n",
            "spec.portLevelMtls",
            "requires selector",
        );
        assert_ok(
            RA,
            "  jwtRules: [{issuer: a, jwksUri: \"https://a.example/keys\"}]\n",
        );
        assert_err(
            RA,
            "  jwtRules: [{audiences: [a]}]\n",
            "spec.jwtRules[0].issuer",
            "issuer or jwksUri",
        );
        assert_err(
            RA,
            "  jwtRules: [{issuer: a, jwksUri: \"https://a/k\", jwks: \"{}\"}]\n",
            "spec.jwtRules[0]",
            "only one of jwks or jwksUri",
        );
        assert_err(
            RA,
            "  jwtRules: [{issuer: a, jwks: \"{\\\"keys\\\": 1}\"}]\n",
            "spec.jwtRules[0].jwks",
            "jwks parse error",
        );
        assert_err(
            RA,
            "  jwtRules: [{issuer: a, jwksUri: \"ftp://a/k\"}]\n",
            "spec.jwtRules[0].jwksUri",
            "not supported",
        );
        assert_err(
            RA,
            "  jwtRules: [{issuer: a, timeout: 1500us}]\n",
            "spec.jwtRules[0].timeout",
            "ms precision",
        );
        assert_err(
            RA,
            "  jwtRules: [{issuer: a, outputPayloadToHeader: \"bad header\"}]\n",
            "spec.jwtRules[0].outputPayloadToHeader",
            "not a valid header name",
        );
    }

    #[test]
    fn jwks_uri_parsing() {
        let u = parse_jwks_uri("https://example.com/.well-known/jwks.json").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("example.com", 443, true));
        let u = parse_jwks_uri("http://keys.local:8080/jwks").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("keys.local", 8080, false)
        );
        assert!(parse_jwks_uri("hTPp\\\u{8}lah").is_err());
        assert!(parse_jwks_uri("ftp://x/y").is_err());
        assert!(parse_jwks_uri("https:///path").is_err());
    }

    #[test]
    fn jwks_checks() {
        let rsa = r#"{"keys":[{"kty":"RSA","n":"abc_-","e":"AQAB"}]}"#;
        assert_eq!(check_jwks(rsa), Ok(false));
        assert!(check_jwks(r#"{"keys":[{"kty":"RSA","n":"a"}]}"#).is_err());
        assert!(check_jwks("not json").is_err());
        assert_eq!(check_jwks(r#"{"kty":"oct","k":"c2VjcmV0"}"#), Ok(true));
    }

    #[test]
    fn path_templates() {
        let ok = |p: &str| check_path_templates("paths", &[p.to_string()]).is_ok();
        assert!(ok("/a/{*}/b"));
        assert!(ok("/{**}/b"));
        assert!(ok("/a/*"));
        assert!(!ok("/{**}/{*}"));
        assert!(!ok("/a/{x}"));
    }

    #[test]
    fn service_accounts() {
        let sa = |v: &str| check_service_accounts("serviceAccounts", &[v.to_string()]);
        assert!(sa("ns/sa").is_ok());
        assert!(sa("sa").is_ok());
        assert!(sa("a/b/c").is_err());
        assert!(sa("/sa").is_err());
        assert!(sa("ns/*").is_err());
    }
}
