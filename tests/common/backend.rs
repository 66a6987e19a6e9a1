//! Small backends for tests and the demo: an HTTP server that names itself in every answer, and a
//! TCP echo server. Shared by `tests/common` and `examples/echo.rs` (included there by `#[path]`),
//! so it only uses the crate's normal dependencies (tokio, axum, serde_json).
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Response header naming the backend that answered (the body is the name too).
pub const BACKEND_HEADER: &str = "x-backend";
/// Response header echoing the request's path and query.
pub const ECHO_PATH_HEADER: &str = "x-echo-path";
/// Response header echoing the request's headers, as a JSON object (name → value).
pub const ECHO_HEADERS_HEADER: &str = "x-echo-headers";

/// A running backend. Stops accepting connections when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Requests (HTTP) or connections (TCP) served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct HttpState {
    name: String,
    served: Arc<AtomicU64>,
}

/// Starts an HTTP/1.1 server on `addr` answering every request with status 200, body `name`, a
/// `x-backend: name` header, and the request's path and headers echoed in `x-echo-path` and
/// `x-echo-headers`. A request header `x-status: NNN` makes it answer with that status instead.
pub async fn spawn_backend(addr: SocketAddr, name: &str) -> io::Result<Backend> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let state = Arc::new(HttpState {
        name: name.to_string(),
        served: served.clone(),
    });
    let app = Router::new().fallback(answer).with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("backend on {addr}: {e}");
        }
    });
    Ok(Backend {
        addr,
        name: name.to_string(),
        served,
        task,
    })
}

async fn answer(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    state.served.fetch_add(1, Ordering::Relaxed);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_string(), serde_json::Value::String(v))
        })
        .collect();
    let status = req
        .headers()
        .get("x-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);

    let mut resp = (status, state.name.clone()).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&state.name) {
        h.insert(BACKEND_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&path) {
        h.insert(ECHO_PATH_HEADER, v);
    }
    let json = serde_json::Value::Object(headers).to_string();
    if let Ok(v) = HeaderValue::from_str(&json) {
        h.insert(ECHO_HEADERS_HEADER, v);
    }
    resp
}

/// Starts a TCP server on `addr` that greets every connection with `name\n` and then echoes back
/// every byte it receives until the peer closes.
pub async fn spawn_tcp_echo(addr: SocketAddr, name: &str) -> io::Result<Backend> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let greeting = format!("{name}\n");
    let count = served.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let greeting = greeting.clone();
            tokio::spawn(async move {
                if conn.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(Backend {
        addr,
        name: name.to_string(),
        served,
        task,
    })
}
