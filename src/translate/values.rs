//! Envoy's value types made from Istio's: durations, fractions and string matchers, shared by
//! the builders of routes, filters and clusters.

use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf as pb;

use crate::model::networking::StringMatch;

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
