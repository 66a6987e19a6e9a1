//! RequestAuthentication → `envoy.filters.http.jwt_authn`: one provider per JWT rule that
//! applies to the proxy, its keys inline or fetched by Envoy from the JWKS server (a rule
//! without usable keys gets a key set nothing verifies against, so its tokens fail closed), the
//! verified payload written to dynamic metadata under [`JWT_PAYLOAD_KEY`] for RBAC to match on;
//! and the clusters for those JWKS servers the proxy does not already have.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as jwt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf as pb;

use super::filter::http_filter;
use super::matchers::sm_exact;
use super::select::jwt_rules;
use crate::envoy::pack;
use crate::model::networking::parse_duration;
use crate::model::security::{JwtPresence, JwtRule};
use crate::model::validation::security::parse_jwks_uri;
use crate::translate::scope::Scope;
use crate::translate::values::{self, SYSTEM_CA_BUNDLE, proto_duration};
use crate::translate::{IntoWarning, naming};

/// Payload key jwt_authn writes verified JWT claims under (`payload_in_metadata`).
pub const JWT_PAYLOAD_KEY: &str = "payload";

/// Where generated HTTPS JWKS clusters find trusted roots.
/// A syntactically valid key set no token verifies against: what a rule without usable keys
/// gets, so presented tokens fail closed (istiod does the same when it cannot fetch keys).
const FAKE_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"bowline-no-keys","alg":"RS256","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;

/// Where a rule's keys come from: inline, or fetched by Envoy from a cluster.
enum Jwks {
    Inline(String),
    Remote {
        uri: String,
        cluster: String,
        host: String,
        port: u16,
        tls: bool,
    },
}

fn jwks_source(rule: &JwtRule) -> Result<Jwks, String> {
    if let Some(inline) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
        return Ok(Jwks::Inline(inline.to_string()));
    }
    let Some(uri) = rule.jwks_uri() else {
        return Err(
            "neither jwks nor jwksUri is set; Envoy cannot discover keys from the issuer \
             (OpenID discovery), so tokens of this issuer are rejected"
                .to_string(),
        );
    };
    let parsed = parse_jwks_uri(uri)?;
    Ok(Jwks::Remote {
        uri: uri.to_string(),
        cluster: naming::outbound_cluster(parsed.port, "", &parsed.host),
        host: parsed.host,
        port: parsed.port,
        tls: parsed.tls,
    })
}

pub(super) fn jwt_filter(scope: &Scope) -> Option<hcm::HttpFilter> {
    use jwt::jwt_requirement::RequiresType;
    let rules = jwt_rules(scope);
    if rules.is_empty() {
        return None;
    }
    let mut providers = std::collections::HashMap::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, (resource, index, rule)) in rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{index}]");
        if rule.presence == Some(JwtPresence::Required) {
            scope.report(
                resource
                    .diagnostic(
                        format!("{field}.presence"),
                        "presence: REQUIRED is not enforced (istiod does not enforce it either); \
                         require a token with an AuthorizationPolicy on requestPrincipals",
                    )
                    .into_warning(),
            );
        }
        let timeout = rule
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(proto_duration)
            .unwrap_or(pb::Duration {
                seconds: 5,
                nanos: 0,
            });
        let source = match jwks_source(rule) {
            Ok(Jwks::Inline(keys)) => local_jwks(keys),
            Ok(Jwks::Remote { uri, cluster, .. }) => {
                jwt::jwt_provider::JwksSourceSpecifier::RemoteJwks(jwt::RemoteJwks {
                    http_uri: Some(xds_core::HttpUri {
                        uri,
                        timeout: Some(timeout),
                        http_upstream_type: Some(xds_core::http_uri::HttpUpstreamType::Cluster(
                            cluster,
                        )),
                    }),
                    cache_duration: Some(pb::Duration {
                        seconds: 300,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }
            Err(e) => {
                scope.report(resource.diagnostic(field.clone(), e).into_warning());
                local_jwks(FAKE_JWKS.to_string())
            }
        };
        let mut space_delimited: BTreeSet<String> =
            rule.space_delimited_claims.iter().cloned().collect();
        space_delimited.extend(["permission".to_string(), "scope".to_string()]);
        let provider = jwt::JwtProvider {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            forward: rule.forward_original_token,
            forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
            payload_in_metadata: JWT_PAYLOAD_KEY.to_string(),
            normalize_payload_in_metadata: Some(jwt::jwt_provider::NormalizePayload {
                space_delimited_claims: space_delimited.into_iter().collect(),
            }),
            claim_to_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| jwt::JwtClaimToHeader {
                    header_name: c.header.clone(),
                    claim_name: c.claim.clone(),
                    ..Default::default()
                })
                .collect(),
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| jwt::JwtHeader {
                    name: h.name.clone(),
                    value_prefix: h.prefix.clone().unwrap_or_default(),
                })
                .collect(),
            from_params: rule.from_params.clone(),
            from_cookies: rule.from_cookies.clone(),
            jwks_source_specifier: Some(source),
            ..Default::default()
        };
        let name = naming::jwt_provider(i);
        providers.insert(name.clone(), provider);
        let by_name = || jwt::JwtRequirement {
            requires_type: Some(RequiresType::ProviderName(name.clone())),
        };
        inner_and.push(jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(jwt::JwtRequirementOrList {
                requirements: vec![
                    by_name(),
                    jwt::JwtRequirement {
                        requires_type: Some(RequiresType::AllowMissing(pb::Empty {})),
                    },
                ],
            })),
        });
        outer_or.push(by_name());
    }
    // One issuer: that issuer or no token. Several: any one issuer's valid token, or every
    // presented token valid (providers may share a location, so the AND alone would fail).
    let requires = if inner_and.len() == 1 {
        inner_and.remove(0)
    } else {
        outer_or.push(jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAll(jwt::JwtRequirementAndList {
                requirements: inner_and,
            })),
        });
        jwt::JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(jwt::JwtRequirementOrList {
                requirements: outer_or,
            })),
        }
    };
    let config = jwt::JwtAuthentication {
        providers,
        rules: vec![jwt::RequirementRule {
            r#match: Some(xds_route::RouteMatch {
                path_specifier: Some(xds_route::route_match::PathSpecifier::Prefix(
                    "/".to_string(),
                )),
                ..Default::default()
            }),
            requirement_type: Some(jwt::requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    Some(http_filter(naming::JWT_AUTHN_FILTER, &config))
}

fn local_jwks(keys: String) -> jwt::jwt_provider::JwksSourceSpecifier {
    jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(xds_core::DataSource {
        specifier: Some(xds_core::data_source::Specifier::InlineString(keys)),
        ..Default::default()
    })
}

/// Clusters for the JWKS servers of the proxy's JWT rules that `existing` lacks: istiod's
/// cluster name (`outbound|<port>||<host>`) when the host is not a service the proxy already
/// has a cluster for; STRICT_DNS (STATIC for an address), TLS with the host as SNI and
/// verified against the system CA bundle for `https`.
pub fn jwks_clusters(
    scope: &Scope,
    existing: &BTreeSet<String>,
    connect_timeout: pb::Duration,
) -> Vec<xds_cluster::Cluster> {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    let mut out: BTreeMap<String, xds_cluster::Cluster> = BTreeMap::new();
    for (_, _, rule) in jwt_rules(scope) {
        let Ok(Jwks::Remote {
            cluster,
            host,
            port,
            tls,
            ..
        }) = jwks_source(rule)
        else {
            continue;
        };
        if existing.contains(&cluster) || out.contains_key(&cluster) {
            continue;
        }
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let kind = if is_ip {
            DiscoveryType::Static
        } else {
            DiscoveryType::StrictDns
        };
        let transport_socket = tls.then(|| {
            let context = tls::UpstreamTlsContext {
                sni: if is_ip { String::new() } else { host.clone() },
                common_tls_context: Some(tls::CommonTlsContext {
                    validation_context_type: Some(
                        tls::common_tls_context::ValidationContextType::ValidationContext(
                            tls::CertificateValidationContext {
                                trusted_ca: Some(xds_core::DataSource {
                                    specifier: Some(xds_core::data_source::Specifier::Filename(
                                        SYSTEM_CA_BUNDLE.to_string(),
                                    )),
                                    ..Default::default()
                                }),
                                match_typed_subject_alt_names: vec![tls::SubjectAltNameMatcher {
                                    san_type: if is_ip {
                                        tls::subject_alt_name_matcher::SanType::IpAddress
                                    } else {
                                        tls::subject_alt_name_matcher::SanType::Dns
                                    } as i32,
                                    matcher: Some(sm_exact(&host, false)),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            xds_core::TransportSocket {
                name: "envoy.transport_sockets.tls".to_string(),
                config_type: Some(xds_core::transport_socket::ConfigType::TypedConfig(pack(
                    &context,
                ))),
            }
        });
        out.insert(
            cluster.clone(),
            xds_cluster::Cluster {
                name: cluster.clone(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
                connect_timeout: Some(connect_timeout),
                dns_lookup_family: xds_cluster::cluster::DnsLookupFamily::V4Only as i32,
                load_assignment: Some(xds_endpoint::ClusterLoadAssignment {
                    cluster_name: cluster,
                    endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                        lb_endpoints: vec![xds_endpoint::LbEndpoint {
                            host_identifier: Some(
                                xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                                    xds_endpoint::Endpoint {
                                        address: Some(values::socket_address(&host, port)),
                                        ..Default::default()
                                    },
                                ),
                            ),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                transport_socket,
                ..Default::default()
            },
        );
    }
    out.into_values().collect()
}
