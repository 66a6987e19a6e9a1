//! A typed filter configuration wrapped as the HTTP or network filter Envoy loads by name: how
//! every filter of this module (RBAC, ext_authz, jwt_authn) reaches a chain.

use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use crate::envoy::pack;

pub(super) fn http_filter<T: prost::Name + prost::Message>(
    name: &str,
    config: &T,
) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(config))),
        ..Default::default()
    }
}

pub(super) fn network_filter<T: prost::Name + prost::Message>(
    name: &str,
    config: &T,
) -> xds_listener::Filter {
    xds_listener::Filter {
        name: name.to_string(),
        config_type: Some(xds_listener::filter::ConfigType::TypedConfig(pack(config))),
    }
}
