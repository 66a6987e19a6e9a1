//! `Model`: every valid resource, the service registry and the mesh settings at one moment,
//! with the diagnostics of what was rejected and warnings (among them CUSTOM authorization
//! policies whose extension provider cannot be used). Immutable; built whole from a resource
//! set. Its lookups (`Model::index`) are built once, on first use. Secrets are no input of
//! translation (gateways' credentials are served over SDS): a change confined to them changes
//! no proxy configuration, only `Change::secrets`.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::diagnostic::{Diagnostic, Severity};
use super::index::Index;
use super::kube;
use super::mesh::MeshConfig;
use super::networking;
use super::registry::{Registry, Resolution};
use super::resource::{Kind, Resource, Spec};
use super::security::Action;

/// CUSTOM AuthorizationPolicies naming a provider the mesh config has no usable external
/// authorizer for (undefined, not an authorizer, invalid): translation denies what they select;
/// each is reported here, naming the policy and its provider field, whatever proxy it selects.
fn custom_provider_diagnostics(resources: &[Arc<Resource>], mesh: &MeshConfig) -> Vec<Diagnostic> {
    resources
        .iter()
        .filter_map(|r| {
            let Spec::AuthorizationPolicy(ap) = &r.spec else {
                return None;
            };
            if ap.action() != Action::Custom {
                return None;
            }
            let name = ap.provider.as_ref().map(|p| p.name.as_str());
            let e = mesh.authorizer(name.unwrap_or_default()).err()?;
            Some(Diagnostic {
                severity: Severity::Warning,
                ..r.diagnostic(
                    "spec.provider.name",
                    format!("{e}; requests this policy selects are denied"),
                )
            })
        })
        .collect()
}

/// Adds a Secret's identity and content to `h` (its values are redacted when serialized, so
/// they are hashed as bytes).
fn hash_secret(h: &mut Sha256, r: &Resource, secret: &kube::Secret) {
    for part in [&r.meta.namespace, &r.meta.name, &secret.type_] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (key, value) in secret.data.entries() {
        h.update(key.as_bytes());
        h.update([0]);
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    h.update([0xff]);
}

/// What differs between two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Anything but endpoints changed: clusters, listeners and routes may differ.
    pub config: bool,
    /// Endpoints changed.
    pub endpoints: bool,
    /// Secrets changed (their content, or which exist).
    pub secrets: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Model {
    pub mesh: MeshConfig,
    /// Valid resources, ordered by creation time, then namespace, then name (istiod's order
    /// for resolving conflicts: the oldest wins).
    pub resources: Vec<Arc<Resource>>,
    /// Problems with the input: rejected resources (errors) and suspicious ones (warnings).
    pub diagnostics: Vec<Diagnostic>,
    pub registry: Registry,
    #[serde(skip)]
    config_hash: [u8; 32],
    #[serde(skip)]
    endpoints_hash: [u8; 32],
    #[serde(skip)]
    secrets_hash: [u8; 32],
    #[serde(skip)]
    index: LazyIndex,
}

/// The model's index, built on first use. A clone starts without one (its fields may be
/// changed before it is used), so an index never describes other resources than its model's.
#[derive(Debug, Default)]
struct LazyIndex(OnceLock<Index>);

impl Clone for LazyIndex {
    fn clone(&self) -> LazyIndex {
        LazyIndex::default()
    }
}

impl Model {
    pub fn build(
        mut resources: Vec<Arc<Resource>>,
        diagnostics: Vec<Diagnostic>,
        mesh: MeshConfig,
    ) -> Model {
        resources.sort_by(|a, b| {
            (
                a.meta.creation_timestamp.as_deref().unwrap_or_default(),
                a.kind,
                &a.meta.namespace,
                &a.meta.name,
            )
                .cmp(&(
                    b.meta.creation_timestamp.as_deref().unwrap_or_default(),
                    b.kind,
                    &b.meta.namespace,
                    &b.meta.name,
                ))
        });
        let registry = Registry::build(&resources, &mesh);
        let mut config = Sha256::new();
        let mut endpoints = Sha256::new();
        let mut secrets = Sha256::new();
        config.update(serde_json::to_vec(&mesh).unwrap_or_default());
        for r in &resources {
            if let Spec::Secret(secret) = &r.spec {
                hash_secret(&mut secrets, r, secret);
                continue;
            }
            // Endpoint sources: they reach the configuration through the registry's endpoints
            // (and their service accounts, hashed below).
            if matches!(
                r.kind,
                Kind::EndpointSlice | Kind::WorkloadEntry | Kind::Pod
            ) {
                continue;
            }
            config.update(serde_json::to_vec(r.as_ref()).unwrap_or_default());
        }
        for s in &registry.services {
            let bytes = serde_json::to_vec(&s.endpoints).unwrap_or_default();
            endpoints.update(&bytes);
            // The endpoints' identities are the names clusters verify (mTLS SANs).
            config.update(serde_json::to_vec(&s.service_accounts()).unwrap_or_default());
            // Envoy resolves DNS endpoints itself: they live in the cluster, not in EDS.
            if matches!(s.resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
                config.update(&bytes);
            }
        }
        let mut diagnostics = diagnostics;
        diagnostics.extend(custom_provider_diagnostics(&resources, &mesh));
        Model {
            mesh,
            resources,
            diagnostics,
            registry,
            config_hash: config.finalize().into(),
            endpoints_hash: endpoints.finalize().into(),
            secrets_hash: secrets.finalize().into(),
            index: LazyIndex::default(),
        }
    }

    /// Lookups over this model (built on the first call). Fields changed after the first call
    /// are not seen by it: a model is built whole, then only read.
    pub fn index(&self) -> &Index {
        self.index.0.get_or_init(|| Index::build(self))
    }

    pub fn change_from(&self, old: &Model) -> Change {
        Change {
            config: self.config_hash != old.config_hash,
            endpoints: self.endpoints_hash != old.endpoints_hash,
            secrets: self.secrets_hash != old.secrets_hash,
        }
    }

    /// The resources whose spec is of `kind`, in model order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        self.index()
            .of_kind(kind)
            .iter()
            .filter_map(|p| self.resources.get(*p))
    }

    pub fn virtual_services(
        &self,
    ) -> impl Iterator<Item = (&Resource, &networking::VirtualService)> {
        self.of_kind(Kind::VirtualService)
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(s) => Some((r.as_ref(), s.as_ref())),
                _ => None,
            })
    }

    pub fn destination_rules(
        &self,
    ) -> impl Iterator<Item = (&Resource, &networking::DestinationRule)> {
        self.of_kind(Kind::DestinationRule)
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(s) => Some((r.as_ref(), s.as_ref())),
                _ => None,
            })
    }

    pub fn sidecars(&self) -> impl Iterator<Item = (&Resource, &networking::Sidecar)> {
        self.of_kind(Kind::Sidecar).filter_map(|r| match &r.spec {
            Spec::Sidecar(s) => Some((r.as_ref(), s.as_ref())),
            _ => None,
        })
    }
}
