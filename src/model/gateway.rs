//! Which Istio `Gateway`s configure a gateway proxy, and the credentials they name.
//!
//! As istiod (with `PILOT_SCOPE_GATEWAY_TO_NAMESPACE` at its default, off): every Gateway in
//! any namespace whose `selector` is a subset of the proxy's labels (an empty selector selects
//! every gateway proxy), oldest first (creation time, then name, then namespace). Only
//! `router` proxies are configured by Gateways.

use std::collections::BTreeSet;

use super::networking::{Gateway, ServerTlsMode, ServerTlsSettings};
use super::proxy::ProxyType;
use super::{Kind, Model, Proxy, Resource, Spec, registry};

/// The prefix of the SDS resource names of Kubernetes Secrets (`credentialName`).
pub const CREDENTIAL_PREFIX: &str = "kubernetes://";
/// The suffix of the SDS resource name of a credential's CA certificate (MUTUAL servers).
pub const CA_SUFFIX: &str = "-cacert";

/// The Gateways selecting `proxy`, oldest first; none for a proxy that is not a gateway.
pub fn selecting<'a>(model: &'a Model, proxy: &Proxy) -> Vec<(&'a Resource, &'a Gateway)> {
    if proxy.proxy_type != ProxyType::Router {
        return Vec::new();
    }
    let mut out: Vec<(&Resource, &Gateway)> = model
        .index()
        .of_kind(Kind::Gateway)
        .iter()
        .filter_map(|p| model.resources.get(*p))
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r.as_ref(), g.as_ref())),
            _ => None,
        })
        .filter(|(_, g)| registry::selects(&g.selector, &proxy.labels))
        .collect();
    out.sort_by_cached_key(|(r, _)| {
        (
            r.meta.creation_timestamp.clone().unwrap_or_default(),
            r.meta.name.clone(),
            r.meta.namespace.clone(),
        )
    });
    out
}

/// The Gateway a VirtualService's `gateways` entry names, as `namespace/name` (istiod's
/// resolution): `mesh` stays `mesh`; `ns/name` as written (`./name`: the VirtualService's
/// namespace); a bare `name` in the VirtualService's namespace; the legacy `name.ns...` form
/// by its first two labels.
pub fn resolve_gateway_name(gateway: &str, namespace: &str) -> String {
    if gateway == MESH {
        return gateway.to_string();
    }
    match gateway.split_once('/') {
        Some((".", name)) => format!("{namespace}/{name}"),
        Some(_) => gateway.to_string(),
        None => match gateway.split('.').collect::<Vec<_>>().as_slice() {
            [name, ns, ..] => format!("{ns}/{name}"),
            _ => format!("{namespace}/{gateway}"),
        },
    }
}

/// The reserved gateway name of every sidecar.
pub const MESH: &str = "mesh";

/// The SDS resource name of a `credentialName`: `kubernetes://<name>`.
pub fn credential_resource(credential_name: &str) -> String {
    if credential_name.starts_with(CREDENTIAL_PREFIX) {
        credential_name.to_string()
    } else {
        format!("{CREDENTIAL_PREFIX}{credential_name}")
    }
}

/// The SDS resource names of a server's credentials: its certificates (`credentialNames`, else
/// `credentialName`), and for MUTUAL and OPTIONAL_MUTUAL servers the CA that verifies clients
/// (`caCertCredentialName`, else the first certificate's `<name>-cacert`, as istiod names it).
pub fn server_credentials(tls: &ServerTlsSettings) -> (Vec<String>, Option<String>) {
    let names: Vec<&String> = if tls.credential_names.is_empty() {
        tls.credential_name.iter().collect()
    } else {
        tls.credential_names.iter().collect()
    };
    let certificates: Vec<String> = names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| credential_resource(n))
        .collect();
    let mutual = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    let ca = match tls
        .ca_cert_credential_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        Some(ca) => Some(credential_resource(ca)),
        None => certificates.first().map(|c| format!("{c}{CA_SUFFIX}")),
    };
    (certificates, ca.filter(|_| mutual))
}

/// The credentials (SDS resource names) the Gateways selecting `proxy` name for it
/// ([`server_credentials`] of each server). Only Gateways in the proxy's own namespace count: a
/// gateway may read Secrets of its own namespace only, as istiod allows without a
/// ReferenceGrant.
pub fn credential_names(model: &Model, proxy: &Proxy) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (resource, gateway) in selecting(model, proxy) {
        if resource.meta.namespace != proxy.namespace {
            continue;
        }
        for tls in gateway.servers.iter().filter_map(|s| s.tls.as_ref()) {
            let (certificates, ca) = server_credentials(tls);
            out.extend(certificates);
            out.extend(ca);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::model;

    fn router(namespace: &str, labels: &str) -> Proxy {
        let mut p = Proxy::parse(
            &format!("router~10.0.0.9~gw-1.{namespace}~{namespace}.svc.cluster.local"),
            &serde_json::json!({}),
        )
        .unwrap();
        for kv in labels.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            p.labels.insert(k.into(), v.into());
        }
        p
    }

    const GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b, namespace: edge, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: front}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a, namespace: other, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: elsewhere}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: c, namespace: edge}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

    #[test]
    fn selected_by_labels_in_any_namespace_oldest_first() {
        let m = model(GATEWAYS);
        let names = |p: &Proxy| -> Vec<String> {
            selecting(&m, p)
                .iter()
                .map(|(r, _)| format!("{}/{}", r.meta.namespace, r.meta.name))
                .collect()
        };
        assert_eq!(
            names(&router("edge", "istio=ingressgateway,app=x")),
            ["other/a", "edge/b"]
        );
        assert_eq!(names(&router("edge", "istio=egressgateway")), ["edge/c"]);
        assert!(names(&router("edge", "app=x")).is_empty());
        let mut sidecar = router("edge", "istio=ingressgateway");
        sidecar.proxy_type = ProxyType::Sidecar;
        assert!(names(&sidecar).is_empty(), "sidecars are not gateways");
    }

    #[test]
    fn the_ca_a_mutual_server_names_is_its_credential() {
        let tls = |yaml: &str| -> ServerTlsSettings { serde_saphyr::from_str(yaml).unwrap() };
        assert_eq!(
            server_credentials(&tls("{mode: MUTUAL, credentialNames: [rsa, ecdsa]}")),
            (
                vec!["kubernetes://rsa".into(), "kubernetes://ecdsa".into()],
                Some("kubernetes://rsa-cacert".into())
            )
        );
        assert_eq!(
            server_credentials(&tls(
                "{mode: OPTIONAL_MUTUAL, credentialName: a, caCertCredentialName: clients}"
            ))
            .1,
            Some("kubernetes://clients".into())
        );
        assert_eq!(
            server_credentials(&tls(
                "{mode: SIMPLE, credentialName: a, caCertCredentialName: clients}"
            ))
            .1,
            None
        );
    }

    #[test]
    fn gateway_names_resolve_as_istiod() {
        assert_eq!(resolve_gateway_name("mesh", "a"), "mesh");
        assert_eq!(resolve_gateway_name("gw", "a"), "a/gw");
        assert_eq!(resolve_gateway_name("b/gw", "a"), "b/gw");
        assert_eq!(resolve_gateway_name("./gw", "a"), "a/gw");
        assert_eq!(resolve_gateway_name("gw.b.svc.cluster.local", "a"), "b/gw");
    }

    #[test]
    fn credentials_only_from_the_proxys_namespace() {
        let m = model(GATEWAYS);
        let names = credential_names(&m, &router("edge", "istio=ingressgateway"));
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["kubernetes://front", "kubernetes://front-cacert"]
        );
    }
}
