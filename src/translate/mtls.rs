//! Mutual TLS between sidecars, as istiod configures it for proxies without Istio's own
//! filters: the certificate and the trust bundle come over SDS (the `default` and `ROOTCA`
//! secrets), never from files, so renewal needs no config change. A proxy started from
//! bowline's bootstrap gets them on its ADS stream; a proxy run by pilot-agent from the agent's
//! SDS server (the bootstrap's `sds-grpc` cluster), as istiod configures it
//! (`model::SecretSource`).
//!
//! `ROOTCA` is the trust bundle only; which peers are accepted is said here, as istiod says it,
//! from the mesh configuration of the model (one source for the trust domain, see
//! `model::mesh`). Upstream (`ISTIO_MUTUAL`, and auto mTLS): SNI
//! `outbound_.<port>_.<subset>_.<host>`; ALPN `istio` (plus `h2` for HTTP/2 clusters) —
//! istiod's in-mesh ALPN without `istio-peer-exchange`, which promises a metadata-exchange
//! filter stock Envoy does not have; the peer's certificate must carry one of the destination's
//! service-account SPIFFE IDs (with each `trustDomainAliases` entry too, as istiod expands
//! them), and when those are unknown a SPIFFE ID of one of the mesh's trust domains.
//! Downstream (inbound): the `default` certificate, client certificates required, chaining to
//! `ROOTCA` and carrying a SPIFFE ID of `trustDomain` or one of `trustDomainAliases` (istiod's
//! `spiffe://<td>/` prefix matchers).
//!
//! A proxy without a workload certificate (it did not prove its identity on the TLS port) gets
//! no auto mTLS and accepts plaintext where PERMISSIVE allows it; what explicitly requires
//! mTLS (`ISTIO_MUTUAL`, STRICT) keeps these contexts and fails closed, as the `default`
//! secret never reaches it.

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3 as raw_buffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as type_matcher;
use envoy_types::pb::google::protobuf as pb;

use super::naming;
use crate::envoy::pack;
use crate::model::SecretSource;

/// The endpoint label that marks a workload with a sidecar able to terminate mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Endpoint metadata key Envoy matches transport sockets against.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// ALPN values of istiod's mTLS filter chains (`allIstioMtlsALPNs`).
pub const ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// The cluster of pilot-agent's SDS server in the agent's bootstrap.
pub const AGENT_SDS_CLUSTER: &str = "sds-grpc";

/// A reference to the workload secret `name` (`default` or `ROOTCA`) where `source` serves it.
pub(crate) fn workload_sds(source: SecretSource, name: &str) -> tls::SdsSecretConfig {
    match source {
        SecretSource::Ads => sds(name),
        // istiod's: no initial fetch timeout (the agent answers once it holds the certificate).
        SecretSource::Agent => tls::SdsSecretConfig {
            name: name.to_string(),
            sds_config: Some(xds_core::ConfigSource {
                config_source_specifier: Some(
                    xds_core::config_source::ConfigSourceSpecifier::ApiConfigSource(
                        xds_core::ApiConfigSource {
                            api_type: xds_core::api_config_source::ApiType::Grpc as i32,
                            transport_api_version: xds_core::ApiVersion::V3 as i32,
                            set_node_on_first_message_only: true,
                            grpc_services: vec![xds_core::GrpcService {
                                target_specifier: Some(
                                    xds_core::grpc_service::TargetSpecifier::EnvoyGrpc(
                                        xds_core::grpc_service::EnvoyGrpc {
                                            cluster_name: AGENT_SDS_CLUSTER.to_string(),
                                            ..Default::default()
                                        },
                                    ),
                                ),
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    ),
                ),
                initial_fetch_timeout: Some(pb::Duration::default()),
                resource_api_version: xds_core::ApiVersion::V3 as i32,
                ..Default::default()
            }),
        },
    }
}

/// `ads: {}`: secrets come over the proxy's ADS stream (gateway credentials always do).
pub(crate) fn sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(xds_core::ConfigSource {
            config_source_specifier: Some(xds_core::config_source::ConfigSourceSpecifier::Ads(
                xds_core::AggregatedConfigSource {},
            )),
            resource_api_version: xds_core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

fn tls_params() -> tls::TlsParameters {
    tls::TlsParameters {
        tls_minimum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

/// The certificate and trust bundle over SDS, with extra SAN matchers.
fn common(
    source: SecretSource,
    sans: Vec<tls::SubjectAltNameMatcher>,
    alpn: Vec<String>,
) -> tls::CommonTlsContext {
    tls::CommonTlsContext {
        tls_params: Some(tls_params()),
        tls_certificate_sds_secret_configs: vec![workload_sds(source, naming::SDS_DEFAULT)],
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                tls::common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(tls::CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(workload_sds(
                        source,
                        naming::SDS_ROOTCA,
                    )),
                    ..Default::default()
                },
            ),
        ),
        alpn_protocols: alpn,
        ..Default::default()
    }
}

/// URI prefix matchers `spiffe://<td>/`: a SPIFFE ID of any of these trust domains.
pub fn trust_domain_matchers(trust_domains: &[String]) -> Vec<tls::SubjectAltNameMatcher> {
    trust_domains
        .iter()
        .map(|td| tls::SubjectAltNameMatcher {
            san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(type_matcher::StringMatcher {
                match_pattern: Some(type_matcher::string_matcher::MatchPattern::Prefix(format!(
                    "spiffe://{td}/"
                ))),
                ignore_case: false,
            }),
            ..Default::default()
        })
        .collect()
}

/// Exact URI matchers for SPIFFE IDs.
pub fn spiffe_matchers(ids: &[String]) -> Vec<tls::SubjectAltNameMatcher> {
    ids.iter()
        .map(|id| tls::SubjectAltNameMatcher {
            san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(type_matcher::StringMatcher {
                match_pattern: Some(type_matcher::string_matcher::MatchPattern::Exact(
                    id.clone(),
                )),
                ignore_case: false,
            }),
            ..Default::default()
        })
        .collect()
}

pub(crate) fn socket<T: prost::Name + prost::Message>(context: &T) -> xds_core::TransportSocket {
    xds_core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
            context,
        ))),
    }
}

/// The client side of `ISTIO_MUTUAL`: the peer must carry one of `san_ids`, or, when none are
/// known, a SPIFFE ID of one of `trust_domains` (the mesh's, for validation).
pub fn upstream(
    source: SecretSource,
    sni: &str,
    san_ids: &[String],
    trust_domains: &[String],
    h2: bool,
) -> xds_core::TransportSocket {
    let mut alpn = vec!["istio".to_string()];
    if h2 {
        alpn.push("h2".to_string());
    }
    let sans = if san_ids.is_empty() {
        trust_domain_matchers(trust_domains)
    } else {
        spiffe_matchers(san_ids)
    };
    socket(&tls::UpstreamTlsContext {
        common_tls_context: Some(common(source, sans, alpn)),
        sni: sni.to_string(),
        ..Default::default()
    })
}

/// Auto mTLS: mTLS to endpoints labelled `security.istio.io/tlsMode: istio`, plaintext to the
/// rest (istiod's `tlsMode-istio` / `tlsMode-disabled` socket matches).
pub fn auto_matches(
    mtls: xds_core::TransportSocket,
) -> Vec<xds_cluster::cluster::TransportSocketMatch> {
    let mut istio = pb::Struct::default();
    istio.fields.insert(
        "tlsMode".to_string(),
        pb::Value {
            kind: Some(pb::value::Kind::StringValue("istio".to_string())),
        },
    );
    vec![
        xds_cluster::cluster::TransportSocketMatch {
            name: "tlsMode-istio".to_string(),
            r#match: Some(istio),
            transport_socket: Some(mtls),
        },
        xds_cluster::cluster::TransportSocketMatch {
            name: "tlsMode-disabled".to_string(),
            r#match: Some(pb::Struct::default()),
            transport_socket: Some(xds_core::TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".to_string(),
                config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
                    &raw_buffer::RawBuffer {},
                ))),
            }),
        },
    ]
}

/// Endpoint metadata telling Envoy the endpoint terminates mTLS (for auto mTLS's socket
/// matches), from the endpoint's `security.istio.io/tlsMode` label.
pub fn endpoint_metadata(labels: &crate::model::networking::Labels) -> Option<xds_core::Metadata> {
    let mode = labels.get(TLS_MODE_LABEL).filter(|m| !m.is_empty())?;
    let mut fields = pb::Struct::default();
    fields.fields.insert(
        "tlsMode".to_string(),
        pb::Value {
            kind: Some(pb::value::Kind::StringValue(mode.clone())),
        },
    );
    let mut metadata = xds_core::Metadata::default();
    metadata
        .filter_metadata
        .insert(TRANSPORT_SOCKET_MATCH.to_string(), fields);
    Some(metadata)
}

/// The server side: the proxy's certificate, client certificates required, chaining to the
/// trust bundle and carrying a SPIFFE ID of one of `trust_domains` (the mesh's trust domain
/// and its aliases). `http`: the chain serves HTTP (ALPN `h2`, `http/1.1`).
pub fn downstream(
    source: SecretSource,
    http: bool,
    trust_domains: &[String],
) -> xds_core::TransportSocket {
    let alpn = if http {
        vec!["h2".to_string(), "http/1.1".to_string()]
    } else {
        Vec::new()
    };
    socket(&tls::DownstreamTlsContext {
        common_tls_context: Some(common(source, trust_domain_matchers(trust_domains), alpn)),
        require_client_certificate: Some(pb::BoolValue { value: true }),
        ..Default::default()
    })
}
