//! The mesh's trust domains (its own and its aliases) and istiod's trust-domain migration of
//! policy values: principals naming one of them, or `cluster.local`, rewritten to each of them;
//! trust-domain values naming one expanded to all of them. Plain strings in and out.

use crate::translate::scope::Scope;

/// The mesh trust domain and its aliases: principals naming any of them (or `cluster.local`)
/// match all of them.
pub(super) fn trust_domains(scope: &Scope) -> Vec<String> {
    let mesh = &scope.model.mesh;
    let mut out = vec![mesh.trust_domain.clone()];
    out.extend(mesh.trust_domain_aliases.iter().cloned());
    out
}

/// istiod's trust-domain migration of principals (`<td>/ns/<ns>/sa/<sa>`). A principal whose
/// trust domain is enforced (not `*`) and matches one of `bundle` (the mesh's trust domain and
/// its aliases, see [`trust_domain_matches`]) or is `cluster.local` becomes one principal per
/// trust domain of the bundle: the trust domain replaced by that one, or kept as written when it
/// is a `*suffix` pattern that one ends with. Anything else (`*/ns/...`, another trust domain,
/// not a five-part SPIFFE path) is kept as written.
pub(super) fn replace_trust_domains(principals: &[String], bundle: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in principals {
        let parts: Vec<&str> = p.split('/').collect();
        if parts.len() != 5 || parts[0] == "*" {
            out.push(p.clone());
            continue;
        }
        let td = parts[0];
        if !(trust_domain_matches(td, bundle) || td == "cluster.local") {
            out.push(p.clone());
            continue;
        }
        let mut expanded: Vec<String> = Vec::new();
        for b in bundle {
            let candidate = if suffix_pattern_matches(b, td) {
                p.clone()
            } else {
                format!("{b}/{}", parts[1..].join("/"))
            };
            if !expanded.contains(&candidate) {
                expanded.push(candidate);
            }
        }
        out.extend(expanded);
    }
    out
}

/// Whether trust domain `td` matches one of `list`, where either side may be a pattern: equal,
/// a lone `*` in the list, or one side `prefix*` or `*suffix` matching the other (istiod's
/// trust-domain `stringMatch`).
fn trust_domain_matches(td: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        td == s
            || s == "*"
            || prefix_pattern_matches(td, s)
            || prefix_pattern_matches(s, td)
            || suffix_pattern_matches(td, s)
            || suffix_pattern_matches(s, td)
    })
}

/// `pattern` is `prefix*` and `value` starts with `prefix`.
fn prefix_pattern_matches(value: &str, pattern: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| value.starts_with(prefix))
}

/// `pattern` is `*suffix` and `value` ends with `suffix`.
fn suffix_pattern_matches(value: &str, pattern: &str) -> bool {
    pattern
        .strip_prefix('*')
        .is_some_and(|suffix| value.ends_with(suffix))
}

pub(super) fn expand_trust_domains(values: &[String], bundle: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let items: Vec<String> = if bundle.contains(v) {
            bundle.to_vec()
        } else {
            vec![v.clone()]
        };
        for i in items {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_aliases() {
        let bundle = vec!["example.com".to_string(), "old.example".to_string()];
        let got = replace_trust_domains(
            &[
                "cluster.local/ns/a/sa/b".to_string(),
                "*/ns/a/sa/b".to_string(),
                "other.td/ns/a/sa/b".to_string(),
                "not-a-spiffe-id".to_string(),
            ],
            &bundle,
        );
        assert_eq!(
            got,
            vec![
                "example.com/ns/a/sa/b",
                "old.example/ns/a/sa/b",
                "*/ns/a/sa/b",
                "other.td/ns/a/sa/b",
                "not-a-spiffe-id"
            ]
        );
        assert_eq!(
            expand_trust_domains(&["old.example".to_string(), "x".to_string()], &bundle),
            vec!["example.com", "old.example", "x"]
        );
    }

    /// Principals against a trust domain and its aliases, as istiod rewrites them: a trust
    /// domain written with a wildcard (`td*`, `*td`) that matches any of the mesh's trust domains
    /// (or `cluster.local`) is rewritten to each of them, kept as written where its suffix
    /// pattern already covers one.
    #[test]
    fn trust_domain_wildcards() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (what, the mesh's trust domains, principals as written, principals generated)
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "no aliases",
                &["cluster.local"],
                &["cluster.local/ns/foo/sa/bar"],
                &["cluster.local/ns/foo/sa/bar"],
            ),
            ("lone *", &["cluster.local"], &["*"], &["*"]),
            (
                "any trust domain",
                &["cluster.local"],
                &["*/ns/foo/sa/bar"],
                &["*/ns/foo/sa/bar"],
            ),
            (
                "one alias",
                &["td2", "td1"],
                &["td1/ns/foo/sa/bar"],
                &["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
            ),
            (
                "cluster.local names the mesh",
                &["td1", "cluster.local"],
                &["cluster.local/ns/foo/sa/bar", "cluster.local/ns/yyy/sa/zzz"],
                &[
                    "td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                    "td1/ns/yyy/sa/zzz",
                    "cluster.local/ns/yyy/sa/zzz",
                ],
            ),
            (
                "wildcards kept",
                &["td1", "cluster.local"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
            ),
            (
                "suffix pattern matching an alias",
                &["td2", "foo-td1", "cluster.local"],
                &["*-td1/ns/foo/sa/bar"],
                &[
                    "td2/ns/foo/sa/bar",
                    "*-td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                ],
            ),
            (
                "no match",
                &["td1", "td2"],
                &["some-td/ns/foo/sa/bar"],
                &["some-td/ns/foo/sa/bar"],
            ),
            (
                "matches one alias",
                &["new-td", "td2", "td3"],
                &["td1/ns/some-ns/sa/some-sa", "td2/ns/foo/sa/bar"],
                &[
                    "td1/ns/some-ns/sa/some-sa",
                    "new-td/ns/foo/sa/bar",
                    "td2/ns/foo/sa/bar",
                    "td3/ns/foo/sa/bar",
                ],
            ),
            (
                "empty trust domain",
                &["new-td", "td2"],
                &["/ns/some-ns/sa/some-sa"],
                &["/ns/some-ns/sa/some-sa"],
            ),
            (
                "suffix pattern, once",
                &["new-td", "old-td"],
                &["*-td/ns/some-ns/sa/some-sa"],
                &["*-td/ns/some-ns/sa/some-sa"],
            ),
            // Prefix patterns are never kept: each trust domain replaces them.
            (
                "prefix pattern",
                &["cluster.local"],
                &["cluster*/ns/foo/sa/x"],
                &["cluster.local/ns/foo/sa/x"],
            ),
            (
                "prefix pattern, aliases",
                &["td1", "td2"],
                &["td*/ns/foo/sa/x"],
                &["td1/ns/foo/sa/x", "td2/ns/foo/sa/x"],
            ),
            (
                "prefix pattern matching one alias",
                &["example.org", "old-td"],
                &["old*/ns/foo/sa/x"],
                &["example.org/ns/foo/sa/x", "old-td/ns/foo/sa/x"],
            ),
            (
                "prefix pattern matching cluster.local only",
                &["example.org"],
                &["clu*/ns/foo/sa/x"],
                &["clu*/ns/foo/sa/x"],
            ),
            (
                "suffix pattern covering the trust domain",
                &["cluster.local"],
                &["*local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
                &["*local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
            ),
            (
                "suffix pattern, aliases",
                &["cluster.local", "foobar"],
                &["*bar/ns/foo/sa/x"],
                &["cluster.local/ns/foo/sa/x", "*bar/ns/foo/sa/x"],
            ),
            // A wildcard alias matches the principal's trust domain, and replaces it.
            (
                "wildcard alias",
                &["example.org", "*.corp"],
                &["a.corp/ns/foo/sa/x"],
                &["example.org/ns/foo/sa/x", "*.corp/ns/foo/sa/x"],
            ),
            (
                "not a SPIFFE ID",
                &["td1", "td2"],
                &["sa/bar", "spiffe://td1/ns/foo/sa/bar"],
                &["sa/bar", "spiffe://td1/ns/foo/sa/bar"],
            ),
        ];
        for (name, bundle, principals, want) in cases {
            assert_eq!(
                replace_trust_domains(&s(principals), &s(bundle)),
                s(want),
                "{name}"
            );
        }
    }
}
