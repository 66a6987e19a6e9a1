//! Istio's debug types on the ADS stream, as `istioctl proxy-status` asks for them, against a
//! real `bowline serve` with a real Envoy and a proxy that NACKs: `istio.io/debug/syncz` lists
//! each proxy with each type's status and names the control plane; `istio.io/debug/config_dump`
//! returns one proxy's configuration; callers must prove their identity, see only their own
//! namespace unless they are of the root namespace, and are no proxies themselves. A type
//! bowline does not serve is answered (empty), never left unanswered. `istio.io/debug` naming
//! a view (`syncz`, `config_dump?proxyID=`, ...) answers with the admin port's view, in one
//! resource of that type; only `config_dump` and `edsz` are for callers outside the root
//! namespace. istiod's debug HTTP views answer in istiod's field names with real values.

use crate::common;

use std::time::Duration;

use bowline::envoy::json_to_struct;
use common::tls::{client_config, grpc_channel};
use common::{Bowline, Envoy, Net, ProxySpec};
use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3 as csds;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio_stream::StreamExt;

const SERVER_NAME: &str = "istiod.istio-system.svc";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const SYNCZ: &str = "istio.io/debug/syncz";
const CONFIG_DUMP: &str = "istio.io/debug/config_dump";
const DEBUG: &str = "istio.io/debug";

/// The node istioctl sends (`pkg/adsc`: no PROXY_CONFIG, generator `event`).
fn istioctl_node(ns: &str, sa: &str) -> xds_core::Node {
    let metadata =
        serde_json::json!({"GENERATOR": "event", "NAMESPACE": ns, "SERVICE_ACCOUNT": sa});
    xds_core::Node {
        id: format!("sidecar~0.0.0.0~test-1.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(json_to_struct(metadata.as_object().expect("object"))),
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}

/// One SotW request on a new stream and its first response (or the stream's error).
async fn ask(
    channel: tonic::transport::Channel,
    token: Option<&str>,
    node: xds_core::Node,
    type_url: &str,
    names: &[&str],
) -> Result<xds_discovery::DiscoveryResponse, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(xds_discovery::DiscoveryRequest {
        node: Some(node),
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("send");
    let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), token);
    let mut responses = client
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response"))?;
    drop(tx);
    first.unwrap_or_else(|| Err(tonic::Status::aborted("stream ended")))
}

const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The proxies a syncz answer lists, with each type's status by type URL.
fn listed(
    r: &xds_discovery::DiscoveryResponse,
) -> Vec<(String, Vec<(String, csds::ConfigStatus)>)> {
    r.resources
        .iter()
        .map(|any| {
            let c = csds::ClientConfig::decode(any.value.as_slice()).expect("ClientConfig");
            let types = c
                .generic_xds_configs
                .iter()
                .map(|g| {
                    (
                        g.type_url.clone(),
                        csds::ConfigStatus::try_from(g.config_status).expect("status"),
                    )
                })
                .collect();
            (c.node.expect("node").id, types)
        })
        .collect()
}

/// istiod's debug HTTP views, in istiod's field names: two proxies connected (Envoy and the
/// NACKing client), debug callers on the ADS stream not among them, and the `web` service.
async fn istiod_http_views(bowline: &Bowline) {
    let get = async |path: &str| {
        common::admin_json(bowline.admin_addr, path)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let list = get("/debug/list").await;
    for name in [
        "adsz",
        "authorizationz",
        "connections",
        "mesh",
        "push_status",
        "registryz",
        "endpointz",
        "syncz",
        "configz",
        "config_dump",
        "diagnosticz",
        "instancesz",
        "sidecarz",
        "resourcesz",
    ] {
        assert!(
            list.as_array().expect("array").iter().any(|n| n == name),
            "{name} in {list}"
        );
    }

    let connections = get("/debug/connections").await;
    assert_eq!(connections["totalClients"], 2, "{connections}");
    let clients = connections["clients"].as_array().expect("clients");
    assert!(
        clients.iter().any(|c| c["connectionId"]
            .as_str()
            .is_some_and(|id| id.starts_with("sidecar~127.0.0.30~picky-0.shop~"))),
        "{connections}"
    );
    for c in clients {
        assert!(
            c["address"]
                .as_str()
                .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok()),
            "{c}"
        );
        assert!(c["connectedAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    let mesh = get("/debug/mesh").await;
    assert_eq!(mesh["rootNamespace"], "istio-system", "{mesh}");
    assert_eq!(mesh["trustDomain"], "cluster.local", "{mesh}");
    assert_eq!(mesh["outboundTrafficPolicy"]["mode"], "ALLOW_ANY", "{mesh}");
    assert!(mesh["connectTimeout"].is_string(), "{mesh}");

    let push = get("/debug/push_status").await;
    assert!(push.is_object(), "{push}");

    let registry = get("/debug/registryz").await;
    let web = registry
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["hostname"] == "web.default.svc.cluster.local")
        .unwrap_or_else(|| panic!("web in {registry}"));
    assert_eq!(web["Attributes"]["Name"], "web", "{web}");
    assert_eq!(web["Attributes"]["Namespace"], "default", "{web}");
    assert_eq!(web["Attributes"]["ServiceRegistry"], "Kubernetes", "{web}");
    assert_eq!(web["ports"][0]["port"], 80, "{web}");
    assert_eq!(web["ports"][0]["name"], "http", "{web}");
    assert_eq!(web["ports"][0]["protocol"], "HTTP", "{web}");
    assert_eq!(web["Resolution"], 0, "{web}");
    assert_eq!(web["MeshExternal"], false, "{web}");

    // syncz: istiod's SyncStatus per proxy (nonces sent and ACKed per type), with bowline's
    // facts beside; the NACK is the CDS resource's lastError.
    let syncz = get("/debug/syncz").await;
    let of = |id: &str| {
        syncz
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["proxy"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {syncz}"))
    };
    let client = of("client-0.default");
    assert_eq!(client["proxy_type"], "sidecar", "{client}");
    assert_eq!(client["cluster_id"], "Kubernetes", "{client}");
    for t in ["cluster", "listener"] {
        let sent = client[format!("{t}_sent")].as_str().expect("nonce sent");
        assert_eq!(client[format!("{t}_acked")], sent, "{client}");
    }
    assert!(client["resources"][CDS]["sentTime"].is_string(), "{client}");
    let picky = of("picky-0.shop");
    assert_eq!(
        picky["resources"][CDS]["lastError"], "rejected for the test",
        "{picky}"
    );
    assert!(picky.get("cluster_acked").is_none(), "{picky}");
    assert_eq!(
        picky["types"]["cds"]["nack"]["message"],
        "rejected for the test"
    );
    let shop = get("/debug/syncz?namespace=shop").await;
    assert_eq!(shop.as_array().map(Vec::len), Some(1), "{shop}");

    // adsz: each client with what it watches; Envoy asks for the web cluster's endpoints.
    let adsz = get("/debug/adsz?proxyID=client-0.default").await;
    assert_eq!(adsz["totalClients"], 1, "{adsz}");
    let watches = &adsz["clients"][0]["watches"];
    assert!(
        watches[EDS].as_array().is_some_and(|w| w
            .iter()
            .any(|n| n == "outbound|80||web.default.svc.cluster.local")),
        "{adsz}"
    );
    assert_eq!(watches[CDS], serde_json::json!([]), "wildcard: {adsz}");

    // adsz?push=true: every stream sends everything again; Envoy ACKs the new nonces.
    let before = client["cluster_sent"].as_str().expect("nonce").to_string();
    let pushed = common::admin_get(bowline.admin_addr, "/debug/adsz?push=true")
        .await
        .expect("GET");
    assert_eq!(pushed.status, 200);
    assert_eq!(pushed.text(), "Pushed to 2 servers\n");
    common::poll(Duration::from_secs(20), async || {
        let all = common::admin_json(bowline.admin_addr, "/debug/syncz").await?;
        let c = all
            .as_array()
            .and_then(|a| a.iter().find(|s| s["proxy"] == "client-0.default"))
            .cloned()
            .ok_or("client gone")?;
        let (sent, acked) = (&c["cluster_sent"], &c["cluster_acked"]);
        let listener = (&c["listener_sent"], &c["listener_acked"]);
        if sent != before.as_str()
            && sent == acked
            && *listener.0 != client["listener_sent"]
            && listener.0 == listener.1
        {
            Ok(())
        } else {
            Err(format!("not pushed and ACKed yet: {c}"))
        }
    })
    .await
    .expect("the forced push is sent and ACKed");
    let metrics = common::admin_get(bowline.admin_addr, "/metrics")
        .await
        .expect("GET /metrics")
        .text();
    assert!(
        metrics.contains("pilot_push_triggers{type=\"debug\"}"),
        "the forced push is counted: {metrics}"
    );

    // configz: the Istio objects as Kubernetes writes them; bowline's diagnostics apart.
    let configz = get("/debug/configz").await;
    let entry = configz
        .as_array()
        .expect("array")
        .iter()
        .find(|o| o["kind"] == "WorkloadEntry" && o["metadata"]["name"] == "web-1")
        .unwrap_or_else(|| panic!("web-1 in {configz}"));
    assert_eq!(entry["apiVersion"], "networking.istio.io/v1", "{entry}");
    assert_eq!(entry["spec"]["address"], "127.0.0.99", "{entry}");
    let diagnosticz = get("/debug/diagnosticz").await;
    assert!(diagnosticz["resources"].is_array(), "{diagnosticz}");

    // config_dump: istiod's frame (no endpoints unless asked), or the types asked for.
    let dump = get("/debug/config_dump?proxyID=client-0.default").await;
    let kinds: Vec<&str> = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .filter_map(|c| c["@type"].as_str()?.rsplit('.').next())
        .collect();
    assert_eq!(
        kinds,
        [
            "BootstrapConfigDump",
            "ClustersConfigDump",
            "ListenersConfigDump",
            "ScopedRoutesConfigDump",
            "RoutesConfigDump",
            "SecretsConfigDump",
            "EcdsConfigDump"
        ],
        "{dump}"
    );
    let eds = get("/debug/config_dump?proxyID=client-0.default&types=eds").await;
    assert!(
        eds["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .any(|c| c["cluster_name"] == "outbound|80||web.default.svc.cluster.local"),
        "{eds}"
    );
    let missing = common::admin_get(
        bowline.admin_addr,
        "/debug/config_dump?proxyID=nobody.default",
    )
    .await
    .expect("GET");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(
        missing.text().contains("Proxy not connected"),
        "{}",
        missing.text()
    );
    let unknown = common::admin_get(bowline.admin_addr, "/debug/nonesuchz")
        .await
        .expect("GET");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text(), "404 page not found\n");

    // instancesz: Envoy's workload serves client:80 on 8081.
    let instances = get("/debug/instancesz").await;
    let target = &instances["client-0.default"][0];
    assert_eq!(
        target["Service"]["hostname"], "client.default.svc.cluster.local",
        "{instances}"
    );
    assert_eq!(target["Port"]["port"], 80, "{instances}");
    assert_eq!(target["Port"]["TargetPort"], 8081, "{instances}");

    // sidecarz: no Sidecar selects it: istiod's default scope, importing every service.
    let scope = get("/debug/sidecarz?proxyID=client-0.default").await;
    assert_eq!(scope["name"], "default-sidecar", "{scope}");
    assert!(
        scope["services"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["hostname"] == "web.default.svc.cluster.local")),
        "{scope}"
    );

    let authz = get("/debug/authorizationz").await;
    assert_eq!(
        authz["authorization_policies"]["namespace_to_policies"]["default"][0]["name"],
        "allow-nothing",
        "{authz}"
    );
    let kinds = get("/debug/resourcesz").await;
    assert!(
        kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["kind"] == "AuthorizationPolicy")),
        "{kinds}"
    );

    for path in ["/debug/endpointz", "/debug/endpointShardz"] {
        let shards = get(path).await;
        let web = &shards["web.default.svc.cluster.local"]["default"];
        let endpoint = &web["Shards"]["Kubernetes/Kubernetes"][0];
        assert_eq!(endpoint["Addresses"][0], "127.0.0.99", "{shards}");
        assert_eq!(endpoint["EndpointPort"], 8080, "{shards}");
        assert_eq!(endpoint["ServicePortName"], "http", "{shards}");
        assert_eq!(endpoint["Namespace"], "default", "{shards}");
        assert_eq!(endpoint["HealthStatus"], 1, "{shards}");
        assert!(web["ServiceAccounts"].is_object(), "{shards}");
    }
}

/// A proxy (a plain ADS client) that rejects the clusters it is sent.
pub(crate) async fn nacking_proxy(
    channel: tonic::transport::Channel,
) -> tokio::sync::mpsc::Sender<xds_discovery::DiscoveryRequest> {
    nacking_proxy_saying(channel, "rejected for the test").await
}

/// [`nacking_proxy`] with the NACK's `message`.
pub(crate) async fn nacking_proxy_saying(
    channel: tonic::transport::Channel,
    message: &str,
) -> tokio::sync::mpsc::Sender<xds_discovery::DiscoveryRequest> {
    let metadata = serde_json::json!({"NAMESPACE": "shop", "PROXY_CONFIG": {}});
    let node = xds_core::Node {
        id: "sidecar~127.0.0.30~picky-0.shop~shop.svc.cluster.local".into(),
        metadata: Some(json_to_struct(metadata.as_object().expect("object"))),
        ..Default::default()
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(xds_discovery::DiscoveryRequest {
        node: Some(node),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let r = responses
        .next()
        .await
        .expect("a response")
        .expect("clusters");
    tx.send(xds_discovery::DiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: r.nonce,
        version_info: String::new(),
        error_detail: Some(envoy_types::pb::google::rpc::Status {
            message: message.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("NACK");
    tokio::spawn(async move { while responses.next().await.is_some() {} });
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istioctl_debug_types_on_the_ads_stream() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.write(
        "mesh.yaml",
        &common::fixtures::docs(&[
            &common::fixtures::service("web", "default").port_to(80, "http", 8080),
            &common::fixtures::workload_entry("web-1", "default", "127.0.0.99")
                .label("app", "web")
                .service_account("web"),
            &common::fixtures::service("client", "default").port_to(80, "http", 8081),
            &common::fixtures::workload_entry("client-0", "default", net.ip(10))
                .label("app", "client"),
            // A policy for /debug/authorizationz; it selects no workload of the test.
            &common::fixtures::authorization_policy("allow-nothing", "default").selector("nobody"),
        ]),
    );
    bowline.start().await;
    let envoy = Envoy::start(
        &envoy_bin,
        &bowline,
        ProxySpec::sidecar("client-0", "default", net.ip(10)).label("app", "client"),
    )
    .await;
    bowline
        .wait_synced(&envoy.proxy_id(), Duration::from_secs(20))
        .await
        .expect("synced");
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("plaintext channel");
    let _picky = nacking_proxy(plaintext.clone()).await;
    let root = std::fs::read_to_string(bowline.ca_dir.join("root-cert.pem")).expect("root");
    let tls = grpc_channel(
        bowline.xds_tls_addr,
        SERVER_NAME,
        client_config(&root, None, &["h2"]),
    )
    .await
    .expect("TLS channel");
    let system = bowline.token("istio-system", "istioctl");
    let system_node = || istioctl_node("istio-system", "istioctl");

    // syncz from the root namespace: every proxy, Envoy's types SYNCED, the NACKed CDS ERROR,
    // and the control plane named as istiod names itself.
    let answer = common::poll(Duration::from_secs(20), async || {
        let r = ask(tls.clone(), Some(&system), system_node(), SYNCZ, &[])
            .await
            .map_err(|e| format!("{e:?}"))?;
        let proxies = listed(&r);
        let picky = proxies.iter().find(|(id, _)| id.contains("picky-0"));
        match picky {
            Some((_, types))
                if types
                    .iter()
                    .any(|(t, s)| t == CDS && *s == csds::ConfigStatus::Error) =>
            {
                Ok(r)
            }
            _ => Err(format!("not yet: {proxies:?}")),
        }
    })
    .await
    .expect("syncz shows the NACK");
    let proxies = listed(&answer);
    assert_eq!(
        proxies.len(),
        2,
        "the two proxies and no debug caller: {proxies:?}"
    );
    let (_, envoy_types) = proxies
        .iter()
        .find(|(id, _)| id.contains("client-0"))
        .expect("Envoy listed");
    assert!(
        envoy_types
            .iter()
            .filter(|(t, _)| t.contains("Cluster") || t.contains("Listener"))
            .all(|(_, s)| *s == csds::ConfigStatus::Synced),
        "{envoy_types:?}"
    );
    let identifier = &answer
        .control_plane
        .as_ref()
        .expect("control plane")
        .identifier;
    let identifier: serde_json::Value = serde_json::from_str(identifier).expect("JSON identifier");
    assert_eq!(identifier["Component"], "istiod");
    assert_eq!(identifier["Info"]["version"], env!("CARGO_PKG_VERSION"));
    let http = bowline.syncz().await.expect("syncz");
    assert_eq!(http.len(), 2, "debug callers are not proxies: {http:?}");
    istiod_http_views(&bowline).await;

    // A caller of another namespace sees only its own namespace's proxies.
    let shop = bowline.token("shop", "dev");
    let r = ask(
        tls.clone(),
        Some(&shop),
        istioctl_node("shop", "dev"),
        SYNCZ,
        &[],
    )
    .await
    .expect("syncz for shop");
    let ids: Vec<String> = listed(&r).into_iter().map(|(id, _)| id).collect();
    assert!(ids.len() == 1 && ids[0].contains("picky-0"), "{ids:?}");

    // Without a proven identity (the plaintext port): refused, as istiod refuses it.
    let e = ask(plaintext.clone(), None, system_node(), SYNCZ, &[])
        .await
        .expect_err("unauthenticated");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // config_dump of one proxy: its clusters, listeners, routes and secrets.
    let id = envoy.proxy_id();
    let r = ask(
        tls.clone(),
        Some(&system),
        system_node(),
        CONFIG_DUMP,
        &[&id],
    )
    .await
    .expect("config dump");
    let kinds: Vec<&str> = r
        .resources
        .iter()
        .map(|a: &Any| a.type_url.as_str())
        .collect();
    assert!(
        kinds.iter().any(|k| k.ends_with("ClustersConfigDump")),
        "{kinds:?}"
    );
    let clusters = r
        .resources
        .iter()
        .find(|a| a.type_url.ends_with("ClustersConfigDump"))
        .map(|a| admin::ClustersConfigDump::decode(a.value.as_slice()).expect("clusters"))
        .expect("clusters");
    assert!(!clusters.dynamic_active_clusters.is_empty());
    // ... which a caller of another namespace does not get.
    let r = ask(
        tls.clone(),
        Some(&shop),
        istioctl_node("shop", "dev"),
        CONFIG_DUMP,
        &[&id],
    )
    .await
    .expect("config dump for shop");
    assert!(
        r.resources.is_empty(),
        "another namespace's proxy is not dumped"
    );

    // istio.io/debug naming a view: the admin port's view, one resource of that type.
    let r = ask(tls.clone(), Some(&system), system_node(), DEBUG, &["syncz"])
        .await
        .expect("istio.io/debug syncz");
    assert_eq!(r.type_url, DEBUG);
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].type_url, DEBUG);
    let body: serde_json::Value = serde_json::from_slice(&r.resources[0].value).expect("JSON");
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    let query = format!("config_dump?proxyID={id}&types=cds");
    let r = ask(tls.clone(), Some(&system), system_node(), DEBUG, &[&query])
        .await
        .expect("istio.io/debug config_dump");
    let body: serde_json::Value = serde_json::from_slice(&r.resources[0].value).expect("JSON");
    assert!(
        body["configs"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["name"] == "outbound|80||web.default.svc.cluster.local")),
        "{body}"
    );
    // A caller of another namespace: config_dump of its own namespace's proxies only, and not
    // the mesh-wide views.
    let shop_node = || istioctl_node("shop", "dev");
    let r = ask(
        tls.clone(),
        Some(&shop),
        shop_node(),
        DEBUG,
        &["config_dump?proxyID=picky-0.shop"],
    )
    .await
    .expect("shop's own proxy");
    let body: serde_json::Value = serde_json::from_slice(&r.resources[0].value).expect("JSON");
    assert!(body["configs"].is_array(), "{body}");
    let r = ask(
        tls.clone(),
        Some(&shop),
        shop_node(),
        DEBUG,
        &[&format!("config_dump?proxyID={id}")],
    )
    .await
    .expect("another namespace's proxy");
    assert!(
        String::from_utf8_lossy(&r.resources[0].value).contains("Proxy not connected"),
        "{r:?}"
    );
    let e = ask(tls.clone(), Some(&shop), shop_node(), DEBUG, &["syncz"])
        .await
        .expect_err("syncz is for the root namespace");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = ask(plaintext.clone(), None, system_node(), DEBUG, &["syncz"])
        .await
        .expect_err("unauthenticated");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = ask(tls.clone(), Some(&system), system_node(), DEBUG, &[])
        .await
        .expect_err("no view named");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let r = ask(
        tls.clone(),
        Some(&system),
        system_node(),
        DEBUG,
        &["nonesuchz"],
    )
    .await
    .expect("an unknown view is answered");
    assert_eq!(r.resources[0].value, b"404 page not found\n");

    // A type bowline does not serve is answered, empty.
    let proxy_node = || {
        let metadata = serde_json::json!({"NAMESPACE": "default", "PROXY_CONFIG": {}});
        xds_core::Node {
            id: "sidecar~127.0.0.31~dns-0.default~default.svc.cluster.local".into(),
            metadata: Some(json_to_struct(metadata.as_object().expect("object"))),
            ..Default::default()
        }
    };
    // (pilot-agent's proxy config discovery, which bowline does not serve.)
    let pcds = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig";
    let r = ask(plaintext.clone(), None, proxy_node(), pcds, &[])
        .await
        .expect("an answer for an unserved type");
    assert_eq!(r.type_url, pcds);
    assert!(r.resources.is_empty());
    drop(envoy);
}

/// A bowline (not started) serving one service in `shop`, the namespace of the test clients.
fn shop_bowline(net: &Net) -> Bowline {
    let bowline = Bowline::new(net);
    bowline.write(
        "mesh.yaml",
        &common::fixtures::docs(&[
            &common::fixtures::service("web", "shop").port_to(80, "http", 8080)
        ]),
    );
    bowline
}

/// NACK messages are the client's: 30 NACKs of 1 MB, each with a newline and a forged log line,
/// add a bounded amount to bowline's log and forge no line; the debug view keeps a bounded,
/// escaped message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nack_messages_are_bounded_and_escaped() {
    let net = Net::new();
    let mut bowline = shop_bowline(&net);
    bowline.start().await;
    let log = bowline.dir().join("bowline.log");
    let before = std::fs::metadata(&log).expect("log").len();
    let forged = "FORGED bowline::ca: root key leaked";
    let message = format!(
        "bad\n2026-12-08T00:00:00Z ERROR {forged}\n{}",
        "x".repeat(1 << 20)
    );
    let mut streams = Vec::new();
    for _ in 0..30 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
        streams.push(nacking_proxy_saying(channel, &message).await);
    }
    let recorded = common::wait_until(Duration::from_secs(10), async || {
        bowline.syncz().await.is_ok_and(|all| {
            all.iter()
                .filter(|p| p.proxy == "picky-0.shop")
                .filter(|p| !p.nacks().is_empty())
                .count()
                == 30
        })
    })
    .await;
    assert!(recorded, "every NACK is recorded");
    let all = bowline.syncz().await.expect("syncz");
    let nack = all
        .iter()
        .flat_map(|p| p.nacks())
        .map(|(_, n)| n.message.clone())
        .next()
        .expect("a NACK");
    assert!(
        nack.len() < 5000,
        "the view keeps a bounded message: {} bytes",
        nack.len()
    );
    assert!(nack.starts_with("bad\\n2026"), "escaped: {nack:.80}");
    // Logging is asynchronous to the stream: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = std::fs::metadata(&log).expect("log").len() - before;
    assert!(
        grown < 64 * 1024,
        "30 NACKs of 1 MB added {grown} bytes to the log"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text
            .lines()
            .any(|l| l.contains(forged) && !l.contains("NACK")),
        "a NACK forged a log line"
    );
    assert!(text.contains("proxy rejected configuration (NACK)"));
    drop(streams);
}

/// On SIGTERM a proxy's stream ends with status OK (the proxy reconnects at once, to another
/// replica), not with an error, and bowline exits 0 within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly() {
    let net = Net::new();
    let mut bowline = shop_bowline(&net);
    bowline.start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let metadata = serde_json::json!({"NAMESPACE": "shop"});
    let node = xds_core::Node {
        id: "sidecar~127.0.0.32~calm-0.shop~shop.svc.cluster.local".into(),
        metadata: Some(json_to_struct(metadata.as_object().expect("object"))),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(xds_discovery::DiscoveryRequest {
        node: Some(node),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    responses
        .next()
        .await
        .expect("a response")
        .expect("clusters");
    let status = tokio::task::spawn_blocking(move || {
        let status = bowline.terminate(Duration::from_secs(15));
        (status, bowline)
    });
    let end = tokio::time::timeout(Duration::from_secs(15), responses.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none(), "the stream ends with status OK, not {end:?}");
    let (status, bowline) = status.await.expect("join");
    let status =
        status.unwrap_or_else(|| panic!("bowline exits on SIGTERM:\n{}", bowline.log_tail()));
    assert!(status.success(), "{status}: {}", bowline.log_tail());
    drop(tx);
}

/// Silent connections on the plaintext xDS and admin ports (a port scan, a stuck client, an
/// attack) are closed after the first-byte timeout, capped per client meanwhile, and do not
/// keep a proxy or `/ready` from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_do_not_starve_others() {
    use tokio::io::AsyncReadExt;
    let net = Net::new();
    let mut bowline = Bowline::new(&net);
    bowline.extra_args = vec!["--first-byte-timeout".into(), "1s".into()];
    bowline.start().await;
    // The silent client has an address of its own (127.0.0.2): others are not its cap.
    let mut silent = Vec::new();
    for addr in [bowline.xds_addr, bowline.admin_addr] {
        for _ in 0..300 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind("127.0.0.2:0".parse().unwrap()).expect("bind");
            silent.push(socket.connect(addr).await.expect("connect"));
        }
    }
    // Meanwhile: /ready answers and a proxy gets its clusters.
    let ready = common::admin_get(bowline.admin_addr, "/ready")
        .await
        .expect("/ready");
    assert_eq!(ready.status, 200);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", bowline.xds_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let _proxy = nacking_proxy(channel).await;
    // Every silent connection is closed (at once beyond the per-client cap, else after 1 s).
    let mut buf = [0u8; 1];
    for (i, s) in silent.iter_mut().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("silent connection {i} is still open"));
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let metrics = common::admin_get(bowline.admin_addr, "/metrics")
        .await
        .expect("/metrics")
        .text();
    for want in [
        r#"bowline_connections_refused_total{port="xds",reason="silent"}"#,
        r#"bowline_connections_refused_total{port="admin",reason="too_many_waiting_from_client"}"#,
    ] {
        assert!(metrics.contains(want), "{want} in /metrics");
    }
}
