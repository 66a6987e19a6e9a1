//! The root of trust kept in the cluster (Kubernetes mode without `--ca-dir`), under istiod's
//! names in the system namespace: an operator's CA in the Secret `cacerts` (Istio's cacerts
//! layout), else bowline's self-signed root in `istio-ca-secret`, created by the first replica
//! that finds none, so every replica and every restart signs with the same root.

use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use super::{CA_CERT, CA_KEY, CERT_CHAIN, Ca, CaError, CaFiles, CaOptions, ROOT_CERT};

/// An operator's plugged-in CA.
pub const PLUGGED_IN: &str = "cacerts";
/// The self-signed root bowline (like istiod) keeps.
pub const SELF_SIGNED: &str = "istio-ca-secret";

fn fail(namespace: &str, name: &str, message: impl Into<String>) -> CaError {
    CaError::Secret {
        secret: format!("{namespace}/{name}"),
        message: message.into(),
    }
}

/// The four files of a Secret; a self-signed root may leave `root-cert.pem` and
/// `cert-chain.pem` empty (istiod does): the signing certificate is both.
fn files(namespace: &str, name: &str, secret: &Secret) -> Result<CaFiles, CaError> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<String, CaError> {
        let value = data.get(key).map(|b| b.0.clone()).unwrap_or_default();
        String::from_utf8(value)
            .map_err(|_| fail(namespace, name, format!("{key} is not PEM text")))
    };
    let ca_cert = text(CA_CERT)?;
    let ca_key = text(CA_KEY)?;
    if ca_cert.trim().is_empty() || ca_key.trim().is_empty() {
        return Err(fail(
            namespace,
            name,
            format!("needs {CA_CERT} and {CA_KEY}"),
        ));
    }
    let or_ca = |t: String| {
        if t.trim().is_empty() {
            ca_cert.clone()
        } else {
            t
        }
    };
    Ok(CaFiles {
        root_cert: or_ca(text(ROOT_CERT)?),
        cert_chain: or_ca(text(CERT_CHAIN)?),
        ca_cert,
        ca_key,
    })
}

/// Loads the CA from `cacerts`, else `istio-ca-secret`, creating the latter when neither
/// exists.
pub async fn load(
    client: kube::Client,
    namespace: &str,
    options: &CaOptions,
) -> Result<Ca, CaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let origin = |name: &str| PathBuf::from(format!("secret {namespace}/{name}"));
    let get = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .map_err(|e| fail(namespace, name, e.to_string()))
        }
    };
    if let Some(secret) = get(PLUGGED_IN).await? {
        let files = files(namespace, PLUGGED_IN, &secret)?;
        return Ca::from_files(options, &files, &origin(PLUGGED_IN));
    }
    // Two replicas starting at once: one creates, the other finds it on its next look.
    for _ in 0..3 {
        if let Some(secret) = get(SELF_SIGNED).await? {
            let files = files(namespace, SELF_SIGNED, &secret)?;
            return Ca::from_files(options, &files, &origin(SELF_SIGNED));
        }
        let created = Ca::new_root_files(&options.trust_domain)?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SELF_SIGNED.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(
                [
                    (CA_CERT, &created.ca_cert),
                    (CA_KEY, &created.ca_key),
                    (ROOT_CERT, &created.root_cert),
                    (CERT_CHAIN, &created.cert_chain),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
            ),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED}"), "created a self-signed root CA");
                return Ca::from_files(options, &created, &origin(SELF_SIGNED));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(fail(namespace, SELF_SIGNED, e.to_string())),
        }
    }
    Err(fail(
        namespace,
        SELF_SIGNED,
        "created and deleted concurrently; giving up",
    ))
}
