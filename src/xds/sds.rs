//! SDS over ADS: the secrets `default` (the proxy's certificate chain and private key),
//! `ROOTCA` (the trust bundle, as istio-agent serves it: `trusted_ca`) and a gateway's
//! credentials (`kubernetes://...`, see `credentials`), served per stream as
//! `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`. Which trust domains
//! a peer may belong to is not part of `ROOTCA`: translation sets it beside it (SAN matchers
//! from the mesh configuration, see `translate::mtls`).
//!
//! Contract: `ROOTCA` is served to every stream (it is public). `default` is served only to a
//! stream that proved its identity on the TLS port: its certificate is signed for that
//! identity, issued for that stream alone when it is first asked for, and replaced at its
//! half-life, and at once when the mesh's trust domain changes (the identity moves to the new
//! one); the replacement reaches Envoy as a new `default`, which Envoy applies without
//! closing connections. Credentials follow the model: they are recomputed for each new
//! snapshot. Versions are derived from the certificates, never from the key. Secret
//! bodies kept for debug views have their private key replaced by `[redacted]`, as Envoy's own
//! config dump does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use crate::ca::{Ca, CaError, WorkloadCert};
use crate::cache::{TypedResources, Versioned};
use crate::envoy::pack;
use crate::model::{Identity, Model, Proxy};

pub use crate::translate::naming::{SDS_DEFAULT, SDS_ROOTCA};

pub(super) fn inline(bytes: &[u8]) -> Option<xds_core::DataSource> {
    Some(xds_core::DataSource {
        specifier: Some(xds_core::data_source::Specifier::InlineBytes(
            bytes.to_vec(),
        )),
        ..Default::default()
    })
}

fn redacted() -> Option<xds_core::DataSource> {
    Some(xds_core::DataSource {
        specifier: Some(xds_core::data_source::Specifier::InlineString(
            "[redacted]".to_string(),
        )),
        ..Default::default()
    })
}

/// `default`: the chain (leaf first) and the key.
pub fn default_secret(cert: &WorkloadCert) -> tls::Secret {
    tls::Secret {
        name: SDS_DEFAULT.to_string(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: inline(cert.chain_pem.as_bytes()),
            private_key: inline(cert.key.expose()),
            ..Default::default()
        })),
    }
}

/// A secret as debug views show it: a private key replaced by `[redacted]`.
pub fn redact(secret: &tls::Secret) -> tls::Secret {
    let mut out = secret.clone();
    if let Some(tls::secret::Type::TlsCertificate(c)) = &mut out.r#type {
        if c.private_key.is_some() {
            c.private_key = redacted();
        }
        if c.private_key_provider.is_some() {
            c.private_key_provider = None;
        }
    }
    out
}

/// `ROOTCA`: the trust bundle peers' chains must verify against.
pub fn root_secret(ca: &Ca) -> tls::Secret {
    tls::Secret {
        name: SDS_ROOTCA.to_string(),
        r#type: Some(tls::secret::Type::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: inline(ca.root_pem().as_bytes()),
                ..Default::default()
            },
        )),
    }
}

pub(super) fn version_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The secrets of one stream.
pub struct Secrets {
    ca: Option<Arc<Ca>>,
    /// The identity `default` is issued for; `None`: this stream gets no `default`.
    identity: Option<Identity>,
    current: Option<WorkloadCert>,
    /// After a failed renewal: not before this.
    retry_at: Option<SystemTime>,
    /// The gateway credentials the stream is served.
    credentials: Credentials,
    set: Arc<TypedResources>,
    /// Redacted bodies, by name, for debug views.
    pub dump: BTreeMap<String, Any>,
}

impl Secrets {
    /// `ca`: bowline's CA, if it runs one; `identity`: set when the stream may hold a
    /// certificate.
    pub fn new(ca: Option<Arc<Ca>>, identity: Option<Identity>) -> Secrets {
        let mut s = Secrets {
            ca,
            identity,
            current: None,
            retry_at: None,
            credentials: Credentials::default(),
            set: Arc::new(TypedResources::default()),
            dump: BTreeMap::new(),
        };
        s.rebuild();
        s
    }

    pub fn resources(&self) -> &Arc<TypedResources> {
        &self.set
    }

    /// Issues the first certificate when `default` is asked for and none is held yet.
    pub fn ensure(&mut self, wanted: &BTreeSet<String>) -> Result<(), CaError> {
        if self.current.is_none() && self.identity.is_some() && wanted.contains(SDS_DEFAULT) {
            self.renew()?;
        }
        Ok(())
    }

    /// Recomputes the gateway credentials among `wanted` for `proxy` at `model` (see
    /// `credentials`): `true` when what is served changed.
    pub fn refresh_credentials(
        &mut self,
        model: &Model,
        proxy: &Proxy,
        wanted: &BTreeSet<String>,
    ) -> bool {
        let changed = self
            .credentials
            .refresh(model, proxy, self.identity.as_ref(), wanted);
        if changed {
            self.rebuild();
        }
        changed
    }

    /// The credentials asked for and refused, with why.
    pub fn refused(&self) -> BTreeMap<String, String> {
        self.credentials.refused()
    }

    /// When the held certificate is due for renewal.
    pub fn renew_in(&self) -> Option<Duration> {
        let cert = self.current.as_ref()?;
        let at = match self.retry_at {
            Some(r) => r.max(cert.renew_at()),
            None => cert.renew_at(),
        };
        Some(at.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// Moves the stream's identity to `trust_domain`, the mesh's trust domain in force: `true`
    /// when a certificate is held for another trust domain, which [`Secrets::renew`] must then
    /// replace.
    pub fn follow_trust_domain(&mut self, trust_domain: &str) -> bool {
        let Some(identity) = &self.identity else {
            return false;
        };
        if identity.trust_domain == trust_domain {
            return false;
        }
        let moved = Identity::new(trust_domain, &identity.namespace, &identity.service_account);
        if moved.is_none() {
            tracing::error!(%identity, trust_domain, "the mesh's trust domain is not usable in an identity; the certificate is not replaced");
            return false;
        }
        self.identity = moved;
        self.retry_at = None;
        self.current.is_some()
    }

    /// A new certificate (and key) for the stream's identity.
    pub fn renew(&mut self) -> Result<(), CaError> {
        let (Some(ca), Some(identity)) = (&self.ca, &self.identity) else {
            return Ok(());
        };
        let cert = match ca.issue(identity) {
            Ok(c) => c,
            Err(e) => {
                self.retry_at = Some(SystemTime::now() + Duration::from_secs(10));
                return Err(e);
            }
        };
        self.retry_at = None;
        tracing::info!(identity = %identity, serial = %cert.serial, "workload certificate issued");
        self.current = Some(cert);
        self.rebuild();
        Ok(())
    }

    fn rebuild(&mut self) {
        let mut items = BTreeMap::new();
        self.dump.clear();
        if let Some(ca) = &self.ca {
            let root = root_secret(ca);
            let body = pack(&root);
            self.dump.insert(SDS_ROOTCA.to_string(), body.clone());
            items.insert(
                SDS_ROOTCA.to_string(),
                Arc::new(Versioned::new(
                    SDS_ROOTCA.to_string(),
                    version_of(&[ca.root_pem().as_bytes()]),
                    body,
                )),
            );
        }
        if let Some(cert) = &self.current {
            let secret = default_secret(cert);
            self.dump
                .insert(SDS_DEFAULT.to_string(), pack(&redact(&secret)));
            items.insert(
                SDS_DEFAULT.to_string(),
                Arc::new(Versioned::new(
                    SDS_DEFAULT.to_string(),
                    version_of(&[cert.serial.as_bytes(), cert.chain_pem.as_bytes()]),
                    pack(&secret),
                )),
            );
        }
        for (name, versioned) in self.credentials.items() {
            items.insert(name.clone(), versioned.clone());
        }
        self.dump.extend(
            self.credentials
                .dumps()
                .map(|(name, body)| (name.clone(), body.clone())),
        );
        self.set = Arc::new(TypedResources::new(items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaOptions, DEFAULT_WORKLOAD_TTL};

    /// A self-signed CA of `cluster.local`.
    fn test_ca() -> Ca {
        Ca::load(&CaOptions {
            dir: None,
            trust_domain: "cluster.local".into(),
            workload_ttl: DEFAULT_WORKLOAD_TTL,
        })
        .unwrap()
    }

    #[test]
    fn default_only_for_an_identity_and_renewed() {
        let ca = Arc::new(test_ca());
        let wanted: std::collections::BTreeSet<String> =
            [SDS_DEFAULT, SDS_ROOTCA].map(String::from).into();
        let mut anonymous = Secrets::new(Some(ca.clone()), None);
        anonymous.ensure(&wanted).unwrap();
        assert_eq!(
            anonymous.resources().items.keys().collect::<Vec<_>>(),
            vec![SDS_ROOTCA]
        );
        let id = Identity::new("cluster.local", "a", "sa").unwrap();
        let mut s = Secrets::new(Some(ca), Some(id));
        s.ensure(&wanted).unwrap();
        let first = s.resources().items[SDS_DEFAULT].version.clone();
        let renew_in = s.renew_in().unwrap();
        assert!(renew_in <= DEFAULT_WORKLOAD_TTL / 2 && renew_in > DEFAULT_WORKLOAD_TTL / 3);
        s.renew().unwrap();
        assert_ne!(s.resources().items[SDS_DEFAULT].version, first);
        let dump = serde_json::to_string(&crate::envoy::any_to_json(&s.dump[SDS_DEFAULT]).unwrap())
            .unwrap();
        assert!(dump.contains("[redacted]"), "{dump}");
        assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    }

    #[test]
    fn rootca_is_the_trust_bundle_only() {
        let ca = test_ca();
        let Some(tls::secret::Type::ValidationContext(v)) = root_secret(&ca).r#type else {
            panic!("ROOTCA is a validation context");
        };
        assert_eq!(
            v.trusted_ca,
            inline(ca.root_pem().as_bytes()),
            "the mesh's roots"
        );
        assert_eq!(v.custom_validator_config, None);
    }

    #[test]
    fn a_trust_domain_change_moves_the_identity_and_replaces_the_certificate() {
        let ca = Arc::new(test_ca());
        let wanted: std::collections::BTreeSet<String> =
            [SDS_DEFAULT, SDS_ROOTCA].map(String::from).into();
        let id = Identity::new("cluster.local", "a", "sa").unwrap();
        let mut s = Secrets::new(Some(ca), Some(id));
        assert!(!s.follow_trust_domain("cluster.local"), "no change");
        s.ensure(&wanted).unwrap();
        assert!(
            s.follow_trust_domain("example.org"),
            "the held certificate is stale"
        );
        s.renew().unwrap();
        let chain = match &s.current {
            Some(c) => c.chain_pem.clone(),
            None => panic!("a certificate"),
        };
        let der = crate::ca::pem::parse(&chain).unwrap()[0].der.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(
            san.value.general_names.as_slice(),
            [x509_parser::prelude::GeneralName::URI(
                "spiffe://example.org/ns/a/sa/sa"
            )]
        ));
        let mut anonymous = Secrets::new(None, None);
        assert!(!anonymous.follow_trust_domain("example.org"));
    }
}
