//! Istio's debug types on the ADS stream, as istiod answers them (what `istioctl
//! proxy-status` and `istioctl x proxy-status` ask for):
//!
//! - `istio.io/debug/syncz`: one `envoy.service.status.v3.ClientConfig` per connected proxy
//!   (its id `<pod>.<namespace>`, and `CLUSTER_ID`, `NAMESPACE`, `ISTIO_VERSION`), with each
//!   type's status:
//!   ERROR after a NACK, NOT_SENT before anything was sent, SYNCED when the last push is
//!   ACKed, STALE otherwise. The response's `control_plane` names bowline as istiod names
//!   itself (`{"Component": "istiod", "ID": <instance>, "Info": <build>}`).
//! - `istio.io/debug/config_dump` with one resource name, a proxy id (`<pod>.<namespace>` or
//!   the node id): that proxy's `ConfigDump` configs (private keys redacted), unnamed.
//! - `istio.io/debug` with one resource name naming a view and its query (`syncz`,
//!   `config_dump?proxyID=a.ns`; what `istioctl x internal-debug` asks for): the admin port's
//!   `/debug/<view>` body, whatever its status (as istiod's DebugGen), in one resource of type
//!   `istio.io/debug` named as asked. A caller outside the root namespace may ask only for
//!   [`NAMESPACE_VIEWS`] (`PERMISSION_DENIED` otherwise), which then concern only its own
//!   namespace's proxies.
//!
//! Contract: as istiod with `ENABLE_DEBUG_ENDPOINT_AUTH` (its default), only a caller that
//! proved its identity (the TLS port) is answered; a caller of a namespace other than the mesh's
//! root namespace sees only the proxies of its own namespace. Refusals end the stream with
//! `UNAUTHENTICATED` (no identity), `PERMISSION_DENIED` (a view for the root namespace) or
//! `INVALID_ARGUMENT` (a config dump of not exactly one proxy, or not exactly one view); a
//! config dump of a proxy that is not connected (or not visible) is an empty answer, as
//! istiod's. A stream whose first request asks for a debug type is a debug caller, not a
//! proxy: it is not listed or counted. Only requests are answered, never their ACKs.

use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::status::v3 as csds;
use envoy_types::pb::google::protobuf::Any;
use tonic::Status;

use super::Shared;
use super::status::{Connection, TypeStatus};
use crate::cache::ProxyResources;
use crate::envoy::{self, ResourceType};
use crate::model::Proxy;

/// The prefix of Istio's debug type URLs, and itself the type whose one resource name is a
/// debug view (`syncz`, `config_dump?proxyID=<pod>.<namespace>`).
pub const DEBUG_PREFIX: &str = "istio.io/debug";
pub const SYNCZ: &str = "istio.io/debug/syncz";
pub const CONFIG_DUMP: &str = "istio.io/debug/config_dump";

/// The debug views a caller of a namespace other than the mesh's root namespace may ask for
/// (about its own namespace's proxies only); istiod's `activeNamespaceDebuggers`.
pub const NAMESPACE_VIEWS: &[&str] = &["config_dump", "edsz"];

/// What a debug view answers: an HTTP status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugReply {
    pub status: u16,
    /// Whether the body is JSON (else plain text).
    pub json: bool,
    pub body: Vec<u8>,
}

/// The debug views by endpoint name, as the admin port serves them under `/debug/` (installed
/// in [`Shared::debug_views`] by whoever serves them). `request` is the endpoint with its
/// query (`config_dump?proxyID=a.ns`); `caller_namespace` is the namespace of the caller's
/// proven identity, `None` for an unrestricted caller.
pub trait DebugViews: Send + Sync {
    fn serve(&self, shared: &Shared, request: &str, caller_namespace: Option<&str>) -> DebugReply;
}

/// Whether a type URL is one of Istio's debug types.
pub fn is_debug(type_url: &str) -> bool {
    type_url == DEBUG_PREFIX || type_url.starts_with("istio.io/debug/")
}

/// The answer to a debug request: the resources (name, body) of the response, and the
/// control-plane identifier it carries.
pub struct DebugAnswer {
    pub resources: Vec<(String, Any)>,
    pub control_plane: Option<xds_core::ControlPlane>,
}

/// Answers a debug request of `caller` for `type_url` naming `names`.
pub fn answer(
    shared: &Shared,
    caller: &Proxy,
    type_url: &str,
    names: &[String],
) -> Result<DebugAnswer, Status> {
    let Some(identity) = &caller.identity else {
        tracing::warn!(caller = %caller.id, type_url = %super::untrusted::clip(type_url, super::untrusted::LOG_BYTES), "debug request refused: the caller did not prove its identity (use the TLS port)");
        return Err(Status::unauthenticated("authentication required"));
    };
    let root = shared.snapshots.borrow().model.mesh.root_namespace.clone();
    let visible =
        |proxy: &Proxy| identity.namespace == root || proxy.namespace == identity.namespace;
    match type_url {
        DEBUG_PREFIX => view(shared, identity, &root, names),
        SYNCZ => Ok(DebugAnswer {
            resources: shared
                .registry
                .connections()
                .iter()
                .filter(|c| visible(&c.proxy))
                .map(|c| (c.proxy.short_id(), envoy::pack(&client_config(c))))
                .collect(),
            control_plane: Some(control_plane()),
        }),
        CONFIG_DUMP => {
            let [proxy_id] = names else {
                return Err(Status::invalid_argument(format!(
                    "{CONFIG_DUMP} takes exactly one proxy, got {}",
                    names.len()
                )));
            };
            let resources = shared
                .registry
                .connection(proxy_id)
                .filter(|c| visible(&c.proxy))
                .and_then(|c| Some((c.resources()?, c.secrets())))
                .map(|(resources, secrets)| {
                    config_dump(&resources, &secrets)
                        .configs
                        .into_iter()
                        .map(|any| (String::new(), any))
                        .collect()
                })
                .unwrap_or_default();
            Ok(DebugAnswer {
                resources,
                control_plane: None,
            })
        }
        other => Err(Status::unimplemented(format!(
            "debug type {other} is not served (served: {DEBUG_PREFIX}, {SYNCZ}, {CONFIG_DUMP})"
        ))),
    }
}

/// `istio.io/debug` naming one view: its body (whatever its status, as istiod answers: an
/// unknown view is `404 page not found`, which istioctl answers with the list of views), in one
/// resource named as asked, of type `istio.io/debug`.
fn view(
    shared: &Shared,
    identity: &crate::model::Identity,
    root: &str,
    names: &[String],
) -> Result<DebugAnswer, Status> {
    let [request] = names else {
        return Err(Status::invalid_argument(format!(
            "{DEBUG_PREFIX} takes exactly one debug view (e.g. syncz, config_dump?proxyID=<pod>.<namespace>), got {}",
            names.len()
        )));
    };
    let endpoint = request.split_once('?').map_or(request.as_str(), |(e, _)| e);
    if identity.namespace != root && !NAMESPACE_VIEWS.contains(&endpoint) {
        return Err(Status::permission_denied(format!(
            "debug view {endpoint:?} is only for identities of the mesh's root namespace {root:?}; {} may ask for {}",
            identity.spiffe_id(),
            NAMESPACE_VIEWS.join(", ")
        )));
    }
    let Some(views) = shared.debug_views.get() else {
        return Err(Status::unavailable(
            "debug views are not served by this server",
        ));
    };
    let reply = views.serve(shared, request, Some(&identity.namespace));
    Ok(DebugAnswer {
        resources: vec![(
            request.clone(),
            Any {
                type_url: DEBUG_PREFIX.to_string(),
                value: reply.body,
            },
        )],
        control_plane: None,
    })
}

/// istiod's control-plane identifier, naming bowline's build.
pub fn control_plane() -> xds_core::ControlPlane {
    let instance = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "bowline".to_string());
    let identifier = serde_json::json!({
        "Component": "istiod",
        "ID": instance,
        "Info": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": env!("BOWLINE_GIT_REVISION"),
            "golang_version": "",
            "status": env!("BOWLINE_BUILD_STATUS"),
            "tag": env!("CARGO_PKG_VERSION"),
        },
    });
    xds_core::ControlPlane {
        identifier: identifier.to_string(),
    }
}

/// A proxy's sync status per type, as istiod reports it.
fn client_config(c: &Connection) -> csds::ClientConfig {
    let mut metadata = serde_json::Map::new();
    metadata.insert("CLUSTER_ID".into(), "Kubernetes".into());
    metadata.insert("NAMESPACE".into(), c.proxy.namespace.clone().into());
    if let Some(v) = &c.proxy.istio_version {
        metadata.insert("ISTIO_VERSION".into(), v.clone().into());
    }
    let mut generic_xds_configs: Vec<csds::client_config::GenericXdsConfig> = c
        .types()
        .iter()
        .map(|(t, s)| csds::client_config::GenericXdsConfig {
            type_url: t.type_url().to_string(),
            config_status: config_status(s) as i32,
            error_state: s.nack.as_ref().map(|n| admin::UpdateFailureState {
                details: n.message.clone(),
                version_info: n.version.clone(),
                ..Default::default()
            }),
            version_info: s.sent.clone().unwrap_or_default(),
            last_updated: s
                .sent_at_unix
                .map(|t| envoy_types::pb::google::protobuf::Timestamp {
                    seconds: i64::try_from(t).unwrap_or_default(),
                    nanos: 0,
                }),
            ..Default::default()
        })
        .collect();
    generic_xds_configs.sort_by(|a, b| a.type_url.cmp(&b.type_url));
    csds::ClientConfig {
        node: Some(xds_core::Node {
            // istiod's proxy id: `<pod>.<namespace>`.
            id: c.proxy.short_id(),
            metadata: Some(envoy::json_to_struct(&metadata)),
            ..Default::default()
        }),
        generic_xds_configs,
        ..Default::default()
    }
}

fn config_status(s: &TypeStatus) -> csds::ConfigStatus {
    if s.nack.is_some() {
        csds::ConfigStatus::Error
    } else if s.sent.is_none() {
        csds::ConfigStatus::NotSent
    } else if s.acked == s.sent {
        csds::ConfigStatus::Synced
    } else {
        csds::ConfigStatus::Stale
    }
}

/// Envoy's `ConfigDump` of what bowline serves one proxy: clusters, endpoints, listeners,
/// routes and secrets (`secrets`: bodies with private keys already redacted).
pub fn config_dump(
    resources: &ProxyResources,
    secrets: &std::collections::BTreeMap<String, Any>,
) -> admin::ConfigDump {
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
    admin::ConfigDump {
        configs: vec![
            envoy::pack(&clusters),
            envoy::pack(&endpoints),
            envoy::pack(&listeners),
            envoy::pack(&routes),
            envoy::pack(&secrets),
        ],
    }
}
