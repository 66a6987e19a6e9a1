//! The pieces several `networking.istio.io` kinds share: `Labels` and the two workload
//! selector forms, the `Destination` (and its port) that VirtualService routes, Sidecar egress
//! proxies and mirrors name, the connection pool settings of DestinationRule traffic policies
//! and Sidecar inbound listeners, the server TLS settings of Gateway servers and Sidecar
//! ingress listeners, and the helpers every kind's shapes use: duration parsing
//! ([`parse_duration`]), lenient reading of unquoted IPv6 addresses ([`lenient`]) and the
//! reading of proto `oneof`s ([`one_of`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// Reads a proto `oneof` whose members arrive as optional fields, each already wrapped in its
/// enum variant (`("exact", raw.exact.map(StringMatch::Exact))`): errors out when more than one
/// member is set, and otherwise gives the one that is, if any. Every `oneof` of these kinds is
/// read through here, so they all refuse two members with the same message.
pub(super) fn one_of<T, const N: usize>(
    group: &str,
    members: [(&str, Option<T>); N],
) -> Result<Option<T>, String> {
    let present: Vec<&str> = members
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    if present.len() > 1 {
        let all: Vec<String> = members.iter().map(|(n, _)| format!("`{n}`")).collect();
        let got: Vec<String> = present.iter().map(|n| format!("`{n}`")).collect();
        return Err(format!(
            "only one of {} may be set in {group}, found {}",
            all.join(", "),
            got.join(" and ")
        ));
    }
    Ok(members.into_iter().find_map(|(_, v)| v))
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
// Labels, workload selectors and destinations
// ---------------------------------------------------------------------------------------------

/// A port on the destination host (`number`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
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
// Connection pool settings (DestinationRule traffic policies, Sidecar inbound)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Server TLS settings (Gateway servers, Sidecar ingress listeners)
// ---------------------------------------------------------------------------------------------

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
    fn one_of_gives_the_member_set_and_refuses_two() {
        assert_eq!(one_of("g", [("a", None), ("b", Some(2))]), Ok(Some(2)));
        assert_eq!(one_of::<u8, 2>("g", [("a", None), ("b", None)]), Ok(None));
        assert_eq!(
            one_of(
                "a fault abort",
                [
                    ("httpStatus", Some(1)),
                    ("grpcStatus", None),
                    ("http2Error", Some(3))
                ],
            ),
            Err(
                "only one of `httpStatus`, `grpcStatus`, `http2Error` may be set in a fault \
                 abort, found `httpStatus` and `http2Error`"
                    .to_string()
            )
        );
    }

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
}
