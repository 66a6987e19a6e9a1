//! Which VirtualService routes a host for a proxy, and its HTTP rules as istiod sees them:
//! delegate VirtualServices merged into their roots, destination hosts fully qualified.
//!
//! istiod's precedence for a host on a sidecar: VirtualServices private to the proxy's
//! namespace first, then those exported to it by name, then public ones; within each group the
//! oldest first (creation time, then name, then namespace). A VirtualService naming the host
//! exactly beats any wildcard one; among wildcards only the most specific applies. Of several
//! for the same host, the first that yields a route for the port routes it: VirtualServices are
//! not merged, except delegates into their root.

use std::collections::BTreeMap;

use super::IntoWarning;
use super::scope::{Scope, exported_to, host_matches, resolve_host};
use crate::model::Resource;
use crate::model::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

/// One HTTP rule ready to translate.
#[derive(Debug, Clone)]
pub struct Rule<'a> {
    /// The VirtualService the rule is written in (the delegate, for merged rules).
    pub origin: &'a Resource,
    /// The VirtualService the host is routed by (the root, for merged rules): the one istiod
    /// names in the routes' metadata.
    pub root: &'a Resource,
    /// The rule's field path in `origin`, for diagnostics.
    pub field: String,
    pub route: HttpRoute,
}

/// The VirtualServices that may route `hostname` for the proxy, most preferred first.
pub fn for_host<'a>(scope: &Scope<'a>, hostname: &str) -> Vec<(&'a Resource, &'a VirtualService)> {
    let domain = scope.domain_suffix();
    let hosts = |r: &Resource, vs: &'a VirtualService| -> Vec<String> {
        vs.hosts
            .iter()
            .map(|h| resolve_host(h, &r.meta.namespace, domain).to_ascii_lowercase())
            .collect()
    };
    let mut candidates = scope.virtual_services(hostname);
    candidates.sort_by_cached_key(|(r, vs)| {
        let public = vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*");
        let group = if public {
            2
        } else if r.meta.namespace == scope.proxy.namespace {
            0
        } else {
            1
        };
        (
            group,
            r.meta.creation_timestamp.clone().unwrap_or_default(),
            r.meta.name.clone(),
            r.meta.namespace.clone(),
        )
    });
    let wanted = hostname.to_ascii_lowercase();
    let exact: Vec<(&Resource, &VirtualService)> = candidates
        .iter()
        .copied()
        .filter(|(r, vs)| hosts(r, vs).contains(&wanted))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    // The most specific wildcard (the longest suffix), and of those naming it, the first.
    let mut best: Option<(usize, (&Resource, &VirtualService))> = None;
    for (r, vs) in candidates {
        for h in hosts(r, vs) {
            if h.starts_with('*')
                && host_matches(&h, &wanted)
                && best.is_none_or(|(len, _)| h.len() > len)
            {
                best = Some((h.len(), (r, vs)));
            }
        }
    }
    best.map(|(_, c)| vec![c]).unwrap_or_default()
}

/// The HTTP rules of a root VirtualService: each delegating rule replaced by the delegate's
/// rules merged under it, every destination host fully qualified relative to the namespace of
/// the VirtualService that names it.
pub fn http_rules<'a>(scope: &Scope<'a>, root: &'a Resource, vs: &VirtualService) -> Vec<Rule<'a>> {
    let domain = scope.domain_suffix();
    let mut out = Vec::new();
    for (i, rule) in vs.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        let mut route = rule.clone();
        qualify(&mut route, &root.meta.namespace, domain);
        let Some(delegate) = rule.delegate.as_ref() else {
            out.push(Rule {
                origin: root,
                root,
                field,
                route,
            });
            continue;
        };
        let namespace = delegate
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&root.meta.namespace);
        let warn = |message: String| scope.report(root.diagnostic(&field, message).into_warning());
        let model: &'a crate::model::Model = scope.model;
        let mut named = model
            .index()
            .virtual_services_named(namespace, &delegate.name)
            .iter()
            .filter_map(|p| model.resources.get(*p))
            .filter_map(|r| match &r.spec {
                crate::model::Spec::VirtualService(d) => Some((r.as_ref(), d.as_ref())),
                _ => None,
            });
        let Some((resource, spec)) = named.find(|(_, d)| d.hosts.is_empty()) else {
            warn(format!(
                "delegate VirtualService {namespace}/{} not found (a delegate has no hosts); rule skipped",
                delegate.name
            ));
            continue;
        };
        if !exported_to(&spec.export_to, namespace, &root.meta.namespace) {
            warn(format!(
                "delegate VirtualService {namespace}/{} is not exported to namespace {}; rule skipped",
                delegate.name, root.meta.namespace
            ));
            continue;
        }
        route.delegate = None;
        for (j, sub) in spec.http.iter().enumerate() {
            let sub_field = format!("spec.http[{j}]");
            if sub.delegate.is_some() {
                scope.report(
                    resource
                        .diagnostic(
                            &sub_field,
                            "a delegate's rule cannot delegate again; rule skipped",
                        )
                        .into_warning(),
                );
                continue;
            }
            let mut sub = sub.clone();
            qualify(&mut sub, namespace, domain);
            match merge_route(&route, sub) {
                Some(merged) => out.push(Rule {
                    origin: resource,
                    root,
                    field: sub_field,
                    route: merged,
                }),
                None => scope.report(
                    resource
                        .diagnostic(
                            &sub_field,
                            format!(
                                "match conflicts with the delegating rule {field} of VirtualService {}/{}; rule skipped",
                                root.meta.namespace, root.meta.name
                            ),
                        )
                        .into_warning(),
                ),
            }
        }
    }
    out
}

/// Fully qualifies the hosts a rule sends traffic to, as istiod does when it reads the
/// VirtualService.
fn qualify(route: &mut HttpRoute, namespace: &str, domain: &str) {
    let hosts = route
        .route
        .iter_mut()
        .map(|d| &mut d.destination)
        .chain(route.mirror.as_mut())
        .chain(route.mirrors.iter_mut().map(|m| &mut m.destination));
    for d in hosts {
        d.host = resolve_host(&d.host, namespace, domain);
    }
}

/// A delegate's rule under the root rule that delegates to it: the delegate's matches must
/// each narrow some root match (ANDed with it); settings the delegate leaves unset come from the
/// root. `None` when the matches conflict.
pub fn merge_route(root: &HttpRoute, mut delegate: HttpRoute) -> Option<HttpRoute> {
    delegate.match_ = merge_matches(&root.match_, &delegate.match_)?;
    delegate.name = joined_name(root.name.as_deref(), delegate.name.as_deref());
    fn inherit<T: Clone>(own: &mut Option<T>, root: &Option<T>) {
        if own.is_none() {
            own.clone_from(root);
        }
    }
    inherit(&mut delegate.rewrite, &root.rewrite);
    inherit(&mut delegate.direct_response, &root.direct_response);
    inherit(&mut delegate.timeout, &root.timeout);
    inherit(&mut delegate.retries, &root.retries);
    inherit(&mut delegate.fault, &root.fault);
    inherit(&mut delegate.mirror, &root.mirror);
    inherit(&mut delegate.mirror_percent, &root.mirror_percent);
    inherit(&mut delegate.mirror_percentage, &root.mirror_percentage);
    inherit(&mut delegate.cors_policy, &root.cors_policy);
    inherit(&mut delegate.headers, &root.headers);
    if delegate.mirrors.is_empty() {
        delegate.mirrors.clone_from(&root.mirrors);
    }
    Some(delegate)
}

/// `root-delegate`, or whichever of the two is set.
fn joined_name(root: Option<&str>, delegate: Option<&str>) -> Option<String> {
    let root = root.filter(|n| !n.is_empty());
    match delegate.filter(|n| !n.is_empty()) {
        None => root.map(str::to_string),
        Some(d) => Some(match root {
            Some(r) => format!("{r}-{d}"),
            None => d.to_string(),
        }),
    }
}

/// Every delegate match merged with each root match it does not conflict with; `None` if some
/// delegate match fits no root match.
fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in delegate {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !conflicts(r, leaf))
                .map(|r| merge_match(r, leaf)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// The delegate's match with what it leaves unset taken from the root's.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    fn or<T: Clone>(own: &Option<T>, root: &Option<T>) -> Option<T> {
        own.clone().or_else(|| root.clone())
    }
    fn union<V: Clone>(
        root: &BTreeMap<String, V>,
        leaf: &BTreeMap<String, V>,
    ) -> BTreeMap<String, V> {
        let mut out = root.clone();
        out.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
    fn nonempty(s: &Option<String>) -> Option<String> {
        s.clone().filter(|s| !s.is_empty())
    }
    let HttpMatchRequest {
        name,
        uri,
        scheme,
        method,
        authority,
        headers,
        port,
        source_labels,
        gateways,
        query_params,
        ignore_uri_case,
        without_headers,
        source_namespace,
        stat_prefix,
    } = leaf;
    HttpMatchRequest {
        name: joined_name(root.name.as_deref(), name.as_deref()),
        uri: or(uri, &root.uri),
        scheme: or(scheme, &root.scheme),
        method: or(method, &root.method),
        authority: or(authority, &root.authority),
        headers: union(&root.headers, headers),
        port: port.filter(|p| *p != 0).or(root.port),
        source_labels: union(&root.source_labels, source_labels),
        gateways: if gateways.is_empty() {
            root.gateways.clone()
        } else {
            gateways.clone()
        },
        query_params: union(&root.query_params, query_params),
        ignore_uri_case: *ignore_uri_case,
        without_headers: union(&root.without_headers, without_headers),
        source_namespace: nonempty(source_namespace).or_else(|| nonempty(&root.source_namespace)),
        stat_prefix: nonempty(stat_prefix).or_else(|| nonempty(&root.stat_prefix)),
    }
}

/// Whether a delegate match cannot narrow a root match (istiod's rules).
fn conflicts(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (root_map, leaf_map) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaf_map
            .iter()
            .any(|(k, l)| string_match_conflict(root_map.get(k), Some(l)))
        {
            return true;
        }
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    let (root_port, leaf_port) = (root.port.unwrap_or(0), leaf.port.unwrap_or(0));
    if root_port > 0 && leaf_port > 0 && root_port != leaf_port {
        return true;
    }
    let root_ns = root.source_namespace.as_deref().unwrap_or_default();
    if !root_ns.is_empty() && leaf.source_namespace.as_deref().unwrap_or_default() != root_ns {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        return root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g));
    }
    false
}

/// Whether `leaf` fails to narrow `root`: unset on either side never conflicts; a regex only
/// combines with unset; an exact root needs the same exact leaf; a prefix root needs a leaf
/// prefix or exact value under it.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    // An empty value counts as unset, as in the protobuf API.
    let parts = |m: &StringMatch| -> (String, String, String) {
        let mut p = (String::new(), String::new(), String::new());
        match m {
            StringMatch::Exact(v) => p.0.clone_from(v),
            StringMatch::Prefix(v) => p.1.clone_from(v),
            StringMatch::Regex(v) => p.2.clone_from(v),
            StringMatch::Empty => {}
        }
        p
    };
    let (root_exact, root_prefix, root_regex) = parts(root);
    let (leaf_exact, leaf_prefix, leaf_regex) = parts(leaf);
    let leaf_any = !(leaf_exact.is_empty() && leaf_prefix.is_empty() && leaf_regex.is_empty());
    let root_any = !(root_exact.is_empty() && root_prefix.is_empty() && root_regex.is_empty());
    if (!root_regex.is_empty() && leaf_any) || (!leaf_regex.is_empty() && root_any) {
        return true;
    }
    if !root_exact.is_empty() {
        return !leaf_prefix.is_empty() || leaf_exact != root_exact;
    }
    if !root_prefix.is_empty() {
        if !leaf_prefix.is_empty() {
            return !leaf_prefix.starts_with(&root_prefix);
        }
        if !leaf_exact.is_empty() {
            return !leaf_exact.starts_with(&root_prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::networking::{Destination, HttpRouteDestination};

    fn uri(m: StringMatch) -> HttpMatchRequest {
        HttpMatchRequest {
            uri: Some(m),
            ..Default::default()
        }
    }
    fn prefix(p: &str) -> StringMatch {
        StringMatch::Prefix(p.into())
    }
    fn exact(p: &str) -> StringMatch {
        StringMatch::Exact(p.into())
    }
    fn regex(p: &str) -> StringMatch {
        StringMatch::Regex(p.into())
    }

    #[test]
    fn string_match_conflicts() {
        let c = |r: Option<StringMatch>, l: Option<StringMatch>| {
            string_match_conflict(r.as_ref(), l.as_ref())
        };
        assert!(!c(None, Some(prefix("/a"))));
        assert!(!c(Some(prefix("/a")), None));
        assert!(!c(Some(prefix("/a")), Some(prefix("/a/b"))));
        assert!(c(Some(prefix("/a/b")), Some(prefix("/a"))));
        assert!(!c(Some(prefix("/a")), Some(exact("/a/x"))));
        assert!(c(Some(prefix("/a")), Some(exact("/b"))));
        assert!(!c(Some(exact("/a")), Some(exact("/a"))));
        assert!(c(Some(exact("/a")), Some(exact("/b"))));
        assert!(c(Some(exact("/a")), Some(prefix("/a"))));
        assert!(c(Some(regex(".*")), Some(prefix("/a"))));
        assert!(c(Some(prefix("/a")), Some(regex("/a.*"))));
        // An unset match type on the root leaves nothing to narrow.
        assert!(c(Some(StringMatch::Empty), Some(prefix("/a"))));
    }

    #[test]
    fn matches_are_anded() {
        let root = vec![HttpMatchRequest {
            name: Some("r".into()),
            uri: Some(prefix("/api")),
            headers: [("x-team".to_string(), exact("a"))].into(),
            ..Default::default()
        }];
        let leaf = vec![HttpMatchRequest {
            name: Some("l".into()),
            uri: Some(prefix("/api/v2")),
            method: Some(exact("GET")),
            headers: [("x-user".to_string(), exact("u"))].into(),
            ..Default::default()
        }];
        let merged = merge_matches(&root, &leaf).expect("no conflict");
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(m.name.as_deref(), Some("r-l"));
        assert_eq!(m.uri, Some(prefix("/api/v2")));
        assert_eq!(m.method, Some(exact("GET")));
        assert_eq!(m.headers.len(), 2);
    }

    #[test]
    fn unset_side_takes_the_other() {
        let root = vec![uri(prefix("/a"))];
        assert_eq!(merge_matches(&root, &[]), Some(root.clone()));
        assert_eq!(merge_matches(&[], &root), Some(root.clone()));
        // The leaf inherits the root's URI.
        let leaf = vec![HttpMatchRequest {
            method: Some(exact("GET")),
            ..Default::default()
        }];
        let merged = merge_matches(&root, &leaf).expect("merges");
        assert_eq!(merged[0].uri, Some(prefix("/a")));
    }

    #[test]
    fn each_leaf_needs_a_root() {
        let root = vec![uri(prefix("/a")), uri(prefix("/b"))];
        // One leaf under /b: merged with /b only.
        let merged = merge_matches(&root, &[uri(prefix("/b/x"))]).expect("merges");
        assert_eq!(merged, vec![uri(prefix("/b/x"))]);
        // A leaf outside every root match fails the whole rule.
        assert_eq!(
            merge_matches(&root, &[uri(prefix("/b/x")), uri(prefix("/c"))]),
            None
        );
    }

    #[test]
    fn other_match_conflicts() {
        let root = HttpMatchRequest {
            port: Some(80),
            source_namespace: Some("a".into()),
            source_labels: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        let ok = HttpMatchRequest {
            port: Some(80),
            source_namespace: Some("a".into()),
            ..Default::default()
        };
        assert!(!conflicts(&root, &ok));
        let other_port = HttpMatchRequest {
            port: Some(81),
            ..ok.clone()
        };
        assert!(conflicts(&root, &other_port));
        // A root sourceNamespace must be repeated by the leaf.
        let no_ns = HttpMatchRequest {
            source_namespace: None,
            ..ok.clone()
        };
        assert!(conflicts(&root, &no_ns));
        let other_label = HttpMatchRequest {
            source_labels: [("app".to_string(), "y".to_string())].into(),
            ..ok.clone()
        };
        assert!(conflicts(&root, &other_label));
        let case = HttpMatchRequest {
            ignore_uri_case: true,
            ..ok
        };
        assert!(conflicts(&root, &case));
    }

    #[test]
    fn route_settings_inherit() {
        let root = HttpRoute {
            name: Some("root".into()),
            match_: vec![uri(prefix("/a"))],
            timeout: Some("5s".into()),
            mirror: Some(Destination {
                host: "m.ns.svc.cluster.local".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let leaf = HttpRoute {
            name: Some("leaf".into()),
            match_: vec![uri(prefix("/a/b"))],
            timeout: Some("1s".into()),
            route: vec![HttpRouteDestination {
                destination: Destination {
                    host: "b".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        let merged = merge_route(&root, leaf.clone()).expect("merges");
        assert_eq!(merged.name.as_deref(), Some("root-leaf"));
        assert_eq!(merged.timeout.as_deref(), Some("1s"));
        assert_eq!(merged.mirror, root.mirror);
        assert_eq!(merged.route, leaf.route);
        let conflicting = HttpRoute {
            match_: vec![uri(prefix("/c"))],
            ..leaf
        };
        assert!(merge_route(&root, conflicting).is_none());
    }

    #[test]
    fn qualifies_hosts_in_the_owner_namespace() {
        let mut r = HttpRoute {
            route: vec![HttpRouteDestination {
                destination: Destination {
                    host: "b".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            mirror: Some(Destination {
                host: "m".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        qualify(&mut r, "ns", "cluster.local");
        assert_eq!(r.route[0].destination.host, "b.ns.svc.cluster.local");
        assert_eq!(
            r.mirror.map(|m| m.host).as_deref(),
            Some("m.ns.svc.cluster.local")
        );
    }
}
