//! Envoy `ConfigDump` JSON of what bowline serves one proxy. Secrets appear with their
//! private keys replaced by `[redacted]`, as in Envoy's own config dump.

use envoy_types::pb::envoy::admin::v3 as admin;

use crate::cache::ProxyResources;
use crate::envoy::ResourceType;
use crate::envoy::{self, RenderError};

pub fn render(
    resources: &ProxyResources,
    secrets: &std::collections::BTreeMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<serde_json::Value, RenderError> {
    let items = |t: ResourceType| resources.get(t).items.values().cloned().collect::<Vec<_>>();
    let clusters = admin::ClustersConfigDump {
        version_info: resources.get(ResourceType::Cds).version.clone(),
        dynamic_active_clusters: items(ResourceType::Cds)
            .iter()
            .map(|v| admin::clusters_config_dump::DynamicCluster {
                version_info: v.version.clone(),
                cluster: Some(v.body.clone()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let endpoints = admin::EndpointsConfigDump {
        dynamic_endpoint_configs: items(ResourceType::Eds)
            .iter()
            .map(|v| admin::endpoints_config_dump::DynamicEndpointConfig {
                version_info: v.version.clone(),
                endpoint_config: Some(v.body.clone()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let listeners = admin::ListenersConfigDump {
        version_info: resources.get(ResourceType::Lds).version.clone(),
        dynamic_listeners: items(ResourceType::Lds)
            .iter()
            .map(|v| admin::listeners_config_dump::DynamicListener {
                name: v.name.clone(),
                active_state: Some(admin::listeners_config_dump::DynamicListenerState {
                    version_info: v.version.clone(),
                    listener: Some(v.body.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let routes = admin::RoutesConfigDump {
        dynamic_route_configs: items(ResourceType::Rds)
            .iter()
            .map(|v| admin::routes_config_dump::DynamicRouteConfig {
                version_info: v.version.clone(),
                route_config: Some(v.body.clone()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let secrets = admin::SecretsConfigDump {
        dynamic_active_secrets: secrets
            .iter()
            .map(|(name, body)| admin::secrets_config_dump::DynamicSecret {
                name: name.clone(),
                secret: Some(body.clone()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let dump = admin::ConfigDump {
        configs: vec![
            envoy::pack(&clusters),
            envoy::pack(&endpoints),
            envoy::pack(&listeners),
            envoy::pack(&routes),
            envoy::pack(&secrets),
        ],
    };
    let mut json = envoy::any_to_json(&envoy::pack(&dump))?;
    if let Some(obj) = json.as_object_mut() {
        obj.remove("@type");
    }
    Ok(json)
}
