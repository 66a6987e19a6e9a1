//! Inbound mutual TLS: which mode a workload port accepts, from PeerAuthentication as istiod
//! composes it (`ComposePeerAuthentication`), and the filter chains that implement it (in
//! `listener`).
//!
//! Policies: mesh-wide (the root namespace, no selector), namespace-wide (the proxy's
//! namespace, no selector), and workload (the proxy's namespace, a selector matching its
//! labels); when several apply at one level, the first by namespace/name wins. The mode starts
//! as PERMISSIVE and each level that sets one (not UNSET) replaces it, the most specific last;
//! a workload policy's `portLevelMtls` then sets single ports (by the workload's port number).
//!
//! STRICT accepts only mTLS; PERMISSIVE accepts mTLS (TLS carrying one of istiod's mesh ALPN
//! values, told apart by the `tls_inspector` listener filter) and plaintext; DISABLE accepts
//! plaintext only. A proxy without a workload certificate cannot terminate mTLS and is always
//! DISABLE.

use super::scope::Scope;
use crate::model::registry;
use crate::model::security::{self, PeerAuthentication};
use crate::model::{Kind, Resource, Spec};

/// The mTLS mode of an inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    Strict,
    Permissive,
    Disable,
}

fn mode_of(m: Option<&security::MutualTls>) -> Option<MtlsMode> {
    match m?.mode? {
        security::MtlsMode::Unset => None,
        security::MtlsMode::Disable => Some(MtlsMode::Disable),
        security::MtlsMode::Permissive => Some(MtlsMode::Permissive),
        security::MtlsMode::Strict => Some(MtlsMode::Strict),
    }
}

/// PeerAuthentications by scope for one proxy: (mesh, namespace, workload).
fn policies<'a>(
    scope: &Scope<'a>,
) -> (
    Option<&'a PeerAuthentication>,
    Option<&'a PeerAuthentication>,
    Option<&'a PeerAuthentication>,
) {
    let mut all: Vec<(&'a Resource, &'a PeerAuthentication)> = scope
        .model
        .of_kind(Kind::PeerAuthentication)
        .filter_map(|r| match &r.spec {
            Spec::PeerAuthentication(pa) => Some((r.as_ref(), pa.as_ref())),
            _ => None,
        })
        .collect();
    all.sort_by(|(a, _), (b, _)| {
        (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
    });
    let proxy = scope.proxy;
    let root = scope.model.mesh.root_namespace.as_str();
    let has_selector = |pa: &PeerAuthentication| {
        pa.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    };
    let mesh = all
        .iter()
        .find(|(r, pa)| r.meta.namespace == root && !has_selector(pa))
        .map(|(_, pa)| *pa);
    let namespace = all
        .iter()
        .find(|(r, pa)| r.meta.namespace == proxy.namespace && !has_selector(pa))
        .map(|(_, pa)| *pa);
    let workload = all
        .iter()
        .find(|(r, pa)| {
            r.meta.namespace == proxy.namespace
                && has_selector(pa)
                && pa
                    .selector
                    .as_ref()
                    .is_some_and(|s| registry::selects(&s.match_labels, &proxy.labels))
        })
        .map(|(_, pa)| *pa);
    (mesh, namespace, workload)
}

/// The mode for `port` (a workload port), or for traffic to ports the proxy does not know
/// (`None`: the passthrough chains).
pub fn inbound_mode(scope: &Scope, port: Option<u16>) -> MtlsMode {
    if !scope.proxy.workload_certificate {
        return MtlsMode::Disable;
    }
    let (mesh, namespace, workload) = policies(scope);
    let mut mode = MtlsMode::Permissive;
    for pa in [mesh, namespace, workload].into_iter().flatten() {
        if let Some(m) = mode_of(pa.mtls.as_ref()) {
            mode = m;
        }
    }
    if let (Some(port), Some(pa)) = (port, workload)
        && let Some(m) = pa
            .port_level_mtls
            .as_ref()
            .and_then(|ports| ports.get(&port.to_string()))
            .and_then(|m| mode_of(Some(m)))
    {
        mode = m;
    }
    mode
}
