//! The Envoy matchers authorization is made of: string matchers with Istio's wildcards (`*`,
//! `prefix*`, `*suffix`), header, value and dynamic metadata matchers, CIDR ranges, bracketed
//! names (`[a][b]`), and RBAC permissions and principals combined with and/or/not. Envoy's
//! vocabulary only: what an Istio attribute means is `rbac`'s business.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf as pb;

/// Go's `regexp.QuoteMeta`.
pub(super) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn sm(pattern: matcher::string_matcher::MatchPattern, ignore_case: bool) -> matcher::StringMatcher {
    matcher::StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    }
}

pub(super) fn sm_exact(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Exact(v.to_string()),
        ignore_case,
    )
}

pub(super) fn sm_prefix(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Prefix(v.to_string()),
        ignore_case,
    )
}

pub(super) fn sm_suffix(v: &str, ignore_case: bool) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::Suffix(v.to_string()),
        ignore_case,
    )
}

pub(super) fn sm_regex(re: &str) -> matcher::StringMatcher {
    sm(
        matcher::string_matcher::MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: re.to_string(),
            ..Default::default()
        }),
        false,
    )
}

/// `*` (presence, `.+`), `*suffix`, `prefix*` or an exact value, with `prefix` prepended to
/// what is matched (not to a lone `*`).
pub(super) fn string_matcher_with_prefix(v: &str, prefix: &str) -> matcher::StringMatcher {
    if v == "*" {
        sm_regex(".+")
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            sm_suffix(suffix, false)
        } else {
            sm_regex(&format!("{prefix}.*{}", quote_meta(suffix)))
        }
    } else if let Some(p) = v.strip_suffix('*') {
        sm_prefix(&format!("{prefix}{p}"), false)
    } else {
        sm_exact(&format!("{prefix}{v}"), false)
    }
}

pub(super) fn string_matcher(v: &str) -> matcher::StringMatcher {
    string_matcher_with_prefix(v, "")
}

/// A header matcher: `*` is presence, otherwise suffix, prefix or exact.
pub(super) fn header_matcher(name: &str, v: &str, ignore_case: bool) -> xds_route::HeaderMatcher {
    use xds_route::header_matcher::HeaderMatchSpecifier;
    let spec = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else if let Some(s) = v.strip_prefix('*') {
        HeaderMatchSpecifier::StringMatch(sm_suffix(s, ignore_case))
    } else if let Some(p) = v.strip_suffix('*') {
        HeaderMatchSpecifier::StringMatch(sm_prefix(p, ignore_case))
    } else {
        HeaderMatchSpecifier::StringMatch(sm_exact(v, ignore_case))
    };
    xds_route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

pub(super) fn value_string(m: matcher::StringMatcher) -> matcher::ValueMatcher {
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(m)),
    }
}

pub(super) fn value_or(mut matchers: Vec<matcher::ValueMatcher>) -> matcher::ValueMatcher {
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::OrMatch(
            matcher::OrMatcher {
                value_matchers: matchers,
            },
        )),
    }
}

pub(super) fn value_list_one_of(v: matcher::ValueMatcher) -> matcher::ValueMatcher {
    matcher::ValueMatcher {
        match_pattern: Some(matcher::value_matcher::MatchPattern::ListMatch(Box::new(
            matcher::ListMatcher {
                match_pattern: Some(matcher::list_matcher::MatchPattern::OneOf(Box::new(v))),
            },
        ))),
    }
}

pub(super) fn metadata_matcher(
    filter: &str,
    keys: &[&str],
    value: matcher::ValueMatcher,
) -> matcher::MetadataMatcher {
    matcher::MetadataMatcher {
        filter: filter.to_string(),
        path: keys
            .iter()
            .map(|k| matcher::metadata_matcher::PathSegment {
                segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
                    k.to_string(),
                )),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// `10.0.0.0/8` or a bare address (a /32 or /128); the address is kept as written.
pub(super) fn cidr_range(v: &str) -> Result<xds_core::CidrRange, String> {
    let (addr, len) = if v.contains('/') {
        let net: ipnet::IpNet = v.parse().map_err(|e| format!("bad CIDR {v:?}: {e}"))?;
        (net.addr(), net.prefix_len())
    } else {
        let ip: std::net::IpAddr = v.parse().map_err(|_| format!("bad IP address {v:?}"))?;
        (ip, if ip.is_ipv4() { 32 } else { 128 })
    };
    Ok(xds_core::CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(pb::UInt32Value {
            value: u32::from(len),
        }),
    })
}

/// `[a]` → `a`.
pub(super) fn name_in_brackets(s: &str) -> Result<String, String> {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(str::to_string)
        .ok_or_else(|| format!("expecting format [<NAME>], but found {s}"))
}

/// `[a][b]` → `[a, b]`; anything else as [`name_in_brackets`].
pub(super) fn names_in_nested_brackets(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').and_then(|r| {
            let end = r.find(']')?;
            (!r[..end].contains('[')).then_some((&r[..end], &r[end + 1..]))
        });
        match inner {
            Some((name, tail)) => {
                out.push(name.to_string());
                rest = tail;
            }
            None => return name_in_brackets(s).map(|n| vec![n]),
        }
    }
    Ok(out)
}

pub(super) fn permission(rule: rbac::permission::Rule) -> rbac::Permission {
    rbac::Permission { rule: Some(rule) }
}

pub(super) fn principal(id: rbac::principal::Identifier) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(id),
    }
}

pub(super) fn permission_or(rules: Vec<rbac::Permission>) -> rbac::Permission {
    permission(rbac::permission::Rule::OrRules(rbac::permission::Set {
        rules,
    }))
}

pub(super) fn permission_and(rules: Vec<rbac::Permission>) -> rbac::Permission {
    permission(rbac::permission::Rule::AndRules(rbac::permission::Set {
        rules,
    }))
}

pub(super) fn permission_not(p: rbac::Permission) -> rbac::Permission {
    permission(rbac::permission::Rule::NotRule(Box::new(p)))
}

pub(super) fn principal_or(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::OrIds(rbac::principal::Set {
        ids,
    }))
}

pub(super) fn principal_and(ids: Vec<rbac::Principal>) -> rbac::Principal {
    principal(rbac::principal::Identifier::AndIds(rbac::principal::Set {
        ids,
    }))
}

pub(super) fn principal_not(p: rbac::Principal) -> rbac::Principal {
    principal(rbac::principal::Identifier::NotId(Box::new(p)))
}

/// A dynamic metadata matcher (`sourced_metadata`: the non-deprecated form of istiod's
/// `metadata`, with the same meaning).
pub(super) fn dynamic_metadata(m: matcher::MetadataMatcher) -> rbac::SourcedMetadata {
    rbac::SourcedMetadata {
        metadata_matcher: Some(m),
        metadata_source: rbac::MetadataSource::Dynamic as i32,
    }
}

pub(super) fn principal_metadata(m: matcher::MetadataMatcher) -> rbac::Principal {
    principal(rbac::principal::Identifier::SourcedMetadata(
        dynamic_metadata(m),
    ))
}

/// The peer's identity: the URI SAN of its client certificate (so only over mutual TLS).
pub(super) fn authenticated(m: matcher::StringMatcher) -> rbac::Principal {
    principal(rbac::principal::Identifier::Authenticated(
        rbac::principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use matcher::string_matcher::MatchPattern as M;

    pub(in crate::translate::authz) fn pattern(m: &matcher::StringMatcher) -> (String, String) {
        match &m.match_pattern {
            Some(M::Exact(v)) => ("exact".into(), v.clone()),
            Some(M::Prefix(v)) => ("prefix".into(), v.clone()),
            Some(M::Suffix(v)) => ("suffix".into(), v.clone()),
            Some(M::SafeRegex(r)) => ("regex".into(), r.regex.clone()),
            other => panic!("unexpected pattern {other:?}"),
        }
    }

    pub(in crate::translate::authz) fn p(kind: &str, v: &str) -> (String, String) {
        (kind.to_string(), v.to_string())
    }

    #[test]
    fn string_matchers_follow_istio_wildcards() {
        assert_eq!(pattern(&string_matcher("*")), p("regex", ".+"));
        assert_eq!(pattern(&string_matcher("*.com")), p("suffix", ".com"));
        assert_eq!(pattern(&string_matcher("/api/*")), p("prefix", "/api/"));
        assert_eq!(pattern(&string_matcher("/x")), p("exact", "/x"));
        let spiffe = |v| pattern(&string_matcher_with_prefix(v, "spiffe://"));
        assert_eq!(spiffe("td/ns/a/sa/b"), p("exact", "spiffe://td/ns/a/sa/b"));
        assert_eq!(spiffe("td/ns/a/*"), p("prefix", "spiffe://td/ns/a/"));
        assert_eq!(spiffe("*/sa/b.c"), p("regex", "spiffe://.*/sa/b\\.c"));
        assert_eq!(spiffe("*"), p("regex", ".+"));
    }

    #[test]
    fn header_and_host_matchers() {
        use xds_route::header_matcher::HeaderMatchSpecifier as H;
        let h = header_matcher(":authority", "*", true);
        assert_eq!(h.header_match_specifier, Some(H::PresentMatch(true)));
        let h = header_matcher(":authority", "*.example.com", true);
        let Some(H::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match expected")
        };
        assert!(m.ignore_case);
        assert_eq!(pattern(&m), p("suffix", ".example.com"));
        let h = header_matcher(":method", "GET", false);
        let Some(H::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match expected")
        };
        assert!(!m.ignore_case);
        assert_eq!(pattern(&m), p("exact", "GET"));
    }

    #[test]
    fn claim_names_in_brackets() {
        assert_eq!(names_in_nested_brackets("[a][b]").unwrap(), vec!["a", "b"]);
        assert_eq!(names_in_nested_brackets("[a.b]").unwrap(), vec!["a.b"]);
        assert!(names_in_nested_brackets("a]").is_err());
        assert_eq!(name_in_brackets("[x-user]").unwrap(), "x-user");
    }

    #[test]
    fn addresses() {
        let c = cidr_range("10.1.0.0/16").unwrap();
        assert_eq!(c.address_prefix, "10.1.0.0");
        assert_eq!(c.prefix_len.unwrap().value, 16);
        assert_eq!(
            cidr_range("2001:db8::1").unwrap().prefix_len.unwrap().value,
            128
        );
        assert!(cidr_range("nope").is_err());
        assert_eq!(quote_meta("a.b*c(d)"), "a\\.b\\*c\\(d\\)");
    }
}
