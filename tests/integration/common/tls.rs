//! TLS from tests: a gRPC channel to bowline's TLS port (optionally with a client
//! certificate), a raw TLS client that records the certificates a server presents, and the
//! SPIFFE IDs in a certificate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// DER certificates of a PEM text.
pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    bowline::ca::pem::parse(pem)
        .expect("PEM parses")
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect()
}

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The subject of a DER certificate, as text.
pub fn subject(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `root_pem`, presenting `client` (chain PEM, key PEM) if given.
pub fn client_config(
    root_pem: &str,
    client: Option<(&str, &str)>,
    alpn: &[&str],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(root_pem) {
        roots.add(c).expect("root certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => {
            let key_der = bowline::ca::pem::parse(key)
                .expect("key PEM")
                .into_iter()
                .find(|b| b.label.ends_with("PRIVATE KEY"))
                .expect("a private key");
            builder
                .with_client_auth_cert(
                    certs(chain),
                    PrivateKeyDer::try_from(key_der.der).expect("key DER"),
                )
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    config
}

/// A gRPC channel to `addr` over TLS, checking the server for `server_name`.
pub async fn grpc_channel(
    addr: SocketAddr,
    server_name: &str,
    config: rustls::ClientConfig,
) -> Result<tonic::transport::Channel, String> {
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let service = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_static("http://bowline.invalid")
        .connect_with_connector(service)
        .await
        .map_err(|e| format!("TLS gRPC channel to {addr}: {e:?}"))
}

/// Accepts any server certificate and records the chain presented.
#[derive(Debug, Default)]
pub struct Recorder {
    pub chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects with TLS (presenting `client` if given, offering `alpn`), records the server's
/// chain, sends `request` and reads the answer until EOF or 64 KiB. Returns the presented chain
/// (leaf first) and the answer; `Err` when the handshake or the exchange fails.
pub async fn exchange(
    addr: SocketAddr,
    client: Option<(&str, &str)>,
    alpn: &[&str],
    request: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let recorder = Arc::new(Recorder::default());
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone());
    let mut config = match client {
        Some((chain, key)) => {
            let key_der = bowline::ca::pem::parse(key)
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|b| b.label.ends_with("PRIVATE KEY"))
                .ok_or("no private key")?;
            builder
                .with_client_auth_cert(
                    certs(chain),
                    PrivateKeyDer::try_from(key_der.der).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("outbound.invalid").map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(request).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.len() > 65536
                        || answer.windows(4).any(|w| w == b"\r\n\r\n") && complete(&answer)
                    {
                        break;
                    }
                }
                Err(e) if answer.is_empty() => return Err(format!("read: {e}")),
                Err(_) => break,
            }
        }
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())??;
    let chain = recorder
        .chain
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((chain, answer))
}

/// Whether an HTTP/1.1 answer with Content-Length is complete.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    body.len() >= len
}

/// `IstioCertificateService/CreateCertificate` on bowline's plaintext port with `bearer` as
/// the credential, for a fresh key: the chain (leaf first, root last) and the key's PEM.
pub async fn create_certificate(
    xds_addr: SocketAddr,
    bearer: &str,
) -> Result<(Vec<String>, String), tonic::Status> {
    use bowline::ca::pb::IstioCertificateRequest;
    use bowline::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("CSR PEM");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        metadata: None,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {bearer}").parse().expect("header value"),
    );
    let chain = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await?
        .into_inner()
        .cert_chain;
    Ok((chain, key.serialize_pem()))
}
