//! istiod's debug views by endpoint name, one dispatcher for the admin port's `/debug/<view>`
//! and for ADS `istio.io/debug` requests naming `<view>[?query]` (what `istioctl x
//! internal-debug` sends).
//!
//! Contract: each view is built from what bowline holds at the time of the request (the
//! connection registry, the streams' protocol status, the model in force), in istiod's JSON
//! field names; fields istiod has and bowline does not know are left out. bowline's own
//! facts stay reachable: extra fields of `syncz` that istiod does not have, and `diagnosticz`.
//! A caller restricted to a namespace (an authenticated caller outside the mesh's root
//! namespace) reaches only `xds::debug::NAMESPACE_VIEWS`, about its own namespace's proxies;
//! the HTTP port and the ADS stream refuse the other views before they get here. Errors are
//! istiod's: 400 `You must provide a proxyID in the query string`, 404 `Proxy not connected to
//! this Pilot instance...`, 404 `404 page not found` for an unknown view.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::Uri;
use envoy_types::pb::envoy::admin::v3 as admin;
use serde_json::{Value, json};

use super::istiod;
use crate::envoy::{self, ResourceType};
use crate::model::{Diagnostic, Kind, Model, Proxy, Spec};
use crate::translate::scope::Scope;
use crate::webhook::inject;
use crate::xds::debug::{DebugReply, DebugViews, NAMESPACE_VIEWS};
use crate::xds::{Shared, status::Connection};

/// The views, sorted, as `/debug/list` names them (without `list`).
pub const VIEWS: &[&str] = &[
    "adsz",
    "authorizationz",
    "config_dump",
    "configz",
    "connections",
    "diagnosticz",
    "edsz",
    "endpointShardz",
    "endpointz",
    "inject",
    "instancesz",
    "mesh",
    "push_status",
    "registryz",
    "resourcesz",
    "sidecarz",
    "syncz",
];

/// istiod's answer to a view of a proxy it does not serve.
const NOT_CONNECTED: &str =
    "Proxy not connected to this Pilot instance. It may be connected to another instance.\n";
const NO_PROXY_ID: &str = "You must provide a proxyID in the query string\n";
/// Go's `http.NotFound` body, which istioctl recognises.
pub const NOT_FOUND: &str = "404 page not found\n";

/// The views and what they read beside the xDS server's state.
pub struct Views {
    /// The injection settings in force, when this server injects.
    pub inject: Option<Arc<inject::Options>>,
}

impl DebugViews for Views {
    fn serve(&self, shared: &Shared, request: &str, caller_namespace: Option<&str>) -> DebugReply {
        let uri: Uri = match format!("/debug/{request}").parse() {
            Ok(u) => u,
            Err(e) => return reply(400, format!("debug request {request:?}: {e}\n")),
        };
        let endpoint = uri.path().trim_start_matches("/debug/");
        let query = Params::of(&uri);
        let snapshot = shared.snapshots.borrow().clone();
        let model = &snapshot.model;
        let caller = Caller {
            restricted_to: caller_namespace.filter(|ns| *ns != model.mesh.root_namespace),
        };
        // The ports refuse these first; a view never answers a restricted caller beyond them.
        if caller.restricted_to.is_some() && !NAMESPACE_VIEWS.contains(&endpoint) {
            return reply(
                403,
                format!("the {endpoint} view is for the mesh's root namespace\n"),
            );
        }
        let value = match endpoint {
            "list" => Ok(json!(VIEWS)),
            "syncz" => Ok(syncz(
                &shared.registry.connections(),
                query.get("namespace"),
            )),
            "adsz" => {
                if query.get("push").is_some() {
                    let streams = shared.push_all();
                    tracing::info!(streams, "forced push of everything to every proxy (debug)");
                    return reply(200, format!("Pushed to {streams} servers\n"));
                }
                match query.get("proxyID") {
                    Some(id) => match caller.connection(shared, id) {
                        Some(c) => Ok(adsz(&[c])),
                        None => return reply(404, NOT_CONNECTED),
                    },
                    None => Ok(adsz(&shared.registry.connections())),
                }
            }
            "config_dump" | "edsz" => {
                let Some(id) = query.get("proxyID") else {
                    return reply(400, NO_PROXY_ID);
                };
                let Some(c) = caller.connection(shared, id) else {
                    return reply(404, NOT_CONNECTED);
                };
                let types = if endpoint == "edsz" {
                    Some("eds")
                } else {
                    query.get("types")
                };
                config_dump(&c, types, query.has("include_eds"))
            }
            "configz" => Ok(configz(model)),
            "diagnosticz" => Ok(diagnosticz(
                snapshot.generation,
                model,
                &shared.registry.connections(),
            )),
            "sidecarz" => {
                let Some(id) = query.get("proxyID") else {
                    return reply(400, NO_PROXY_ID);
                };
                match caller.connection(shared, id) {
                    Some(c) => Ok(sidecarz(model, &c.proxy)),
                    None => return reply(404, NOT_CONNECTED),
                }
            }
            "instancesz" => Ok(instancesz(model, &shared.registry.connections())),
            "authorizationz" => Ok(authorizationz(model)),
            "inject" => match &self.inject {
                Some(options) => Ok(inject_settings(options)),
                None => return reply(404, ""),
            },
            "resourcesz" => Ok(resourcesz()),
            "connections" => Ok(istiod::connections(&shared.registry.connections())),
            "mesh" => Ok(istiod::mesh(&model.mesh)),
            "push_status" => Ok(istiod::push_status(&shared.registry.connections())),
            "registryz" => Ok(istiod::registryz(&model.registry.services)),
            "endpointz" | "endpointShardz" => Ok(istiod::endpointz(&model.registry.services)),
            _ => return reply(404, NOT_FOUND),
        };
        match value {
            Ok(v) => {
                let body = if query.has("pretty") {
                    serde_json::to_vec_pretty(&v)
                } else {
                    serde_json::to_vec(&v)
                };
                match body {
                    Ok(body) => DebugReply {
                        status: 200,
                        json: true,
                        body,
                    },
                    Err(e) => reply(500, format!("{e}\n")),
                }
            }
            Err(e) => e,
        }
    }
}

/// A plain-text reply.
fn reply(status: u16, body: impl Into<String>) -> DebugReply {
    DebugReply {
        status,
        json: false,
        body: body.into().into_bytes(),
    }
}

/// A request's query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(uri: &Uri) -> Params {
        Params(
            Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map(|q| q.0)
                .unwrap_or_default(),
        )
    }

    /// A parameter's non-empty value.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// Who asks: `restricted_to` a namespace (an identity outside the root namespace), or not.
struct Caller<'a> {
    restricted_to: Option<&'a str>,
}

impl Caller<'_> {
    /// The connection of a proxy the caller may see, by `<pod>.<namespace>` or node id.
    fn connection(&self, shared: &Shared, id: &str) -> Option<Arc<Connection>> {
        shared
            .registry
            .connection(id)
            .filter(|c| self.restricted_to.is_none_or(|ns| c.proxy.namespace == ns))
    }
}

/// `/debug/syncz`: istiod's `[]SyncStatus`, one per connected proxy (of `namespace` when
/// given). The `*_sent`/`*_acked` fields and `resources[<type URL>].sent|acked` are nonces, as
/// istiod's; bowline's own facts about the connection (versions, NACK, certificate,
/// diagnostics, refused credentials) are the remaining fields.
pub fn syncz(connections: &[Arc<Connection>], namespace: Option<&str>) -> Value {
    connections
        .iter()
        .filter(|c| namespace.is_none_or(|ns| c.proxy.namespace == ns))
        .map(|c| sync_status(c))
        .collect()
}

fn sync_status(c: &Connection) -> Value {
    let mut out = serde_json::to_value(c.view()).unwrap_or_else(|_| json!({}));
    let types = c.types();
    out["proxy"] = c.proxy.short_id().into();
    out["proxy_type"] = c.proxy.proxy_type.as_str().into();
    out["cluster_id"] = istiod::CLUSTER_ID.into();
    if let Some(v) = &c.proxy.istio_version {
        out["istio_version"] = v.clone().into();
    }
    for (t, prefix) in [
        (ResourceType::Cds, "cluster"),
        (ResourceType::Lds, "listener"),
        (ResourceType::Rds, "route"),
        (ResourceType::Eds, "endpoint"),
    ] {
        let Some(s) = types.get(&t) else { continue };
        if let Some(n) = &s.nonce_sent {
            out[format!("{prefix}_sent")] = n.clone().into();
        }
        if let Some(n) = &s.nonce_acked {
            out[format!("{prefix}_acked")] = n.clone().into();
        }
    }
    let resources: serde_json::Map<String, Value> = types
        .iter()
        .map(|(t, s)| {
            let mut r = json!({});
            if let Some(n) = &s.nonce_sent {
                r["sent"] = n.clone().into();
            }
            if let Some(n) = &s.nonce_acked {
                r["acked"] = n.clone().into();
            }
            if let Some(at) = s.sent_at {
                r["sentTime"] = istiod::rfc3339(at).into();
            }
            if let Some(nack) = &s.nack {
                r["lastError"] = nack.message.clone().into();
            }
            (t.type_url().to_string(), r)
        })
        .collect();
    if !resources.is_empty() {
        out["resources"] = resources.into();
    }
    out
}

/// `/debug/adsz`: istiod's `AdsClients` with each client's labels, locality and watched
/// resource names by type URL (a wildcard subscription watches no names).
pub fn adsz(connections: &[Arc<Connection>]) -> Value {
    let clients: Vec<Value> = connections
        .iter()
        .map(|c| {
            let mut client = istiod::client(c);
            if !c.proxy.labels.is_empty() {
                client["labels"] = json!(c.proxy.labels);
            }
            let l = &c.proxy.locality;
            if !l.is_empty() {
                let mut locality = json!({});
                for (k, v) in [
                    ("region", &l.region),
                    ("zone", &l.zone),
                    ("sub_zone", &l.subzone),
                ] {
                    if !v.is_empty() {
                        locality[k] = v.clone().into();
                    }
                }
                client["locality"] = locality;
            }
            let watches: BTreeMap<&str, Vec<String>> = c
                .types()
                .into_iter()
                .filter_map(|(t, s)| Some((t.type_url(), s.watched?)))
                .collect();
            client["watches"] = json!(watches);
            client
        })
        .collect();
    let mut out = json!({ "totalClients": clients.len() });
    if !clients.is_empty() {
        out["clients"] = clients.into();
    }
    out
}

/// The types a config dump holds: what the stream keeps of what it serves (a name table is
/// made as it is sent).
const DUMPED: [ResourceType; 5] = [
    ResourceType::Cds,
    ResourceType::Eds,
    ResourceType::Lds,
    ResourceType::Rds,
    ResourceType::Sds,
];

/// `/debug/config_dump?proxyID=`: what the proxy's stream serves, as istiod's Envoy
/// `ConfigDump`: bootstrap (empty), clusters, endpoints (with `include_eds`), listeners, scoped
/// routes (empty), routes, secrets (private keys redacted) and extension configs (none). With
/// `types=cds,eds,...` (istiod's short names), the resources of those types, unwrapped.
fn config_dump(
    c: &Connection,
    types: Option<&str>,
    include_eds: bool,
) -> Result<Value, DebugReply> {
    let Some(resources) = c.resources() else {
        return Err(reply(
            503,
            "the proxy's configuration is not generated yet; retry\n",
        ));
    };
    let secrets = c.secrets();
    let dump = match types {
        Some(types) => {
            let mut configs = Vec::new();
            for short in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let Some(t) = DUMPED
                    .into_iter()
                    .find(|t| t.as_str().eq_ignore_ascii_case(short))
                else {
                    return Err(reply(
                        400,
                        format!(
                            "types: {short:?} is not a type bowline serves (cds, eds, lds, rds, sds)\n"
                        ),
                    ));
                };
                if t == ResourceType::Sds {
                    configs.extend(secrets.values().cloned());
                } else {
                    configs.extend(resources.get(t).items.values().map(|v| v.body.clone()));
                }
            }
            admin::ConfigDump { configs }
        }
        None => {
            let parts = crate::xds::debug::config_dump(&resources, &secrets).configs;
            // [clusters, endpoints, listeners, routes, secrets], in istiod's frame.
            let mut configs = vec![envoy::pack(&admin::BootstrapConfigDump::default())];
            let mut parts = parts.into_iter();
            configs.extend(parts.next());
            let endpoints = parts.next();
            if include_eds {
                configs.extend(endpoints);
            }
            configs.extend(parts.next());
            configs.push(envoy::pack(&admin::ScopedRoutesConfigDump::default()));
            configs.extend(parts);
            configs.push(envoy::pack(&admin::EcdsConfigDump::default()));
            admin::ConfigDump { configs }
        }
    };
    let mut json = envoy::any_to_json(&envoy::pack(&dump))
        .map_err(|e| reply(500, format!("rendering the config dump: {e}\n")))?;
    if let Some(obj) = json.as_object_mut() {
        obj.remove("@type");
    }
    Ok(json)
}

/// `/debug/configz`: the Istio configuration in force, each object as Kubernetes writes it
/// (`kind`, `apiVersion`, `metadata`, `spec`), as istiod's.
pub fn configz(model: &Model) -> Value {
    model
        .resources
        .iter()
        .filter(|r| is_istio(r.kind))
        .map(|r| {
            let mut metadata = json!({ "name": r.meta.name, "namespace": r.meta.namespace });
            if !r.meta.labels.is_empty() {
                metadata["labels"] = json!(r.meta.labels);
            }
            if !r.meta.annotations.is_empty() {
                metadata["annotations"] = json!(r.meta.annotations);
            }
            if let Some(t) = &r.meta.creation_timestamp {
                metadata["creationTimestamp"] = t.clone().into();
            }
            json!({
                "kind": r.kind.as_str(),
                "apiVersion": r.api_version,
                "metadata": metadata,
                "spec": serde_json::to_value(&r.spec).unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Whether a kind is Istio configuration (istiod's config store), not a Kubernetes kind.
fn is_istio(kind: Kind) -> bool {
    kind.group_versions().0.ends_with(".istio.io")
}

/// `/debug/diagnosticz` (bowline's): the model's generation, the loaded resources by name and
/// origin, the services, the diagnostics of rejected resources, and `translation`: what went
/// wrong generating the connected proxies' configuration, once each, with the proxies it
/// concerns.
pub fn diagnosticz(generation: u64, model: &Model, connections: &[Arc<Connection>]) -> Value {
    let resources: Vec<Value> = model
        .resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "kind": r.kind.as_str(),
                "namespace": r.meta.namespace,
                "name": r.meta.name,
            });
            if let Some(origin) = &r.origin {
                v["origin"] = origin.clone().into();
            }
            v
        })
        .collect();
    let mut translation: BTreeMap<Diagnostic, Vec<String>> = BTreeMap::new();
    for c in connections {
        for d in c.diagnostics() {
            translation.entry(d).or_default().push(c.proxy.short_id());
        }
    }
    let translation: Vec<Value> = translation
        .into_iter()
        .map(|(d, proxies)| {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["proxies"] = proxies.into();
            v
        })
        .collect();
    json!({
        "generation": generation,
        "resources": resources,
        "services": model.registry.services.iter().map(|s| &s.hostname).collect::<Vec<_>>(),
        "diagnostics": model.diagnostics,
        "translation": translation,
    })
}

/// `/debug/sidecarz?proxyID=`: the proxy's Sidecar scope as translation computes it: the
/// Sidecar in force (`name`, `namespace`, `sidecar`: its spec; istiod's `default-sidecar`
/// when none selects the proxy), the outbound traffic policy, the services it imports and
/// those of each egress listener.
pub fn sidecarz(model: &Model, proxy: &Proxy) -> Value {
    let scope = Scope::new(model, proxy);
    let (name, namespace, sidecar) = match scope.sidecar {
        Some(r) => (
            r.meta.name.clone(),
            r.meta.namespace.clone(),
            serde_json::to_value(&r.spec).unwrap_or(Value::Null),
        ),
        None => (
            "default-sidecar".to_string(),
            proxy.namespace.clone(),
            Value::Null,
        ),
    };
    let mode = scope.outbound_policy.as_str();
    let services: Vec<Value> = scope
        .services()
        .into_iter()
        .map(|s| istiod::service(s))
        .collect();
    let egress: Vec<Value> = scope
        .egress
        .iter()
        .map(|e| {
            e.services
                .iter()
                .map(|s| istiod::service(s))
                .collect::<Vec<_>>()
                .into()
        })
        .collect();
    json!({
        "name": name,
        "namespace": namespace,
        "outboundTrafficPolicy": { "mode": mode },
        "services": services,
        "egressListenerServices": egress,
        "sidecar": sidecar,
    })
}

/// `/debug/instancesz`: per connected proxy, istiod's `[]ServiceTarget`: each service port its
/// workload serves (`Service`, and `Port` with the service port and the `TargetPort`); `null`
/// for a proxy serving none.
pub fn instancesz(model: &Model, connections: &[Arc<Connection>]) -> Value {
    let out: BTreeMap<String, Value> = connections
        .iter()
        .map(|c| {
            let scope = Scope::new(model, &c.proxy);
            let targets: Vec<Value> = scope
                .served_ports()
                .into_iter()
                .map(|(service, port, target)| {
                    json!({
                        "Service": istiod::service(service),
                        "Port": {
                            "name": port.name,
                            "port": port.number,
                            "protocol": istiod::protocol(port.protocol),
                            "TargetPort": target,
                        },
                    })
                })
                .collect();
            let targets = if targets.is_empty() {
                Value::Null
            } else {
                targets.into()
            };
            (c.proxy.short_id(), targets)
        })
        .collect();
    json!(out)
}

/// `/debug/authorizationz`: istiod's `AuthorizationDebug`: the AuthorizationPolicies in force
/// by namespace (`name`, `namespace`, `annotations`, `spec`) and the root namespace.
pub fn authorizationz(model: &Model) -> Value {
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in model.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(spec) = &r.spec else {
            continue;
        };
        let annotations = if r.meta.annotations.is_empty() {
            Value::Null
        } else {
            json!(r.meta.annotations)
        };
        by_namespace
            .entry(&r.meta.namespace)
            .or_default()
            .push(json!({
                "name": r.meta.name,
                "namespace": r.meta.namespace,
                "annotations": annotations,
                "spec": serde_json::to_value(spec).unwrap_or(Value::Null),
            }));
    }
    json!({
        "authorization_policies": {
            "namespace_to_policies": by_namespace,
            "root_namespace": model.mesh.root_namespace,
        }
    })
}

/// `/debug/inject`: the injection in force. istiod answers with its template texts by name;
/// bowline's injection is not templated, so this is the templates it applies (`sidecar`, and
/// `gateway` for `inject.istio.io/templates: gateway`) and the settings they use.
pub fn inject_settings(options: &inject::Options) -> Value {
    json!({
        "templates": ["sidecar", "gateway"],
        "proxyImage": options.proxy_image,
        "initImage": options.injector_image,
        "discoveryAddress": options.discovery_address,
        "tokenExpirationSeconds": options.token_expiration_seconds,
        "nativeSidecars": options.native_sidecars,
    })
}

/// `/debug/resourcesz`: the Istio configuration kinds bowline reads, as istiod's
/// `config.GroupVersionKind` (`group`, `version`: the preferred one, `kind`).
pub fn resourcesz() -> Value {
    Kind::ALL
        .into_iter()
        .filter(|k| is_istio(*k))
        .map(|k| {
            let (group, versions) = k.group_versions();
            json!({
                "group": group,
                "version": versions.first().copied().unwrap_or("v1"),
                "kind": k.as_str(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MeshConfig;
    use crate::model::resource::parse_yaml;
    use crate::xds::Transport;

    const CONFIG: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {address: 10.0.0.7, serviceAccount: web}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: narrow, namespace: shop}
spec:
  egress: [{hosts: [\"./*\"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop, annotations: {team: a}}
spec: {action: DENY, rules: [{}]}
";

    fn model() -> Model {
        let resources = parse_yaml(CONFIG, "config.yaml")
            .into_iter()
            .map(|p| Arc::new(p.resource.expect("valid")))
            .collect();
        Model::build(resources, Vec::new(), MeshConfig::default())
    }

    fn connection(id: u64) -> Arc<Connection> {
        let proxy = Proxy::parse(
            "sidecar~10.0.0.7~web-0.shop~shop.svc.cluster.local",
            &json!({"NAMESPACE": "shop", "LABELS": {"app": "web"}, "ISTIO_VERSION": "1.31.0"}),
        )
        .expect("proxy");
        Arc::new(Connection::new(id, proxy, false, Transport::Plaintext))
    }

    #[test]
    fn syncz_in_istiods_field_names_with_bowlines_beside() {
        let c = connection(4);
        c.update(ResourceType::Cds, |s| {
            s.sent = Some("v1".into());
            s.nonce_sent = Some("4-2".into());
            s.nonce_acked = Some("4-1".into());
            s.sent_at = Some(std::time::SystemTime::UNIX_EPOCH);
            s.nack = Some(crate::xds::status::Nack {
                message: "bad cluster".into(),
                resources: vec!["*".into()],
                version: "v1".into(),
            });
        });
        let all = syncz(std::slice::from_ref(&c), None);
        let s = &all[0];
        assert_eq!(s["proxy"], "web-0.shop");
        assert_eq!(s["proxy_type"], "sidecar");
        assert_eq!(s["cluster_id"], "Kubernetes");
        assert_eq!(s["istio_version"], "1.31.0");
        assert_eq!(s["cluster_sent"], "4-2");
        assert_eq!(s["cluster_acked"], "4-1");
        assert!(s.get("listener_sent").is_none(), "nothing sent: omitted");
        let cds = &s["resources"][ResourceType::Cds.type_url()];
        assert_eq!(cds["sent"], "4-2");
        assert_eq!(cds["acked"], "4-1");
        assert_eq!(cds["sentTime"], "1970-01-01T00:00:00Z");
        assert_eq!(cds["lastError"], "bad cluster");
        // bowline's own facts stay.
        assert_eq!(s["types"]["cds"]["nack"]["message"], "bad cluster");
        assert_eq!(s["workload_certificate"], false);
        assert_eq!(
            syncz(std::slice::from_ref(&c), Some("shop"))
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(syncz(&[c], Some("other")), json!([]));
    }

    #[test]
    fn adsz_lists_watches_by_type_url() {
        let c = connection(1);
        c.update(ResourceType::Eds, |s| {
            s.watched = Some(vec!["outbound|80||web.shop.svc.cluster.local".into()])
        });
        c.update(ResourceType::Cds, |s| s.watched = Some(vec![]));
        let v = adsz(&[c]);
        assert_eq!(v["totalClients"], 1);
        let client = &v["clients"][0];
        assert_eq!(
            client["connectionId"],
            "sidecar~10.0.0.7~web-0.shop~shop.svc.cluster.local-1"
        );
        assert_eq!(client["labels"]["app"], "web");
        assert_eq!(
            client["watches"][ResourceType::Eds.type_url()],
            json!(["outbound|80||web.shop.svc.cluster.local"])
        );
        assert_eq!(client["watches"][ResourceType::Cds.type_url()], json!([]));
        assert_eq!(adsz(&[]), json!({"totalClients": 0}));
    }

    #[test]
    fn configz_lists_istio_objects_as_kubernetes_writes_them() {
        let v = configz(&model());
        let kinds: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert!(
            !kinds.contains(&"Service"),
            "Kubernetes kinds are not config: {v}"
        );
        let entry = v
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "WorkloadEntry")
            .expect("the WorkloadEntry");
        assert_eq!(entry["apiVersion"], "networking.istio.io/v1");
        assert_eq!(entry["metadata"]["name"], "web-0");
        assert_eq!(entry["metadata"]["namespace"], "shop");
        assert_eq!(entry["metadata"]["labels"]["app"], "web");
        assert_eq!(entry["spec"]["address"], "10.0.0.7");
    }

    #[test]
    fn sidecarz_is_the_sidecar_in_force() {
        let model = model();
        let proxy = connection(1).proxy.clone();
        let v = sidecarz(&model, &proxy);
        assert_eq!(v["name"], "narrow");
        assert_eq!(v["namespace"], "shop");
        assert_eq!(v["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
        assert_eq!(v["services"][0]["hostname"], "web.shop.svc.cluster.local");
        assert_eq!(
            v["egressListenerServices"][0][0]["hostname"],
            "web.shop.svc.cluster.local"
        );
        assert_eq!(v["sidecar"]["egress"][0]["hosts"][0], "./*");
        let elsewhere = Proxy::parse(
            "sidecar~10.0.0.9~a-0.other~other.svc.cluster.local",
            &json!({"NAMESPACE": "other"}),
        )
        .unwrap();
        let v = sidecarz(&model, &elsewhere);
        assert_eq!(v["name"], "default-sidecar");
        assert_eq!(v["sidecar"], Value::Null);
    }

    #[test]
    fn instancesz_names_each_served_port() {
        let v = instancesz(&model(), &[connection(1)]);
        let target = &v["web-0.shop"][0];
        assert_eq!(target["Service"]["hostname"], "web.shop.svc.cluster.local");
        assert_eq!(target["Port"]["name"], "http");
        assert_eq!(target["Port"]["port"], 80);
        assert_eq!(target["Port"]["protocol"], "HTTP");
        assert_eq!(target["Port"]["TargetPort"], 8080);
    }

    #[test]
    fn authorizationz_by_namespace() {
        let v = authorizationz(&model());
        let policies = &v["authorization_policies"];
        assert_eq!(policies["root_namespace"], "istio-system");
        let p = &policies["namespace_to_policies"]["shop"][0];
        assert_eq!(p["name"], "deny-all");
        assert_eq!(p["namespace"], "shop");
        assert_eq!(p["annotations"]["team"], "a");
        assert_eq!(p["spec"]["action"], "DENY");
    }

    #[test]
    fn resourcesz_and_list() {
        let kinds = resourcesz();
        assert!(
            kinds.as_array().unwrap().iter().any(|k| k
                == &json!({"group": "networking.istio.io", "version": "v1", "kind": "Sidecar"}))
        );
        assert!(!kinds.to_string().contains("EndpointSlice"));
        let mut sorted = VIEWS.to_vec();
        sorted.sort_unstable();
        assert_eq!(VIEWS, sorted.as_slice());
        assert!(!VIEWS.contains(&"list"));
    }

    #[test]
    fn serve_answers_istiods_errors_and_restricts_by_namespace() {
        let snapshot = Arc::new(crate::cache::Snapshot {
            generation: 1,
            model: Arc::new(model()),
            changed: crate::envoy::TypeSet::ALL,
            changed_at: std::time::Instant::now(),
            published_at: std::time::Instant::now(),
        });
        let (_tx, rx) = tokio::sync::watch::channel(snapshot);
        let shared = Shared::new(Arc::new(crate::cache::Cache::new()), rx);
        shared.registry.insert(connection(1));
        let views = Views { inject: None };
        let serve = |request: &str, ns: Option<&str>| views.serve(&shared, request, ns);

        let r = serve("config_dump", None);
        assert_eq!((r.status, r.json), (400, false));
        assert_eq!(r.body, NO_PROXY_ID.as_bytes());
        assert_eq!(serve("nonesuchz", None).body, NOT_FOUND.as_bytes());
        assert_eq!(
            serve("inject", None).status,
            404,
            "no webhook, no injection"
        );
        // The stream has not served the proxy yet: retry later.
        assert_eq!(serve("config_dump?proxyID=web-0.shop", None).status, 503);
        // Another namespace's caller does not see the proxy; its own does (503: not served
        // yet, but found), and it reaches no mesh-wide view.
        let r = serve("config_dump?proxyID=web-0.shop", Some("other"));
        assert_eq!(r.status, 404);
        assert_eq!(r.body, NOT_CONNECTED.as_bytes());
        assert_eq!(serve("edsz?proxyID=web-0.shop", Some("shop")).status, 503);
        assert_eq!(
            serve("sidecarz?proxyID=web-0.shop", Some("shop")).status,
            403
        );
        assert_eq!(serve("syncz", Some("shop")).status, 403);
        // The root namespace is unrestricted.
        assert_eq!(
            serve("sidecarz?proxyID=web-0.shop", Some("istio-system")).status,
            200
        );
        let r = serve("syncz?namespace=shop&pretty", None);
        assert!(
            r.json && String::from_utf8_lossy(&r.body).contains("\n  {"),
            "indented"
        );
        let pushed = serve("adsz?push=true", None);
        assert_eq!(pushed.body, b"Pushed to 1 servers\n");
    }

    #[test]
    fn inject_names_the_settings_in_force() {
        let v = inject_settings(&inject::Options::new("istio-system"));
        assert_eq!(v["discoveryAddress"], "istiod.istio-system.svc:15012");
        assert_eq!(v["templates"], json!(["sidecar", "gateway"]));
    }
}
