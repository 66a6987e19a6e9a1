//! The TLS a gateway server terminates (istiod's `BuildListenerTLSContext`):
//! - `credentialName`(s): the certificate over SDS as `kubernetes://<name>`; MUTUAL and
//!   OPTIONAL_MUTUAL verify clients against `kubernetes://<name>-cacert` (or
//!   `caCertCredentialName`) plus the server's `subjectAltNames`, `verifyCertificateSpki` and
//!   `verifyCertificateHash`. The key never appears in a listener.
//! - `serverCertificate`/`privateKey`/`caCertificates` (or `tlsCertificates`): files on the
//!   gateway, read by Envoy.
//! - ISTIO_MUTUAL: the gateway's own workload certificate (`default`) and the mesh's roots
//!   (`ROOTCA`), clients required, matched by `subjectAltNames` or else by the mesh's trust
//!   domains, as sidecars match their peers.
//!
//! SIMPLE, MUTUAL and OPTIONAL_MUTUAL take `minProtocolVersion`, `maxProtocolVersion` and
//! `cipherSuites`. ALPN offers `h2` and `http/1.1`.

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf as pb;

use crate::model::gateway::server_credentials;
use crate::model::networking::{ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::translate::cluster::{file_source, san_matchers};
use crate::translate::mtls::{self, sds, socket};
use crate::translate::naming;
use crate::translate::scope::Scope;

fn protocol(p: Option<TlsProtocol>) -> Option<i32> {
    use tls::tls_parameters::TlsProtocol as Envoy;
    let out = match p? {
        TlsProtocol::TlsAuto => return None,
        TlsProtocol::TlsV1_0 => Envoy::TlSv10,
        TlsProtocol::TlsV1_1 => Envoy::TlSv11,
        TlsProtocol::TlsV1_2 => Envoy::TlSv12,
        TlsProtocol::TlsV1_3 => Envoy::TlSv13,
    };
    Some(out as i32)
}

/// The downstream transport socket of a server with `settings` (not a passthrough one).
pub fn server_socket(scope: &Scope, settings: &ServerTlsSettings) -> xds_core::TransportSocket {
    let mode = settings.mode.unwrap_or(ServerTlsMode::Passthrough);
    let require_client = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::IstioMutual);
    let validate_client = require_client || mode == ServerTlsMode::OptionalMutual;
    let mut common = tls::CommonTlsContext {
        alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
        ..Default::default()
    };
    let (certificates, ca) = server_credentials(settings);
    if mode == ServerTlsMode::IstioMutual {
        let sans = if settings.subject_alt_names.is_empty() {
            mtls::trust_domain_matchers(&scope.model.mesh.trust_domains_for_validation())
        } else {
            san_matchers(&settings.subject_alt_names)
        };
        let source = scope.proxy.secret_source;
        common.tls_certificate_sds_secret_configs =
            vec![mtls::workload_sds(source, naming::SDS_DEFAULT)];
        common.validation_context_type = Some(combined(
            tls::CertificateValidationContext {
                match_typed_subject_alt_names: sans,
                ..Default::default()
            },
            mtls::workload_sds(source, naming::SDS_ROOTCA),
        ));
    } else if !certificates.is_empty() {
        common.tls_certificate_sds_secret_configs = certificates.iter().map(|n| sds(n)).collect();
        if let Some(ca) = ca {
            common.validation_context_type = Some(combined(client_checks(settings), sds(&ca)));
        } else if !settings.subject_alt_names.is_empty() {
            common.validation_context_type = Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(
                    tls::CertificateValidationContext {
                        match_typed_subject_alt_names: san_matchers(&settings.subject_alt_names),
                        ..Default::default()
                    },
                ),
            );
        }
    } else {
        common.tls_certificates = certificate_files(settings);
        let ca = settings
            .ca_certificates
            .as_deref()
            .or_else(|| {
                settings
                    .tls_certificates
                    .iter()
                    .find_map(|c| c.ca_certificates.as_deref())
            })
            .filter(|c| !c.is_empty());
        if validate_client && let Some(ca) = ca {
            let mut checks = client_checks(settings);
            checks.trusted_ca = Some(file_source(ca));
            if let Some(crl) = settings.ca_crl.as_deref().filter(|c| !c.is_empty()) {
                checks.crl = Some(file_source(crl));
            }
            common.validation_context_type =
                Some(tls::common_tls_context::ValidationContextType::ValidationContext(checks));
        }
    }
    if matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) {
        let min = protocol(settings.min_protocol_version);
        let max = protocol(settings.max_protocol_version);
        if min.is_some() || max.is_some() || !settings.cipher_suites.is_empty() {
            common.tls_params = Some(tls::TlsParameters {
                tls_minimum_protocol_version: min.unwrap_or_default(),
                tls_maximum_protocol_version: max.unwrap_or_default(),
                cipher_suites: settings.cipher_suites.clone(),
                ..Default::default()
            });
        }
    }
    socket(&tls::DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(pb::BoolValue {
            value: require_client,
        }),
        ..Default::default()
    })
}

/// What a client certificate must carry beyond chaining to the CA.
fn client_checks(settings: &ServerTlsSettings) -> tls::CertificateValidationContext {
    let mut checks = tls::CertificateValidationContext {
        match_typed_subject_alt_names: san_matchers(&settings.subject_alt_names),
        verify_certificate_spki: settings.verify_certificate_spki.clone(),
        verify_certificate_hash: settings.verify_certificate_hash.clone(),
        ..Default::default()
    };
    if settings.insecure_skip_verify == Some(true) {
        checks.trust_chain_verification =
            tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32;
    }
    checks
}

fn combined(
    checks: tls::CertificateValidationContext,
    ca: tls::SdsSecretConfig,
) -> tls::common_tls_context::ValidationContextType {
    tls::common_tls_context::ValidationContextType::CombinedValidationContext(
        tls::common_tls_context::CombinedCertificateValidationContext {
            default_validation_context: Some(checks),
            validation_context_sds_secret_config: Some(ca),
            ..Default::default()
        },
    )
}

/// The certificate/key files of a server: `serverCertificate`/`privateKey`, else each of
/// `tlsCertificates`.
fn certificate_files(settings: &ServerTlsSettings) -> Vec<tls::TlsCertificate> {
    let pair = |cert: Option<&str>, key: Option<&str>| -> Option<tls::TlsCertificate> {
        Some(tls::TlsCertificate {
            certificate_chain: Some(file_source(cert.filter(|c| !c.is_empty())?)),
            private_key: Some(file_source(key.filter(|k| !k.is_empty())?)),
            ..Default::default()
        })
    };
    match pair(
        settings.server_certificate.as_deref(),
        settings.private_key.as_deref(),
    ) {
        Some(p) => vec![p],
        None => settings
            .tls_certificates
            .iter()
            .filter_map(|c| pair(c.server_certificate.as_deref(), c.private_key.as_deref()))
            .collect(),
    }
}
