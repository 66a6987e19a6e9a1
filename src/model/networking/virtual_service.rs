//! `VirtualService.spec`: HTTP, TLS and TCP route rules, their match conditions (with the
//! `StringMatch` they use), destinations and weights, redirects, direct responses, rewrites,
//! header operations, retries, fault injection, mirroring and CORS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

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
        let redirect_port = one_of(
            "a redirect",
            [
                ("port", r.port.map(RedirectPort::Port)),
                ("derivePort", r.derive_port.map(RedirectPort::DerivePort)),
            ],
        )?;
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
        let body = one_of(
            "a response body",
            [
                ("string", r.string.map(HttpBody::String)),
                ("bytes", r.bytes.map(HttpBody::Bytes)),
            ],
        )?;
        Ok(body.unwrap_or(HttpBody::Empty))
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
        let http_delay_type = one_of(
            "a fault delay",
            [
                ("fixedDelay", r.fixed_delay.map(HttpDelayType::FixedDelay)),
                (
                    "exponentialDelay",
                    r.exponential_delay.map(HttpDelayType::ExponentialDelay),
                ),
            ],
        )?;
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
        let error_type = one_of(
            "a fault abort",
            [
                ("httpStatus", r.http_status.map(AbortErrorType::HttpStatus)),
                ("grpcStatus", r.grpc_status.map(AbortErrorType::GrpcStatus)),
                ("http2Error", r.http2_error.map(AbortErrorType::Http2Error)),
            ],
        )?;
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
        let m = one_of(
            "a string match",
            [
                ("exact", r.exact.map(StringMatch::Exact)),
                ("prefix", r.prefix.map(StringMatch::Prefix)),
                ("regex", r.regex.map(StringMatch::Regex)),
            ],
        )?;
        Ok(m.unwrap_or(StringMatch::Empty))
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

/// A percentage as a double, 0.0 to 100.0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn mirror_percent_alt_name() {
        let r: HttpRoute = serde_json::from_str(r#"{"mirror_percent": 5}"#).unwrap();
        assert_eq!(r.mirror_percent, Some(5));
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
