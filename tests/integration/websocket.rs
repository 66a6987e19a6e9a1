//! WebSocket upgrades through a real Envoy sidecar, with a real WebSocket client and server
//! (tokio-tungstenite): outbound, through an egress listener (interception NONE) to a
//! WorkloadEntry of a Service, and inbound, through an ingress listener to the workload's
//! server on 127.0.0.1. Every HTTP connection manager bowline makes allows the `websocket`
//! upgrade, as istiod's do; without it Envoy refuses the upgrade (403).
//!
//! Without Envoy the test prints a skip line and passes, unless `CI=true`.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fixtures::*;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const NS: &str = "chat";
/// The Service `ws` (port 8000, the egress listener's port) and its backend's port.
const SERVICE_PORT: u16 = 8000;
const TARGET_PORT: u16 = 8080;
/// The workload's ingress port.
const INGRESS_PORT: u16 = 9080;
const LONG: Duration = Duration::from_secs(60);

/// Service `ws` backed by a WorkloadEntry at `.11`; the proxy (`app: chat`, bound on `.10`)
/// gets an egress listener on `.10:8000` importing the namespace and an ingress listener on
/// `.10:9080` forwarding to its own server on 127.0.0.1.
fn mesh_yaml(net: &Net, inbound_backend: u16) -> String {
    let bind = net.ip(10);
    docs(&[
        &service("ws", NS).port_to(SERVICE_PORT, "http", TARGET_PORT),
        &workload_entry("ws-0", NS, net.ip(11)).label("app", "ws"),
        &sidecar("chat", NS)
            .ingress(
                INGRESS_PORT,
                "HTTP",
                "http",
                bind,
                format!("127.0.0.1:{inbound_backend}"),
            )
            .egress(SERVICE_PORT, "HTTP", "http", bind),
    ])
}

/// A WebSocket server answering every text message with `<name>: <message>`, until dropped.
struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn spawn_server(addr: SocketAddr, name: &'static str) -> Server {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Text(text) => {
                            let answer = format!("{name}: {}", text.as_str());
                            if ws.send(Message::text(answer)).await.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
            });
        }
    });
    Server { task }
}

/// Opens a WebSocket to `url` over a connection to `to`, exchanges two messages and closes;
/// the answers, or why the exchange failed (the handshake's HTTP status when it was refused).
async fn exchange(to: SocketAddr, url: &str) -> Result<Vec<String>, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| format!("connect {to}: {e}"))?;
        let (mut ws, response) =
            tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => {
                        format!("upgrade refused: HTTP {}", r.status())
                    }
                    other => format!("handshake: {other}"),
                })?;
        if response.status() != 101 {
            return Err(format!("handshake answered {}", response.status()));
        }
        let mut answers = Vec::new();
        for text in ["hello", "again"] {
            ws.send(Message::text(text))
                .await
                .map_err(|e| format!("send: {e}"))?;
            match ws.next().await {
                Some(Ok(Message::Text(answer))) => answers.push(answer.as_str().to_string()),
                other => return Err(format!("answer to {text:?}: {other:?}")),
            }
        }
        let _ = ws.close(None).await;
        Ok(answers)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_inbound_and_outbound() {
    let Some(envoy_bin) = envoy_bin() else {
        return;
    };
    let net = Net::new();
    let _outbound_server = spawn_server(net.addr(11, TARGET_PORT), "ws-0").await;
    let inbound_port = free_port();
    let _inbound_server =
        spawn_server(SocketAddr::from(([127, 0, 0, 1], inbound_port)), "chat").await;
    let mut bowline = Bowline::new(&net);
    bowline.write("mesh.yaml", &mesh_yaml(&net, inbound_port));
    bowline.start().await;
    let spec = ProxySpec::sidecar("chat-0", NS, net.ip(10)).label("app", "chat");
    let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
    bowline
        .wait_synced(&envoy.proxy_id(), LONG)
        .await
        .expect("proxy synced");

    // Outbound: the egress listener routes by Host to the Service's endpoint. Inbound: the
    // ingress listener hands the upgrade to the workload's server.
    let outbound = poll(LONG, async || {
        exchange(
            net.addr(10, SERVICE_PORT),
            &format!("ws://ws.{NS}.svc.cluster.local:{SERVICE_PORT}/chat"),
        )
        .await
    })
    .await;
    let inbound = poll(LONG, async || {
        exchange(
            net.addr(10, INGRESS_PORT),
            &format!("ws://ws.{NS}.svc.cluster.local:{INGRESS_PORT}/chat"),
        )
        .await
    })
    .await;
    let answers = |name: &str| Ok(vec![format!("{name}: hello"), format!("{name}: again")]);
    assert_eq!(
        (outbound, inbound),
        (answers("ws-0"), answers("chat")),
        "WebSockets through the outbound and the inbound listener"
    );

    let all = bowline.syncz().await.expect("syncz");
    let me = find_proxy(&all, &envoy.proxy_id()).expect("proxy connected");
    assert!(me.nacks().is_empty(), "no NACK: {:?}", me.nacks());
}
