//! References between resources: what one resource makes a proxy fetch by name.

use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::{Message, Name};

/// Route configuration names a listener's HTTP connection managers fetch over RDS.
pub fn rds_names(listener: &xds_listener::Listener) -> Vec<String> {
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.iter());
    let mut names = Vec::new();
    for chain in chains {
        for filter in &chain.filters {
            let Some(xds_listener::filter::ConfigType::TypedConfig(any)) = &filter.config_type
            else {
                continue;
            };
            if any.type_url != hcm::HttpConnectionManager::type_url() {
                continue;
            }
            let Ok(manager) = hcm::HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            if let Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) =
                manager.route_specifier
            {
                names.push(rds.route_config_name);
            }
        }
    }
    names
}
