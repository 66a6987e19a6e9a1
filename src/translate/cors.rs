//! CORS: `envoy.filters.http.cors` on every HTTP connection manager (empty, as istiod installs
//! it), configured per route from a VirtualService rule's `corsPolicy`.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as xds_cors;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf as pb;

use super::values::{integer_fraction, string_matcher};
use crate::envoy::pack;
use crate::model::networking::{CorsPolicy, UnmatchedPreflights, parse_duration};

pub const FILTER_NAME: &str = "envoy.filters.http.cors";

/// The filter as the connection manager lists it: inert unless a route has a policy.
pub fn http_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: FILTER_NAME.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
            &xds_cors::Cors::default(),
        ))),
        ..Default::default()
    }
}

/// A rule's CORS policy as the filter's per-route configuration, and a problem with `maxAge`
/// if there is one.
pub fn per_route(c: &CorsPolicy) -> (xds_cors::CorsPolicy, Option<String>) {
    let CorsPolicy {
        allow_origin,
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        unmatched_preflights,
    } = c;
    // `allowOrigins` replaces the deprecated exact-only `allowOrigin` when both are given.
    let origins: Vec<matcher::StringMatcher> = if allow_origins.is_empty() {
        allow_origin
            .iter()
            .map(|o| matcher::StringMatcher {
                match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(o.clone())),
                ignore_case: false,
            })
            .collect()
    } else {
        allow_origins
            .iter()
            .filter_map(|o| string_matcher(o, false))
            .collect()
    };
    let mut problem = None;
    let max_age = match max_age.as_deref().map(parse_duration) {
        Some(Ok(d)) => d.as_secs().to_string(),
        Some(Err(e)) => {
            problem = Some(e);
            String::new()
        }
        None => String::new(),
    };
    let policy = xds_cors::CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: allow_methods.join(","),
        allow_headers: allow_headers.join(","),
        expose_headers: expose_headers.join(","),
        max_age,
        allow_credentials: allow_credentials.map(|value| pb::BoolValue { value }),
        filter_enabled: Some(xds_core::RuntimeFractionalPercent {
            default_value: Some(integer_fraction(100)),
            ..Default::default()
        }),
        // Envoy before 1.30 forwarded preflights that match no origin; istiod keeps that unless
        // told to ignore them.
        forward_not_matching_preflights: Some(pb::BoolValue {
            value: *unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        }),
        ..Default::default()
    };
    (policy, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::networking::StringMatch;

    #[test]
    fn policy() {
        let c = CorsPolicy {
            allow_origin: vec!["https://old.example".into()],
            allow_origins: vec![
                StringMatch::Exact("https://a.example".into()),
                StringMatch::Regex(r"https://.*\.b\.example".into()),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-c".into()],
            max_age: Some("24h".into()),
            allow_credentials: Some(true),
            unmatched_preflights: Some(UnmatchedPreflights::Ignore),
        };
        let (p, problem) = per_route(&c);
        assert!(problem.is_none());
        assert_eq!(p.allow_origin_string_match.len(), 2);
        assert_eq!(p.allow_methods, "GET,POST");
        assert_eq!(p.allow_headers, "x-a,x-b");
        assert_eq!(p.max_age, "86400");
        assert_eq!(p.allow_credentials, Some(pb::BoolValue { value: true }));
        assert_eq!(
            p.forward_not_matching_preflights,
            Some(pb::BoolValue { value: false })
        );
        let (p, _) = per_route(&CorsPolicy {
            allow_origin: vec!["https://old.example".into()],
            ..Default::default()
        });
        assert_eq!(p.allow_origin_string_match.len(), 1);
        assert_eq!(
            p.forward_not_matching_preflights,
            Some(pb::BoolValue { value: true })
        );
        assert_eq!(p.allow_credentials, None);
    }
}
