//! CUSTOM AuthorizationPolicies → `ext_authz`, per provider: an RBAC filter whose shadow rules
//! (the policies' rules, as DENY) mark the requests the provider must check, then the provider's
//! ext_authz filter, enabled only on that mark. HTTP providers act on HTTP chains, gRPC providers
//! on HTTP and TCP chains. A provider that cannot be used (unknown, not a service the proxy has a
//! cluster for, bad settings, or one of several for the workload) fails closed: the rules of its
//! policies become enforced DENY rules, and each policy gets a warning.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as ext_authz_http;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_http;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as ext_authz_tcp;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as rbac_tcp;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as envoy_type;
use envoy_types::pb::google::protobuf as pb;

use super::filter::{http_filter, network_filter};
use super::matchers::{metadata_matcher, sm_exact, sm_prefix, sm_suffix, value_string};
use super::rbac::{Built, build_rules};
use super::select::Selected;
use crate::model::mesh::{Authorizer, ExtAuthzGrpc, ExtAuthzHttp, RequestBody};
use crate::model::networking::parse_duration;
use crate::translate::scope::Scope;
use crate::translate::values::proto_duration;
use crate::translate::{IntoWarning, naming};

/// A resolved ext_authz provider.
struct ExtAuthz {
    http: ext_authz_http::ExtAuthz,
    /// Only gRPC providers work on TCP chains.
    tcp: Option<ext_authz_tcp::ExtAuthz>,
}

/// CUSTOM policies grouped by provider.
pub(super) struct Custom {
    /// Per provider (sorted): HTTP filters and TCP filters.
    providers: Vec<(Vec<hcm::HttpFilter>, Vec<xds_listener::Filter>)>,
}

impl Custom {
    pub(super) fn new(scope: &Scope, policies: &[Selected], bundle: &[String]) -> Custom {
        let mut by_provider: BTreeMap<&str, Vec<Selected>> = BTreeMap::new();
        for p in policies {
            let name = p.spec.provider.as_ref().map(|p| p.name.as_str());
            by_provider
                .entry(name.unwrap_or_default())
                .or_default()
                .push(*p);
        }
        let many = by_provider.len() > 1;
        let mut providers = Vec::new();
        for (name, selected) in &by_provider {
            let resolved = if many {
                Err(format!(
                    "a workload may use only one CUSTOM authorization provider, found {}: {}",
                    by_provider.len(),
                    by_provider.keys().copied().collect::<Vec<_>>().join(", ")
                ))
            } else {
                resolve_provider(scope, name)
            };
            let rules = |tcp: bool| {
                build_rules(selected, rbac::rbac::Action::Deny, tcp, Some(name), bundle)
            };
            match resolved {
                Err(e) => {
                    for p in selected {
                        scope.report(
                            p.resource
                                .diagnostic(
                                    "spec.provider.name",
                                    format!("{e}; requests this policy selects are denied"),
                                )
                                .into_warning(),
                        );
                    }
                    let deny = |tcp: bool| bad_custom_deny(rules(tcp).enforce);
                    providers.push((
                        vec![http_filter(
                            naming::RBAC_HTTP_FILTER,
                            &rbac_http::Rbac {
                                rules: Some(deny(false)),
                                ..Default::default()
                            },
                        )],
                        vec![network_filter(
                            naming::RBAC_NETWORK_FILTER,
                            &rbac_tcp::Rbac {
                                rules: Some(deny(true)),
                                stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                                ..Default::default()
                            },
                        )],
                    ));
                }
                Ok(mut ext) => {
                    let (shadow_rules, dry_run_rules) = marking_rules(rules(false));
                    let mut http = ext.http.clone();
                    http.filter_enabled_metadata =
                        Some(ext_authz_enabled(naming::RBAC_HTTP_FILTER, name));
                    let http_filters = vec![
                        http_filter(
                            naming::RBAC_HTTP_FILTER,
                            &rbac_http::Rbac {
                                shadow_rules,
                                shadow_rules_stat_prefix: naming::RBAC_EXT_AUTHZ_PREFIX.to_string(),
                                rules: dry_run_rules,
                                ..Default::default()
                            },
                        ),
                        http_filter(naming::EXT_AUTHZ_HTTP_FILTER, &http),
                    ];
                    let mut tcp_filters = Vec::new();
                    if let Some(tcp) = ext.tcp.as_mut() {
                        let (shadow_rules, dry_run_rules) = marking_rules(rules(true));
                        tcp.filter_enabled_metadata =
                            Some(ext_authz_enabled(naming::RBAC_NETWORK_FILTER, name));
                        tcp_filters.push(network_filter(
                            naming::RBAC_NETWORK_FILTER,
                            &rbac_tcp::Rbac {
                                shadow_rules,
                                shadow_rules_stat_prefix: naming::RBAC_EXT_AUTHZ_PREFIX.to_string(),
                                stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                                rules: dry_run_rules,
                                ..Default::default()
                            },
                        ));
                        tcp_filters.push(network_filter(naming::EXT_AUTHZ_NETWORK_FILTER, tcp));
                    }
                    providers.push((http_filters, tcp_filters));
                }
            }
        }
        Custom { providers }
    }

    pub(super) fn http(&self) -> Vec<hcm::HttpFilter> {
        self.providers
            .iter()
            .flat_map(|(h, _)| h.iter().cloned())
            .collect()
    }

    pub(super) fn tcp(&self) -> Vec<xds_listener::Filter> {
        self.providers
            .iter()
            .flat_map(|(_, t)| t.iter().cloned())
            .collect()
    }
}

/// The two rule sets of a usable provider's RBAC filter, as istiod lays them out: the enforced
/// policies' rules as shadow rules (an empty DENY without any), whose matches mark the requests
/// ext_authz checks, and the dry-run policies' rules, if any, as its rules.
fn marking_rules(built: Built) -> (Option<rbac::Rbac>, Option<rbac::Rbac>) {
    let shadow = built.enforce.unwrap_or_else(|| rbac::Rbac {
        action: rbac::rbac::Action::Deny as i32,
        ..Default::default()
    });
    (
        Some(shadow),
        built.shadow.filter(|s| !s.policies.is_empty()),
    )
}

/// The enforced rules of a CUSTOM policy that cannot be built, turned into DENY rules.
fn bad_custom_deny(rules: Option<rbac::Rbac>) -> rbac::Rbac {
    rbac::Rbac {
        action: rbac::rbac::Action::Deny as i32,
        policies: rules
            .map(|r| r.policies)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (format!("{k}{}", naming::BAD_CUSTOM_ACTION_SUFFIX), v))
            .collect(),
        ..Default::default()
    }
}

/// ext_authz runs only when the CUSTOM RBAC filter's shadow rules matched one of this
/// provider's policies.
fn ext_authz_enabled(rbac_filter: &str, provider: &str) -> matcher::MetadataMatcher {
    let key = format!(
        "{}{}",
        naming::RBAC_EXT_AUTHZ_PREFIX,
        naming::RBAC_SHADOW_EFFECTIVE_POLICY_ID
    );
    metadata_matcher(
        rbac_filter,
        &[&key],
        value_string(sm_prefix(
            &format!("{}-{provider}", naming::EXT_AUTHZ_POLICY_PREFIX),
            false,
        )),
    )
}

/// A service of the registry named as an extension provider names it (`<host>` unique across
/// namespaces, or `<namespace>/<host>`): its host name.
fn lookup_service(scope: &Scope, service: &str) -> Result<String, String> {
    let registry = &scope.model.registry;
    if let Some((ns, host)) = service.split_once('/') {
        if let Some(s) = registry.by_hostname(host).find(|s| s.namespace == ns) {
            return Ok(s.hostname.clone());
        }
    } else {
        let namespaces: BTreeSet<&str> = registry
            .by_hostname(service)
            .map(|s| s.namespace.as_str())
            .collect();
        match namespaces.len() {
            1 => return Ok(service.to_string()),
            0 => {}
            _ => {
                return Err(format!(
                    "found {service} in multiple namespaces {namespaces:?}, specify the namespace \
                     explicitly in the format of <Namespace>/<Hostname>"
                ));
            }
        }
    }
    Err(format!(
        "could not find service {service} in the service registry"
    ))
}

/// Whether the proxy has the outbound cluster of this service port (its Sidecar imports it).
fn has_cluster(scope: &Scope, hostname: &str, port: u16) -> bool {
    scope
        .services()
        .iter()
        .any(|s| s.hostname == hostname && s.ports.iter().any(|p| p.number == port))
}

/// The provider's timeout, 600s when unset.
fn provider_timeout(t: Option<&str>) -> pb::Duration {
    t.and_then(|t| parse_duration(t).ok())
        .map(proto_duration)
        .unwrap_or(pb::Duration {
            seconds: 600,
            nanos: 0,
        })
}

fn status_on_error(s: Option<&str>) -> Result<Option<envoy_type::HttpStatus>, String> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let code = s
        .parse::<i32>()
        .ok()
        .filter(|c| envoy_type::StatusCode::try_from(*c).is_ok())
        .ok_or_else(|| format!("unsupported statusOnError {s:?}"))?;
    Ok(Some(envoy_type::HttpStatus { code }))
}

fn with_body(b: Option<&RequestBody>) -> Option<ext_authz_http::BufferSettings> {
    b.map(|b| ext_authz_http::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    })
}

/// `x-prefix*`, `*-suffix` or an exact header name, case-insensitive.
fn header_list(headers: &[String]) -> Option<matcher::ListStringMatcher> {
    if headers.is_empty() {
        return None;
    }
    Some(matcher::ListStringMatcher {
        patterns: headers
            .iter()
            .map(|h| {
                if let Some(s) = h.strip_prefix('*') {
                    sm_suffix(s, true)
                } else if let Some(p) = h.strip_suffix('*') {
                    sm_prefix(p, true)
                } else {
                    sm_exact(h, true)
                }
            })
            .collect(),
    })
}

fn resolve_provider(scope: &Scope, name: &str) -> Result<ExtAuthz, String> {
    let provider = scope.model.mesh.authorizer(name)?;
    let check_cluster = |service: &str, port: u32| -> Result<(String, String), String> {
        let hostname = lookup_service(scope, service)?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port must be in the range [1, 65535], found: {port}"))?;
        if !has_cluster(scope, &hostname, port) {
            return Err(format!(
                "the proxy has no cluster for {hostname}:{port} (its Sidecar does not import the service, or the service has no such port)"
            ));
        }
        let cluster = naming::outbound_cluster(port, "", &hostname);
        Ok((hostname, cluster))
    };
    match provider {
        Authorizer::Http(p) => {
            let (hostname, cluster) = check_cluster(&p.service, p.port)?;
            Ok(ExtAuthz {
                http: http_ext_authz(p, &hostname, &cluster)?,
                tcp: None,
            })
        }
        Authorizer::Grpc(p) => {
            let (hostname, cluster) = check_cluster(&p.service, p.port)?;
            grpc_ext_authz(p, &hostname, &cluster)
        }
    }
}

fn http_ext_authz(
    p: &ExtAuthzHttp,
    hostname: &str,
    cluster: &str,
) -> Result<ext_authz_http::ExtAuthz, String> {
    let headers_to_add: Vec<xds_core::HeaderValue> = p
        .include_additional_headers_in_check
        .iter()
        .map(|(k, v)| xds_core::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        })
        .collect();
    let response = [
        &p.headers_to_upstream_on_allow,
        &p.headers_to_downstream_on_deny,
        &p.headers_to_downstream_on_allow,
    ]
    .iter()
    .any(|h| !h.is_empty())
    .then(|| ext_authz_http::AuthorizationResponse {
        allowed_upstream_headers: header_list(&p.headers_to_upstream_on_allow),
        allowed_client_headers: header_list(&p.headers_to_downstream_on_deny),
        allowed_client_headers_on_success: header_list(&p.headers_to_downstream_on_allow),
        ..Default::default()
    });
    let service = ext_authz_http::HttpService {
        path_prefix: p.path_prefix.clone().unwrap_or_default(),
        server_uri: Some(xds_core::HttpUri {
            uri: format!("http://{hostname}"),
            timeout: Some(provider_timeout(p.timeout.as_deref())),
            http_upstream_type: Some(xds_core::http_uri::HttpUpstreamType::Cluster(
                cluster.to_string(),
            )),
        }),
        authorization_request: (!headers_to_add.is_empty()).then(|| {
            ext_authz_http::AuthorizationRequest {
                headers_to_add,
                ..Default::default()
            }
        }),
        authorization_response: response,
        ..Default::default()
    };
    let allowed = if p.include_request_headers_in_check.is_empty() {
        &p.include_headers_in_check
    } else {
        &p.include_request_headers_in_check
    };
    Ok(ext_authz_http::ExtAuthz {
        status_on_error: status_on_error(p.status_on_error.as_deref())?,
        failure_mode_allow: p.fail_open,
        transport_api_version: xds_core::ApiVersion::V3 as i32,
        services: Some(ext_authz_http::ext_authz::Services::HttpService(service)),
        with_request_body: with_body(p.include_request_body_in_check.as_ref()),
        allowed_headers: header_list(allowed),
        ..Default::default()
    })
}

fn grpc_ext_authz(p: &ExtAuthzGrpc, hostname: &str, cluster: &str) -> Result<ExtAuthz, String> {
    let grpc = xds_core::GrpcService {
        target_specifier: Some(xds_core::grpc_service::TargetSpecifier::EnvoyGrpc(
            xds_core::grpc_service::EnvoyGrpc {
                cluster_name: cluster.to_string(),
                authority: hostname.to_string(),
                ..Default::default()
            },
        )),
        timeout: Some(provider_timeout(p.timeout.as_deref())),
        ..Default::default()
    };
    Ok(ExtAuthz {
        http: ext_authz_http::ExtAuthz {
            status_on_error: status_on_error(p.status_on_error.as_deref())?,
            failure_mode_allow: p.fail_open,
            transport_api_version: xds_core::ApiVersion::V3 as i32,
            services: Some(ext_authz_http::ext_authz::Services::GrpcService(
                grpc.clone(),
            )),
            with_request_body: with_body(p.include_request_body_in_check.as_ref()),
            ..Default::default()
        },
        tcp: Some(ext_authz_tcp::ExtAuthz {
            stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
            failure_mode_allow: p.fail_open,
            transport_api_version: xds_core::ApiVersion::V3 as i32,
            grpc_service: Some(grpc),
            ..Default::default()
        }),
    })
}
