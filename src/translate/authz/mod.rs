//! Authorization and request authentication on a proxy's inbound side, as istiod builds them:
//! AuthorizationPolicy → Envoy RBAC (HTTP filter `envoy.filters.http.rbac` in the inbound HTTP
//! connection manager, network filter `envoy.filters.network.rbac` in inbound TCP chains), CUSTOM
//! policies → an RBAC filter in shadow mode marking the requests `ext_authz` must check, and
//! RequestAuthentication → `envoy.filters.http.jwt_authn` whose verified payload (dynamic
//! metadata `payload` under the filter's name) RBAC matches request principals and claims on.
//!
//! Order, istiod's: CUSTOM (RBAC + ext_authz), jwt_authn, AUDIT, DENY, ALLOW; then the
//! listener's own fault, cors and router filters.
//!
//! This file holds what the listener and cluster stages call: [`Inbound::build`], the filters of
//! a proxy's inbound chains in that order, and [`jwks_clusters`]. One file per concern below it,
//! each importing only from those after it in this list: `ext_authz` (CUSTOM policies), `rbac`
//! (AuthorizationPolicy rules → RBAC policies), `jwt` (RequestAuthentication → jwt_authn, JWKS
//! clusters), `select` (which policies apply to the proxy), `trust_domain` (the mesh's trust
//! domains and principals rewritten to them), `matchers` (the Envoy matchers RBAC is built from),
//! `filter` (a config as an HTTP or network filter). Pure: everything here reads the scope and
//! returns values.

mod ext_authz;
mod filter;
mod jwt;
mod matchers;
mod rbac;
mod select;
mod trust_domain;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::rbac::v3 as xds_rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_http;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as rbac_tcp;

pub use jwt::{JWT_PAYLOAD_KEY, jwks_clusters};

use super::naming;
use super::scope::Scope;
use crate::model::security::Action;
use ext_authz::Custom;
use filter::{http_filter, network_filter};
use jwt::jwt_filter;
use rbac::build_rules;
use select::{Selected, authorization_policies};
use trust_domain::trust_domains;

/// The authorization and authentication filters of one proxy's inbound chains, computed once
/// and shared by every inbound chain of the proxy.
#[derive(Debug, Default, Clone)]
pub struct Inbound {
    /// HTTP filters to put in front of the inbound connection manager's own filters.
    pub http: Vec<hcm::HttpFilter>,
    /// Network filters to put in front of an inbound TCP chain's tcp_proxy.
    pub tcp: Vec<xds_listener::Filter>,
}

impl Inbound {
    /// Builds the inbound filters of the scope's proxy; problems become warnings in the scope.
    pub fn build(scope: &Scope) -> Inbound {
        let policies = authorization_policies(scope);
        let bundle = trust_domains(scope);
        let mut by_action: BTreeMap<Action, Vec<Selected>> = BTreeMap::new();
        for p in policies {
            by_action.entry(p.spec.action()).or_default().push(p);
        }
        let take = |a: Action| by_action.get(&a).map(Vec::as_slice).unwrap_or_default();
        let custom = Custom::new(scope, take(Action::Custom), &bundle);

        let mut http = custom.http();
        http.extend(jwt_filter(scope));
        let mut tcp = custom.tcp();
        for (action, rbac_action) in [
            (Action::Audit, xds_rbac::rbac::Action::Log),
            (Action::Deny, xds_rbac::rbac::Action::Deny),
            (Action::Allow, xds_rbac::rbac::Action::Allow),
        ] {
            let selected = take(action);
            if selected.is_empty() {
                continue;
            }
            for for_tcp in [false, true] {
                let built = build_rules(selected, rbac_action, for_tcp, None, &bundle);
                let shadow_prefix = match action {
                    Action::Allow if built.shadow.is_some() => naming::RBAC_DRY_RUN_ALLOW_PREFIX,
                    Action::Deny if built.shadow.is_some() => naming::RBAC_DRY_RUN_DENY_PREFIX,
                    _ => "",
                };
                if for_tcp {
                    tcp.push(network_filter(
                        naming::RBAC_NETWORK_FILTER,
                        &rbac_tcp::Rbac {
                            rules: built.enforce,
                            shadow_rules: built.shadow,
                            shadow_rules_stat_prefix: shadow_prefix.to_string(),
                            stat_prefix: naming::RBAC_TCP_STAT_PREFIX.to_string(),
                            ..Default::default()
                        },
                    ));
                } else {
                    http.push(http_filter(
                        naming::RBAC_HTTP_FILTER,
                        &rbac_http::Rbac {
                            rules: built.enforce,
                            shadow_rules: built.shadow,
                            shadow_rules_stat_prefix: shadow_prefix.to_string(),
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        Inbound { http, tcp }
    }
}
