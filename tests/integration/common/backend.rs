//! Small backends for tests and the demo: an HTTP server that names itself in every answer (and
//! can be programmed per request to fail, stall or add response headers, and records what it
//! received), and a TCP echo server. Shared by `tests/common` and `examples/echo.rs` (included
//! there by `#[path]`), so it only uses the crate's normal dependencies (tokio, axum, serde_json).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// Request header naming the "logical request" a call belongs to: the backend numbers the calls
/// of each key (1, 2, ...), so retries of one request, which carry the same key, are counted.
/// [`FAIL_CALLS_HEADER`] and [`DELAY_CALLS_HEADER`] count calls per key.
pub const KEY_HEADER: &str = "x-request-key";
/// Request header: answer the first N calls of the key with [`FAIL_STATUS_HEADER`] (503 by
/// default), later ones normally. Ignored without [`KEY_HEADER`].
pub const FAIL_CALLS_HEADER: &str = "x-fail-calls";
/// Request header: the status of the failing calls of [`FAIL_CALLS_HEADER`].
pub const FAIL_STATUS_HEADER: &str = "x-fail-status";
/// Request header: wait this many milliseconds (at most 60 s) before answering.
pub const DELAY_HEADER: &str = "x-delay-ms";
/// Request header: apply [`DELAY_HEADER`] only to the first N calls of the key (to none without
/// [`KEY_HEADER`]).
pub const DELAY_CALLS_HEADER: &str = "x-delay-calls";
/// Request header `name: value` (repeatable): add that header to the response.
pub const REPLY_HEADER: &str = "x-reply-header";
/// Response header: which call of its key this answer was (with [`KEY_HEADER`]).
pub const CALL_HEADER: &str = "x-call";

/// Requests a backend remembers (the oldest are forgotten first), so a long-running demo
/// backend stays small.
const SEEN_LIMIT: usize = 10_000;
/// Distinct keys a backend counts calls for; beyond that counting starts over.
const KEY_LIMIT: usize = 10_000;

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Host` header (HTTP/1.1) or the URI's authority (HTTP/2).
    pub authority: String,
    /// Every header line, names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a backend records: the requests it received and the calls per key.
#[derive(Debug, Default)]
struct Record {
    seen: VecDeque<Seen>,
    calls: HashMap<String, u64>,
}

/// A running backend. Stops accepting connections when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    served: Arc<AtomicU64>,
    record: Arc<Mutex<Record>>,
    /// The status every HTTP request is answered with while non-zero ([`Backend::fail_all`]).
    forced: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Requests (HTTP) or connections (TCP) served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The HTTP requests received so far (the last 10 000), oldest first. Recorded on arrival,
    /// before any programmed delay.
    pub fn seen(&self) -> Vec<Seen> {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.seen.iter().cloned().collect()
    }

    /// How many calls carried `x-request-key: key`.
    pub fn calls(&self, key: &str) -> u64 {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.calls.get(key).copied().unwrap_or(0)
    }

    /// From now on answer every HTTP request with `status` (still naming the backend and
    /// recording the request), whatever the request asks for: a failing endpoint, as outlier
    /// detection and locality failover see one. [`Backend::heal`] ends it.
    pub fn fail_all(&self, status: u16) {
        assert!(
            StatusCode::from_u16(status).is_ok() && status != 0,
            "bad status {status}"
        );
        self.forced.store(status, Ordering::Relaxed);
    }

    /// Answer requests normally again (undoes [`Backend::fail_all`]).
    pub fn heal(&self) {
        self.forced.store(0, Ordering::Relaxed);
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
    record: Arc<Mutex<Record>>,
    forced: Arc<AtomicU16>,
}

/// Starts an HTTP/1.1 server on `addr` answering every request with status 200, body `name`, a
/// `x-backend: name` header, and the request's path and headers echoed in `x-echo-path` and
/// `x-echo-headers`. A request header `x-status: NNN` makes it answer with that status instead;
/// [`KEY_HEADER`], [`FAIL_CALLS_HEADER`], [`DELAY_HEADER`] and [`REPLY_HEADER`] program other
/// behaviour. Every request is recorded ([`Backend::seen`]). [`Backend::fail_all`] makes it fail
/// every request.
pub async fn spawn_backend(addr: SocketAddr, name: &str) -> io::Result<Backend> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let record = Arc::new(Mutex::new(Record::default()));
    let forced = Arc::new(AtomicU16::new(0));
    let state = Arc::new(HttpState {
        name: name.to_string(),
        served: served.clone(),
        record: record.clone(),
        forced: forced.clone(),
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
        record,
        forced,
        task,
    })
}

/// A request header as a number.
fn header_number(req: &Request, name: &str) -> Option<u64> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
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
    let mut status = req
        .headers()
        .get("x-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);

    // Record the request and number its call within its key.
    let authority = req
        .headers()
        .get("host")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let key = req
        .headers()
        .get(KEY_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let call = {
        let mut record = state.record.lock().unwrap_or_else(PoisonError::into_inner);
        if record.seen.len() >= SEEN_LIMIT {
            record.seen.pop_front();
        }
        record.seen.push_back(Seen {
            method: req.method().as_str().to_string(),
            path: path.clone(),
            authority,
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), v)
                })
                .collect(),
        });
        key.map(|key| {
            if record.calls.len() >= KEY_LIMIT && !record.calls.contains_key(&key) {
                record.calls.clear();
            }
            let n = record.calls.entry(key).or_default();
            *n += 1;
            *n
        })
    };
    // Whether a per-key behaviour applies to this call (all calls without a count header).
    let applies = |first: Option<u64>| match (first, call) {
        (None, _) => true,
        (Some(first), Some(call)) => call <= first,
        (Some(_), None) => false,
    };
    let delay = header_number(&req, DELAY_HEADER)
        .filter(|_| applies(header_number(&req, DELAY_CALLS_HEADER)))
        .map(|ms| Duration::from_millis(ms.min(60_000)));
    let fails = header_number(&req, FAIL_CALLS_HEADER);
    if fails.is_some() && applies(fails) {
        status = req
            .headers()
            .get(FAIL_STATUS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .and_then(|v| StatusCode::from_u16(v).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    }
    // A backend told to fail everything overrides what the request asked for.
    if let Ok(forced) = StatusCode::from_u16(state.forced.load(Ordering::Relaxed)) {
        status = forced;
    }
    let replies: Vec<(axum::http::HeaderName, HeaderValue)> = req
        .headers()
        .get_all(REPLY_HEADER)
        .iter()
        .filter_map(|reply| {
            let (k, v) = reply.to_str().ok()?.split_once(':')?;
            Some((
                axum::http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        })
        .collect();
    drop(req);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut resp = (status, state.name.clone()).into_response();
    let h = resp.headers_mut();
    for (k, v) in replies {
        h.append(k, v);
    }
    if let Some(call) = call {
        h.insert(CALL_HEADER, HeaderValue::from(call));
    }
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
        record: Arc::new(Mutex::new(Record::default())),
        forced: Arc::new(AtomicU16::new(0)),
        task,
    })
}
