//! bowline's TLS ports (xDS on istiod's 15012, the webhooks on 15017): a serving certificate
//! from bowline's CA, renewed at its half-life, and optional client certificates verified
//! against bowline's root.
//!
//! Contract: [`incoming`] turns a TCP listener into a stream of TLS connections for tonic; each
//! connection's [`PeerInfo`] (remote address, and the SPIFFE identity of a verified client
//! certificate in the mesh's trust domain) reaches every request as an extension. A failed
//! handshake closes that connection only. ALPN is `h2`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ca::authn::PeerInfo;
use crate::ca::{Ca, CaError, pem};

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("serving certificate: {0}")]
    Ca(#[from] CaError),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Names the serving certificate carries: istiod's service names, so Istio agents and
/// bootstraps that expect istiod verify bowline.
pub fn default_server_names() -> Vec<String> {
    [
        "istiod.istio-system.svc",
        "istiod.istio-system.svc.cluster.local",
        "istiod",
        "bowline",
        "localhost",
    ]
    .map(String::from)
    .to_vec()
}

fn certified_key(
    ca: &Ca,
    names: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(Arc<CertifiedKey>, SystemTime), TlsError> {
    let cert = ca.issue_server(names, ips)?;
    let chain: Vec<CertificateDer<'static>> = pem::parse(&cert.chain_pem)
        .map_err(TlsError::Config)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect();
    let key_text = std::str::from_utf8(cert.key.expose())
        .map_err(|_| TlsError::Config("serving key is not PEM".into()))?;
    let key_der = pem::parse(key_text)
        .map_err(TlsError::Config)?
        .into_iter()
        .find(|b| b.label == "PRIVATE KEY")
        .ok_or_else(|| TlsError::Config("serving key has no PRIVATE KEY block".into()))?;
    let key = PrivateKeyDer::try_from(key_der.der.clone())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok((Arc::new(CertifiedKey::new(chain, signing)), cert.renew_at()))
}

/// The current serving certificate, swapped on renewal.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The TLS acceptor of one of bowline's TLS ports (xDS, webhooks), and the task that renews
/// its serving certificate.
pub struct TlsPort {
    pub acceptor: TlsAcceptor,
    serving: Arc<ServingCert>,
    renew_at: SystemTime,
    names: Vec<String>,
    ips: Vec<std::net::IpAddr>,
}

impl TlsPort {
    /// A serving certificate for `names` and `ips`, and client certificates checked against
    /// bowline's root (optional: token callers present none).
    pub fn new(
        ca: &Ca,
        names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
    ) -> Result<TlsPort, TlsError> {
        TlsPort::with_alpn(ca, names, ips, &[b"h2"])
    }

    /// The same with other application protocols (the webhooks speak HTTP/1.1).
    pub fn with_alpn(
        ca: &Ca,
        names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
        alpn: &[&[u8]],
    ) -> Result<TlsPort, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for der in ca.root_der() {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| TlsError::Config(format!("root certificate: {e}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let (key, renew_at) = certified_key(ca, &names, &ips)?;
        let serving = Arc::new(ServingCert {
            current: RwLock::new(key),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(serving.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsPort {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            serving,
            renew_at,
            names,
            ips,
        })
    }

    /// Renews the serving certificate at each half-life, for as long as the task runs.
    pub async fn renew(self: Arc<Self>, ca: Arc<Ca>) {
        let mut renew_at = self.renew_at;
        loop {
            let wait = renew_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            match certified_key(&ca, &self.names, &self.ips) {
                Ok((key, next)) => {
                    *self
                        .serving
                        .current
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = key;
                    renew_at = next;
                    tracing::info!("renewed the xDS serving certificate");
                }
                Err(e) => {
                    tracing::error!(error = %e, "renewing the xDS serving certificate failed; retrying in 10 s");
                    renew_at = SystemTime::now() + Duration::from_secs(10);
                }
            }
        }
    }
}

/// A TLS connection with what it proved.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl TlsConnection {
    pub fn remote(&self) -> Option<std::net::SocketAddr> {
        self.peer.remote
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections as `admission` says (`crate::net`: they must speak first, waiting
/// ones are capped) and completes their TLS handshakes concurrently (a slow client holds up
/// only itself).
pub fn incoming(
    listener: TcpListener,
    admission: crate::net::Admission,
    acceptor: TlsAcceptor,
    ca: Arc<Ca>,
) -> impl futures::Stream<Item = Result<TlsConnection, io::Error>> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let (tx, rx) = mpsc::channel::<TlsConnection>(64);
    let mut admitted = crate::net::admit(listener, admission);
    tokio::spawn(async move {
        while let Some((tcp, remote)) = admitted.recv().await {
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let ca = ca.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "TLS handshake failed on the xDS port");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "TLS handshake timed out on the xDS port");
                        return;
                    }
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|leaf| ca.identity_of(leaf));
                let peer = PeerInfo {
                    remote: Some(remote),
                    certificate,
                };
                let _ = tx.send(TlsConnection { stream, peer }).await;
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}
