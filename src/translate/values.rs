//! Envoy's value types made from Istio's: durations, fractions, string matchers and socket
//! addresses, shared by the builders of routes, filters, listeners and clusters; and where
//! Envoy finds the system's CA bundle.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf as pb;

use crate::model::networking::StringMatch;

/// The CA bundle upstream TLS (`tls.mode: SIMPLE`, JWKS fetches) verifies against when no CA
/// is named. istiod's agent serves the system roots for this case; stock Envoy reads a file, so
/// this is the Debian/Ubuntu system bundle (the Envoy and Istio proxy images' base).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A protobuf duration.
pub fn proto_duration(d: std::time::Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

/// An Istio `Percent` (0.0–100.0) as parts per million, as istiod converts it.
pub fn percent_fraction(percent: f64) -> FractionalPercent {
    FractionalPercent {
        // Truncates like istiod's conversion; out-of-range values saturate.
        numerator: (percent * 10_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// An integer percentage as parts per hundred.
pub fn integer_fraction(percent: i32) -> FractionalPercent {
    FractionalPercent {
        numerator: u32::try_from(percent).unwrap_or_default(),
        denominator: DenominatorType::Hundred as i32,
    }
}

/// An Istio string match as Envoy's; `None` for a match that names no value.
pub fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<matcher::StringMatcher> {
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

/// An IP or DNS name and a port as an Envoy address.
pub fn socket_address(host: &str, port: u16) -> xds_core::Address {
    xds_core::Address {
        address: Some(xds_core::address::Address::SocketAddress(socket(
            host, port,
        ))),
    }
}

pub fn socket(host: &str, port: u16) -> xds_core::SocketAddress {
    xds_core::SocketAddress {
        address: host.to_string(),
        port_specifier: Some(xds_core::socket_address::PortSpecifier::PortValue(
            u32::from(port),
        )),
        ..Default::default()
    }
}
