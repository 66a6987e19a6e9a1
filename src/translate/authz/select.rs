//! Which policies apply to a proxy, as istiod's workload policy matcher decides: those in its
//! namespace and in the root namespace whose `selector` matches its labels (no selector: all);
//! policies with `targetRef(s)` apply only to Kubernetes Gateway API gateways (workloads labelled
//! `gateway.networking.k8s.io/gateway-name`), never to sidecars. AuthorizationPolicies come
//! root namespace first, each with its dry-run annotation read; the JWT rules of
//! RequestAuthentications come sorted by issuer.

use crate::model::networking::TypeWorkloadSelector;
use crate::model::registry;
use crate::model::security::{
    AuthorizationPolicy, JwtRule, PolicyTargetReference, RequestAuthentication,
};
use crate::model::validation::security::{ANNOTATION_DRY_RUN, parse_go_bool};
use crate::model::{Kind, Resource, Spec};
use crate::translate::scope::Scope;

/// The label that makes a workload a Kubernetes Gateway API gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// An AuthorizationPolicy that applies to the proxy.
#[derive(Clone, Copy)]
pub(super) struct Selected<'a> {
    pub(super) resource: &'a Resource,
    pub(super) spec: &'a AuthorizationPolicy,
    pub(super) dry_run: bool,
}

/// Whether a policy with this selector and these target references, in `namespace`, applies to
/// the proxy (istiod's workload policy matcher).
fn attaches(
    scope: &Scope,
    namespace: &str,
    selector: Option<&TypeWorkloadSelector>,
    target_refs: &[&PolicyTargetReference],
) -> bool {
    let proxy = scope.proxy;
    if namespace != proxy.namespace && namespace != scope.model.mesh.root_namespace {
        return false;
    }
    let selected = || selector.is_none_or(|s| registry::selects(&s.match_labels, &proxy.labels));
    let Some(gateway) = proxy.labels.get(GATEWAY_NAME_LABEL) else {
        // Sidecars: selector only; a policy with target references is not for them.
        return target_refs.is_empty() && selected();
    };
    if target_refs.is_empty() {
        return selected();
    }
    namespace == proxy.namespace
        && target_refs.iter().any(|t| {
            t.group.as_deref() == Some("gateway.networking.k8s.io")
                && t.kind == "Gateway"
                && &t.name == gateway
                && t.namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == proxy.namespace)
        })
}

/// Root-namespace policies first, then the proxy's namespace; oldest first within each.
pub(super) fn authorization_policies<'a>(scope: &Scope<'a>) -> Vec<Selected<'a>> {
    let root = scope.model.mesh.root_namespace.as_str();
    let mut namespaces = vec![root];
    if scope.proxy.namespace != root {
        namespaces.push(scope.proxy.namespace.as_str());
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in scope.model.of_kind(Kind::AuthorizationPolicy) {
            let Spec::AuthorizationPolicy(spec) = &r.spec else {
                continue;
            };
            if r.meta.namespace != ns
                || !attaches(scope, ns, spec.selector.as_ref(), &spec.target_refs())
            {
                continue;
            }
            let dry_run = r
                .meta
                .annotations
                .get(ANNOTATION_DRY_RUN)
                .and_then(|v| parse_go_bool(v))
                .unwrap_or(false);
            out.push(Selected {
                resource: r.as_ref(),
                spec: spec.as_ref(),
                dry_run,
            });
        }
    }
    out
}

/// The JWT rules of every RequestAuthentication that applies to the proxy, sorted by issuer
/// (stable, so equal issuers keep their policy order), each with its policy.
pub(super) fn jwt_rules<'a>(scope: &Scope<'a>) -> Vec<(&'a Resource, usize, &'a JwtRule)> {
    let root = scope.model.mesh.root_namespace.as_str();
    let mut namespaces = vec![scope.proxy.namespace.as_str()];
    if scope.proxy.namespace != root {
        namespaces.push(root);
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in scope.model.of_kind(Kind::RequestAuthentication) {
            let Spec::RequestAuthentication(spec) = &r.spec else {
                continue;
            };
            let spec: &RequestAuthentication = spec;
            if r.meta.namespace != ns
                || !attaches(scope, ns, spec.selector.as_ref(), &spec.target_refs())
            {
                continue;
            }
            out.extend(
                spec.jwt_rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| (r.as_ref(), i, rule)),
            );
        }
    }
    out.sort_by(|a, b| a.2.issuer.cmp(&b.2.issuer));
    out
}
