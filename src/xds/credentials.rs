//! Gateway credentials over SDS: the secrets `kubernetes://<name>` (a server certificate and
//! its key) and `kubernetes://<name>-cacert` (the CA that verifies clients) that a gateway's
//! listeners name, made from the model's Secrets (`model::credential`).
//!
//! Contract: a stream receives a credential it asks for only when all of these hold: the proxy
//! is a gateway (`router`); it proved its identity on the TLS port; the name resolves in that
//! identity's namespace (`kubernetes://<name>`, or `kubernetes://<namespace>/<name>` naming the
//! same namespace: another namespace would need a ReferenceGrant, which bowline does not read,
//! and istiod refuses it without one); and a Gateway of that namespace selecting the proxy
//! names it (`model::gateway::credential_names`). Any other name is refused: never served,
//! listed in `/debug/syncz`, and logged in one warning per stream each time new names are
//! refused (naming at most three). A credential whose Secret is missing or unusable is absent
//! (Envoy keeps waiting for it) and logged once per stream until that changes. A certificate
//! is a `TlsCertificate` secret (chain, key, OCSP staple), a CA a `ValidationContext` secret
//! (trusted CA, CRL), as istiod makes them. Versions are derived from that content without the
//! key, so a rotated Secret reaches Envoy as a new version, which it applies without closing
//! connections. Bodies kept for debug views have the key replaced by `[redacted]`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;

use super::sds::{inline, redact, version_of};
use crate::cache::Versioned;
use crate::envoy::pack;
use crate::model::credential::{self, Credential};
use crate::model::gateway::{CREDENTIAL_PREFIX, credential_names};
use crate::model::proxy::ProxyType;
use crate::model::{Identity, Model, Proxy};

/// Why a stream may not receive a credential it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only gateway (router) proxies receive credentials")]
    NotGateway,
    #[error("the proxy did not prove its identity on the TLS port")]
    Unauthenticated,
    #[error(
        "the secret is in namespace {0}, not the proxy's; a reference to another namespace needs a ReferenceGrant"
    )]
    OtherNamespace(String),
    #[error("no Gateway of the proxy's namespace that selects it names this credential")]
    NotReferenced,
}

/// The Secret (namespace, name) of the credential `resource` (a `kubernetes://` name), if the
/// proxy may receive it; `referenced` are the credentials its Gateways name for it.
pub fn authorize<'a>(
    resource: &'a str,
    proxy: &Proxy,
    identity: Option<&'a Identity>,
    referenced: &BTreeSet<String>,
) -> Result<(&'a str, &'a str), Refusal> {
    if proxy.proxy_type != ProxyType::Router {
        return Err(Refusal::NotGateway);
    }
    let identity = identity.ok_or(Refusal::Unauthenticated)?;
    let path = resource.strip_prefix(CREDENTIAL_PREFIX).unwrap_or(resource);
    let (namespace, name) = path
        .split_once('/')
        .unwrap_or((identity.namespace.as_str(), path));
    if namespace != identity.namespace {
        return Err(Refusal::OtherNamespace(namespace.to_string()));
    }
    if !referenced.contains(resource) {
        return Err(Refusal::NotReferenced);
    }
    Ok((namespace, name))
}

/// The Envoy secret of a credential.
pub fn envoy_secret(name: &str, credential: &Credential) -> tls::Secret {
    let r#type = match *credential {
        Credential::Certificate {
            chain,
            key,
            ocsp_staple,
        } => tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ocsp_staple: ocsp_staple.and_then(inline),
            ..Default::default()
        }),
        Credential::Authority { trusted_ca, crl } => {
            tls::secret::Type::ValidationContext(tls::CertificateValidationContext {
                trusted_ca: inline(trusted_ca),
                crl: crl.and_then(inline),
                ..Default::default()
            })
        }
    };
    tls::Secret {
        name: name.to_string(),
        r#type: Some(r#type),
    }
}

/// The version of a credential: its certificates (and staple, CRL), never its key.
fn version(credential: &Credential) -> String {
    match *credential {
        Credential::Certificate {
            chain, ocsp_staple, ..
        } => version_of(&[b"certificate", chain, ocsp_staple.unwrap_or_default()]),
        Credential::Authority { trusted_ca, crl } => {
            version_of(&[b"authority", trusted_ca, crl.unwrap_or_default()])
        }
    }
}

/// One served credential: what is sent and what debug views show.
#[derive(Clone)]
struct Served {
    versioned: Arc<Versioned>,
    dump: Any,
}

/// The credentials of one stream.
#[derive(Default)]
pub struct Credentials {
    served: BTreeMap<String, Served>,
    /// Names asked for and refused, with why.
    refused: BTreeMap<String, Refusal>,
    /// Names allowed but not served (the Secret is missing or unusable), with why.
    unavailable: BTreeMap<String, String>,
}

impl Credentials {
    /// Recomputes the credentials of the names in `wanted` for `proxy` (proven `identity`, if
    /// any) at `model`: `true` when what is served changed.
    pub fn refresh(
        &mut self,
        model: &Model,
        proxy: &Proxy,
        identity: Option<&Identity>,
        wanted: &BTreeSet<String>,
    ) -> bool {
        let asked: Vec<&String> = wanted
            .iter()
            .filter(|n| n.starts_with(CREDENTIAL_PREFIX))
            .collect();
        let referenced = if asked.is_empty() || proxy.proxy_type != ProxyType::Router {
            BTreeSet::new()
        } else {
            credential_names(model, proxy)
        };
        let mut served = BTreeMap::new();
        let mut refused = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        for name in asked {
            let (namespace, secret) = match authorize(name, proxy, identity, &referenced) {
                Ok(found) => found,
                Err(refusal) => {
                    refused.insert(name.clone(), refusal);
                    continue;
                }
            };
            match credential::lookup(model, namespace, secret) {
                Ok(c) => {
                    served.insert(name.clone(), self.serve(name, &c));
                }
                Err(e) => {
                    unavailable.insert(name.clone(), e.to_string());
                }
            }
        }
        self.warn_refused(proxy, &refused);
        self.warn_unavailable(proxy, &unavailable);
        let changed = !same_versions(&self.served, &served);
        self.served = served;
        self.refused = refused;
        self.unavailable = unavailable;
        changed
    }

    /// The served form of `c`: the one already served when its version is unchanged.
    fn serve(&self, name: &str, c: &Credential) -> Served {
        let version = version(c);
        if let Some(s) = self.served.get(name)
            && s.versioned.version == version
        {
            return s.clone();
        }
        let secret = envoy_secret(name, c);
        Served {
            versioned: Arc::new(Versioned::new(name.to_string(), version, pack(&secret))),
            dump: pack(&redact(&secret)),
        }
    }

    /// The served credentials by name.
    pub fn items(&self) -> impl Iterator<Item = (&String, &Arc<Versioned>)> {
        self.served.iter().map(|(n, s)| (n, &s.versioned))
    }

    /// The served credentials as debug views show them (keys redacted).
    pub fn dumps(&self) -> impl Iterator<Item = (&String, &Any)> {
        self.served.iter().map(|(n, s)| (n, &s.dump))
    }

    /// The refused names, with why.
    pub fn refused(&self) -> BTreeMap<String, String> {
        self.refused
            .iter()
            .map(|(n, r)| (n.clone(), r.to_string()))
            .collect()
    }

    /// One warning for the names refused now that were not before.
    fn warn_refused(&self, proxy: &Proxy, refused: &BTreeMap<String, Refusal>) {
        let new: Vec<String> = refused
            .iter()
            .filter(|(n, _)| !self.refused.contains_key(*n))
            .map(|(n, r)| format!("{n} ({r})"))
            .collect();
        if new.is_empty() {
            return;
        }
        metrics::counter!("pilot_sds_certificate_errors_total").increment(1);
        tracing::warn!(
            proxy = %proxy.id,
            refused = new.len(),
            secrets = %at_most_three(&new),
            "proxy asked for credentials it may not receive; not served"
        );
    }

    /// A warning for each credential unavailable now for another reason than before.
    fn warn_unavailable(&self, proxy: &Proxy, unavailable: &BTreeMap<String, String>) {
        for (name, why) in unavailable {
            if self.unavailable.get(name) != Some(why) {
                metrics::counter!("pilot_sds_certificate_errors_total").increment(1);
                tracing::warn!(proxy = %proxy.id, secret = %name, error = %why, "credential not served");
            }
        }
    }
}

fn same_versions(a: &BTreeMap<String, Served>, b: &BTreeMap<String, Served>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((n, x), (m, y))| n == m && x.versioned.version == y.versioned.version)
}

fn at_most_three(items: &[String]) -> String {
    match items.len() {
        0..=3 => items.join(", "),
        n => format!("{}, and {} more", items[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: front, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: front}
  - port: {number: 8443, name: https-ns, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: edge/qualified}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: other}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: theirs}
"#;

    fn secret(namespace: &str, name: &str, data: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\nstringData: {data}\n"
        )
    }

    fn model(extra: &str) -> Model {
        crate::model::testing::model(&format!("{GATEWAYS}{extra}"))
    }

    fn proxy(kind: &str, namespace: &str) -> Proxy {
        Proxy::parse(
            &format!("{kind}~10.0.0.9~gw-1.{namespace}~{namespace}.svc.cluster.local"),
            &serde_json::json!({"LABELS": {"istio": "ingressgateway"}}),
        )
        .unwrap()
    }

    fn identity(namespace: &str) -> Identity {
        Identity::new("cluster.local", namespace, "gw").unwrap()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_a_proven_gateway_gets_what_its_namespaces_gateways_name() {
        let m = model("");
        let gateway = proxy("router", "edge");
        let referenced = credential_names(&m, &gateway);
        let id = identity("edge");
        let check = |name: &str, proxy: &Proxy, id: Option<&Identity>| {
            authorize(name, proxy, id, &referenced).map(|(ns, n)| format!("{ns}/{n}"))
        };
        assert_eq!(
            check("kubernetes://front", &gateway, Some(&id)),
            Ok("edge/front".into())
        );
        assert_eq!(
            check("kubernetes://front-cacert", &gateway, Some(&id)),
            Ok("edge/front-cacert".into())
        );
        assert_eq!(
            check("kubernetes://edge/qualified", &gateway, Some(&id)),
            Ok("edge/qualified".into()),
            "a namespace-qualified name of the proxy's own namespace"
        );
        assert_eq!(
            check("kubernetes://front", &gateway, None),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            check("kubernetes://front", &proxy("sidecar", "edge"), Some(&id)),
            Err(Refusal::NotGateway)
        );
        assert_eq!(
            check("kubernetes://other/theirs", &gateway, Some(&id)),
            Err(Refusal::OtherNamespace("other".into()))
        );
        assert_eq!(
            check("kubernetes://theirs", &gateway, Some(&id)),
            Err(Refusal::NotReferenced),
            "named by a Gateway of another namespace only"
        );
        assert_eq!(
            check("kubernetes://edge/front", &gateway, Some(&id)),
            Err(Refusal::NotReferenced),
            "not the name the Gateway wrote"
        );
        assert_eq!(
            check("kubernetes://qualified-cacert", &gateway, Some(&id)),
            Err(Refusal::NotReferenced),
            "no CA for a SIMPLE server"
        );
    }

    fn served(c: &Credentials) -> Vec<(String, String)> {
        c.items()
            .map(|(n, v)| (n.clone(), v.version.clone()))
            .collect()
    }

    fn decoded(c: &Credentials, name: &str) -> tls::Secret {
        let (_, v) = c.items().find(|(n, _)| *n == name).expect("served");
        prost::Message::decode(v.body.value.as_slice()).unwrap()
    }

    #[test]
    fn credentials_follow_their_secrets() {
        let gateway = proxy("router", "edge");
        let id = identity("edge");
        let wanted = names(&[
            "default",
            "kubernetes://front",
            "kubernetes://front-cacert",
            "kubernetes://theirs",
        ]);
        let mut c = Credentials::default();
        // No Secret yet: nothing served, nothing changed.
        assert!(!c.refresh(&model(""), &gateway, Some(&id), &wanted));
        assert!(served(&c).is_empty());
        assert_eq!(
            c.refused().keys().collect::<Vec<_>>(),
            ["kubernetes://theirs"]
        );

        let v1 = model(&secret(
            "edge",
            "front",
            "{tls.crt: CERT1, tls.key: KEY1, ca.crt: CA1}",
        ));
        assert!(c.refresh(&v1, &gateway, Some(&id), &wanted));
        let first = served(&c);
        assert_eq!(
            first.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["kubernetes://front", "kubernetes://front-cacert"]
        );
        let Some(tls::secret::Type::TlsCertificate(cert)) =
            decoded(&c, "kubernetes://front").r#type
        else {
            panic!("a TLS certificate")
        };
        assert_eq!(cert.certificate_chain, inline(b"CERT1"));
        assert_eq!(cert.private_key, inline(b"KEY1"));
        let Some(tls::secret::Type::ValidationContext(ca)) =
            decoded(&c, "kubernetes://front-cacert").r#type
        else {
            panic!("a validation context")
        };
        assert_eq!(ca.trusted_ca, inline(b"CA1"));
        let (_, body) = c.dumps().next().expect("a dump");
        let dump = serde_json::to_string(&crate::envoy::any_to_json(body).unwrap()).unwrap();
        assert!(dump.contains("[redacted]"), "{dump}");
        assert!(!dump.contains("KEY1") && !dump.contains("S0VZMQ"), "{dump}");

        // The same content again: nothing changed.
        assert!(!c.refresh(&v1, &gateway, Some(&id), &wanted));
        // The certificate rotates: a new version for it, the CA's stays.
        let v2 = model(&secret(
            "edge",
            "front",
            "{tls.crt: CERT2, tls.key: KEY2, ca.crt: CA1}",
        ));
        assert!(c.refresh(&v2, &gateway, Some(&id), &wanted));
        let second = served(&c);
        assert_ne!(first[0].1, second[0].1);
        assert_eq!(first[1].1, second[1].1);
        // A companion `front-cacert` Secret takes over the CA.
        let v3 = model(
            &[
                secret(
                    "edge",
                    "front",
                    "{tls.crt: CERT2, tls.key: KEY2, ca.crt: CA1}",
                ),
                secret("edge", "front-cacert", "{cacert: CA2}"),
            ]
            .concat(),
        );
        assert!(c.refresh(&v3, &gateway, Some(&id), &wanted));
        assert_ne!(served(&c)[1].1, second[1].1);
        // The Secret goes: the credentials go.
        assert!(c.refresh(&model(""), &gateway, Some(&id), &wanted));
        assert!(served(&c).is_empty());
    }

    #[test]
    fn the_version_is_the_certificates_not_the_key() {
        let cert = |key: &'static [u8]| Credential::Certificate {
            chain: b"CERT",
            key,
            ocsp_staple: None,
        };
        assert_eq!(version(&cert(b"KEY1")), version(&cert(b"KEY2")));
        let stapled = Credential::Certificate {
            chain: b"CERT",
            key: b"KEY1",
            ocsp_staple: Some(b"STAPLE"),
        };
        assert_ne!(version(&cert(b"KEY1")), version(&stapled));
    }

    #[test]
    fn nothing_for_a_sidecar_or_an_anonymous_gateway() {
        let m = model(&secret("edge", "front", "{cert: C, key: K}"));
        let wanted = names(&["kubernetes://front"]);
        for (p, id) in [
            (proxy("sidecar", "edge"), Some(identity("edge"))),
            (proxy("router", "edge"), None),
        ] {
            let mut c = Credentials::default();
            assert!(!c.refresh(&m, &p, id.as_ref(), &wanted));
            assert!(served(&c).is_empty());
            assert_eq!(c.refused().len(), 1);
        }
    }
}
