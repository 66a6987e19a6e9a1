//! What a gateway credential (`credentialName`) holds, read from the Kubernetes Secrets of the
//! model as istiod reads them (its `pilot/pkg/credentials/kube`).
//!
//! A certificate (`kubernetes://<name>`) is the Secret's `cert` and `key` when both are
//! non-empty, else its `tls.crt` and `tls.key` (with `tls.ocsp-staple`), whatever the Secret's
//! type. A CA certificate (`kubernetes://<name>-cacert`) is
//! read from the Secret `<name>-cacert` when it exists, else from the Secret `<name>`: its
//! `cacert` (with `crl`), else its `ca.crt` (with `ca.crl`). A Secret without the keys it needs
//! is unusable, with a message naming the keys it has (never a value). Who may receive a
//! credential is decided by the caller (`xds`), not here.

use super::gateway::CA_SUFFIX;
use super::kube::SecretData;
use super::{Model, Spec};

const GENERIC_CERT: &str = "cert";
const GENERIC_KEY: &str = "key";
const GENERIC_CA: &str = "cacert";
const GENERIC_CRL: &str = "crl";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const TLS_OCSP_STAPLE: &str = "tls.ocsp-staple";
const TLS_CA: &str = "ca.crt";
const TLS_CRL: &str = "ca.crl";

/// A credential's content, borrowed from its Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A server certificate chain (PEM) and its private key.
    Certificate {
        chain: &'a [u8],
        key: &'a [u8],
        ocsp_staple: Option<&'a [u8]>,
    },
    /// The CA certificates (PEM) that verify peers, and a revocation list.
    Authority {
        trusted_ca: &'a [u8],
        crl: Option<&'a [u8]>,
    },
}

/// Why a credential cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("secret {namespace}/{name}: {message}")]
    Unusable {
        namespace: String,
        name: String,
        message: String,
    },
}

/// The credential `name` (a Secret name, `-cacert` for the CA of one) in `namespace`.
pub fn lookup<'a>(
    model: &'a Model,
    namespace: &str,
    name: &str,
) -> Result<Credential<'a>, CredentialError> {
    let not_found = |name: &str| CredentialError::NotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let unusable = |name: &str, message: String| CredentialError::Unusable {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message,
    };
    match name.strip_suffix(CA_SUFFIX) {
        Some(base) => {
            let (found, data) = secret_data(model, namespace, name)
                .map(|d| (name, d))
                .or_else(|| secret_data(model, namespace, base).map(|d| (base, d)))
                .ok_or_else(|| not_found(base))?;
            authority(data).map_err(|m| unusable(found, m))
        }
        None => {
            let data = secret_data(model, namespace, name).ok_or_else(|| not_found(name))?;
            certificate(data).map_err(|m| unusable(name, m))
        }
    }
}

fn secret_data<'a>(model: &'a Model, namespace: &str, name: &str) -> Option<&'a SecretData> {
    let position = model.index().secret(namespace, name)?;
    match &model.resources.get(position)?.spec {
        Spec::Secret(s) => Some(&s.data),
        _ => None,
    }
}

/// Non-empty values of every key, or `None`.
fn values<'a, const N: usize>(data: &'a SecretData, keys: [&str; N]) -> Option<[&'a [u8]; N]> {
    let mut out = [&[][..]; N];
    for (slot, key) in out.iter_mut().zip(keys) {
        *slot = data.get(key).filter(|v| !v.is_empty())?;
    }
    Some(out)
}

fn has_keys(data: &SecretData, keys: &[&str]) -> bool {
    keys.iter().all(|k| data.get(k).is_some())
}

fn optional<'a>(data: &'a SecretData, key: &str) -> Option<&'a [u8]> {
    data.get(key).filter(|v| !v.is_empty())
}

/// A certificate and key: the generic keys first, then the `kubernetes.io/tls` ones.
fn certificate(data: &SecretData) -> Result<Credential<'_>, String> {
    if let Some([chain, key]) = values(data, [GENERIC_CERT, GENERIC_KEY]) {
        return Ok(Credential::Certificate {
            chain,
            key,
            ocsp_staple: None,
        });
    }
    if let Some([chain, key]) = values(data, [TLS_CERT, TLS_KEY]) {
        return Ok(Credential::Certificate {
            chain,
            key,
            ocsp_staple: optional(data, TLS_OCSP_STAPLE),
        });
    }
    for keys in [[GENERIC_CERT, GENERIC_KEY], [TLS_CERT, TLS_KEY]] {
        if has_keys(data, &keys) {
            return Err(format!(
                "found keys {:?} and {:?}, but they were empty",
                keys[0], keys[1]
            ));
        }
    }
    Err(format!(
        "expected keys ({GENERIC_CERT} and {GENERIC_KEY}) or ({TLS_CERT} and {TLS_KEY}); found: {}",
        found_keys(data)
    ))
}

/// A CA certificate: the generic key first, then the `kubernetes.io/tls` one.
fn authority(data: &SecretData) -> Result<Credential<'_>, String> {
    for (ca, crl) in [(GENERIC_CA, GENERIC_CRL), (TLS_CA, TLS_CRL)] {
        if let Some([trusted_ca]) = values(data, [ca]) {
            return Ok(Credential::Authority {
                trusted_ca,
                crl: optional(data, crl),
            });
        }
    }
    for key in [GENERIC_CA, TLS_CA] {
        if has_keys(data, &[key]) {
            return Err(format!("found key {key:?}, but it was empty"));
        }
    }
    Err(format!(
        "expected key {GENERIC_CA} or {TLS_CA}; found: {}",
        found_keys(data)
    ))
}

/// The first three keys, and how many more there are.
fn found_keys(data: &SecretData) -> String {
    let keys: Vec<&str> = data.keys().collect();
    match keys.len() {
        0 => "no keys".to_string(),
        1..=3 => keys.join(", "),
        n => format!("{}, and {} more", keys[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MeshConfig;

    fn model(yaml: &str) -> Model {
        let resources = crate::model::resource::parse_yaml(yaml, "test.yaml")
            .into_iter()
            .map(|p| {
                assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
                std::sync::Arc::new(p.resource.expect("a valid resource"))
            })
            .collect();
        Model::build(resources, Vec::new(), MeshConfig::default())
    }

    fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> String {
        let data: Vec<String> = data
            .iter()
            .map(|(k, v)| format!("  {k}: {v:?}\n"))
            .collect();
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: edge}}\ntype: {type_}\nstringData:\n{}",
            data.concat()
        )
    }

    #[test]
    fn a_tls_secret_is_a_certificate_with_its_staple_and_its_ca_with_the_crl() {
        let m = model(&secret(
            "front",
            "kubernetes.io/tls",
            &[
                ("tls.crt", "CERT"),
                ("tls.key", "KEY"),
                ("tls.ocsp-staple", "STAPLE"),
                ("ca.crl", "CRL"),
                ("ca.crt", "CA"),
            ],
        ));
        assert_eq!(
            lookup(&m, "edge", "front"),
            Ok(Credential::Certificate {
                chain: b"CERT",
                key: b"KEY",
                ocsp_staple: Some(b"STAPLE"),
            })
        );
        assert_eq!(
            lookup(&m, "edge", "front-cacert"),
            Ok(Credential::Authority {
                trusted_ca: b"CA",
                crl: Some(b"CRL"),
            }),
            "the CA of the secret itself"
        );
        assert!(matches!(
            lookup(&m, "other", "front"),
            Err(CredentialError::NotFound { .. })
        ));
    }

    #[test]
    fn generic_keys_win_over_tls_keys() {
        let m = model(&secret(
            "front",
            "Opaque",
            &[
                ("cert", "GENERIC"),
                ("key", "GKEY"),
                ("crl", "GCRL"),
                ("tls.crt", "TLS"),
                ("tls.key", "TKEY"),
                ("tls.ocsp-staple", "STAPLE"),
                ("cacert", "GCA"),
                ("ca.crt", "TCA"),
            ],
        ));
        assert_eq!(
            lookup(&m, "edge", "front"),
            Ok(Credential::Certificate {
                chain: b"GENERIC",
                key: b"GKEY",
                ocsp_staple: None,
            })
        );
        assert_eq!(
            lookup(&m, "edge", "front-cacert"),
            Ok(Credential::Authority {
                trusted_ca: b"GCA",
                crl: Some(b"GCRL"),
            })
        );
    }

    #[test]
    fn the_companion_cacert_secret_comes_first_and_does_not_fall_back() {
        let m = model(
            &[
                secret(
                    "front",
                    "Opaque",
                    &[("cert", "C"), ("key", "K"), ("cacert", "OWN")],
                ),
                secret("front-cacert", "Opaque", &[("cacert", "COMPANION")]),
                secret(
                    "back",
                    "Opaque",
                    &[("cert", "C"), ("key", "K"), ("cacert", "OWN")],
                ),
                secret("back-cacert", "Opaque", &[("other", "x")]),
            ]
            .concat(),
        );
        assert_eq!(
            lookup(&m, "edge", "front-cacert"),
            Ok(Credential::Authority {
                trusted_ca: b"COMPANION",
                crl: None,
            })
        );
        assert_eq!(
            lookup(&m, "edge", "back-cacert"),
            Err(CredentialError::Unusable {
                namespace: "edge".into(),
                name: "back-cacert".into(),
                message: "expected key cacert or ca.crt; found: other".into(),
            }),
            "a companion without a CA is not passed over for the secret itself"
        );
        assert_eq!(
            lookup(&m, "edge", "gone-cacert"),
            Err(CredentialError::NotFound {
                namespace: "edge".into(),
                name: "gone".into(),
            })
        );
    }

    #[test]
    fn unusable_secrets_name_their_keys_never_their_values() {
        let m = model(
            &[
                secret("empty", "Opaque", &[("cert", ""), ("key", "")]),
                secret(
                    "many",
                    "Opaque",
                    &[("a", "SECRET"), ("b", "x"), ("c", "x"), ("d", "x")],
                ),
                secret("noca", "Opaque", &[("cacert", "")]),
            ]
            .concat(),
        );
        let message = |name: &str| match lookup(&m, "edge", name) {
            Err(CredentialError::Unusable { message, .. }) => message,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            message("empty"),
            r#"found keys "cert" and "key", but they were empty"#
        );
        assert_eq!(
            message("many"),
            "expected keys (cert and key) or (tls.crt and tls.key); found: a, b, c, and 1 more"
        );
        assert_eq!(
            message("noca-cacert"),
            r#"found key "cacert", but it was empty"#
        );
        assert_eq!(
            message("many-cacert"),
            "expected key cacert or ca.crt; found: a, b, c, and 1 more"
        );
    }
}
