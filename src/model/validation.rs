//! Semantic validation of parsed resources, shared by the file source, `bowline validate` and
//! the admission webhook. It applies what istiod's validation checks for each networking kind
//! (hosts and wildcard rules, ports, weights, subsets, durations, regexes, TLS modes, ...)
//! together with the constraints the CRD schema makes the API server enforce (value ranges,
//! `x-kubernetes-validations` rules), so that a resource accepted here is one Kubernetes and
//! istiod would accept. Errors reject the resource; warnings are reported and the resource is
//! used. Field paths use the YAML (camelCase) names, e.g. `spec.http[0].route[1].weight`.
//! The `security.istio.io` kinds are checked in the `security` submodule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::diagnostic::{Diagnostic, Severity};
use super::kube;
use super::networking::*;
use super::resource::{Kind, Resource, Spec};

pub mod security;

/// Validates one resource; the result holds errors and warnings.
pub fn validate(resource: &Resource) -> Vec<Diagnostic> {
    let mut v = Ctx {
        resource,
        out: Vec::new(),
    };
    v.metadata();
    match &resource.spec {
        Spec::VirtualService(s) => v.virtual_service(s),
        Spec::DestinationRule(s) => v.destination_rule(s),
        Spec::ServiceEntry(s) => v.service_entry(s),
        Spec::WorkloadEntry(s) => v.workload_entry(s),
        Spec::Sidecar(s) => v.sidecar(s),
        Spec::Gateway(s) => v.gateway(s),
        Spec::AuthorizationPolicy(s) => v.authorization_policy(s),
        Spec::PeerAuthentication(s) => v.peer_authentication(s),
        Spec::RequestAuthentication(s) => v.request_authentication(s),
        Spec::Service(s) => v.service(s),
        Spec::EndpointSlice(s) => v.endpoint_slice(s),
        Spec::Pod(_) | Spec::Namespace => {}
    }
    v.out
}

struct Ctx<'a> {
    resource: &'a Resource,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(self.resource.diagnostic(field, message));
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Warning,
            ..self.resource.diagnostic(field, message)
        });
    }

    fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.err(field, e);
        }
    }

    fn namespace(&self) -> &str {
        &self.resource.meta.namespace
    }

    /// Selector labels under `f`: keys non-empty, no wildcards, values up to 63 characters, at
    /// most `max` of them.
    fn selector_labels(&mut self, f: &str, labels: &super::networking::Labels, max: usize) {
        for (k, v) in labels {
            if k.is_empty() {
                self.err(
                    f,
                    format!("empty key is not supported in selector: \"={v}\""),
                );
            }
            if k.contains('*') || v.contains('*') {
                self.err(
                    format!("{f}.{k}"),
                    format!("wildcard is not supported in selector: \"{k}={v}\""),
                );
            }
            if v.len() > 63 {
                self.err(
                    format!("{f}.{k}"),
                    "label value may not exceed 63 characters",
                );
            }
        }
        if labels.len() > max {
            self.err(f, format!("at most {max} labels are allowed"));
        }
    }

    /// A `matchLabels` selector (DestinationRule `workloadSelector`, the security kinds'
    /// `selector`) under `base`: keys non-empty, no wildcards, values up to 63 characters.
    fn type_selector(&mut self, base: &str, sel: &super::networking::TypeWorkloadSelector) {
        self.selector_labels(&format!("{base}.matchLabels"), &sel.match_labels, 4096);
        if sel.match_labels.is_empty() {
            self.warn(base, "workload selector specified without labels");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

const ANNOTATION_DRY_RUN: &str = "istio.io/dry-run";
const ANNOTATION_ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
const ANNOTATION_PARENTS: [&str; 2] = [
    "internal.istio.io/parents",
    "internal.istio.io/parent-namespace",
];

impl Ctx<'_> {
    fn metadata(&mut self) {
        if self.resource.kind == Kind::Namespace {
            return;
        }
        let annotations = &self.resource.meta.annotations;
        let is_istio = self.resource.kind.group_versions().0.ends_with(".istio.io");
        // AuthorizationPolicy supports it (checked with the policy's action).
        if is_istio
            && self.resource.kind != Kind::AuthorizationPolicy
            && annotations.contains_key(ANNOTATION_DRY_RUN)
        {
            self.err(
                "metadata.annotations",
                format!(
                    "annotation {ANNOTATION_DRY_RUN} is only supported on AuthorizationPolicy; remove it"
                ),
            );
        }
        if is_istio && annotations.contains_key(ANNOTATION_ALWAYS_REJECT) {
            self.err(
                "metadata.annotations",
                format!("annotation {ANNOTATION_ALWAYS_REJECT} found, rejecting"),
            );
        }
        for a in ANNOTATION_PARENTS {
            if is_istio && annotations.contains_key(a) {
                self.err(
                    "metadata.annotations",
                    format!("annotation {a} is internal to the control plane and may not be set"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generic checks: names, hosts, addresses, ports, durations, labels
// ---------------------------------------------------------------------------------------------

const UNIX_PREFIX: &str = "unix://";
const MESH_GATEWAY: &str = "mesh";

/// RFC 1123 label: `[a-z0-9A-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A DNS label that may start with `*` or `*-`, or is `*` alone.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    if s.len() > 63 {
        return false;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts.last().copied().unwrap_or_default();
    if !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {last:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn validate_fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name)
}

/// A DNS name whose first label may be a wildcard (`*.example.com`, `*`, short names).
fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => dns1123_labels(r),
        None => Ok(()),
    }
}

/// Like [`validate_wildcard_domain`], but for SNI hosts of routes bound to gateways it also
/// accepts the names AUTO_PASSTHROUGH gateways generate: `outbound_.<port>_._.<host>`.
fn validate_wildcard_domain_for_gateway(sni: bool, domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    if sni && domain.starts_with("outbound_") {
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {domain} invalid, should follow 'outbound_.<port>_._.<hostname>' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let host = parts[3].trim_matches('.');
        if !port.bytes().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid); should follow the outbound_.<port>_._.<hostname> format"
            ));
        }
        if !host.bytes().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {host:?} invalid); should follow the outbound_.<port>_._.<hostname> format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An IP address or a CIDR block.
fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        return s
            .parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid CIDR block"));
    }
    validate_ip(s)
}

fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?} (must be a DNS-1123 label)"
        ))
    }
}

/// A Unix domain socket path (after `unix://`): absolute and not a directory, or abstract
/// (`@name`).
fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Protocols Istio knows for service and listener ports (case-insensitive).
fn parse_protocol(p: &str) -> Option<&'static str> {
    Some(match p.to_ascii_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-Web",
        "http" => "HTTP",
        "http_proxy" => "HTTP_PROXY",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "tls" => "TLS",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ => return None,
    })
}

fn protocol_is_http(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-Web")
    )
}

fn protocol_is_tls(p: &str) -> bool {
    matches!(parse_protocol(p), Some("HTTPS" | "TLS"))
}

fn protocol_is_tcp(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("TCP" | "HTTPS" | "TLS" | "Mongo" | "Redis" | "MySQL")
    )
}

fn validate_protocol(p: &str) -> Result<(), String> {
    if !p.is_empty() && parse_protocol(p).is_none() {
        return Err(format!("unsupported protocol: {p}"));
    }
    Ok(())
}

/// How strictly a duration field is checked.
#[derive(Clone, Copy)]
enum Dur {
    /// istiod's rule: at least 1ms, and a whole number of milliseconds.
    Istio,
    /// The CRD's rule only: at least 1ms.
    AtLeast1ms,
    /// Must parse; any value.
    Any,
}

impl Ctx<'_> {
    fn duration(&mut self, field: &str, value: Option<&String>, rule: Dur) -> Option<Duration> {
        let s = value?;
        let d = match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                self.err(field, e);
                return None;
            }
        };
        match rule {
            Dur::Istio | Dur::AtLeast1ms if d < Duration::from_millis(1) => {
                self.err(field, format!("duration {s:?} must be at least 1ms"));
            }
            Dur::Istio if d.subsec_nanos() % 1_000_000 != 0 => {
                self.err(
                    field,
                    format!("duration {s:?}: only durations to ms precision are supported"),
                );
            }
            _ => {}
        }
        Some(d)
    }

    /// Kubernetes label keys and values (`labels.Instance.Validate` in Istio).
    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Err(e) = validate_label_key(k) {
                self.err(field, e);
            }
            if !v.is_empty() && !is_qualified_name(v) {
                self.err(
                    format!("{field}.{k}"),
                    format!("invalid label value: {v:?}"),
                );
            }
        }
    }

    /// `exportTo` rules: `.`, `*`, a namespace, or `~` (ServiceEntry only); no duplicates.
    fn export_to(
        &mut self,
        field: &str,
        export_to: &[String],
        service_entry: bool,
        dr_with_selector: bool,
    ) {
        if export_to.is_empty() {
            return;
        }
        let ns = self.namespace().to_string();
        let mut set: BTreeSet<String> = BTreeSet::new();
        for (i, e) in export_to.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let key = if e == "." { ns.clone() } else { e.clone() };
            if set.contains(&key) {
                if &key != e {
                    self.err(
                        f,
                        format!("duplicate entries in exportTo: . and current namespace {ns}"),
                    );
                } else {
                    self.err(f, format!("duplicate entries in exportTo for entry {e}"));
                }
                continue;
            }
            if service_entry && e == "~" {
                set.insert(key);
                continue;
            }
            match key.as_str() {
                "*" => {
                    set.insert(key);
                }
                "~" => self.err(
                    f,
                    "exportTo ~ (none) is not allowed for Istio configuration objects",
                ),
                k if is_dns1123_label(k) => {
                    set.insert(key);
                }
                _ => self.err(
                    f,
                    format!(
                        "invalid exportTo value {e:?}: only ., *, or a valid DNS-1123 label is allowed"
                    ),
                ),
            }
        }
        if dr_with_selector && !set.is_empty() {
            if set.contains(&ns) {
                if set.len() > 1 {
                    self.err(
                        field,
                        "destination rule with workload selector cannot have multiple entries in exportTo",
                    );
                }
            } else {
                self.err(
                    field,
                    "destination rule with workload selector cannot have exportTo beyond current namespace",
                );
            }
        }
        if set.contains("*") && export_to.len() > 1 {
            self.err(
                field,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if set.contains("~") && export_to.len() > 1 {
            self.err(
                field,
                "cannot export service entry to no one (~) and someone",
            );
        }
    }

    /// The networking `WorkloadSelector` (`labels`) of ServiceEntry and Sidecar.
    fn workload_selector(&mut self, field: &str, selector: Option<&WorkloadSelector>, what: &str) {
        let Some(sel) = selector else { return };
        self.selector_labels(&format!("{field}.labels"), &sel.labels, 256);
        if sel.labels.is_empty() {
            self.warn(
                field,
                format!("workload selector specified without labels, will be applied to all {what} in namespace"),
            );
        }
    }
}

/// `[prefix/]name`, prefix a DNS subdomain (at most 253), name a qualified name (at most 63).
fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.len() > 253 {
            return Err(format!("invalid label key {k:?} (DNS prefix is too long)"));
        }
        if !p.split('.').all(is_dns1123_label) {
            return Err(format!("invalid label key: {k:?}"));
        }
    }
    if !is_qualified_name(name) {
        return Err(format!("invalid label key: {k:?}"));
    }
    if name.len() > 63 {
        return Err(format!("invalid label key {k:?} (name is too long)"));
    }
    Ok(())
}

/// Alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 7230 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// `@request.auth.claims.<a>.<b>` or `@request.auth.claims[a][b]`.
fn is_jwt_claim_route(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    let Some(head) = name.get(..PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

fn validate_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) || is_header_name(name) {
        return Ok(());
    }
    Err(format!("header name {name:?} is not a valid header name"))
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Names of request headers to add or set (`:authority`/`host` allowed).
fn validate_request_set_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Names of request headers to remove and of response headers.
fn validate_header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// A header value Envoy accepts: no control characters (tab allowed) and well-formed
/// `%VARIABLE%` / `%VARIABLE(args)%` substitutions (`%%` is a literal percent sign).
fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t' && (c as u32) < 0x80) || c == '\u{7f}')
    {
        return Err(format!(
            "header value {value:?} contains control characters"
        ));
    }
    #[derive(PartialEq)]
    enum St {
        Literal,
        Name,
        ArgsStart,
        ArgString,
        ArgsNext,
        ArgsClose,
        VarEnd,
        Quoted,
    }
    let b = value.as_bytes();
    let mut st = St::Literal;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match st {
            St::Literal => {
                if c == b'%' {
                    match b.get(i + 1) {
                        None => return Err(format!("header value {value:?}: un-escaped %")),
                        Some(b'%') => i += 1,
                        Some(_) => st = St::Name,
                    }
                }
            }
            St::Name => match c {
                b'%' => st = St::Literal,
                b'(' => st = St::ArgsStart,
                _ => {}
            },
            St::ArgsStart => match c {
                b'[' => st = St::ArgString,
                b' ' => {}
                _ => st = St::Quoted,
            },
            St::ArgString => match c {
                b'"' => st = St::Quoted,
                b' ' => {}
                _ => return Err(format!("header value {value:?}: expected '\"'")),
            },
            St::Quoted => match c {
                b'\\' => {
                    if i + 1 >= b.len() {
                        return Err(format!(
                            "header value {value:?}: unterminated backslash in argument string"
                        ));
                    }
                    i += 1;
                }
                b')' => st = St::VarEnd,
                b'"' => st = St::ArgsNext,
                _ => {}
            },
            St::ArgsNext => match c {
                b',' => st = St::ArgString,
                b']' => st = St::ArgsClose,
                b' ' => {}
                _ => {
                    return Err(format!(
                        "header value {value:?}: expected ',', ']' or whitespace"
                    ));
                }
            },
            St::ArgsClose => match c {
                b')' => st = St::VarEnd,
                b' ' => {}
                _ => return Err(format!("header value {value:?}: expected ')'")),
            },
            St::VarEnd => match c {
                b'%' => st = St::Literal,
                b' ' => {}
                _ => return Err(format!("header value {value:?}: expected '%'")),
            },
        }
        i += 1;
    }
    if st != St::Literal {
        return Err(format!(
            "header value {value:?}: unterminated variable expression"
        ));
    }
    Ok(())
}

fn validate_regex(re: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".into());
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        let first = e.to_string();
        let msg = first
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .map(str::to_string)
            .unwrap_or(first);
        format!("invalid regex {re:?}: {msg}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
    })
}

/// Is `x` prime (as Envoy checks Maglev table sizes)?
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

/// Host names with `*` prefix wildcards.
fn host_is_wildcard(h: &str) -> bool {
    h.starts_with('*')
}

/// Whether two host names overlap (one matches the other).
fn hosts_match(a: &str, b: &str) -> bool {
    match (host_is_wildcard(a), host_is_wildcard(b)) {
        (true, true) => {
            if a.len() < b.len() {
                b[1..].ends_with(&a[1..])
            } else {
                a[1..].ends_with(&b[1..])
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Whether every name `a` matches is also matched by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    match (host_is_wildcard(a), host_is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// HTTP status codes Go's `net/http` names (used by `retryOn`).
fn is_known_http_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

const RETRY_ON_POLICIES: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names Istio accepts, in code order: the index is the status code.
pub const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Cipher suites a gateway accepts (BoringSSL names, PSK suites excluded).
const CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(cs: &str) -> bool {
    match cs.chars().next() {
        None => true,
        _ if cs == "ALL" => true,
        // Expressions such as `-AES128-SHA` or `+...` are passed through.
        Some(c) if !c.is_alphanumeric() => true,
        _ => CIPHER_SUITES.contains(&cs),
    }
}

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

// ---------------------------------------------------------------------------------------------
// VirtualService
// ---------------------------------------------------------------------------------------------

impl Ctx<'_> {
    fn virtual_service(&mut self, vs: &VirtualService) {
        let delegate = vs.hosts.is_empty();
        if delegate {
            if !vs.gateways.is_empty() {
                self.err(
                    "spec.gateways",
                    "delegate virtual service (no hosts) must have no gateways specified",
                );
            }
            if !vs.tls.is_empty() {
                self.err(
                    "spec.tls",
                    "delegate virtual service (no hosts) must have no tls route specified",
                );
            }
            if !vs.tcp.is_empty() {
                self.err(
                    "spec.tcp",
                    "delegate virtual service (no hosts) must have no tcp route specified",
                );
            }
        }

        let (applies_to_mesh, applies_to_gateway) = if vs.gateways.is_empty() {
            (true, false)
        } else {
            self.gateway_names("spec.gateways", &vs.gateways);
            let to_gateway = !vs.gateways.iter().any(|g| g == MESH_GATEWAY);
            (!to_gateway, to_gateway)
        };

        if !applies_to_gateway {
            for (i, http) in vs.http.iter().enumerate() {
                for (j, m) in http.match_.iter().enumerate() {
                    for (what, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        for key in map.keys().filter(|k| is_jwt_claim_route(k)) {
                            self.err(
                                format!("spec.http[{i}].match[{j}].{what}"),
                                format!("JWT claim based routing (key: {key}) is only supported for gateways, the virtual service is not bound to one"),
                            );
                        }
                    }
                }
            }
        }

        let sni = vs
            .tls
            .iter()
            .any(|t| t.match_.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_hosts_valid = true;
        for (i, h) in vs.hosts.iter().enumerate() {
            let r = if applies_to_gateway {
                validate_wildcard_domain_for_gateway(sni, h)
            } else {
                validate_wildcard_domain(h)
            };
            match r {
                Err(e) => {
                    if !is_ip(h) {
                        self.err(format!("spec.hosts[{i}]"), e);
                        all_hosts_valid = false;
                    }
                }
                Ok(()) if applies_to_mesh && h == "*" => {
                    self.err(
                        format!("spec.hosts[{i}]"),
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    );
                    all_hosts_valid = false;
                }
                Ok(()) => {}
            }
        }
        if all_hosts_valid {
            for i in 0..vs.hosts.len() {
                for j in i + 1..vs.hosts.len() {
                    if hosts_match(&vs.hosts[i], &vs.hosts[j]) {
                        self.err(
                            format!("spec.hosts[{j}]"),
                            format!(
                                "duplicate hosts in virtual service: {} & {}",
                                vs.hosts[i], vs.hosts[j]
                            ),
                        );
                    }
                }
            }
        }

        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err(
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, r) in vs.http.iter().enumerate() {
            self.http_route(&format!("spec.http[{i}]"), r, delegate);
        }
        for (i, r) in vs.tls.iter().enumerate() {
            self.tls_route(&format!("spec.tls[{i}]"), r, vs);
        }
        for (i, r) in vs.tcp.iter().enumerate() {
            self.tcp_route(&format!("spec.tcp[{i}]"), r);
        }
        self.export_to("spec.exportTo", &vs.export_to, false, false);

        let http: Vec<(Option<&str>, Vec<HttpMatchRequest>)> = vs
            .http
            .iter()
            .map(|r| {
                let matches = r
                    .match_
                    .iter()
                    .map(|m| HttpMatchRequest {
                        name: None,
                        ..m.clone()
                    })
                    .collect();
                (r.name.as_deref(), matches)
            })
            .collect();
        self.unreachable_rules("spec.http", &http);
        let tcp: Vec<(Option<&str>, Vec<L4MatchAttributes>)> =
            vs.tcp.iter().map(|r| (None, r.match_.clone())).collect();
        self.unreachable_rules("spec.tcp", &tcp);
        let tls: Vec<(Option<&str>, Vec<TlsMatchAttributes>)> =
            vs.tls.iter().map(|r| (None, r.match_.clone())).collect();
        self.unreachable_rules("spec.tls", &tls);
    }

    /// Warns about rules no request can reach: rules after a catch-all rule, and matches
    /// identical to an earlier one.
    fn unreachable_rules<M: PartialEq>(&mut self, field: &str, rules: &[(Option<&str>, Vec<M>)]) {
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(&M, usize)> = Vec::new();
        let label = |i: usize| match rules[i].0 {
            Some(n) => format!("{n:?}"),
            None => format!("#{i}"),
        };
        for (i, (_, matches)) in rules.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if matches.is_empty() {
                if catch_all.is_some() {
                    self.warn(
                        f,
                        format!("virtualService rule {} not used (only the last rule can have no matches)", label(i)),
                    );
                }
                catch_all = Some(i);
                continue;
            }
            if catch_all.is_some() {
                self.warn(
                    f,
                    format!(
                        "virtualService rule {} not used (route without matches defined before)",
                        label(i)
                    ),
                );
                continue;
            }
            let mut duplicates = 0;
            for (j, m) in matches.iter().enumerate() {
                if let Some((_, prior)) = seen.iter().find(|(s, _)| *s == m) {
                    self.warn(
                        format!("{f}.match[{j}]"),
                        format!(
                            "virtualService rule {} match #{j} is not used (duplicate match in rule {})",
                            label(i),
                            label(*prior)
                        ),
                    );
                    duplicates += 1;
                } else {
                    seen.push((m, i));
                }
            }
            if duplicates == matches.len() {
                self.warn(
                    f,
                    format!(
                        "virtualService rule {} not used (all matches used by prior rules)",
                        label(i)
                    ),
                );
            }
        }
    }

    fn gateway_names(&mut self, field: &str, names: &[String]) {
        for (i, g) in names.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some((ns, name)) = g.split_once('/') else {
                if let Some((name, ns)) = g.split_once('.') {
                    let ns = ns.split('.').next().unwrap_or_default();
                    self.warn(
                        &f,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                self.check(&f, validate_fqdn(g));
                // istiod stops at the first name without a namespace.
                return;
            };
            if ns.is_empty() || name.is_empty() {
                self.err(&f, "config namespace and gateway name cannot be empty");
            }
            if !is_dns1123_label(ns) {
                self.err(&f, format!("invalid value for namespace: {ns:?}"));
            }
            if !is_dns1123_label(name) {
                self.err(&f, format!("invalid value for gateway name: {name:?}"));
            }
        }
    }

    fn http_route(&mut self, p: &str, r: &HttpRoute, delegate: bool) {
        self.http_route_conflicts(p, r, delegate);
        for (i, m) in r.match_.iter().enumerate() {
            self.http_match(&format!("{p}.match[{i}]"), m);
        }
        if let Some(h) = &r.headers {
            self.headers(&format!("{p}.headers"), h);
        }
        if let Some(c) = &r.cors_policy {
            self.cors_policy(&format!("{p}.corsPolicy"), c);
        }
        if let Some(f) = &r.fault {
            self.fault(&format!("{p}.fault"), f);
        }
        if let Some(mp) = r.mirror_percent {
            if mp > 100 {
                self.err(
                    format!("{p}.mirrorPercent"),
                    format!("mirrorPercent must have a max value of 100 (it has {mp})"),
                );
            }
            self.warn(
                format!("{p}.mirrorPercent"),
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
        }
        if let Some(pc) = &r.mirror_percentage {
            self.mirror_percentage(&format!("{p}.mirrorPercentage"), pc);
        }
        if let Some(m) = &r.mirror {
            self.destination(&format!("{p}.mirror"), m);
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            let f = format!("{p}.mirrors[{i}]");
            self.destination(&format!("{f}.destination"), &m.destination);
            if let Some(pc) = &m.percentage {
                self.mirror_percentage(&format!("{f}.percentage"), pc);
            }
        }
        if let Some(rd) = &r.redirect {
            self.redirect(&format!("{p}.redirect"), rd, &r.match_);
        }
        if let Some(d) = &r.direct_response {
            self.direct_response(&format!("{p}.directResponse"), d);
        }
        if let Some(rt) = &r.retries {
            self.retries(&format!("{p}.retries"), rt);
        }
        if let Some(rw) = &r.rewrite {
            self.rewrite(&format!("{p}.rewrite"), rw);
        }
        self.authority_rewrite(p, r);
        self.http_route_destinations(&format!("{p}.route"), &r.route);
        self.duration(&format!("{p}.timeout"), r.timeout.as_ref(), Dur::Istio);
        if r.websocket_upgrade.is_some() {
            self.warn(
                format!("{p}.websocketUpgrade"),
                "websocketUpgrade is no longer part of the Istio API and is ignored; WebSocket upgrades are allowed on every HTTP port",
            );
        }
    }

    fn http_route_conflicts(&mut self, p: &str, r: &HttpRoute, delegate: bool) {
        let name = r.name.as_deref().unwrap_or_default();
        if !delegate && r.delegate.is_some() {
            // A root route: it may only delegate.
            if r.redirect.is_some() {
                self.err(
                    format!("{p}.redirect"),
                    format!("root HTTP route {name} must not specify redirect"),
                );
            }
            if !r.route.is_empty() {
                self.err(
                    format!("{p}.route"),
                    format!("root HTTP route {name} must not specify route"),
                );
            }
            if let Some(d) = &r.delegate
                && d.name.is_empty()
            {
                self.warn(
                    format!("{p}.delegate.name"),
                    "delegate name is empty; no virtual service will be found",
                );
            }
            return;
        }
        if delegate && r.delegate.is_some() {
            self.err(
                format!("{p}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if r.redirect.is_some() {
            if !r.route.is_empty() {
                self.err(p, "HTTP route cannot contain both route and redirect");
            }
            if r.fault.is_some() {
                self.err(p, "HTTP route cannot contain both fault and redirect");
            }
            if r.rewrite.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
            if r.direct_response.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both directResponse and redirect",
                );
            }
        } else if r.direct_response.is_some() {
            if !r.route.is_empty() {
                self.err(p, "HTTP route cannot contain both route and directResponse");
            }
            if r.fault.is_some() {
                self.err(p, "HTTP route cannot contain both fault and directResponse");
            }
            if r.rewrite.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both rewrite and directResponse",
                );
            }
        } else if r.route.is_empty() {
            self.err(p, "HTTP route, redirect or directResponse is required");
        }
        if r.mirror.is_some() && !r.mirrors.is_empty() {
            self.err(p, "HTTP route cannot contain both mirror and mirrors");
        }
    }

    fn string_match(&mut self, field: &str, m: &StringMatch, allow_empty_prefix: bool) {
        match m {
            StringMatch::Prefix(s) if s.is_empty() && !allow_empty_prefix => {
                self.err(field, "prefix string match should not be empty");
            }
            StringMatch::Regex(re) if re.is_empty() => {
                self.err(field, "regex string match should not be empty");
            }
            StringMatch::Regex(re) => self.check(field, validate_regex(re)),
            _ => {}
        }
    }

    fn http_match(&mut self, p: &str, m: &HttpMatchRequest) {
        for (name, sm) in &m.headers {
            let f = format!("{p}.headers.{name}");
            self.check(&f, validate_match_header_name(name));
            self.string_match(&f, sm, false);
        }
        for (name, sm) in &m.without_headers {
            let f = format!("{p}.withoutHeaders.{name}");
            self.check(&f, validate_match_header_name(name));
            // `*` is not a regex: it means "present".
            if *sm != StringMatch::Regex("*".into()) {
                self.string_match(&f, sm, false);
            }
        }
        if let Some(u) = &m.uri {
            self.string_match(&format!("{p}.uri"), u, true);
        }
        for (what, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                self.string_match(&format!("{p}.{what}"), sm, false);
            }
        }
        for (name, sm) in &m.query_params {
            self.string_match(&format!("{p}.queryParams.{name}"), sm, false);
        }
        if let Some(port) = m.port.filter(|p| *p != 0) {
            self.check(&format!("{p}.port"), validate_port(port.into()));
        }
        self.labels(&format!("{p}.sourceLabels"), &m.source_labels);
        self.gateway_names(&format!("{p}.gateways"), &m.gateways);
        if let Some(ns) = m.source_namespace.as_deref().filter(|s| !s.is_empty())
            && !is_dns1123_label(ns)
        {
            self.err(
                format!("{p}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }

    fn header_ops(&mut self, p: &str, ops: &HeaderOperations, request: bool) {
        for (what, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let f = format!("{p}.{what}.{name}");
                let r = if request {
                    validate_request_set_header_name(name)
                } else {
                    validate_header_operation_name(name)
                };
                self.check(&f, r);
                self.check(&f, validate_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            self.check(
                &format!("{p}.remove[{i}]"),
                validate_header_operation_name(name),
            );
        }
    }

    fn headers(&mut self, p: &str, h: &Headers) {
        if let Some(r) = &h.request {
            self.header_ops(&format!("{p}.request"), r, true);
        }
        if let Some(r) = &h.response {
            self.header_ops(&format!("{p}.response"), r, false);
        }
    }

    /// The authority may be rewritten in one place only.
    fn authority_rewrite(&mut self, p: &str, r: &HttpRoute) {
        let mut current = r
            .rewrite
            .as_ref()
            .and_then(|rw| rw.authority.clone())
            .filter(|a| !a.is_empty());
        let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        for (k, v) in req.set.iter().chain(req.add.iter()) {
            if !is_authority_header(k) {
                continue;
            }
            if let Some(c) = &current {
                self.err(
                    format!("{p}.headers.request"),
                    format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = Some(v.clone());
        }
    }

    fn cors_policy(&mut self, p: &str, c: &CorsPolicy) {
        for (i, o) in c.allow_origins.iter().enumerate() {
            let f = format!("{p}.allowOrigins[{i}]");
            match o {
                StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s)
                    if !s.is_empty() =>
                {
                    if let StringMatch::Regex(re) = o {
                        self.check(&f, validate_regex(re));
                    }
                }
                _ => self.err(
                    &f,
                    "allow origin must set a non-empty exact, prefix or regex",
                ),
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.err(
                    format!("{p}.allowMethods[{i}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (what, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && !is_header_name(h) {
                    self.err(
                        format!("{p}.{what}[{i}]"),
                        format!("header name {h:?} is not a valid header name"),
                    );
                }
            }
        }
        let f = format!("{p}.maxAge");
        if let Some(d) = self.duration(&f, c.max_age.as_ref(), Dur::Istio)
            && d.subsec_nanos() > 0
        {
            self.err(f, "maxAge duration is accurate only to seconds precision");
        }
    }

    fn percentage(&mut self, field: &str, pc: &Percent) {
        let v = pc.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            self.err(
                field,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }

    fn mirror_percentage(&mut self, field: &str, pc: &Percent) {
        let v = pc.value;
        if v > 100.0 {
            self.err(
                field,
                format!("mirror percentage must have a max value of 100 (it has {v})"),
            );
        }
        if v < 0.0 {
            self.err(
                field,
                format!("mirror percentage must have a min value of 0 (it has {v})"),
            );
        }
    }

    fn fault(&mut self, p: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.err(p, "HTTP fault injection must have an abort and/or a delay");
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.abort");
            if let Some(pc) = &a.percentage {
                self.percentage(&format!("{ap}.percentage"), pc);
            }
            match &a.error_type {
                Some(AbortErrorType::HttpStatus(s)) => {
                    if !(200..=600).contains(s) {
                        self.err(
                            format!("{ap}.httpStatus"),
                            format!("HTTP status {s} is not in range 200-599"),
                        );
                    }
                }
                Some(AbortErrorType::GrpcStatus(s)) => {
                    if !GRPC_STATUSES.contains(&s.as_str()) {
                        self.err(
                            format!("{ap}.grpcStatus"),
                            format!("gRPC status {s:?} is not supported; use a code name such as NOT_FOUND (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md)"),
                        );
                    }
                }
                Some(AbortErrorType::Http2Error(_)) => {
                    self.err(
                        format!("{ap}.http2Error"),
                        "HTTP/2 abort fault injection is not supported yet",
                    );
                }
                None => self.warn(&ap, "abort configured, but error type not set"),
            }
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.delay");
            if let Some(pc) = &d.percentage {
                self.percentage(&format!("{dp}.percentage"), pc);
            }
            if let Some(pc) = d.percent
                && !(0..=100).contains(&pc)
            {
                self.err(
                    format!("{dp}.percent"),
                    format!("percentage {pc} is not in range 0..100"),
                );
            }
            match &d.http_delay_type {
                Some(HttpDelayType::FixedDelay(s)) => {
                    self.duration(&format!("{dp}.fixedDelay"), Some(s), Dur::Istio);
                }
                Some(HttpDelayType::ExponentialDelay(s)) => {
                    let f = format!("{dp}.exponentialDelay");
                    self.duration(&f, Some(s), Dur::Istio);
                    self.err(f, "exponentialDelay is not supported yet");
                }
                None => {}
            }
        }
    }

    fn destination(&mut self, p: &str, d: &Destination) {
        let hf = format!("{p}.host");
        if d.host == "*" {
            self.err(hf, format!("invalid destination host {}", d.host));
        } else {
            self.check(&hf, validate_wildcard_domain(&d.host));
        }
        if let Some(s) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            self.check(&format!("{p}.subset"), validate_subset_name(s));
        }
        if let Some(port) = &d.port {
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
        }
    }

    fn redirect(&mut self, p: &str, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
        let uri = r.uri.as_deref().unwrap_or_default();
        let prefix_rewrite = r.prefix_rewrite.as_deref().unwrap_or_default();
        let authority = r.authority.as_deref().unwrap_or_default();
        let scheme = r.scheme.as_deref().unwrap_or_default();
        if !uri.is_empty() && !prefix_rewrite.is_empty() {
            self.err(p, "redirect may only specify one of uri or prefixRewrite");
            return;
        }
        if !prefix_rewrite.is_empty()
            && matches.iter().any(|m| {
                m.uri
                    .as_ref()
                    .is_some_and(|u| !matches!(u, StringMatch::Prefix(_)))
            })
        {
            self.err(
                format!("{p}.prefixRewrite"),
                "redirect prefixRewrite requires all URI matches to use prefix match type",
            );
            return;
        }
        if uri.is_empty()
            && prefix_rewrite.is_empty()
            && authority.is_empty()
            && r.redirect_port.is_none()
            && scheme.is_empty()
        {
            self.err(p, "redirect must specify uri, authority, scheme, or port");
            return;
        }
        if let Some(code) = r.redirect_code.filter(|c| *c != 0)
            && !(300..=399).contains(&code)
        {
            self.err(
                format!("{p}.redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
            return;
        }
        if !scheme.is_empty() && scheme != "http" && scheme != "https" {
            self.err(
                format!("{p}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
            return;
        }
        if let Some(RedirectPort::Port(port)) = r.redirect_port
            && port > 0
        {
            self.check(&format!("{p}.port"), validate_port(port.into()));
        }
    }

    fn direct_response(&mut self, p: &str, d: &HttpDirectResponse) {
        let size = match &d.body {
            Some(HttpBody::String(s)) => s.len(),
            Some(HttpBody::Bytes(b)) => {
                let decoded = decoded_base64_len(b);
                if decoded.is_none() {
                    self.err(format!("{p}.body.bytes"), "bytes must be valid base64");
                }
                decoded.unwrap_or(0)
            }
            Some(HttpBody::Empty) | None => 0,
        };
        if size > 1024 * 1024 {
            self.err(
                format!("{p}.body"),
                "large direct responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 * 1024 {
            self.warn(
                format!("{p}.body"),
                "large direct responses may impact control plane performance",
            );
        }
        if !(200..=600).contains(&d.status) {
            self.err(
                format!("{p}.status"),
                format!("HTTP status {} is not in range 200-599", d.status),
            );
        }
    }

    fn retries(&mut self, p: &str, r: &HttpRetry) {
        if r.attempts < 0 {
            self.err(format!("{p}.attempts"), "attempts cannot be negative");
        }
        let retry_on = r.retry_on.as_deref().unwrap_or_default();
        if r.attempts == 0
            && (r.per_try_timeout.is_some()
                || !retry_on.is_empty()
                || r.retry_remote_localities.is_some())
        {
            self.err(
                p,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        self.duration(
            &format!("{p}.perTryTimeout"),
            r.per_try_timeout.as_ref(),
            Dur::Istio,
        );
        if !retry_on.is_empty() {
            for policy in retry_on.split(',') {
                let status_ok = policy.parse::<u32>().is_ok_and(is_known_http_status);
                if !status_ok && !RETRY_ON_POLICIES.contains(&policy) {
                    self.err(
                        format!("{p}.retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
        self.duration(&format!("{p}.backoff"), r.backoff.as_ref(), Dur::Istio);
    }

    fn rewrite(&mut self, p: &str, r: &HttpRewrite) {
        let uri = r.uri.as_deref().unwrap_or_default();
        let authority = r.authority.as_deref().unwrap_or_default();
        if !uri.is_empty() && r.uri_regex_rewrite.is_some() {
            self.err(p, "rewrite may only contain one of uri or uriRegexRewrite");
            return;
        }
        if uri.is_empty() && r.uri_regex_rewrite.is_none() && authority.is_empty() {
            self.err(
                p,
                "rewrite must specify at least one of uri, uriRegexRewrite, or authority",
            );
            return;
        }
        if let Some(rr) = &r.uri_regex_rewrite {
            let f = format!("{p}.uriRegexRewrite");
            if rr.match_.is_empty() || rr.rewrite.is_empty() {
                self.err(f, "uriRegexRewrite requires both rewrite and match fields");
            } else {
                self.check(&format!("{f}.match"), validate_regex(&rr.match_));
            }
        }
    }

    fn http_route_destinations(&mut self, p: &str, routes: &[HttpRouteDestination]) {
        let mut total: i64 = 0;
        for (i, r) in routes.iter().enumerate() {
            let f = format!("{p}[{i}]");
            if let Some(h) = &r.headers {
                self.headers(&format!("{f}.headers"), h);
            }
            self.destination(&format!("{f}.destination"), &r.destination);
            if r.weight < 0 {
                self.err(format!("{f}.weight"), format!("weight {} < 0", r.weight));
            }
            total += i64::from(r.weight);
        }
        if routes.len() > 1 && total == 0 {
            self.err(p, "total destination weight = 0");
        }
    }

    fn route_destinations(&mut self, p: &str, routes: &[RouteDestination]) {
        let mut total: i64 = 0;
        for (i, r) in routes.iter().enumerate() {
            let f = format!("{p}[{i}]");
            self.destination(&format!("{f}.destination"), &r.destination);
            if r.weight < 0 {
                self.err(format!("{f}.weight"), format!("weight {} < 0", r.weight));
            }
            total += i64::from(r.weight);
        }
        if routes.len() > 1 && total == 0 {
            self.err(p, "total destination weight = 0");
        }
    }

    fn tls_route(&mut self, p: &str, r: &TlsRoute, vs: &VirtualService) {
        if r.match_.is_empty() {
            self.err(
                format!("{p}.match"),
                "TLS route must have at least one match condition",
            );
        }
        // As istiod does: a TLS route counts as bound to a gateway unless `mesh` is listed, which
        // also admits the `outbound_.<port>_._.<host>` SNI names.
        let to_gateway = !vs.gateways.iter().any(|g| g == MESH_GATEWAY);
        for (i, m) in r.match_.iter().enumerate() {
            let mp = format!("{p}.match[{i}]");
            if m.sni_hosts.is_empty() {
                self.err(
                    format!("{mp}.sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (j, sni) in m.sni_hosts.iter().enumerate() {
                let f = format!("{mp}.sniHosts[{j}]");
                let r = if to_gateway {
                    validate_wildcard_domain_for_gateway(true, sni)
                } else {
                    validate_wildcard_domain(sni)
                };
                if let Err(e) = r {
                    if is_ip(sni) {
                        self.warn(f, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                    } else {
                        self.err(f, e);
                    }
                    continue;
                }
                if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
                    self.err(
                        f,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                            vs.hosts.join(", ")
                        ),
                    );
                }
            }
            for (j, s) in m.destination_subnets.iter().enumerate() {
                self.check(
                    &format!("{mp}.destinationSubnets[{j}]"),
                    validate_ip_subnet(s),
                );
            }
            if let Some(port) = m.port.filter(|p| *p != 0) {
                self.check(&format!("{mp}.port"), validate_port(port.into()));
            }
            self.labels(&format!("{mp}.sourceLabels"), &m.source_labels);
            self.gateway_names(&format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            self.err(format!("{p}.route"), "TLS route is required");
        }
        self.route_destinations(&format!("{p}.route"), &r.route);
    }

    fn tcp_route(&mut self, p: &str, r: &TcpRoute) {
        for (i, m) in r.match_.iter().enumerate() {
            let mp = format!("{p}.match[{i}]");
            for (j, s) in m.destination_subnets.iter().enumerate() {
                self.check(
                    &format!("{mp}.destinationSubnets[{j}]"),
                    validate_ip_subnet(s),
                );
            }
            if let Some(port) = m.port.filter(|p| *p != 0) {
                self.check(&format!("{mp}.port"), validate_port(port.into()));
            }
            self.labels(&format!("{mp}.sourceLabels"), &m.source_labels);
            self.gateway_names(&format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            self.err(format!("{p}.route"), "TCP route is required");
        }
        self.route_destinations(&format!("{p}.route"), &r.route);
    }
}

fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

/// The decoded length of standard or URL-safe base64 (padding optional), or `None` if invalid.
fn decoded_base64_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    if !body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'))
    {
        return None;
    }
    if body.len() % 4 == 1 {
        return None;
    }
    Some(body.len() * 3 / 4)
}

// ---------------------------------------------------------------------------------------------
// DestinationRule
// ---------------------------------------------------------------------------------------------

impl Ctx<'_> {
    fn destination_rule(&mut self, dr: &DestinationRule) {
        self.check("spec.host", validate_wildcard_domain(&dr.host));
        if let Some(tp) = &dr.traffic_policy {
            self.traffic_policy("spec.trafficPolicy", tp);
        }
        let mut names = BTreeSet::new();
        for (i, s) in dr.subsets.iter().enumerate() {
            let p = format!("spec.subsets[{i}]");
            if !names.insert(s.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!("duplicate subset names: {}", s.name),
                );
            }
            self.check(&format!("{p}.name"), validate_subset_name(&s.name));
            self.labels(&format!("{p}.labels"), &s.labels);
            if let Some(tp) = &s.traffic_policy {
                self.traffic_policy(&format!("{p}.trafficPolicy"), tp);
            }
        }
        self.export_to(
            "spec.exportTo",
            &dr.export_to,
            false,
            dr.workload_selector.is_some(),
        );
        if let Some(sel) = &dr.workload_selector {
            self.type_selector("spec.workloadSelector", sel);
        }
    }

    fn traffic_policy(&mut self, p: &str, tp: &TrafficPolicy) {
        if tp.outlier_detection.is_none()
            && tp.connection_pool.is_none()
            && tp.load_balancer.is_none()
            && tp.tls.is_none()
            && tp.port_level_settings.is_empty()
            && tp.tunnel.is_none()
            && tp.proxy_protocol.is_none()
            && tp.retry_budget.is_none()
        {
            self.err(p, "traffic policy must have at least one field");
            return;
        }
        if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
            self.err(p, "tunnel and proxyProtocol must not be set together");
            return;
        }
        if let Some(o) = &tp.outlier_detection {
            self.outlier_detection(&format!("{p}.outlierDetection"), o);
        }
        if let Some(c) = &tp.connection_pool {
            self.connection_pool(&format!("{p}.connectionPool"), c);
        }
        if let Some(lb) = &tp.load_balancer {
            self.load_balancer(
                &format!("{p}.loadBalancer"),
                lb,
                tp.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &tp.tls {
            self.client_tls(&format!("{p}.tls"), t);
        }
        if tp.port_level_settings.len() > 4096 {
            self.err(
                format!("{p}.portLevelSettings"),
                "at most 4096 port level settings are allowed",
            );
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            self.port_traffic_policy(&format!("{p}.portLevelSettings[{i}]"), pl);
        }
        if let Some(t) = &tp.tunnel {
            self.tunnel(&format!("{p}.tunnel"), t);
        }
        if let Some(rb) = &tp.retry_budget {
            let f = format!("{p}.retryBudget");
            if let Some(pc) = rb.percent
                && !(0.0..=100.0).contains(&pc)
            {
                self.err(
                    format!("{f}.percent"),
                    format!("percent {pc} must be between 0 and 100"),
                );
            }
            self.duration(
                &format!("{f}.budgetInterval"),
                rb.budget_interval.as_ref(),
                Dur::Any,
            );
        }
    }

    fn port_traffic_policy(&mut self, p: &str, pl: &PortTrafficPolicy) {
        // The CRD allows any number here; istiod checks only that a port is given.
        if pl.port.is_none() {
            self.err(
                format!("{p}.port"),
                "port level traffic policy must have a port",
            );
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            self.err(p, "port traffic policy must have at least one field");
            return;
        }
        if let Some(o) = &pl.outlier_detection {
            self.outlier_detection(&format!("{p}.outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            self.connection_pool(&format!("{p}.connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            self.load_balancer(
                &format!("{p}.loadBalancer"),
                lb,
                pl.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &pl.tls {
            self.client_tls(&format!("{p}.tls"), t);
        }
    }

    fn tunnel(&mut self, p: &str, t: &TunnelSettings) {
        if let Some(proto) = t.protocol.as_deref().filter(|s| !s.is_empty())
            && proto != "CONNECT"
            && proto != "POST"
        {
            self.err(
                format!("{p}.protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if let (Err(fqdn), false) = (validate_fqdn(&t.target_host), is_ip(&t.target_host)) {
            self.err(
                format!("{p}.targetHost"),
                format!("tunnel target host must be a valid FQDN or IP address: {fqdn}"),
            );
        }
        if let Err(e) = validate_port(t.target_port.into()) {
            self.err(
                format!("{p}.targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }

    fn outlier_detection(&mut self, p: &str, o: &OutlierDetection) {
        self.duration(
            &format!("{p}.baseEjectionTime"),
            o.base_ejection_time.as_ref(),
            Dur::Istio,
        );
        if o.consecutive_errors != 0 {
            self.warn(
                format!("{p}.consecutiveErrors"),
                "outlier detection consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            );
        }
        if !o.split_external_local_origin_errors
            && o.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            self.err(
                format!("{p}.consecutiveLocalOriginFailures"),
                "outlier detection consecutiveLocalOriginFailures is specified, but splitExternalLocalOriginErrors is false",
            );
        }
        self.duration(&format!("{p}.interval"), o.interval.as_ref(), Dur::Istio);
        for (what, v) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if !(0..=100).contains(&v) {
                self.err(
                    format!("{p}.{what}"),
                    format!("percentage {v} is not in range 0..100"),
                );
            }
        }
        for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(c) {
                self.err(
                    format!("{p}.outlierDetectionHttpErrorCodes[{i}]"),
                    format!("HTTP status code {c} must be between 100 and 599"),
                );
            }
        }
    }

    fn connection_pool(&mut self, p: &str, c: &ConnectionPoolSettings) {
        if c.http.is_none() && c.tcp.is_none() {
            self.err(p, "connection pool must have at least one field");
            return;
        }
        if let Some(h) = &c.http {
            let hp = format!("{p}.http");
            for (what, v) in [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ] {
                if v < 0 {
                    self.err(
                        format!("{hp}.{what}"),
                        format!("{what} must be non-negative"),
                    );
                }
            }
            self.duration(
                &format!("{hp}.idleTimeout"),
                h.idle_timeout.as_ref(),
                Dur::Istio,
            );
            if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
                self.err(
                    format!("{hp}.useClientProtocol"),
                    "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(ka) = &h.http2_keep_alive {
                let kp = format!("{hp}.http2KeepAlive");
                for (what, v) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                    match v {
                        None => self.err(
                            format!("{kp}.{what}"),
                            format!("http2 keepalive {what} is required"),
                        ),
                        Some(_) => {
                            self.duration(&format!("{kp}.{what}"), v.as_ref(), Dur::Istio);
                        }
                    }
                }
            }
        }
        if let Some(t) = &c.tcp {
            let tp = format!("{p}.tcp");
            if t.max_connections < 0 {
                self.err(
                    format!("{tp}.maxConnections"),
                    "maxConnections must be non-negative",
                );
            }
            self.duration(
                &format!("{tp}.connectTimeout"),
                t.connect_timeout.as_ref(),
                Dur::Istio,
            );
            self.duration(
                &format!("{tp}.maxConnectionDuration"),
                t.max_connection_duration.as_ref(),
                Dur::Istio,
            );
            // 0s disables the idle timeout.
            let f = format!("{tp}.idleTimeout");
            if let Some(d) = self.duration(&f, t.idle_timeout.as_ref(), Dur::Any)
                && d.as_millis() != 0
            {
                self.duration(&f, t.idle_timeout.as_ref(), Dur::Istio);
            }
            if let Some(ka) = &t.tcp_keepalive {
                let kp = format!("{tp}.tcpKeepalive");
                self.duration(&format!("{kp}.time"), ka.time.as_ref(), Dur::Istio);
                self.duration(&format!("{kp}.interval"), ka.interval.as_ref(), Dur::Istio);
            }
        }
    }

    fn load_balancer(&mut self, p: &str, lb: &LoadBalancerSettings, has_outlier: bool) {
        if let Some(LbPolicy::ConsistentHash(ch)) = &lb.lb_policy {
            let cp = format!("{p}.consistentHash");
            if let Some(HashKey::HttpCookie(c)) = &ch.hash_key {
                let kp = format!("{cp}.httpCookie");
                if c.name.is_empty() {
                    self.err(format!("{kp}.name"), "name required for httpCookie");
                }
                self.duration(&format!("{kp}.ttl"), c.ttl.as_ref(), Dur::Any);
                let mut names = BTreeSet::new();
                for (i, a) in c.attributes.iter().enumerate() {
                    let f = format!("{kp}.attributes[{i}].name");
                    if a.name.is_empty() {
                        self.err(f, "cookie attribute name cannot be empty");
                    } else if !names.insert(a.name.as_str()) {
                        self.err(f, format!("duplicate cookie attribute name: {}", a.name));
                    }
                }
            }
            if ch.minimum_ring_size.unwrap_or(0) != 0 {
                self.warn(
                    format!("{cp}.minimumRingSize"),
                    "consistent hash minimumRingSize is deprecated, use ringHash.minimumRingSize instead",
                );
                if ch.hash_algorithm.is_some() {
                    self.err(
                        &cp,
                        "only one of minimumRingSize or maglev/ringHash can be specified",
                    );
                }
            }
            if let Some(HashAlgorithm::Maglev(m)) = &ch.hash_algorithm {
                let f = format!("{cp}.maglev.tableSize");
                let size = m.table_size.unwrap_or(0);
                if size == 0 {
                    self.err(&f, "tableSize must be set for maglev");
                }
                if size >= 5_000_011 {
                    self.err(&f, "tableSize must be less than 5000011 for maglev");
                }
                if !is_prime(size) {
                    self.err(&f, "tableSize must be a prime number for maglev");
                }
            }
        }
        if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
            self.err(
                p,
                "only one of localityLbSetting and zoneAwareLbSetting can be set",
            );
        }
        if let Some(l) = &lb.locality_lb_setting {
            self.locality_lb(&format!("{p}.localityLbSetting"), l, has_outlier);
        }
        if let Some(z) = &lb.zone_aware_lb_setting {
            self.zone_aware_lb(&format!("{p}.zoneAwareLbSetting"), z, has_outlier);
        }
        self.duration(
            &format!("{p}.warmupDurationSecs"),
            lb.warmup_duration_secs.as_ref(),
            Dur::AtLeast1ms,
        );
        if let Some(w) = &lb.warmup {
            let wp = format!("{p}.warmup");
            match &w.duration {
                None => self.err(format!("{wp}.duration"), "duration is required"),
                Some(_) => {
                    self.duration(&format!("{wp}.duration"), w.duration.as_ref(), Dur::Istio);
                }
            }
            if let Some(mp) = w.minimum_percent
                && !(0.0..=100.0).contains(&mp)
            {
                self.err(
                    format!("{wp}.minimumPercent"),
                    format!("minimumPercent {mp} must be between 0 and 100"),
                );
            }
            if let Some(a) = w.aggression
                && (a <= 0.0 || a.is_nan())
            {
                self.err(
                    format!("{wp}.aggression"),
                    format!("aggression {a} must be greater than 0"),
                );
            }
        }
    }

    fn locality_lb(&mut self, p: &str, l: &LocalityLoadBalancerSetting, has_outlier: bool) {
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            self.err(
                p,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
            return;
        }
        if !l.failover.is_empty()
            && let Some(t) = l
                .failover_priority
                .iter()
                .find(|t| TOPOLOGY_LABELS.contains(&t.as_str()))
        {
            self.err(
                    format!("{p}.failoverPriority"),
                    format!("can not simultaneously set 'failover' and topology label '{t}' in 'failoverPriority'"),
                );
            return;
        }
        let mut sources = Vec::new();
        for (i, d) in l.distribute.iter().enumerate() {
            let dp = format!("{p}.distribute[{i}]");
            sources.push(d.from.as_str());
            let mut total: u64 = 0;
            for w in d.to.values() {
                if *w == 0 || *w > 100 {
                    self.err(
                        format!("{dp}.to"),
                        "locality weight must be in range [1, 100]",
                    );
                    return;
                }
                total += u64::from(*w);
            }
            if total != 100 {
                self.err(
                    format!("{dp}.to"),
                    format!("total locality weight {total} != 100"),
                );
                return;
            }
            let dests: Vec<&str> = d.to.keys().map(String::as_str).collect();
            self.check(&format!("{dp}.to"), validate_localities(&dests));
        }
        self.check(&format!("{p}.distribute"), validate_localities(&sources));
        if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
            self.warn(p, "outlier detection policy must be provided for failover");
        }
        for (i, f) in l.failover.iter().enumerate() {
            let fp = format!("{p}.failover[{i}]");
            if f.from == f.to {
                self.err(
                    &fp,
                    "locality lb failover settings must specify different regions",
                );
            }
            if f.from.contains('/') || f.to.contains('/') {
                self.err(&fp, "locality lb failover only specify region");
            }
            if f.from.contains('*') || f.to.contains('*') {
                self.err(
                    &fp,
                    "locality lb failover region should not contain '*' wildcard",
                );
            }
        }
    }

    fn zone_aware_lb(&mut self, p: &str, z: &ZoneAwareLoadBalancerSetting, has_outlier: bool) {
        for (i, t) in z.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&t.as_str()) {
                self.err(
                    format!("{p}.failoverPriority[{i}]"),
                    format!("failoverPriority for zone aware lb must not use topology label '{t}'; region- and zone-level routing are handled automatically"),
                );
            }
        }
        if (!z.failover.is_empty() || !z.failover_priority.is_empty()) && !has_outlier {
            self.warn(p, "outlier detection policy must be provided for failover");
        }
        for (i, f) in z.failover.iter().enumerate() {
            let fp = format!("{p}.failover[{i}]");
            if f.from == f.to {
                self.err(
                    &fp,
                    "zone aware lb failover settings must specify different regions",
                );
            }
            if f.from.contains('/') || f.to.contains('/') {
                self.err(
                    &fp,
                    "zone aware lb failover only specifies region; zone and subzone failover are handled automatically",
                );
            }
            if f.from.contains('*') || f.to.contains('*') {
                self.err(
                    &fp,
                    "zone aware lb failover region should not contain '*' wildcard",
                );
            }
        }
        if z.min_cluster_size == Some(0) {
            self.err(
                format!("{p}.minClusterSize"),
                "minClusterSize must be at least 1",
            );
        }
    }

    fn client_tls(&mut self, p: &str, t: &ClientTlsSettings) {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        let credential = t.credential_name.as_deref().unwrap_or_default();
        if let Some(rest) = credential.strip_prefix("configmap://") {
            let ns = self.namespace().to_string();
            let (cm_ns, name) = match rest.split_once('/') {
                Some((n, name)) => (n, name),
                None => (ns.as_str(), rest),
            };
            if name.is_empty() || name.contains('/') {
                self.err(
                    format!("{p}.credentialName"),
                    format!("invalid configmap:// credentialName {credential:?}"),
                );
            } else if cm_ns != ns {
                self.err(
                    format!("{p}.credentialName"),
                    format!("invalid configmap:// credentialName: namespace must match the configuration namespace {ns:?}"),
                );
            }
        }
        let mode = t.mode;
        if t.insecure_skip_verify == Some(true) {
            if mode == Some(ClientTlsMode::Simple)
                && (set(&t.ca_certificates)
                    || set(&t.credential_name)
                    || !t.subject_alt_names.is_empty())
            {
                self.err(
                    p,
                    "cannot specify caCertificates or credentialName or subjectAltNames when insecureSkipVerify is true",
                );
            }
            if mode == Some(ClientTlsMode::Mutual)
                && (set(&t.ca_certificates) || !t.subject_alt_names.is_empty())
            {
                self.err(
                    p,
                    "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true",
                );
            }
        }
        let simple_or_mutual = matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
        if simple_or_mutual && set(&t.credential_name) {
            if set(&t.client_certificate)
                || set(&t.ca_certificates)
                || set(&t.private_key)
                || set(&t.ca_crl)
            {
                self.err(
                    p,
                    "cannot specify client certificates or CA certificate or CA CRL if credentialName is set",
                );
            }
            return;
        }
        if mode == Some(ClientTlsMode::Mutual) {
            if !set(&t.client_certificate) {
                self.err(
                    format!("{p}.clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&t.private_key) {
                self.err(
                    format!("{p}.privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
    }
}

/// Localities `region[/zone[/subzone]]`, `*` only as the last character, none overlapping.
fn validate_localities(localities: &[&str]) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!(
                "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(format!(
                "locality {loc} overlap with previous specified ones"
            ));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {loc} must not contain empty region/zone/subzone info"
            ));
        }
        let overlap = || {
            Err(format!(
                "locality {loc} overlap with previous specified ones"
            ))
        };
        match parts.as_slice() {
            [region] => {
                if seen.contains_key(region) {
                    return overlap();
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return overlap();
                }
                zones.insert(zone, BTreeSet::from(["*"]));
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || subzones.contains(subzone) {
                    return overlap();
                }
                subzones.insert(subzone);
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry
// ---------------------------------------------------------------------------------------------

/// Where a workload entry appears, which decides the rules for its address and ports.
enum EntryUse<'a> {
    /// A WorkloadEntry resource: address may be an IP, a DNS name or a socket.
    Standalone,
    /// A STATIC ServiceEntry endpoint: an IP or a socket; ports must be service port names.
    Static(&'a BTreeSet<&'a str>),
    /// A DNS / DNS_ROUND_ROBIN ServiceEntry endpoint: an IP or a DNS name.
    Dns(&'a BTreeSet<&'a str>),
    /// Other ServiceEntry endpoints: only the CRD's rules.
    Other,
}

impl Ctx<'_> {
    fn service_entry(&mut self, se: &ServiceEntry) {
        self.workload_selector(
            "spec.workloadSelector",
            se.workload_selector.as_ref(),
            "services",
        );
        if se.workload_selector.is_some() && !se.endpoints.is_empty() {
            self.err(
                "spec",
                "only one of workloadSelector or endpoints can be set",
            );
        }
        if se.hosts.is_empty() {
            self.err("spec.hosts", "service entry must have at least one host");
        }
        if se.hosts.len() > 256 {
            self.err("spec.hosts", "at most 256 hosts are allowed");
        }
        let resolution = se.resolution.unwrap_or(Resolution::None);
        for (i, h) in se.hosts.iter().enumerate() {
            let f = format!("spec.hosts[{i}]");
            if h == "*" {
                self.err(f, "hostname cannot be wildcard");
                continue;
            }
            self.check(&f, validate_wildcard_domain(h));
            if resolution != Resolution::DynamicDns
                && let Err(e) = validate_partial_wildcard(h)
            {
                self.warn(f, e);
            }
        }

        let mut cidr = false;
        if se.addresses.len() > 256 {
            self.err("spec.addresses", "at most 256 addresses are allowed");
        }
        for (i, a) in se.addresses.iter().enumerate() {
            cidr |= a.contains('/');
            self.check(&format!("spec.addresses[{i}]"), validate_ip_subnet(a));
        }
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            self.err(
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }

        // istiod allocates addresses itself (PILOT_ENABLE_IP_AUTOALLOCATE, on by default) unless
        // resolution is NONE or the ServiceEntry opts out with a label.
        let auto_allocate = resolution != Resolution::None
            && !self
                .resource
                .meta
                .labels
                .get("networking.istio.io/enable-autoallocate-ip")
                .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let mut port_names = BTreeSet::new();
        let mut port_numbers = BTreeSet::new();
        if se.ports.len() > 256 {
            self.err("spec.ports", "at most 256 ports are allowed");
        }
        for (i, port) in se.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            if !port_names.insert(port.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!(
                        "Duplicate value: service entry port name {:?} already defined",
                        port.name
                    ),
                );
            }
            if !port_numbers.insert(port.number) {
                self.err(
                    format!("{p}.number"),
                    format!(
                        "port number cannot be duplicated: {} already defined",
                        port.number
                    ),
                );
            }
            if let Some(tp) = port.target_port
                && let Err(e) = validate_port(tp.into())
            {
                self.err(
                    format!("{p}.targetPort"),
                    format!("port must be between 1-65535: {e}"),
                );
            }
            let proto = port.protocol.as_deref().unwrap_or_default();
            if se.addresses.is_empty() && !auto_allocate && (proto.is_empty() || proto == "TCP") {
                self.warn(
                    &p,
                    "addresses are required for ports serving TCP (or unset) protocol when IP auto-allocation is not enabled",
                );
            }
            self.check(&format!("{p}.name"), validate_port_name(&port.name));
            self.check(&format!("{p}.protocol"), validate_protocol(proto));
            if let Err(e) = validate_port(port.number.into()) {
                self.err(
                    format!("{p}.number"),
                    format!("port must be between 1-65535: {e}"),
                );
            }
        }

        if se.endpoints.len() > 4096 {
            self.err("spec.endpoints", "at most 4096 endpoints are allowed");
        }
        match resolution {
            Resolution::None | Resolution::DynamicDns => {
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(&format!("spec.endpoints[{i}]"), e, EntryUse::Other);
                }
            }
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {}
        }
        match resolution {
            Resolution::None => {
                if !se.endpoints.is_empty() {
                    self.err(
                        "spec.endpoints",
                        "NONE mode cannot set endpoints (no endpoints should be provided for resolution type NONE)",
                    );
                }
                if se.workload_selector.is_some() {
                    self.warn(
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Static => {
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        EntryUse::Static(&port_names),
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if se.endpoints.is_empty()
                    && let Some((i, e)) = se
                        .hosts
                        .iter()
                        .enumerate()
                        .find_map(|(i, h)| validate_fqdn(h).err().map(|e| (i, e)))
                {
                    self.err(
                            format!("spec.hosts[{i}]"),
                            format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution:?}: {e}"),
                        );
                }
                if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                    self.err(
                        "spec.endpoints",
                        "DNS_ROUND_ROBIN mode cannot have multiple endpoints (there must only be 0 or 1)",
                    );
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        EntryUse::Dns(&port_names),
                    );
                }
                if !se.addresses.is_empty()
                    && se.hosts.len() > 1
                    && se
                        .ports
                        .iter()
                        .any(|p| protocol_is_tcp(p.protocol.as_deref().unwrap_or_default()))
                {
                    self.warn(
                        "spec.hosts",
                        "service entry can not have more than one host specified simultaneously with address and tcp port",
                    );
                }
            }
            Resolution::DynamicDns => {
                for (i, h) in se.hosts.iter().enumerate() {
                    if !host_is_wildcard(h) {
                        self.err(
                            format!("spec.hosts[{i}]"),
                            "host must be wildcarded for resolution mode DYNAMIC_DNS",
                        );
                    }
                }
                if !se.addresses.is_empty() {
                    self.err(
                        "spec.addresses",
                        "addresses cannot be set for resolution type DYNAMIC_DNS; route domains are generated from the hosts",
                    );
                }
                if !se.endpoints.is_empty() {
                    self.err(
                        "spec.endpoints",
                        "endpoints cannot be set for resolution type DYNAMIC_DNS; the destination address is determined from the hosts",
                    );
                }
                for (i, p) in se.ports.iter().enumerate() {
                    let proto = parse_protocol(p.protocol.as_deref().unwrap_or_default());
                    if !matches!(proto, Some("HTTP" | "TLS" | "GRPC" | "HTTP2")) {
                        self.err(
                            format!("spec.ports[{i}].protocol"),
                            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS",
                        );
                    }
                }
                if se.location == Some(Location::MeshInternal) && self.uses_waypoint() {
                    self.err(
                        "spec.location",
                        "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when using waypoints",
                    );
                }
            }
        }
        if resolution != Resolution::None
            && se.hosts.len() > 1
            && let Some(i) = se.ports.iter().position(|p| {
                let proto = p.protocol.as_deref().unwrap_or_default();
                !protocol_is_http(proto) && !protocol_is_tls(proto)
            })
        {
            self.err(
                format!("spec.ports[{i}]"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
        self.export_to("spec.exportTo", &se.export_to, true, false);
    }

    fn uses_waypoint(&self) -> bool {
        self.resource
            .meta
            .labels
            .get("istio.io/use-waypoint")
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"))
    }

    fn workload_entry(&mut self, we: &WorkloadEntry) {
        self.endpoint("spec", we, EntryUse::Standalone);
    }

    fn endpoint(&mut self, p: &str, we: &WorkloadEntry, usage: EntryUse<'_>) {
        let addr = we.address.as_str();
        let network = we.network.as_deref().unwrap_or_default();
        let af = format!("{p}.address");
        if addr.len() > 256 {
            self.err(&af, "address may not exceed 256 characters");
        }
        // The CRD's rules, whatever the use.
        let mut address_ok = true;
        let unix = addr.starts_with(UNIX_PREFIX);
        if addr.is_empty() && network.is_empty() {
            self.err(&af, "Address is required (or a network)");
            address_ok = false;
        }
        if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
            if !(path.starts_with('/') || path.starts_with('@')) {
                self.err(&af, "UDS must be an absolute path or abstract socket");
                address_ok = false;
            } else if path.ends_with('/') {
                self.err(&af, "UDS may not be a dir");
                address_ok = false;
            }
            if !we.ports.is_empty() {
                self.err(
                    format!("{p}.ports"),
                    format!(
                        "UDS may not include ports: unix endpoint {addr} must not include ports"
                    ),
                );
            }
        }
        // istiod's rules, which depend on the use.
        if address_ok {
            match usage {
                EntryUse::Standalone | EntryUse::Static(_) => {
                    if addr.is_empty() {
                        self.warn(&af, format!("address is unset with network {network:?}"));
                    } else if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
                        self.check(&af, validate_unix_address(path));
                    } else if !is_ip(addr) {
                        if matches!(usage, EntryUse::Static(_)) {
                            self.err(
                                &af,
                                format!("endpoint address {addr:?} is not a valid IP address"),
                            );
                        } else if validate_fqdn(addr).is_err() {
                            self.err(
                                &af,
                                format!(
                                    "endpoint address {addr:?} is not a valid FQDN or an IP address"
                                ),
                            );
                        }
                    }
                }
                EntryUse::Dns(_) => {
                    if !is_ip(addr) && validate_fqdn(addr).is_err() {
                        self.err(
                            &af,
                            format!(
                                "endpoint address {addr:?} is not a valid FQDN or an IP address"
                            ),
                        );
                    }
                }
                EntryUse::Other => {}
            }
        }
        if we.ports.len() > 128 {
            self.err(format!("{p}.ports"), "at most 128 ports are allowed");
        }
        let service_ports = match usage {
            EntryUse::Static(s) | EntryUse::Dns(s) => Some(s),
            _ => None,
        };
        for (name, port) in &we.ports {
            let f = format!("{p}.ports.{name}");
            if let Some(sp) = service_ports
                && !sp.contains(name.as_str())
            {
                self.err(
                    &f,
                    format!("endpoint port {name:?} is not defined by the service entry"),
                );
            }
            if !is_dns1123_label(name) || name.len() >= 63 {
                self.err(
                    &f,
                    format!("Invalid value: port name {name:?} must be valid (a DNS-1123 label shorter than 63 characters)"),
                );
            }
            if let Err(e) = validate_port((*port).into()) {
                self.err(&f, format!("port must be between 1-65535: {e}"));
            }
        }
        if !matches!(usage, EntryUse::Other) {
            self.labels(&format!("{p}.labels"), &we.labels);
        }
        if we.labels.len() > 256 {
            self.err(format!("{p}.labels"), "at most 256 labels are allowed");
        }
        if unix
            && let EntryUse::Static(sp) = usage
            && sp.len() != 1
        {
            self.err(&af, "exactly 1 service port required for unix endpoints");
        }
        if let Some(sa) = &we.service_account
            && sa.len() > 253
        {
            self.err(
                format!("{p}.serviceAccount"),
                "serviceAccount may not exceed 253 characters",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------------------------

impl Ctx<'_> {
    fn sidecar(&mut self, sc: &Sidecar) {
        self.workload_selector(
            "spec.workloadSelector",
            sc.workload_selector.as_ref(),
            "services",
        );
        if sc.egress.is_empty()
            && sc.ingress.is_empty()
            && sc.outbound_traffic_policy.is_none()
            && sc.inbound_connection_pool.is_none()
        {
            self.err("spec", "sidecar: empty configuration provided");
            return;
        }

        let mut ports = BTreeSet::new();
        for (i, ing) in sc.ingress.iter().enumerate() {
            let p = format!("spec.ingress[{i}]");
            let port = &ing.port;
            if port.target_port.unwrap_or(0) > 0 {
                self.err(
                    format!("{p}.port.targetPort"),
                    "targetPort has no impact on Sidecars",
                );
            }
            self.sidecar_port(&format!("{p}.port"), port);
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
            if let Some(b) = ing.bind.as_deref().filter(|b| !b.is_empty()) {
                self.check(&format!("{p}.bind"), validate_ip(b));
            }
            if !ports.insert(port.number) {
                self.err(
                    format!("{p}.port.number"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
            if let Some(de) = ing.default_endpoint.as_deref().filter(|d| !d.is_empty()) {
                self.default_endpoint(&format!("{p}.defaultEndpoint"), de);
            }
            if let Some(tls) = &ing.tls {
                let tp = format!("{p}.tls");
                if !tls.subject_alt_names.is_empty() {
                    self.err(
                        format!("{tp}.subjectAltNames"),
                        "sidecar: subjectAltNames is not supported in ingress tls",
                    );
                }
                if tls.https_redirect {
                    self.err(
                        format!("{tp}.httpsRedirect"),
                        "sidecar: httpsRedirect is not supported",
                    );
                }
                if tls
                    .credential_name
                    .as_deref()
                    .is_some_and(|c| !c.is_empty())
                {
                    self.err(
                        format!("{tp}.credentialName"),
                        "sidecar: credentialName is not currently supported",
                    );
                }
                if !tls.credential_names.is_empty() {
                    self.err(
                        format!("{tp}.credentialNames"),
                        "sidecar: credentialNames is not currently supported",
                    );
                }
                if !tls.tls_certificates.is_empty() {
                    self.err(
                        format!("{tp}.tlsCertificates"),
                        "sidecar: tlsCertificates is not currently supported",
                    );
                }
                if let Some(m @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) =
                    tls.mode
                {
                    self.err(
                        format!("{tp}.mode"),
                        format!("cannot set mode to {m:?} in sidecar ingress tls"),
                    );
                }
                if !protocol_is_tls(port.protocol.as_deref().unwrap_or_default()) {
                    self.err(
                        &tp,
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
                self.server_tls(&tp, tls);
            }
            if let Some(cp) = &ing.connection_pool {
                self.connection_pool(&format!("{p}.connectionPool"), cp);
                if cp.http.is_some()
                    && !protocol_is_http(port.protocol.as_deref().unwrap_or_default())
                {
                    self.warn(
                        format!("{p}.connectionPool.http"),
                        format!(
                            "sidecar: HTTP connection pool settings are configured for port {} but its protocol is not HTTP ({}); only TCP settings will apply",
                            port.number,
                            port.protocol.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
        }
        if let Some(cp) = &sc.inbound_connection_pool {
            self.connection_pool("spec.inboundConnectionPool", cp);
        }

        let mut ports = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        let mut catch_all = false;
        let ns = self.namespace().to_string();
        for (i, eg) in sc.egress.iter().enumerate() {
            let p = format!("spec.egress[{i}]");
            match &eg.port {
                None => {
                    if catch_all {
                        self.err(
                            &p,
                            "sidecar: egress can have only one listener with empty port",
                        );
                        continue;
                    }
                    if i == sc.egress.len() - 1 {
                        catch_all = true;
                    } else {
                        self.err(
                            &p,
                            "sidecar: the egress listener with empty port should be the last listener in the list",
                        );
                    }
                }
                Some(port) => {
                    if port.target_port.unwrap_or(0) > 0 {
                        self.err(
                            format!("{p}.port.targetPort"),
                            "targetPort has no impact on Sidecars",
                        );
                    }
                    let bind = eg.bind.as_deref().unwrap_or_default();
                    self.egress_port_bind_capture(&p, port, bind, eg.capture_mode);
                    if port.number == 0 {
                        if !sockets.insert(bind.to_string()) {
                            self.err(
                                format!("{p}.bind"),
                                "sidecar: unix domain socket values for listeners must be unique",
                            );
                        }
                    } else if !ports.insert(port.number) {
                        self.err(
                            format!("{p}.port.number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
            if eg.hosts.is_empty() {
                self.err(
                    format!("{p}.hosts"),
                    "sidecar: egress listener must contain at least one host",
                );
                continue;
            }
            let mut by_ns: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
            for (j, h) in eg.hosts.iter().enumerate() {
                let f = format!("{p}.hosts[{j}]");
                if let Some((hns, svc)) = h.split_once('/')
                    && !hns.starts_with('~')
                {
                    let hns = if hns == "." {
                        ns.clone()
                    } else {
                        hns.to_string()
                    };
                    let seen = by_ns.entry(hns).or_default();
                    let dup = if svc == "*" {
                        !seen.is_empty()
                    } else {
                        seen.contains(svc) || seen.contains("*")
                    };
                    if dup {
                        self.warn(&f, format!("duplicated egress host: {h}"));
                    }
                    seen.insert(svc);
                }
                self.check(&f, validate_namespace_slash_host(h, false));
            }
            if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
                self.warn(
                    format!("{p}.hosts"),
                    "`*/*` host select all resources, no other hosts can be added",
                );
            }
        }

        if let Some(otp) = &sc.outbound_traffic_policy
            && let Some(ep) = &otp.egress_proxy
        {
            let p = "spec.outboundTrafficPolicy.egressProxy";
            if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
                self.err(
                        p,
                        "sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode",
                    );
                return;
            }
            self.check(&format!("{p}.host"), validate_fqdn(&ep.host));
            if ep.port.is_none() {
                self.err(format!("{p}.port"), "sidecar: egressProxy port must be set");
                return;
            }
            self.destination(p, ep);
        }
    }

    fn sidecar_port(&mut self, p: &str, port: &SidecarPort) {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            self.check(&format!("{p}.name"), validate_port_name(name));
        }
        self.check(
            &format!("{p}.protocol"),
            validate_protocol(port.protocol.as_deref().unwrap_or_default()),
        );
    }

    fn egress_port_bind_capture(
        &mut self,
        p: &str,
        port: &SidecarPort,
        bind: &str,
        capture: Option<CaptureMode>,
    ) {
        self.sidecar_port(&format!("{p}.port"), port);
        if port.number == 0 {
            match bind.strip_prefix(UNIX_PREFIX) {
                None => self.err(
                    format!("{p}.bind"),
                    "sidecar: ports with 0 value must have a unix domain socket bind address",
                ),
                Some(path) => self.check(&format!("{p}.bind"), validate_unix_address(path)),
            }
            if !matches!(
                capture,
                None | Some(CaptureMode::Default | CaptureMode::None)
            ) {
                self.err(
                    format!("{p}.captureMode"),
                    "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                );
            }
        } else {
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
            if !bind.is_empty() {
                self.check(&format!("{p}.bind"), validate_ip(bind));
            }
        }
    }

    /// `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`, `[::]:<port>`, `:<port>` or
    /// `unix://<path>`.
    fn default_endpoint(&mut self, f: &str, de: &str) {
        if let Some(path) = de.strip_prefix(UNIX_PREFIX) {
            self.check(f, validate_unix_address(path));
            return;
        }
        let Some((host, port)) = split_host_port(de) else {
            self.err(
                f,
                format!("defaultEndpoint {de:?} is not of the form host:port"),
            );
            return;
        };
        if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
            self.err(
                f,
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://<path> or unset",
            );
        }
        match port.parse::<i64>() {
            Ok(n) => self.check(f, validate_port(n)),
            Err(_) => self.err(
                f,
                format!("sidecar: defaultEndpoint port ({port}) is not a number"),
            ),
        }
    }
}

/// Splits `host:port` / `[v6]:port` as Go's `net.SplitHostPort` does.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// `namespace/dnsName` hosts of Sidecar egress listeners and Gateway servers (gateways also
/// accept a bare `dnsName`, or an IP).
fn validate_namespace_slash_host(host: &str, gateway: bool) -> Result<(), String> {
    let Some((ns, name)) = host.split_once('/') else {
        if gateway {
            return validate_host_part(host, true);
        }
        return Err(format!("host {host:?} must be of form namespace/dnsName"));
    };
    let mut errs = Vec::new();
    if ns.is_empty() || name.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".to_string());
    }
    if gateway {
        if ns != "*" && ns != "." && !is_dns1123_label(ns) {
            errs.push(format!("invalid namespace value {ns:?} in gateway"));
        }
    } else {
        let n = ns.strip_prefix('~').unwrap_or(ns);
        if !n.is_empty() && n != "*" && n != "." && !is_dns1123_label(n) {
            errs.push(format!("invalid namespace value {ns:?} in sidecar"));
        }
    }
    if let Err(e) = validate_host_part(name, gateway) {
        errs.push(e);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn validate_host_part(host: &str, gateway: bool) -> Result<(), String> {
    let mut errs = Vec::new();
    if host != "*" && !host.contains('.') {
        errs.push(format!("short names (non FQDN) are not allowed: {host:?}"));
    }
    if let Err(e) = validate_wildcard_domain(host)
        && (!gateway || !is_ip(host))
    {
        errs.push(e);
    }
    if let Err(e) = validate_partial_wildcard(host) {
        errs.push(e);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

impl Ctx<'_> {
    fn gateway(&mut self, gw: &Gateway) {
        let name = &self.resource.meta.name;
        if !is_dns1123_label(name) {
            self.err(
                "metadata.name",
                format!("invalid gateway name {name:?}: must be a DNS-1123 label (no dots)"),
            );
        }
        if gw.servers.is_empty() {
            self.err("spec.servers", "gateway must have at least one server");
        }
        let mut names = BTreeSet::new();
        for (i, s) in gw.servers.iter().enumerate() {
            let p = format!("spec.servers[{i}]");
            self.server(&p, s);
            if !names.insert(s.port.name.as_str()) {
                self.err(
                    format!("{p}.port.name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        s.port.name
                    ),
                );
            }
            if !protocol_is_http(&s.port.protocol)
                && s.tls.as_ref().is_some_and(|t| t.https_redirect)
            {
                self.warn(
                    format!("{p}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }

    fn server(&mut self, p: &str, s: &Server) {
        if s.hosts.is_empty() {
            self.err(
                format!("{p}.hosts"),
                "server config must contain at least one host",
            );
        }
        for (i, h) in s.hosts.iter().enumerate() {
            self.check(
                &format!("{p}.hosts[{i}]"),
                validate_namespace_slash_host(h, true),
            );
        }
        let port = &s.port;
        let bind = s.bind.as_deref().unwrap_or_default();
        let pp = format!("{p}.port");
        let mut port_ok = true;
        if parse_protocol(&port.protocol).is_none() {
            self.err(
                format!("{pp}.protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, MONGO, REDIS, MYSQL, TCP",
                    port.protocol
                ),
            );
            port_ok = false;
        }
        if (port.number > 0 || !bind.starts_with(UNIX_PREFIX))
            && let Err(e) = validate_port(port.number.into())
        {
            self.err(format!("{pp}.number"), e);
            port_ok = false;
        }
        if port.target_port.unwrap_or(0) > 0 {
            self.err(
                format!("{pp}.targetPort"),
                "targetPort has no impact on Gateways",
            );
            port_ok = false;
        }
        if port.name.is_empty() {
            self.err(format!("{pp}.name"), "port name must be set");
            port_ok = false;
        }
        if let Some(path) = bind.strip_prefix(UNIX_PREFIX) {
            self.check(&format!("{p}.bind"), validate_unix_address(path));
            if port.number != 0 {
                self.err(
                    format!("{pp}.number"),
                    "port number must be 0 for unix domain socket",
                );
            }
        } else if !bind.is_empty() {
            self.check(&format!("{p}.bind"), validate_ip(bind));
        }
        if let Some(tls) = &s.tls {
            self.server_tls(&format!("{p}.tls"), tls);
        }
        if port_ok {
            let is_tls = protocol_is_tls(&port.protocol);
            match &s.tls {
                None if is_tls => self.err(
                    format!("{p}.tls"),
                    "server must have TLS settings for HTTPS/TLS protocols",
                ),
                Some(tls) if !is_tls => {
                    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
                    if !protocol_is_http(&port.protocol) {
                        self.err(
                            format!("{p}.tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    } else if !is_passthrough(tls.mode)
                        || set(&tls.ca_certificates)
                        || set(&tls.private_key)
                        || set(&tls.server_certificate)
                    {
                        // Only `httpsRedirect` makes sense on a plain-text HTTP server.
                        self.err(
                            format!("{p}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                }
                _ => {}
            }
        }
    }

    fn server_tls(&mut self, p: &str, tls: &ServerTlsSettings) {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        if matches!(
            tls.min_protocol_version,
            Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
        ) && tls.cipher_suites.is_empty()
        {
            self.warn(
                format!("{p}.minProtocolVersion"),
                "TLS versions below TLSV1_2 require setting compatible cipherSuites, as the defaults no longer include them",
            );
        }
        let mut valid = BTreeSet::new();
        let mut invalid = BTreeSet::new();
        let mut dups = BTreeSet::new();
        for cs in &tls.cipher_suites {
            if !is_valid_cipher_suite(cs) {
                invalid.insert(cs.as_str());
            } else if !valid.insert(cs.as_str()) {
                dups.insert(cs.as_str());
            }
        }
        if !invalid.is_empty() {
            self.warn(
                format!("{p}.cipherSuites"),
                format!("ignoring invalid cipher suites: {invalid:?}"),
            );
        }
        if !dups.is_empty() {
            self.warn(
                format!("{p}.cipherSuites"),
                format!("ignoring duplicate cipher suites: {dups:?}"),
            );
        }
        for (what, n) in [
            ("credentialNames", tls.credential_names.len()),
            ("tlsCertificates", tls.tls_certificates.len()),
        ] {
            if n > 2 {
                self.err(
                    format!("{p}.{what}"),
                    format!("{what} may have at most 2 items"),
                );
            }
        }
        let mode = tls.mode;
        if mode == Some(ServerTlsMode::IstioMutual) {
            for (what, bad) in [
                ("serverCertificate", set(&tls.server_certificate)),
                ("privateKey", set(&tls.private_key)),
                ("caCertificates", set(&tls.ca_certificates)),
                ("tlsCertificates", !tls.tls_certificates.is_empty()),
                ("credentialName", set(&tls.credential_name)),
                ("credentialNames", !tls.credential_names.is_empty()),
            ] {
                if bad {
                    self.err(
                        format!("{p}.{what}"),
                        format!("ISTIO_MUTUAL TLS cannot have an associated {what}"),
                    );
                }
            }
            return;
        }
        if is_passthrough(mode)
            && (set(&tls.ca_crl)
                || set(&tls.server_certificate)
                || set(&tls.private_key)
                || set(&tls.ca_certificates)
                || !tls.tls_certificates.is_empty()
                || set(&tls.credential_name)
                || !tls.credential_names.is_empty())
        {
            self.warn(
                p,
                "PASSTHROUGH and AUTO_PASSTHROUGH modes do not use certificates, they will be ignored",
            );
        }
        let sources = [
            set(&tls.server_certificate) && set(&tls.private_key),
            set(&tls.credential_name),
            !tls.credential_names.is_empty(),
            !tls.tls_certificates.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources > 1 {
            self.err(
                p,
                "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified",
            );
        }
        let terminating = matches!(
            mode,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        );
        if terminating && (set(&tls.credential_name) || !tls.credential_names.is_empty()) {
            // Credentials come from a secret; file paths are not required.
            return;
        }
        if terminating {
            let mutual = mode != Some(ServerTlsMode::Simple);
            let what = if mutual { "MUTUAL TLS" } else { "SIMPLE TLS" };
            if mutual && !set(&tls.ca_certificates) {
                self.err(
                    format!("{p}.caCertificates"),
                    format!("{what} requires a client CA bundle"),
                );
            }
            if tls.tls_certificates.is_empty() {
                if !set(&tls.server_certificate) {
                    self.err(
                        format!("{p}.serverCertificate"),
                        format!("{what} requires a server certificate"),
                    );
                }
                if !set(&tls.private_key) {
                    self.err(
                        format!("{p}.privateKey"),
                        format!("{what} requires a private key"),
                    );
                }
            }
            for (i, c) in tls.tls_certificates.iter().enumerate() {
                if !set(&c.server_certificate) {
                    self.err(
                        format!("{p}.tlsCertificates[{i}].serverCertificate"),
                        format!("{what} requires a server certificate"),
                    );
                }
                if !set(&c.private_key) {
                    self.err(
                        format!("{p}.tlsCertificates[{i}].privateKey"),
                        format!("{what} requires a private key"),
                    );
                }
            }
        }
        if set(&tls.ca_crl) {
            if set(&tls.credential_name) {
                self.err(
                    format!("{p}.caCrl"),
                    "CRL is not supported with credentialName; it has to be part of the credential",
                );
            }
            if mode == Some(ServerTlsMode::Simple) {
                self.err(format!("{p}.caCrl"), "CRL is not supported with SIMPLE TLS");
            }
        }
    }
}

/// Server TLS modes that do not terminate TLS; an unset mode is `PASSTHROUGH` (the proto's
/// zero value).
fn is_passthrough(mode: Option<ServerTlsMode>) -> bool {
    matches!(
        mode,
        None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
    )
}

// ---------------------------------------------------------------------------------------------
// Kubernetes kinds
// ---------------------------------------------------------------------------------------------

impl Ctx<'_> {
    fn service(&mut self, s: &kube::ServiceSpec) {
        let many = s.ports.len() > 1;
        let mut names = BTreeSet::new();
        for (i, port) in s.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            self.check(&format!("{p}.port"), validate_port(port.port));
            let name = port.name.as_deref().filter(|n| !n.is_empty());
            if name.is_none() && many {
                self.err(
                    format!("{p}.name"),
                    "port name is required when a service has more than one port",
                );
            }
            if let Some(n) = name
                && !names.insert(n)
            {
                self.err(format!("{p}.name"), format!("duplicate port name {n:?}"));
            }
            if let Some(kube::IntOrString::Int(t)) = &port.target_port {
                self.check(&format!("{p}.targetPort"), validate_port(*t));
            }
        }
    }

    fn endpoint_slice(&mut self, es: &kube::EndpointSlice) {
        if let Some(t) = es.address_type.as_deref()
            && !matches!(t, "IPv4" | "IPv6" | "FQDN")
        {
            self.err(
                "addressType",
                format!("unsupported addressType {t:?} (IPv4, IPv6 or FQDN)"),
            );
        }
        for (i, port) in es.ports.iter().flatten().enumerate() {
            if let Some(n) = port.port {
                self.check(&format!("ports[{i}].port"), validate_port(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resource::parse_yaml;

    /// Parses one document and returns its diagnostics.
    fn diags(yaml: &str) -> Vec<Diagnostic> {
        let parsed = parse_yaml(yaml, "test.yaml");
        assert_eq!(parsed.len(), 1);
        parsed
            .into_iter()
            .next()
            .map(|p| p.diagnostics)
            .unwrap_or_default()
    }

    fn errors(yaml: &str) -> Vec<String> {
        diags(yaml)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect()
    }

    fn warnings(yaml: &str) -> Vec<String> {
        diags(yaml)
            .into_iter()
            .filter(|d| !d.is_error())
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect()
    }

    #[track_caller]
    fn assert_ok(yaml: &str) {
        let e = errors(yaml);
        assert!(e.is_empty(), "unexpected errors: {e:#?}");
    }

    #[track_caller]
    fn assert_err(yaml: &str, field: &str, needle: &str) {
        let e = errors(yaml);
        assert!(
            e.iter()
                .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(needle)),
            "expected an error at {field} containing {needle:?}, got {e:#?}"
        );
    }

    fn vs(http: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
        )
    }

    fn dr(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: ns}}\nspec:\n  host: reviews\n{spec}"
        )
    }

    #[test]
    fn websocket_upgrade_is_ignored_with_a_warning() {
        let yaml =
            vs("  - websocketUpgrade: true\n    route:\n    - destination: {host: reviews}\n");
        assert_ok(&yaml);
        assert_eq!(
            warnings(&yaml),
            vec![
                "spec.http[0].websocketUpgrade: websocketUpgrade is no longer part of the Istio API and is ignored; WebSocket upgrades are allowed on every HTTP port"
            ]
        );
    }

    #[test]
    fn virtual_service_basics() {
        assert_ok(&vs(
            "  - route:\n    - destination: {host: reviews, subset: v1}\n",
        ));
        assert_err(
            &vs(
                "  - match:\n    - uri: {regex: \"(unclosed\"}\n    route:\n    - destination: {host: reviews}\n",
            ),
            "spec.http[0].match[0].uri",
            "invalid regex",
        );
        assert_err(
            &vs(
                "  - match:\n    - headers: {x-a: {prefix: \"\"}}\n    route:\n    - destination: {host: reviews}\n",
            ),
            "spec.http[0].match[0].headers.x-a",
            "prefix string match should not be empty",
        );
        // An empty URI prefix is allowed.
        assert_ok(&vs(
            "  - match:\n    - uri: {prefix: \"\"}\n    route:\n    - destination: {host: reviews}\n",
        ));
        assert_err(
            &vs("  - {}\n"),
            "spec.http[0]",
            "route, redirect or directResponse is required",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 1x\n"),
            "spec.http[0].timeout",
            "invalid duration",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 0.5ms\n"),
            "spec.http[0].timeout",
            "at least 1ms",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: \"*\"}\n"),
            "spec.http[0].route[0].destination.host",
            "invalid destination host",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: reviews, subset: V_1}\n"),
            "spec.http[0].route[0].destination.subset",
            "subset name is invalid",
        );
    }

    #[test]
    fn weights_follow_istio() {
        // Weights are relative: istiod accepts a sum above 100 (and any single weight >= 0).
        assert_ok(&vs(
            "  - route:\n    - destination: {host: a}\n      weight: 550\n    - destination: {host: b}\n      weight: 500\n",
        ));
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n      weight: -1\n    - destination: {host: b}\n      weight: 101\n",
            ),
            "spec.http[0].route[0].weight",
            "weight -1 < 0",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n"),
            "spec.http[0].route",
            "total destination weight = 0",
        );
        // A single destination with weight 0 gets all the traffic.
        assert_ok(&vs("  - route:\n    - destination: {host: a}\n"));
    }

    #[test]
    fn virtual_service_hosts_and_gateways() {
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {host: a}\n";
        assert_err(doc, "spec.hosts[0]", "mesh gateway");
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: a}\n";
        assert_ok(doc);
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com, \"*.com\"]\n  http:\n  - route:\n    - destination: {host: a}\n";
        assert_err(doc, "spec.hosts[1]", "duplicate hosts");
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com]\n  gateways: [bad_ns/gw]\n  http:\n  - route:\n    - destination: {host: a}\n";
        assert_err(doc, "spec.gateways[0]", "invalid value for namespace");
        // Delegate (no hosts) may not carry gateways or TCP routes.
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  gateways: [mesh]\n  tcp:\n  - route:\n    - destination: {host: a}\n";
        assert_err(doc, "spec.gateways", "delegate");
        assert_err(doc, "spec.tcp", "delegate");
    }

    #[test]
    fn virtual_service_route_rules() {
        assert_err(
            &vs("  - redirect: {uri: /a}\n    route:\n    - destination: {host: a}\n"),
            "spec.http[0]",
            "both route and redirect",
        );
        assert_err(
            &vs("  - redirect: {}\n"),
            "spec.http[0].redirect",
            "must specify uri",
        );
        assert_err(
            &vs("  - redirect: {uri: /a, redirectCode: 200}\n"),
            "spec.http[0].redirect.redirectCode",
            "3xx",
        );
        assert_err(
            &vs("  - directResponse: {status: 700}\n"),
            "spec.http[0].directResponse.status",
            "not in range",
        );
        assert_ok(&vs(
            "  - directResponse: {status: 503, body: {string: unavailable}}\n",
        ));
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    retries: {attempts: 3, retryOn: \"5xx,bogus\"}\n",
            ),
            "spec.http[0].retries.retryOn",
            "\"bogus\" is not a valid retryOn policy",
        );
        assert_ok(&vs(
            "  - route:\n    - destination: {host: a}\n    retries: {attempts: 3, retryOn: \"5xx,503,reset\", perTryTimeout: 2s}\n",
        ));
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    retries: {attempts: 0, perTryTimeout: 2s}\n",
            ),
            "spec.http[0].retries",
            "attempts are set to 0",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    fault: {abort: {httpStatus: 500, percentage: {value: 101}}}\n",
            ),
            "spec.http[0].fault.abort.percentage",
            "percentage 101",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    fault: {abort: {grpcStatus: NOPE}}\n",
            ),
            "spec.http[0].fault.abort.grpcStatus",
            "not supported",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: a}\n    mirrorPercentage: {value: 120}\n"),
            "spec.http[0].mirrorPercentage",
            "max value of 100",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n",
            ),
            "spec.http[0].rewrite",
            "only contain one of",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    rewrite: {uriRegexRewrite: {match: \"[\", rewrite: b}}\n",
            ),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "invalid regex",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    corsPolicy: {allowMethods: [FETCH], maxAge: 1.5s}\n",
            ),
            "spec.http[0].corsPolicy.allowMethods[0]",
            "not a supported HTTP method",
        );
        assert_err(
            &vs("  - route:\n    - destination: {host: a}\n    corsPolicy: {maxAge: 1.5s}\n"),
            "spec.http[0].corsPolicy.maxAge",
            "seconds precision",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    headers: {response: {set: {host: x}}}\n",
            ),
            "spec.http[0].headers.response.set.host",
            "cannot set Host header",
        );
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {x-a: \"50%\"}}}\n",
            ),
            "spec.http[0].headers.request.set.x-a",
            "un-escaped %",
        );
        assert_ok(&vs(
            "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {x-a: \"100%% %HOSTNAME% %REQ(x-b)%\"}}}\n",
        ));
        assert_err(
            &vs(
                "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {host: b}}}\n    rewrite: {authority: c}\n",
            ),
            "spec.http[0].headers.request",
            "authority header cannot be set multiple times",
        );
        // Oneofs are rejected when parsing.
        assert_err(
            &vs(
                "  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: a}\n",
            ),
            "spec.http[0].match[0].uri",
            "only one of",
        );
    }

    #[test]
    fn virtual_service_warnings() {
        let w = warnings(&vs(
            "  - route:\n    - destination: {host: a}\n  - route:\n    - destination: {host: b}\n",
        ));
        assert!(
            w.iter()
                .any(|m| m.contains("only the last rule can have no matches")),
            "{w:#?}"
        );
        let w = warnings(&vs(
            "  - match: [{uri: {prefix: /a}}]\n    route:\n    - destination: {host: a}\n  - match: [{uri: {prefix: /a}}]\n    route:\n    - destination: {host: b}\n",
        ));
        assert!(
            w.iter()
                .any(|m| m.contains("all matches used by prior rules")),
            "{w:#?}"
        );
    }

    #[test]
    fn tls_and_tcp_routes() {
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*.a.com\"]\n  tls:\n  - match: [{sniHosts: [x.b.com]}]\n    route:\n    - destination: {host: a}\n";
        assert_err(
            doc,
            "spec.tls[0].match[0].sniHosts[0]",
            "not a compatible subset",
        );
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/33]}]\n    route:\n    - destination: {host: a, port: {number: 70000}}\n";
        assert_err(
            doc,
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "not a valid CIDR",
        );
        assert_err(
            doc,
            "spec.tcp[0].route[0].destination.port.number",
            "1..65535",
        );
    }

    #[test]
    fn destination_rule_rules() {
        assert_ok(&dr("  subsets:\n  - {name: v1, labels: {version: v1}}\n"));
        assert_err(
            &dr("  subsets:\n  - {name: v1}\n  - {name: v1}\n"),
            "spec.subsets[1].name",
            "duplicate subset names",
        );
        assert_err(
            &dr("  trafficPolicy: {}\n"),
            "spec.trafficPolicy",
            "at least one field",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n",
            ),
            "spec.trafficPolicy.loadBalancer",
            "only one of `simple`, `consistentHash`",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x, useSourceIp: true}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "only one of",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "prime",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {ttl: 0s}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required",
        );
        assert_ok(&dr(
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: c, ttl: 0s}, ringHash: {minimumRingSize: 1024}}\n",
        ));
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      warmup: {duration: 10s, aggression: 0}\n",
            ),
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "greater than 0",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      warmup: {duration: 10s, minimumPercent: -1}\n",
            ),
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "between 0 and 100",
        );
        assert_err(
            &dr("  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 0s}\n"),
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "at least 1ms",
        );
        assert_ok(&dr(
            "  trafficPolicy:\n    connectionPool:\n      tcp: {idleTimeout: 0s}\n",
        ));
        assert_err(
            &dr(
                "  trafficPolicy:\n    connectionPool:\n      http: {http2KeepAlive: {interval: 1s}}\n",
            ),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
            "required",
        );
        assert_err(
            &dr("  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 101}\n"),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "0..100",
        );
        assert_err(
            &dr("  trafficPolicy:\n    outlierDetection: {consecutiveLocalOriginFailures: 3}\n"),
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
        );
        assert_err(
            &dr("  trafficPolicy:\n    tls: {mode: MUTUAL}\n"),
            "spec.trafficPolicy.tls.clientCertificate",
            "required for mutual tls",
        );
        assert_err(
            &dr("  trafficPolicy:\n    portLevelSettings:\n    - {port: {number: 80}}\n"),
            "spec.trafficPolicy.portLevelSettings[0]",
            "at least one field",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    tunnel: {protocol: GET, targetHost: a.com, targetPort: 0}\n",
            ),
            "spec.trafficPolicy.tunnel.protocol",
            "CONNECT",
        );
        assert_err(
            &dr(
                "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - {from: us/a/*, to: {\"us/b/*\": 60, \"us/c/*\": 30}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            "total locality weight 90 != 100",
        );
        assert_err(
            &dr("  exportTo: [\".\", \"*\"]\n"),
            "spec.exportTo",
            "both public",
        );
        assert_err(
            &dr("  exportTo: [\"~\"]\n"),
            "spec.exportTo[0]",
            "not allowed",
        );
        assert_err(
            &dr("  exportTo: [ns, \".\"]\n"),
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace ns",
        );
        assert_err(
            &dr("  workloadSelector: {matchLabels: {app: \"*\"}}\n"),
            "spec.workloadSelector.matchLabels.app",
            "wildcard",
        );
        assert_err(
            &dr("  workloadSelector: {matchLabels: {app: a}}\n  exportTo: [other]\n"),
            "spec.exportTo",
            "beyond current namespace",
        );
    }

    #[test]
    fn service_entry_rules() {
        let se = |spec: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s, namespace: ns}}\nspec:\n{spec}"
            )
        };
        assert_ok(&se(
            "  hosts: [a.com]\n  addresses: [10.0.0.1]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
        ));
        assert_err(
            &se(
                "  hosts: [a.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.com}, {address: b.com}]\n",
            ),
            "spec.endpoints",
            "DNS_ROUND_ROBIN",
        );
        assert_err(
            &se("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: a.com}]\n"),
            "spec.endpoints[0].address",
            "not a valid IP",
        );
        assert_err(
            &se(
                "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]\n",
            ),
            "spec.endpoints[0].ports.grpc",
            "not defined by the service entry",
        );
        assert_err(
            &se(
                "  hosts: [a.com, b.com]\n  ports: [{number: 80, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
            ),
            "spec.ports[0]",
            "multiple hosts",
        );
        assert_err(
            &se("  hosts: [a.com]\n  ports: [{number: 80, name: http, protocol: SMTP}]\n"),
            "spec.ports[0].protocol",
            "unsupported protocol",
        );
        assert_err(
            &se("  hosts: [a.com]\n  resolution: DYNAMIC_DNS\n"),
            "spec.hosts[0]",
            "wildcarded",
        );
        assert_err(
            &se("  hosts: [a.com]\n  exportTo: [\"~\", \"*\"]\n"),
            "spec.exportTo",
            "no one (~)",
        );
        assert_ok(&se("  hosts: [a.com]\n  exportTo: [\"~\"]\n"));
        let w = warnings(&se("  hosts: [\"a*.com\"]\n"));
        assert!(w.iter().any(|m| m.contains("partial wildcard")), "{w:#?}");
    }

    #[test]
    fn workload_entry_rules() {
        let we = |spec: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w}}\nspec:\n{spec}"
            )
        };
        assert_ok(&we(
            "  address: 10.0.0.1\n  ports: {http: 8080}\n  labels: {app: a}\n",
        ));
        assert_ok(&we("  address: unix:///var/run/a.sock\n"));
        assert_err(
            &we("  address: \"bad_name!\"\n"),
            "spec.address",
            "not a valid FQDN",
        );
        assert_err(
            &we("  address: 10.0.0.1\n  labels: {\"bad key!\": a}\n"),
            "spec.labels",
            "invalid label key",
        );
        assert_err(
            &we("  address: 10.0.0.1\n  ports: {http: 0}\n"),
            "spec.ports.http",
            "1-65535",
        );
        assert_err(&we("  address: unix://\n"), "spec.address", "absolute path");
    }

    #[test]
    fn sidecar_rules() {
        let sc = |spec: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: s, namespace: ns}}\nspec:\n{spec}"
            )
        };
        assert_ok(&sc("  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n"));
        assert_err(&sc("  {}\n"), "spec", "empty configuration");
        assert_err(
            &sc("  egress:\n  - hosts: [reviews]\n"),
            "spec.egress[0].hosts[0]",
            "namespace/dnsName",
        );
        assert_err(
            &sc("  egress:\n  - hosts: [\"ns/reviews\"]\n"),
            "spec.egress[0].hosts[0]",
            "short names",
        );
        assert_err(
            &sc(
                "  egress:\n  - hosts: [\"*/*\"]\n  - port: {number: 80, protocol: HTTP, name: http}\n    hosts: [\"*/*\"]\n",
            ),
            "spec.egress[0]",
            "should be the last listener",
        );
        assert_err(
            &sc(
                "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: 10.0.0.1\n    hosts: [\"*/*\"]\n",
            ),
            "spec.egress[0].bind",
            "unix domain socket bind",
        );
        assert_err(
            &sc(
                "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: unix:///a.sock\n    captureMode: IPTABLES\n    hosts: [\"*/*\"]\n",
            ),
            "spec.egress[0].captureMode",
            "DEFAULT/NONE",
        );
        assert_err(
            &sc(
                "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 10.1.1.1:8080\n",
            ),
            "spec.ingress[0].defaultEndpoint",
            "must be of form",
        );
        assert_ok(&sc(
            "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n",
        ));
        assert_err(
            &sc(
                "  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.com, port: {number: 80}}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy",
            "ALLOW_ANY",
        );
    }

    #[test]
    fn gateway_rules() {
        let gw = |servers: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
            )
        };
        assert_ok(&gw(
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
        ));
        assert_ok(&gw(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"ns/a.com\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n",
        ));
        assert_err(
            &gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n"),
            "spec.servers[0].tls",
            "must have TLS settings",
        );
        assert_err(
            &gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n    tls: {mode: SIMPLE}\n",
            ),
            "spec.servers[0].tls.serverCertificate",
            "requires a server certificate",
        );
        assert_err(
            &gw(
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n",
            ),
            "spec.servers[0].tls.caCertificates",
            "client CA bundle",
        );
        assert_err(
            &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n"),
            "spec.servers[0].hosts[0]",
            "short names",
        );
        assert_err(
            &gw("  - port: {number: 80, name: http, protocol: FOO}\n    hosts: [\"*\"]\n"),
            "spec.servers[0].port.protocol",
            "invalid protocol",
        );
        assert_err(
            &gw(
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
            ),
            "spec.servers[1].port.name",
            "unique",
        );
        assert_err(
            &gw(
                "  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
            "spec.servers[0].tls",
            "non HTTPS/TLS",
        );
        // A plain HTTP server may ask for an HTTPS redirect.
        assert_ok(&gw(
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n",
        ));
        let doc = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw.x}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
        assert_err(doc, "metadata.name", "invalid gateway name");
    }

    #[test]
    fn kube_kinds() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {port: 80}\n  - {port: 70000, name: b}\n";
        assert_err(doc, "spec.ports[0].name", "more than one port");
        assert_err(doc, "spec.ports[1].port", "1..65535");
        assert_ok(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {port: 80}\n",
        );
    }

    #[test]
    fn null_fields_are_pruned() {
        // As the API server does: `field:` with no value is dropped, not a type error.
        assert_ok(&dr(
            "  exportTo:\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: ~}\n",
        ));
        let doc =
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n";
        assert_err(doc, "spec", "Required value");
    }

    #[test]
    fn helpers() {
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("a.123").is_err());
        assert!(validate_fqdn("istio.io.").is_ok());
        assert!(hosts_match("*.a.com", "b.a.com"));
        assert!(!hosts_match("a.com", "b.com"));
        assert!(host_subset_of("*.b.a.com", "*.a.com"));
        assert!(!host_subset_of("*.a.com", "b.a.com"));
        assert!(is_prime(65537) && !is_prime(65536) && is_prime(2));
        assert!(validate_localities(&["us", "us/a"]).is_err());
        assert!(validate_localities(&["us/a", "us/b/c"]).is_ok());
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", "80")));
        assert_eq!(split_host_port(":80"), Some(("", "80")));
        assert_eq!(decoded_base64_len("aGVsbG8="), Some(5));
        assert_eq!(decoded_base64_len("a"), None);
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("-bad").is_err());
        assert!(validate_header_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_ok());
        assert!(validate_header_value("%START_TIME%%").is_err());
        assert!(validate_header_value("a\u{1}b").is_err());
    }
}
