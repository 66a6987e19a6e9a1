//! The ADS protocol against bowline's server, driven by a gRPC client in the test: nonces,
//! ACK/NACK, wildcard and named subscriptions, pushes scoped to the changed types, and
//! reconnects that do not resend what the client holds. (Real Envoy runs in e2e.rs.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::fixtures::*;
use bowline::cache::{Cache, Snapshot};
use bowline::envoy::json_to_struct;
use bowline::envoy::{ResourceType, TypeSet};
use bowline::model::resource::parse_yaml;
use bowline::model::{MeshConfig, Model};
use bowline::xds::{Ads, Shared};
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn mesh_yaml(weight_v1: u32, endpoints: &[&str]) -> String {
    let mut y = docs(&[
        &service("echo", "demo").port_to(80, "http", 8080),
        &destination_rule("echo", "demo", "echo").subsets("version", &["v1", "v2"]),
        &virtual_service("echo", "demo", &["echo"]).http_route(&[
            route("echo").subset("v1").weight(weight_v1),
            route("echo").subset("v2").weight(100 - weight_v1),
        ]),
    ]);
    for (i, addr) in endpoints.iter().enumerate() {
        let entry = workload_entry(&format!("echo-{i}"), "demo", addr)
            .label("app", "echo")
            .label("version", &format!("v{}", i % 2 + 1));
        y.push_str(&entry.yaml());
    }
    y
}

fn model(yaml: &str) -> Arc<Model> {
    let resources = parse_yaml(yaml, "test")
        .into_iter()
        .map(|p| Arc::new(p.resource.expect("valid test config")))
        .collect();
    Arc::new(Model::build(resources, vec![], MeshConfig::default()))
}

struct Server {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    cache: Arc<Cache>,
    snapshots: watch::Sender<Arc<Snapshot>>,
}

impl Server {
    async fn start(yaml: &str) -> Server {
        let cache = Arc::new(Cache::new());
        let first = Arc::new(Snapshot {
            generation: 1,
            model: model(yaml),
            changed: TypeSet::ALL,
            changed_at: Instant::now(),
            published_at: Instant::now(),
        });
        cache.observe(&first);
        let (tx, rx) = watch::channel(first);
        let shared = Shared::new(cache.clone(), rx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Ads::new(shared.clone()).into_service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Server {
            addr,
            shared,
            cache,
            snapshots: tx,
        }
    }

    /// Publishes a new model the way the push loop does.
    fn publish(&self, yaml: &str) {
        let previous = self.snapshots.borrow().clone();
        let model = model(yaml);
        let changed = bowline::push::changed_types(model.change_from(&previous.model));
        let snapshot = Arc::new(Snapshot {
            generation: previous.generation + 1,
            model,
            changed,
            changed_at: Instant::now(),
            published_at: Instant::now(),
        });
        self.cache.observe(&snapshot);
        self.snapshots.send_replace(snapshot);
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

fn node() -> xds_core::Node {
    let metadata = serde_json::json!({
        "NAMESPACE": "demo",
        "LABELS": {"app": "client"},
        "INTERCEPTION_MODE": "NONE",
    });
    xds_core::Node {
        id: "sidecar~127.0.0.10~client-0.demo~demo.svc.cluster.local".into(),
        metadata: Some(json_to_struct(metadata.as_object().unwrap())),
        ..Default::default()
    }
}

struct Delta {
    tx: mpsc::Sender<xds_discovery::DeltaDiscoveryRequest>,
    rx: tonic::Streaming<xds_discovery::DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(server: &Server) -> Delta {
        let (tx, rx) = mpsc::channel(16);
        let responses = server
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Delta { tx, rx: responses }
    }

    async fn send(&self, r: xds_discovery::DeltaDiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }

    async fn recv(&mut self) -> xds_discovery::DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .expect("a response within 5s")
            .expect("stream open")
            .expect("not an error")
    }

    /// No response arrives within a short wait.
    async fn quiet(&mut self) {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(400), self.rx.next()).await
        {
            panic!(
                "unexpected response: {:?}",
                r.map(|r| (r.type_url, r.resources.len(), r.removed_resources))
            );
        }
    }

    async fn ack(&self, r: &xds_discovery::DeltaDiscoveryResponse) {
        self.send(xds_discovery::DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn names(r: &xds_discovery::DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn delta_subscribe_ack_and_scoped_pushes() {
    let server = Server::start(&mesh_yaml(80, &["127.0.0.11", "127.0.0.12"])).await;
    let mut s = Delta::open(&server).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let cds = s.recv().await;
    assert_eq!(cds.type_url, CDS);
    let clusters = names(&cds);
    assert!(
        clusters.contains(&"outbound|80|v1|echo.demo.svc.cluster.local".to_string()),
        "{clusters:?}"
    );
    assert!(clusters.contains(&"BlackHoleCluster".to_string()));
    s.ack(&cds).await;
    // Named EDS subscription for the EDS clusters.
    let eds_names: Vec<String> = clusters
        .iter()
        .filter(|n| n.starts_with("outbound|"))
        .cloned()
        .collect();
    s.send(xds_discovery::DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: eds_names.clone(),
        ..Default::default()
    })
    .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds).len(), eds_names.len());
    s.ack(&eds).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        type_url: LDS.into(),
        ..Default::default()
    })
    .await;
    let lds = s.recv().await;
    s.ack(&lds).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        type_url: RDS.into(),
        resource_names_subscribe: vec!["80".into()],
        ..Default::default()
    })
    .await;
    let rds = s.recv().await;
    assert_eq!(names(&rds), vec!["80"]);
    s.ack(&rds).await;
    s.quiet().await;

    // Every type ACKed, as syncz shows.
    let views = server.shared.registry.views();
    assert_eq!(views.len(), 1);
    for t in ResourceType::CONFIG {
        let status = &views[0].types[&t];
        assert!(
            status.sent.is_some() && status.sent == status.acked,
            "{t:?}: {status:?}"
        );
    }

    // An endpoint-only change pushes EDS only, and only the changed assignments.
    server.publish(&mesh_yaml(80, &["127.0.0.11", "127.0.0.13"]));
    let push = s.recv().await;
    assert_eq!(push.type_url, EDS);
    let changed = names(&push);
    assert!(
        changed.contains(&"outbound|80|v2|echo.demo.svc.cluster.local".to_string()),
        "{changed:?}"
    );
    assert!(
        !changed.contains(&"outbound|80|v1|echo.demo.svc.cluster.local".to_string()),
        "{changed:?}"
    );
    s.ack(&push).await;
    s.quiet().await;

    // A route change pushes RDS only.
    server.publish(&mesh_yaml(50, &["127.0.0.11", "127.0.0.13"]));
    let push = s.recv().await;
    assert_eq!(push.type_url, RDS);
    assert_eq!(names(&push), vec!["80"]);
    s.ack(&push).await;
    s.quiet().await;

    // Publishing the same model again pushes nothing.
    server.publish(&mesh_yaml(50, &["127.0.0.11", "127.0.0.13"]));
    s.quiet().await;
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_retried() {
    let server = Server::start(&mesh_yaml(80, &["127.0.0.11"])).await;
    let mut s = Delta::open(&server).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let cds = s.recv().await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster outbound|80||x: bad config".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    s.quiet().await;
    let views = server.shared.registry.views();
    let status = &views[0].types[&ResourceType::Cds];
    let nack = status.nack.as_ref().expect("NACK recorded");
    assert_eq!(nack.message, "cluster outbound|80||x: bad config");
    assert_eq!(status.acked, None);
    assert_eq!(status.pushes, 1);
    // An unrelated change does not resend the rejected clusters.
    server.publish(&mesh_yaml(60, &["127.0.0.11"]));
    s.quiet().await;
}

#[tokio::test]
async fn delta_reconnect_with_known_versions_resends_nothing() {
    let server = Server::start(&mesh_yaml(80, &["127.0.0.11"])).await;
    let mut first = Delta::open(&server).await;
    first
        .send(xds_discovery::DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    let cds = first.recv().await;
    first.ack(&cds).await;
    let held = cds
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(first);

    let mut again = Delta::open(&server).await;
    again
        .send(xds_discovery::DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: CDS.into(),
            initial_resource_versions: held,
            ..Default::default()
        })
        .await;
    let response = again.recv().await;
    assert!(
        response.resources.is_empty(),
        "resent {:?}",
        names(&response)
    );
    assert!(response.removed_resources.is_empty());
}

#[tokio::test]
async fn sotw_versions_nonces_and_reconnect() {
    let server = Server::start(&mesh_yaml(80, &["127.0.0.11"])).await;
    let (tx, rx) = mpsc::channel(16);
    let mut responses = server
        .client()
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut recv = async || {
        tokio::time::timeout(Duration::from_secs(5), responses.next())
            .await
            .expect("a response")
            .expect("open")
            .expect("ok")
    };
    tx.send(xds_discovery::DiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cds = recv().await;
    assert!(!cds.version_info.is_empty());
    assert!(!cds.nonce.is_empty());
    assert!(cds.resources.len() >= 5);
    // ACK; then a config change pushes a new CDS version (VirtualService change does not
    // touch clusters, so change a subset instead).
    tx.send(xds_discovery::DiscoveryRequest {
        type_url: CDS.into(),
        version_info: cds.version_info.clone(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let acked = async || {
        for _ in 0..50 {
            let views = server.shared.registry.views();
            if let Some(v) = views
                .first()
                .and_then(|v| v.types[&ResourceType::Cds].acked.clone())
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("ACK not recorded");
    };
    assert_eq!(acked().await, cds.version_info);
    server.publish(&mesh_yaml(80, &["127.0.0.11"]).replace("name: v2", "name: v3"));
    let pushed = recv().await;
    assert_ne!(pushed.version_info, cds.version_info);
    assert_ne!(pushed.nonce, cds.nonce);
    // A reply to the older nonce is stale and changes nothing.
    tx.send(xds_discovery::DiscoveryRequest {
        type_url: CDS.into(),
        version_info: cds.version_info.clone(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            message: "stale".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let views = server.shared.registry.views();
    assert!(views[0].types[&ResourceType::Cds].nack.is_none());
    drop(tx);

    // A new stream that already holds the current version is not sent it again.
    let (tx2, rx2) = mpsc::channel(16);
    let mut responses2 = server
        .client()
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx2))
        .await
        .unwrap()
        .into_inner();
    tx2.send(xds_discovery::DiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        version_info: pushed.version_info.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let none = tokio::time::timeout(Duration::from_millis(400), responses2.next()).await;
    assert!(none.is_err(), "unexpected response on reconnect");
    let views = server.shared.registry.views();
    let latest = views.iter().max_by_key(|v| v.connection).unwrap();
    assert_eq!(
        latest.types[&ResourceType::Cds].acked.as_deref(),
        Some(pushed.version_info.as_str())
    );
}

#[tokio::test]
async fn a_stream_without_a_node_ends_with_a_grpc_status() {
    let server = Server::start(&mesh_yaml(80, &["127.0.0.11"])).await;
    let mut s = Delta::open(&server).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let end = tokio::time::timeout(Duration::from_secs(5), s.rx.next())
        .await
        .expect("an answer within 5s")
        .expect("a status, not a silent end");
    let status = end.expect_err("the stream fails");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "first request has no node");
}

/// What goes wrong generating a proxy's configuration is shown with its connection on
/// `/debug/syncz`.
#[tokio::test]
async fn a_proxys_generation_diagnostics_are_shown_with_its_connection() {
    // A rule whose setting is ignored, with a warning.
    let yaml = format!(
        "{}{}",
        mesh_yaml(80, &["127.0.0.11"]),
        destination_rule("zone", "demo", "echo")
            .traffic_policy(
                "loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true}}"
            )
            .yaml()
    );
    let server = Server::start(&yaml).await;
    let mut s = Delta::open(&server).await;
    s.send(xds_discovery::DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    s.recv().await;
    let views = server.shared.registry.views();
    let shown: Vec<String> = views[0]
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        shown.iter().any(|d| d.contains("zoneAwareLbSetting")),
        "{shown:?}"
    );
    let json = serde_json::to_value(&views[0]).unwrap();
    assert!(
        json["diagnostics"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("zone-aware")),
        "{json}"
    );
}
