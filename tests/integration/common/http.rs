//! A tiny HTTP/1.1 client over a tokio `TcpStream` (keep-alive, Content-Length and chunked
//! bodies), enough to drive traffic through Envoy and to read admin APIs. Shared by
//! `tests/common` and `examples/client.rs` (included there by `#[path]`), so it only uses tokio.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Response header the test backends put their name in.
pub const BACKEND_HEADER: &str = "x-backend";

const MAX_HEADER_LINES: usize = 256;
const MAX_LINE: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The name of the test backend that answered, if one did.
    pub fn backend(&self) -> Option<&str> {
        self.header(BACKEND_HEADER)
    }
}

/// An HTTP/1.1 client for one address that keeps its connection open between requests.
pub struct HttpClient {
    addr: SocketAddr,
    timeout: Duration,
    /// Local address to connect from (any when `None`).
    source: Option<IpAddr>,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient {
            addr,
            timeout: Duration::from_secs(5),
            source: None,
            conn: None,
        }
    }

    /// Connect from this local IP (e.g. another loopback address, to look like another client).
    pub fn with_source(mut self, ip: IpAddr) -> HttpClient {
        self.source = Some(ip);
        self
    }

    /// Timeout of one whole request (connect, send, read the answer).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path` with `Host: host` and the extra headers.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Response> {
        self.request("GET", host, path, headers, b"").await
    }

    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        let head = method == "HEAD";

        let result = tokio::time::timeout(self.timeout, self.exchange(&bytes, head)).await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "request to {} timed out after {:?}",
                        self.addr, self.timeout
                    ),
                ))
            }
        }
    }

    async fn exchange(&mut self, request: &[u8], head: bool) -> io::Result<Response> {
        // A kept-alive connection may have been closed by the server meanwhile: retry once on a
        // fresh connection when a reused one fails before any answer arrives.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let stream = match self.source {
                    None => TcpStream::connect(self.addr).await?,
                    Some(ip) => {
                        let socket = match ip {
                            IpAddr::V4(_) => TcpSocket::new_v4()?,
                            IpAddr::V6(_) => TcpSocket::new_v6()?,
                        };
                        socket.bind(SocketAddr::new(ip, 0))?;
                        socket.connect(self.addr).await?
                    }
                };
                stream.set_nodelay(true)?;
                self.conn = Some(BufReader::new(stream));
            }
            let Some(conn) = self.conn.as_mut() else {
                unreachable!("connection was just set");
            };
            let sent = conn.get_mut().write_all(request).await;
            let result = match sent {
                Ok(()) => read_response(conn, head).await,
                Err(e) => Err(e),
            };
            match result {
                Ok((resp, keep)) => {
                    if !keep {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err(e) if reused && attempt == 0 && is_stale(&e) => {
                    self.conn = None;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Err(io::Error::other("unreachable: retry loop ended"))
    }
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !buf.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one response; the flag says whether the connection can be reused.
async fn read_response(
    conn: &mut BufReader<TcpStream>,
    head: bool,
) -> io::Result<(Response, bool)> {
    let status_line = read_line(conn).await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn).await?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADER_LINES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many headers",
            ));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let mut keep = version != "HTTP/1.0"
        && !resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let no_body = head || status == 204 || status == 304 || (100..200).contains(&status);
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());

    let mut body = Vec::new();
    if no_body {
    } else if chunked {
        loop {
            let size_line = read_line(conn).await?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {size_line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(conn).await?.is_empty() {}
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            read_line(conn).await?;
        }
    } else if let Some(len) = length {
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        body.resize(len, 0);
        conn.read_exact(&mut body).await?;
    } else {
        (&mut *conn)
            .take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .await?;
        keep = false;
    }
    Ok((Response { body, ..resp }, keep))
}

/// Answers counted by backend name.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Successful (2xx) answers by the `x-backend` header (`"-"` when absent).
    pub counts: BTreeMap<String, usize>,
    /// Failed requests and non-2xx answers.
    pub errors: usize,
    /// The last error seen, for messages.
    pub last_error: Option<String>,
    pub sent: usize,
    pub elapsed: Duration,
}

impl Tally {
    pub fn count(&self, name: &str) -> usize {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Share of all sent requests answered by `name`, in percent.
    pub fn percent(&self, name: &str) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * self.count(name) as f64 / self.sent as f64
    }

    pub fn ok(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn record(&mut self, result: io::Result<Response>) {
        self.sent += 1;
        match result {
            Ok(r) if (200..300).contains(&r.status) => {
                let name = r.backend().unwrap_or("-").to_string();
                *self.counts.entry(name).or_default() += 1;
            }
            Ok(r) => {
                self.errors += 1;
                self.last_error = Some(format!("status {}: {}", r.status, r.text().trim()));
            }
            Err(e) => {
                self.errors += 1;
                self.last_error = Some(e.to_string());
            }
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, n) in &self.counts {
            write!(f, "{name}: {n}  ")?;
        }
        write!(f, "errors: {}", self.errors)?;
        if let Some(e) = &self.last_error {
            write!(f, " (last: {e})")?;
        }
        Ok(())
    }
}

/// Sends up to `n` sequential `GET /` requests with `Host: host` over one kept-alive client,
/// stopping early when `limit` has passed, and counts who answered.
pub async fn tally(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
    limit: Duration,
) -> Tally {
    let start = Instant::now();
    let mut client = HttpClient::new(addr);
    let mut t = Tally::default();
    for i in 0..n {
        if start.elapsed() > limit {
            break;
        }
        let path = format!("/tally/{i}");
        let result = client.get(host, &path, headers).await;
        t.record(result);
    }
    t.elapsed = start.elapsed();
    t
}
