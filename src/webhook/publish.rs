//! What bowline keeps written in the cluster (Kubernetes mode): its root certificate as the
//! `caBundle` of the validating webhook configuration (and, once the bundle is there, the
//! webhook's failure policy set to `Fail`, as istiod does) and of the sidecar injector's
//! mutating webhook configuration (its failure policy is left as installed), and the
//! `istio-ca-root-cert` ConfigMap (key `root-cert.pem`) in every namespace, where Istio's
//! agents, injected sidecars and workloads read the mesh's trust anchor.
//!
//! Contract: one replica at a time writes: the holder of the Lease `LEASE_NAME` in the system
//! namespace (kube-lease-manager; a holder that stops renewing loses it after
//! `LEASE_DURATION`). While it leads, all are reconciled every `PERIOD` (and at once when it
//! becomes leader); failures are logged and retried, never fatal. Every replica serves xDS.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const PERIOD: Duration = Duration::from_secs(30);

/// The Lease replicas compete for.
pub const LEASE_NAME: &str = "bowline-leader";
/// Seconds a Lease is held without renewal; renewed `LEASE_GRACE` seconds before it ends.
const LEASE_DURATION: u64 = 15;
const LEASE_GRACE: u64 = 5;

/// This replica's name in the Lease: the pod name (`POD_NAME`), else the host name, with the
/// process id.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "bowline".into());
    format!("{host}-{}", std::process::id())
}

/// Competes for the Lease in `namespace` and, while this replica holds it, keeps the root
/// published.
pub async fn lead(
    client: kube::Client,
    namespace: String,
    webhooks: WebhookConfigs,
    root_pem: String,
) {
    // The system namespace may not exist yet: keep trying.
    let manager = loop {
        let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(namespace.clone())
            .with_identity(identity())
            .with_duration(LEASE_DURATION)
            .with_grace(LEASE_GRACE)
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(lease = %format!("{namespace}/{LEASE_NAME}"), error = %e, "leader election unavailable; retrying in {PERIOD:?}");
                tokio::time::sleep(PERIOD).await;
            }
        }
    };
    let (mut leader, task) = manager.watch().await;
    loop {
        if *leader.borrow_and_update() {
            tracing::info!(identity = %identity(), "leading: publishing the root certificate");
            tokio::select! {
                _ = run(client.clone(), webhooks.clone(), root_pem.clone()) => {}
                changed = leader.changed() => if changed.is_err() { break },
            }
            tracing::info!("no longer leading");
        } else if leader.changed().await.is_err() {
            break;
        }
    }
    drop(leader);
    if let Ok(Err(e)) = task.await {
        tracing::error!(error = %e, "leader election ended");
    }
}

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

/// Keeps `root_pem` in the webhook configurations and in every namespace (forever).
async fn run(client: kube::Client, webhooks: WebhookConfigs, root_pem: String) {
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
