//! The `spec` of the `networking.istio.io` kinds bowline serves (VirtualService,
//! DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, Gateway) as serde structs that follow
//! the CRD schema field for field (v1, v1beta1 and v1alpha3 share it). Unknown fields are
//! rejected, optional fields default, durations stay strings (see [`parse_duration`]), and proto
//! `oneof`s are Rust enums whose deserialization refuses two members at once. Semantic checks
//! live in `validation`; this module only knows shapes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// Errors out when more than one member of a proto `oneof` is set.
fn one_of(group: &str, set: &[(&str, bool)]) -> Result<(), String> {
    let present: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if present.len() > 1 {
        let all: Vec<String> = set.iter().map(|(n, _)| format!("`{n}`")).collect();
        let got: Vec<String> = present.iter().map(|n| format!("`{n}`")).collect();
        return Err(format!(
            "only one of {} may be set in {group}, found {}",
            all.join(", "),
            got.join(" and ")
        ));
    }
    Ok(())
}

/// Address lists as YAML 1.2 parsers read them: an unquoted IPv6 address ending in `::` (e.g.
/// `2001:db8::`) parses as a one-entry mapping `{"2001:db8:": null}`, where Go's YAML parser
/// (and so `kubectl` and Istio) reads a string. Such entries are turned back into the string.
pub(crate) mod lenient {
    use serde::Deserializer;
    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct AddressVisitor;

    impl<'de> Visitor<'de> for AddressVisitor {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string (quote IPv6 addresses that end in `::`)")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let unexpected = || de::Error::invalid_type(de::Unexpected::Map, &AddressVisitor);
            let Some((key, value)) = map.next_entry::<String, Option<IgnoredAny>>()? else {
                return Err(unexpected());
            };
            if value.is_some() || map.next_key::<IgnoredAny>()?.is_some() || key.is_empty() {
                return Err(unexpected());
            }
            Ok(format!("{key}:"))
        }
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of addresses")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Address(a)) = seq.next_element::<Address>()? {
                out.push(a);
            }
            Ok(out)
        }
    }

    struct Address(String);

    impl<'de> serde::Deserialize<'de> for Address {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(AddressVisitor).map(Address)
        }
    }

    pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(AddressVisitor)
    }

    pub fn address_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(<Option<Address> as serde::Deserialize>::deserialize(d)?.map(|a| a.0))
    }

    pub fn address_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }
}

/// Parses a duration as Istio accepts it in its CRDs: the protobuf JSON form (`"1.5s"`) and the
/// Go `time.ParseDuration` form it extends to (`"300ms"`, `"1h30m"`, units `ns`, `us`/`µs`,
/// `ms`, `s`, `m`, `h`, decimal fractions allowed). Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| Err(format!("invalid duration {s:?}: {why}"));
    let mut rest = s.trim();
    if rest != s {
        return bad("surrounding whitespace");
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return bad("negative durations are not allowed");
    }
    if rest.is_empty() {
        return bad("empty");
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return bad("expected a number");
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return bad("missing unit (use e.g. \"1s\" or \"100ms\")"),
            _ => return bad("unknown unit (valid units are ns, us, ms, s, m, h)"),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            match int_part.parse::<u128>() {
                Ok(v) => v,
                Err(_) => return bad("number out of range"),
            }
        };
        let mut nanos = match int.checked_mul(unit_nanos) {
            Some(v) => v,
            None => return bad("out of range"),
        };
        // Fraction: scale digit by digit, dropping what falls below a nanosecond.
        let mut scale = unit_nanos;
        for d in frac_part.chars() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(d.to_digit(10).unwrap_or(0)) * scale;
        }
        total_nanos = match total_nanos.checked_add(nanos) {
            Some(v) => v,
            None => return bad("out of range"),
        };
        rest = tail;
    }
    let secs = total_nanos / 1_000_000_000;
    let Ok(secs) = u64::try_from(secs) else {
        return bad("out of range");
    };
    // protobuf Duration caps seconds at 315,576,000,000 (10,000 years).
    if secs > 315_576_000_000 {
        return bad("out of range");
    }
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

// ---------------------------------------------------------------------------------------------
// Shared small messages
// ---------------------------------------------------------------------------------------------

/// A string matcher (`oneof match_type`): exact, prefix or RE2 regex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StringMatchRaw", into = "StringMatchRaw")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    /// `{}`: no match type set. For headers and query parameters Istio treats this as a
    /// presence match; elsewhere it constrains nothing.
    Empty,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StringMatchRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<StringMatchRaw> for StringMatch {
    type Error = String;
    fn try_from(r: StringMatchRaw) -> Result<Self, String> {
        one_of(
            "a string match",
            &[
                ("exact", r.exact.is_some()),
                ("prefix", r.prefix.is_some()),
                ("regex", r.regex.is_some()),
            ],
        )?;
        Ok(match (r.exact, r.prefix, r.regex) {
            (Some(v), _, _) => StringMatch::Exact(v),
            (_, Some(v), _) => StringMatch::Prefix(v),
            (_, _, Some(v)) => StringMatch::Regex(v),
            _ => StringMatch::Empty,
        })
    }
}

impl From<StringMatch> for StringMatchRaw {
    fn from(m: StringMatch) -> Self {
        let mut r = StringMatchRaw::default();
        match m {
            StringMatch::Exact(v) => r.exact = Some(v),
            StringMatch::Prefix(v) => r.prefix = Some(v),
            StringMatch::Regex(v) => r.regex = Some(v),
            StringMatch::Empty => {}
        }
        r
    }
}

/// A port on the destination host (`number`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// A percentage as a double, 0.0 to 100.0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// A service (and optionally a subset and port) traffic is sent to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Required; a short name, an FQDN or a wildcard-free ServiceEntry host.
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Workloads selected by labels (the networking API's `labels` form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// Workloads selected by labels (the `istio.type.v1beta1.WorkloadSelector` `matchLabels` form,
/// used by DestinationRule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypeWorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
}

// ---------------------------------------------------------------------------------------------
// VirtualService
// ---------------------------------------------------------------------------------------------

/// `VirtualService.spec`: routing rules for traffic sent to `hosts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP route rule: match conditions and what to do with matching requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated integer form of `mirrorPercentage`; the CRD also names it `mirror_percent`.
    #[serde(
        default,
        alias = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Removed from Istio's API (every HTTP connection manager allows WebSocket upgrades) but
    /// still found in older configs: accepted and ignored; validation warns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_upgrade: Option<bool>,
}

/// Conditions on an HTTP request; all set conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A weighted HTTP destination with its own header manipulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Request and response header manipulation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Headers to set (overwrite), add (append) and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Rewrites of the path and authority before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex path rewrite: replace what `match` matches with `rewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub match_: String,
    #[serde(default)]
    pub rewrite: String,
}

/// How a redirect picks its port (`oneof redirect_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectPort {
    /// A fixed port.
    Port(u32),
    /// Derived from the protocol or the request.
    DerivePort(RedirectPortSelection),
}

/// `derivePort` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

/// An HTTP redirect response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HttpRedirectRaw", into = "HttpRedirectRaw")]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub redirect_port: Option<RedirectPort>,
    pub scheme: Option<String>,
    pub redirect_code: Option<u32>,
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRedirectRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    derive_port: Option<RedirectPortSelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_rewrite: Option<String>,
}

impl TryFrom<HttpRedirectRaw> for HttpRedirect {
    type Error = String;
    fn try_from(r: HttpRedirectRaw) -> Result<Self, String> {
        one_of(
            "a redirect",
            &[
                ("port", r.port.is_some()),
                ("derivePort", r.derive_port.is_some()),
            ],
        )?;
        let redirect_port = match (r.port, r.derive_port) {
            (Some(p), _) => Some(RedirectPort::Port(p)),
            (_, Some(d)) => Some(RedirectPort::DerivePort(d)),
            _ => None,
        };
        Ok(HttpRedirect {
            uri: r.uri,
            authority: r.authority,
            redirect_port,
            scheme: r.scheme,
            redirect_code: r.redirect_code,
            prefix_rewrite: r.prefix_rewrite,
        })
    }
}

impl From<HttpRedirect> for HttpRedirectRaw {
    fn from(r: HttpRedirect) -> Self {
        let (port, derive_port) = match r.redirect_port {
            Some(RedirectPort::Port(p)) => (Some(p), None),
            Some(RedirectPort::DerivePort(d)) => (None, Some(d)),
            None => (None, None),
        };
        HttpRedirectRaw {
            uri: r.uri,
            authority: r.authority,
            port,
            derive_port,
            scheme: r.scheme,
            redirect_code: r.redirect_code,
            prefix_rewrite: r.prefix_rewrite,
        }
    }
}

/// A response sent without contacting any upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Required.
    #[serde(default)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A direct response body (`oneof specifier`): text or base64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HttpBodyRaw", into = "HttpBodyRaw")]
pub enum HttpBody {
    String(String),
    /// Base64-encoded, as protobuf JSON writes `bytes`.
    Bytes(String),
    /// `{}`: an empty body.
    Empty,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpBodyRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
}

impl TryFrom<HttpBodyRaw> for HttpBody {
    type Error = String;
    fn try_from(r: HttpBodyRaw) -> Result<Self, String> {
        one_of(
            "a response body",
            &[("string", r.string.is_some()), ("bytes", r.bytes.is_some())],
        )?;
        Ok(match (r.string, r.bytes) {
            (Some(s), _) => HttpBody::String(s),
            (_, Some(b)) => HttpBody::Bytes(b),
            _ => HttpBody::Empty,
        })
    }
}

impl From<HttpBody> for HttpBodyRaw {
    fn from(b: HttpBody) -> Self {
        match b {
            HttpBody::String(s) => HttpBodyRaw {
                string: Some(s),
                bytes: None,
            },
            HttpBody::Bytes(b) => HttpBodyRaw {
                string: None,
                bytes: Some(b),
            },
            HttpBody::Empty => HttpBodyRaw::default(),
        }
    }
}

/// A reference to a delegate VirtualService that holds the routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Retry policy for HTTP requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: i32,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Fault injection: delays and aborts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// The kind of injected delay (`oneof http_delay_type`); each holds a duration string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpDelayType {
    FixedDelay(String),
    ExponentialDelay(String),
}

/// An injected delay and the share of requests it applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DelayRaw", into = "DelayRaw")]
pub struct Delay {
    pub http_delay_type: Option<HttpDelayType>,
    /// Deprecated integer percentage.
    pub percent: Option<i32>,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DelayRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixed_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exponential_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percentage: Option<Percent>,
}

impl TryFrom<DelayRaw> for Delay {
    type Error = String;
    fn try_from(r: DelayRaw) -> Result<Self, String> {
        one_of(
            "a fault delay",
            &[
                ("fixedDelay", r.fixed_delay.is_some()),
                ("exponentialDelay", r.exponential_delay.is_some()),
            ],
        )?;
        let http_delay_type = match (r.fixed_delay, r.exponential_delay) {
            (Some(d), _) => Some(HttpDelayType::FixedDelay(d)),
            (_, Some(d)) => Some(HttpDelayType::ExponentialDelay(d)),
            _ => None,
        };
        Ok(Delay {
            http_delay_type,
            percent: r.percent,
            percentage: r.percentage,
        })
    }
}

impl From<Delay> for DelayRaw {
    fn from(d: Delay) -> Self {
        let (fixed_delay, exponential_delay) = match d.http_delay_type {
            Some(HttpDelayType::FixedDelay(v)) => (Some(v), None),
            Some(HttpDelayType::ExponentialDelay(v)) => (None, Some(v)),
            None => (None, None),
        };
        DelayRaw {
            fixed_delay,
            exponential_delay,
            percent: d.percent,
            percentage: d.percentage,
        }
    }
}

/// The error an abort returns (`oneof error_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortErrorType {
    HttpStatus(i32),
    GrpcStatus(String),
    Http2Error(String),
}

/// An injected abort and the share of requests it applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AbortRaw", into = "AbortRaw")]
pub struct Abort {
    pub error_type: Option<AbortErrorType>,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AbortRaw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percentage: Option<Percent>,
}

impl TryFrom<AbortRaw> for Abort {
    type Error = String;
    fn try_from(r: AbortRaw) -> Result<Self, String> {
        one_of(
            "a fault abort",
            &[
                ("httpStatus", r.http_status.is_some()),
                ("grpcStatus", r.grpc_status.is_some()),
                ("http2Error", r.http2_error.is_some()),
            ],
        )?;
        let error_type = match (r.http_status, r.grpc_status, r.http2_error) {
            (Some(s), _, _) => Some(AbortErrorType::HttpStatus(s)),
            (_, Some(s), _) => Some(AbortErrorType::GrpcStatus(s)),
            (_, _, Some(s)) => Some(AbortErrorType::Http2Error(s)),
            _ => None,
        };
        Ok(Abort {
            error_type,
            percentage: r.percentage,
        })
    }
}

impl From<Abort> for AbortRaw {
    fn from(a: Abort) -> Self {
        let mut r = AbortRaw {
            percentage: a.percentage,
            ..AbortRaw::default()
        };
        match a.error_type {
            Some(AbortErrorType::HttpStatus(s)) => r.http_status = Some(s),
            Some(AbortErrorType::GrpcStatus(s)) => r.grpc_status = Some(s),
            Some(AbortErrorType::Http2Error(s)) => r.http2_error = Some(s),
            None => {}
        }
        r
    }
}

/// Cross-origin resource sharing policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact-match origins; use `allowOrigins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What to do with preflight requests that match no allowed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// A destination mirrored traffic is copied to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A route rule for opaque TCP traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub match_: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A route rule for unterminated TLS traffic, matched on SNI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// L4 connection match conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(
        default,
        deserialize_with = "lenient::address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(
        default,
        deserialize_with = "lenient::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// TLS connection match conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(
        default,
        deserialize_with = "lenient::address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// A weighted L4 destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: i32,
}

// ---------------------------------------------------------------------------------------------
// DestinationRule
// ---------------------------------------------------------------------------------------------

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
        one_of(
            "a load balancer",
            &[
                ("simple", r.simple.is_some()),
                ("consistentHash", r.consistent_hash.is_some()),
            ],
        )?;
        let lb_policy = match (r.simple, r.consistent_hash) {
            (Some(s), _) => Some(LbPolicy::Simple(s)),
            (_, Some(c)) => Some(LbPolicy::ConsistentHash(c)),
            _ => None,
        };
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
        one_of(
            "consistentHash",
            &[
                ("httpHeaderName", r.http_header_name.is_some()),
                ("httpCookie", r.http_cookie.is_some()),
                ("useSourceIp", r.use_source_ip.is_some()),
                (
                    "httpQueryParameterName",
                    r.http_query_parameter_name.is_some(),
                ),
            ],
        )?;
        one_of(
            "consistentHash",
            &[
                ("ringHash", r.ring_hash.is_some()),
                ("maglev", r.maglev.is_some()),
            ],
        )?;
        let hash_key = if let Some(h) = r.http_header_name {
            Some(HashKey::HttpHeaderName(h))
        } else if let Some(c) = r.http_cookie {
            Some(HashKey::HttpCookie(c))
        } else if let Some(s) = r.use_source_ip {
            Some(HashKey::UseSourceIp(s))
        } else {
            r.http_query_parameter_name
                .map(HashKey::HttpQueryParameterName)
        };
        let hash_algorithm = match (r.ring_hash, r.maglev) {
            (Some(h), _) => Some(HashAlgorithm::RingHash(h)),
            (_, Some(m)) => Some(HashAlgorithm::Maglev(m)),
            _ => None,
        };
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

/// Connection pool limits for TCP and HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// TCP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: i32,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// TCP keepalive (SO_KEEPALIVE) settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default)]
    pub probes: u32,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: i32,
    #[serde(default)]
    pub http2_max_requests: i32,
    #[serde(default)]
    pub max_requests_per_connection: i32,
    #[serde(default)]
    pub max_retries: i32,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default)]
    pub use_client_protocol: bool,
    #[serde(default)]
    pub max_concurrent_streams: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

/// Whether HTTP/1.1 connections are upgraded to HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// HTTP/2 PING keepalive settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionKeepalive {
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
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

// ---------------------------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry
// ---------------------------------------------------------------------------------------------

/// `ServiceEntry.spec`: adds a service (usually outside the mesh) to the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(
        default,
        deserialize_with = "lenient::address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Whether a ServiceEntry's service is inside or outside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// How a ServiceEntry's endpoints are found. Unset means `NONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// A port of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Required.
    #[serde(default)]
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Required.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `WorkloadEntry.spec` (also a ServiceEntry endpoint): one non-Kubernetes workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// An IP, a DNS name or `unix://` socket path; may be empty only when `network` is set.
    #[serde(default, deserialize_with = "lenient::address")]
    pub address: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------------------------

/// `Sidecar.spec`: narrows what a sidecar listens on and can reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener of the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    pub port: SidecarPort,
    #[serde(
        default,
        deserialize_with = "lenient::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener of the sidecar and the hosts it can reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(
        default,
        deserialize_with = "lenient::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Required; each `namespace/dnsName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A sidecar listener port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// How traffic reaches a sidecar listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    Default,
    Iptables,
    None,
}

/// What the sidecar does with traffic to unknown destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// `REGISTRY_ONLY` or `ALLOW_ANY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    RegistryOnly,
    AllowAny,
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// `Gateway.spec`: listeners of a gateway proxy selected by `selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
}

/// One gateway listener: a port, the hosts it serves and its TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: Port,
    #[serde(
        default,
        deserialize_with = "lenient::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A gateway listener port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Required.
    #[serde(default)]
    pub number: u32,
    /// Required: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS.
    #[serde(default)]
    pub protocol: String,
    /// Required.
    #[serde(default)]
    pub name: String,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS settings of a gateway server (or a sidecar ingress listener).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A certificate/key pair given as file paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// Gateway (server side) TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        for bad in [
            "", "1", "s", "-1s", "1x", "1..2s", "1 s", "apple", "1.s.", ".",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn string_match_oneof() {
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/a"}"#).unwrap();
        assert_eq!(m, StringMatch::Prefix("/a".into()));
        let m: StringMatch = serde_json::from_str("{}").unwrap();
        assert_eq!(m, StringMatch::Empty);
        let e = serde_json::from_str::<StringMatch>(r#"{"prefix":"/a","exact":"/b"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only one of"), "{e}");
        assert!(serde_json::from_str::<StringMatch>(r#"{"suffix":"/a"}"#).is_err());
        assert_eq!(
            serde_json::to_value(StringMatch::Regex("a.*".into())).unwrap(),
            serde_json::json!({"regex": "a.*"})
        );
    }

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

    #[test]
    fn mirror_percent_alt_name() {
        let r: HttpRoute = serde_json::from_str(r#"{"mirror_percent": 5}"#).unwrap();
        assert_eq!(r.mirror_percent, Some(5));
    }

    #[test]
    fn ipv6_addresses_read_as_mappings() {
        let se: ServiceEntry =
            serde_json::from_str(r#"{"hosts":["a"],"addresses":["1.2.3.4",{"001:db8:":null}]}"#)
                .unwrap();
        assert_eq!(se.addresses, vec!["1.2.3.4", "001:db8::"]);
        assert!(serde_json::from_str::<ServiceEntry>(r#"{"addresses":[{"a":1}]}"#).is_err());
        assert!(
            serde_json::from_str::<ServiceEntry>(r#"{"addresses":[{"a":null,"b":null}]}"#).is_err()
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        assert!(serde_json::from_str::<Destination>(r#"{"host":"a","bogus":1}"#).is_err());
        assert!(
            serde_json::from_str::<HttpRedirect>(r#"{"port":1,"derivePort":"FROM_REQUEST_PORT"}"#)
                .is_err()
        );
    }
}
