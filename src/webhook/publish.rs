//! What bowline keeps written in the cluster (Kubernetes mode): its root certificate as the
//! `caBundle` of the validating webhook configuration (and, once the bundle is there, the
//! webhook's failure policy set to `Fail`, as istiod does) and of the sidecar injector's
//! mutating webhook configuration (its failure policy is left as installed), and the
//! `istio-ca-root-cert` ConfigMap (key `root-cert.pem`) in every namespace, where Istio's
//! agents, injected sidecars and workloads read the mesh's trust anchor.
//!
//! Contract: both are reconciled every `PERIOD` (and at start) until the task is dropped;
//! failures are logged and retried, never fatal. Writes are idempotent, so replicas that share
//! a CA agree.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const PERIOD: Duration = Duration::from_secs(30);

/// The ConfigMap istiod publishes the root certificate in.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";

/// The webhook configurations whose `caBundle` bowline keeps.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfigs {
    /// A ValidatingWebhookConfiguration (its failure policy becomes `Fail`).
    pub validator: Option<String>,
    /// A MutatingWebhookConfiguration (the sidecar injector's).
    pub injector: Option<String>,
}

/// Keeps `root_pem` in the webhook configurations and in every namespace.
pub async fn run(client: kube::Client, webhooks: WebhookConfigs, root_pem: String) {
    loop {
        if let Some(name) = &webhooks.validator
            && let Err(e) = ca_bundle(&client, name, &root_pem).await
        {
            tracing::warn!(webhook_config = %name, error = %e, "writing the webhook CA bundle");
        }
        if let Some(name) = &webhooks.injector
            && let Err(e) = injector_ca_bundle(&client, name, &root_pem).await
        {
            tracing::warn!(webhook_config = %name, error = %e, "writing the injector CA bundle");
        }
        if let Err(e) = root_cert_configmaps(&client, &root_pem).await {
            tracing::warn!(error = %e, "publishing {ROOT_CERT_CONFIGMAP}");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn ca_bundle(client: &kube::Client, name: &str, root_pem: &str) -> Result<(), kube::Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else {
        tracing::debug!(webhook_config = %name, "not installed");
        return Ok(());
    };
    let bundle = ByteString(root_pem.as_bytes().to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            webhook.client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
        if webhook.failure_policy.as_deref() != Some("Fail") {
            webhook.failure_policy = Some("Fail".into());
            changed = true;
        }
    }
    if changed {
        // A concurrent writer makes this fail with a conflict; the next round retries.
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(webhook_config = %name, "CA bundle written, failure policy Fail");
    }
    Ok(())
}

async fn injector_ca_bundle(
    client: &kube::Client,
    name: &str,
    root_pem: &str,
) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else {
        tracing::debug!(webhook_config = %name, "not installed");
        return Ok(());
    };
    let bundle = ByteString(root_pem.as_bytes().to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            webhook.client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(webhook_config = %name, "injector CA bundle written");
    }
    Ok(())
}

async fn root_cert_configmaps(client: &kube::Client, root_pem: &str) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces.list(&ListParams::default()).await? {
        let Some(name) = ns.metadata.name else {
            continue;
        };
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        let current = api.get_opt(ROOT_CERT_CONFIGMAP).await?;
        let up_to_date = current
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("root-cert.pem"))
            .is_some_and(|pem| pem == root_pem);
        if up_to_date {
            continue;
        }
        let configmap = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(ROOT_CERT_CONFIGMAP.into()),
                namespace: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "istio.io/config".to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "root-cert.pem".to_string(),
                root_pem.to_string(),
            )])),
            ..Default::default()
        };
        api.patch(
            ROOT_CERT_CONFIGMAP,
            &PatchParams::apply("bowline").force(),
            &Patch::Apply(&configmap),
        )
        .await?;
        tracing::info!(namespace = %name, "{ROOT_CERT_CONFIGMAP} written");
    }
    Ok(())
}
