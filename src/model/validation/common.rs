//! The generic checks every kind uses: DNS names, hosts and wildcards, addresses, ports,
//! protocols, durations, labels, headers, regexes.

use super::*;

pub(super) const UNIX_PREFIX: &str = "unix://";
pub(super) const MESH_GATEWAY: &str = "mesh";

/// RFC 1123 label: `[a-z0-9A-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A DNS label that may start with `*` or `*-`, or is `*` alone.
pub(super) fn is_wildcard_dns1123_label(s: &str) -> bool {
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

pub(super) fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

pub(super) fn dns1123_labels(domain: &str) -> Result<(), String> {
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

pub(super) fn validate_fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name)
}

/// A DNS name whose first label may be a wildcard (`*.example.com`, `*`, short names).
pub(super) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
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
pub(super) fn validate_wildcard_domain_for_gateway(sni: bool, domain: &str) -> Result<(), String> {
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

pub(super) fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub(super) fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An IP address or a CIDR block.
pub(super) fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        return s
            .parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid CIDR block"));
    }
    validate_ip(s)
}

pub(super) fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub(super) fn validate_port_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_unix_address(addr: &str) -> Result<(), String> {
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
pub(super) fn parse_protocol(p: &str) -> Option<&'static str> {
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

pub(super) fn protocol_is_http(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-Web")
    )
}

pub(super) fn protocol_is_tls(p: &str) -> bool {
    matches!(parse_protocol(p), Some("HTTPS" | "TLS"))
}

pub(super) fn protocol_is_tcp(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("TCP" | "HTTPS" | "TLS" | "Mongo" | "Redis" | "MySQL")
    )
}

pub(super) fn validate_protocol(p: &str) -> Result<(), String> {
    if !p.is_empty() && parse_protocol(p).is_none() {
        return Err(format!("unsupported protocol: {p}"));
    }
    Ok(())
}

/// How strictly a duration field is checked.
#[derive(Clone, Copy)]
pub(super) enum Dur {
    /// istiod's rule: at least 1ms, and a whole number of milliseconds.
    Istio,
    /// The CRD's rule only: at least 1ms.
    AtLeast1ms,
    /// Must parse; any value.
    Any,
}

impl Ctx<'_> {
    pub(super) fn duration(
        &mut self,
        field: &str,
        value: Option<&String>,
        rule: Dur,
    ) -> Option<Duration> {
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
    pub(super) fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
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
    pub(super) fn export_to(
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
    pub(super) fn workload_selector(
        &mut self,
        field: &str,
        selector: Option<&WorkloadSelector>,
        what: &str,
    ) {
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
pub(super) fn validate_label_key(k: &str) -> Result<(), String> {
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
pub(super) fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 7230 token characters.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// `@request.auth.claims.<a>.<b>` or `@request.auth.claims[a][b]`.
pub(super) fn is_jwt_claim_route(name: &str) -> bool {
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

pub(super) const PSEUDO_HEADERS: [&str; 5] =
    [":method", ":scheme", ":authority", ":path", ":status"];

pub(super) fn validate_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) || is_header_name(name) {
        return Ok(());
    }
    Err(format!("header name {name:?} is not a valid header name"))
}

pub(super) fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Names of request headers to add or set (`:authority`/`host` allowed).
pub(super) fn validate_request_set_header_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_header_operation_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_header_value(value: &str) -> Result<(), String> {
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

pub(super) fn validate_regex(re: &str) -> Result<(), String> {
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
pub(super) fn is_prime(x: u64) -> bool {
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
pub(super) fn host_is_wildcard(h: &str) -> bool {
    h.starts_with('*')
}

/// Whether two host names overlap (one matches the other).
pub(super) fn hosts_match(a: &str, b: &str) -> bool {
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
pub(super) fn host_subset_of(a: &str, b: &str) -> bool {
    match (host_is_wildcard(a), host_is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// HTTP status codes Go's `net/http` names (used by `retryOn`).
pub(super) fn is_known_http_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

pub(super) const RETRY_ON_POLICIES: [&str; 16] = [
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

pub(super) const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Cipher suites a gateway accepts (BoringSSL names, PSK suites excluded).
pub(super) const CIPHER_SUITES: [&str; 15] = [
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

pub(super) fn is_valid_cipher_suite(cs: &str) -> bool {
    match cs.chars().next() {
        None => true,
        _ if cs == "ALL" => true,
        // Expressions such as `-AES128-SHA` or `+...` are passed through.
        Some(c) if !c.is_alphanumeric() => true,
        _ => CIPHER_SUITES.contains(&cs),
    }
}

pub(super) const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

pub(super) fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

/// `namespace/dnsName` hosts of Sidecar egress listeners and Gateway servers (gateways also
/// accept a bare `dnsName`, or an IP).
pub(super) fn validate_namespace_slash_host(host: &str, gateway: bool) -> Result<(), String> {
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

pub(super) fn validate_host_part(host: &str, gateway: bool) -> Result<(), String> {
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

/// Splits `host:port` / `[v6]:port` as Go's `net.SplitHostPort` does.
pub(super) fn split_host_port(s: &str) -> Option<(&str, &str)> {
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
