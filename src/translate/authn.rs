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
use crate::model::{Kind, Resource, Severity, Spec};

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

/// A PeerAuthentication and the resource it came from.
type Policy<'a> = (&'a Resource, &'a PeerAuthentication);

/// PeerAuthentications by scope for one proxy: (mesh, namespace, workload).
fn policies<'a>(scope: &Scope<'a>) -> (Option<Policy<'a>>, Option<Policy<'a>>, Option<Policy<'a>>) {
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
        .copied();
    let namespace = all
        .iter()
        .find(|(r, pa)| r.meta.namespace == proxy.namespace && !has_selector(pa))
        .copied();
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
        .copied();
    (mesh, namespace, workload)
}

/// The mode for `port` (a workload port), or for traffic to ports the proxy does not know
/// (`None`: the passthrough chains).
///
/// A proxy without a workload certificate cannot terminate mTLS: PERMISSIVE accepts plaintext
/// only (DISABLE), while STRICT stays STRICT — its chains need the `default` secret the proxy
/// is never served, so they accept no connection — and is reported, never relaxed.
pub fn inbound_mode(scope: &Scope, port: Option<u16>) -> MtlsMode {
    let (mesh, namespace, workload) = policies(scope);
    let mut mode = MtlsMode::Permissive;
    let mut decided: Option<(&Resource, String)> = None;
    for (r, pa) in [mesh, namespace, workload].into_iter().flatten() {
        if let Some(m) = mode_of(pa.mtls.as_ref()) {
            mode = m;
            decided = Some((r, "spec.mtls.mode".to_string()));
        }
    }
    if let (Some(port), Some((r, pa))) = (port, workload)
        && let Some(m) = pa
            .port_level_mtls
            .as_ref()
            .and_then(|ports| ports.get(&port.to_string()))
            .and_then(|m| mode_of(Some(m)))
    {
        mode = m;
        decided = Some((r, format!("spec.portLevelMtls.{port}.mode")));
    }
    if scope.proxy.workload_certificate {
        return mode;
    }
    match (mode, decided) {
        (MtlsMode::Strict, Some((r, field))) => {
            let what = match port {
                Some(p) => format!("port {p} accepts no connection"),
                None => "traffic to ports it does not declare is refused".to_string(),
            };
            let mut d = r.diagnostic(
                field,
                format!(
                    "STRICT needs a workload certificate and this proxy has none (it did not prove its identity on bowline's TLS port): {what} until it does"
                ),
            );
            d.severity = Severity::Warning;
            scope.report(d);
            MtlsMode::Strict
        }
        (MtlsMode::Strict, None) => MtlsMode::Strict,
        _ => MtlsMode::Disable,
    }
}
