//! Where the views' inputs come from: Envoy's admin API (a plain HTTP/1.1 GET), and bowline's
//! ADS port, asked for one of Istio's debug types as istioctl asks (one request, the first
//! response), over TLS with a client certificate of the mesh's CA or in plaintext.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use crate::model::Identity;

/// Largest admin answer read (Envoy's config dump of a large mesh is tens of MB).
const MAX_BODY: u64 = 1 << 30;
/// Largest ADS response accepted.
const MAX_MESSAGE: usize = 1 << 30;

/// `GET <admin><path>` on Envoy's admin listener (`http://host:port`); the body.
pub async fn admin_get(admin: &str, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let authority = admin
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--admin {admin:?}: expected http://<host>:<port>"))?
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--admin {admin:?}: expected http://<host>:<port>");
    }
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to Envoy's admin at {authority}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_BODY)
            .read_to_end(&mut raw)
            .await
            .with_context(|| format!("reading {path} from {authority}"))?;
        parse_response(&raw).with_context(|| format!("GET {path} on {authority}"))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow!("GET {path} on {authority}: no answer within {timeout:?}"))?
}

/// An HTTP/1.1 response read to the end of the connection: the body of a 200, decoded from
/// chunks when sent in chunks.
fn parse_response(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if code != "200" {
        let text = String::from_utf8_lossy(&body);
        bail!("{status}: {}", text.trim());
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// How to reach bowline's ADS port (istioctl's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct XdsArgs {
    /// bowline's xDS address: the TLS port (15012), or the plaintext port (15010) with
    /// --plaintext.
    #[arg(long = "xds-address", default_value = "istiod.istio-system.svc:15012")]
    pub xds_address: String,
    /// A directory with the mesh CA's `root-cert.pem` (bowline's serving certificate is checked
    /// against it) and, unless --token-file is given, a client certificate of that CA:
    /// `cert-chain.pem` and `key.pem`. The caller's identity decides what is visible: the
    /// mesh's root namespace sees every proxy, another namespace only its own.
    #[arg(long = "cert-dir")]
    pub cert_dir: Option<PathBuf>,
    /// A file holding a token that proves the caller's identity instead of a client
    /// certificate (`bowline token`, or a Kubernetes service account token where bowline reads
    /// the Kubernetes API), sent as `authorization: Bearer`.
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
    /// The name bowline's serving certificate is checked for, and the requests' authority.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    pub authority: String,
    /// Connect without TLS (the plaintext port). bowline answers debug requests only to a
    /// caller that proved its identity, so on the plaintext port they are refused.
    #[arg(long)]
    pub plaintext: bool,
    /// Upper bound on connecting and waiting for the answer.
    #[arg(long, default_value = "30s", value_parser = |s: &str| crate::model::networking::parse_duration(s))]
    pub timeout: Duration,
}

/// What the caller proves itself with, read from `--cert-dir` and `--token-file`.
struct Credentials {
    roots: rustls::RootCertStore,
    /// The client certificate chain and key.
    client: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
    token: Option<String>,
    /// The identity the certificate names (or the token claims), which the node claims too.
    identity: Option<Identity>,
}

/// The identity a token claims (its `sub`: a SPIFFE ID, or Kubernetes'
/// `system:serviceaccount:<ns>:<sa>`), read without verifying it: bowline verifies it.
fn token_claim(token: &str) -> Option<Identity> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sub = claims.get("sub")?.as_str()?;
    if let Some(rest) = sub.strip_prefix("system:serviceaccount:") {
        let (ns, sa) = rest.split_once(':')?;
        return Identity::new("cluster.local", ns, sa);
    }
    Identity::parse(sub).ok()
}

fn read_pem(dir: &std::path::Path, name: &str) -> anyhow::Result<Vec<crate::ca::pem::Block>> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--cert-dir: reading {}", path.display()))?;
    crate::ca::pem::parse(&text).map_err(|e| anyhow!("--cert-dir: {}: {e}", path.display()))
}

fn credentials(args: &XdsArgs) -> anyhow::Result<Credentials> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let dir = args.cert_dir.as_ref().ok_or_else(|| {
        anyhow!("--cert-dir is required on the TLS port (the mesh CA's root-cert.pem, and a client certificate unless --token-file is given); --plaintext for the plaintext port")
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for b in read_pem(dir, "root-cert.pem")?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
    {
        roots
            .add(rustls::pki_types::CertificateDer::from(b.der))
            .map_err(|e| anyhow!("--cert-dir: root-cert.pem: {e}"))?;
    }
    if roots.is_empty() {
        bail!("--cert-dir: root-cert.pem holds no certificate");
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file: reading {}", path.display()))?
            .trim()
            .to_string();
        if token.is_empty() {
            bail!("--token-file: {} is empty", path.display());
        }
        return Ok(Credentials {
            roots,
            client: None,
            identity: token_claim(&token),
            token: Some(token),
        });
    }
    let chain: Vec<_> = read_pem(dir, "cert-chain.pem")?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| rustls::pki_types::CertificateDer::from(b.der))
        .collect();
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("--cert-dir: cert-chain.pem holds no certificate"))?;
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| anyhow!("--cert-dir: cert-chain.pem: {e}"))?;
    let identity = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Identity::parse(u).ok(),
                _ => None,
            })
        })
        .ok_or_else(|| {
            anyhow!("--cert-dir: cert-chain.pem's certificate names no SPIFFE identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)")
        })?;
    let key = read_pem(dir, "key.pem")?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| anyhow!("--cert-dir: key.pem holds no private key"))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.der)
        .map_err(|e| anyhow!("--cert-dir: key.pem: {e}"))?;
    Ok(Credentials {
        roots,
        client: Some((chain, key)),
        token: None,
        identity: Some(identity),
    })
}

/// The node a debug caller sends: istioctl's form, claiming the namespace and service account
/// of the certificate's identity (bowline checks the claim against it).
fn caller_node(identity: Option<&Identity>) -> xds_core::Node {
    let (ns, sa) = identity.map_or(("istio-system", "default"), |i| {
        (i.namespace.as_str(), i.service_account.as_str())
    });
    let mut metadata = serde_json::Map::new();
    metadata.insert("GENERATOR".into(), "event".into());
    metadata.insert("NAMESPACE".into(), ns.into());
    metadata.insert("SERVICE_ACCOUNT".into(), sa.into());
    xds_core::Node {
        id: format!("sidecar~0.0.0.0~bowline-cli.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(crate::envoy::json_to_struct(&metadata)),
        user_agent_name: "bowline".into(),
        ..Default::default()
    }
}

async fn channel(
    args: &XdsArgs,
) -> anyhow::Result<(tonic::transport::Channel, Option<Credentials>)> {
    let address = args.xds_address.clone();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.authority))
        .map_err(|e| anyhow!("--authority {:?}: {e}", args.authority))?
        .connect_timeout(args.timeout);
    if args.plaintext {
        let service = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(address).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }
        });
        let channel = endpoint
            .connect_with_connector(service)
            .await
            .map_err(|e| anyhow!("connecting to {}: {e}", args.xds_address))?;
        return Ok((channel, None));
    }
    let mut credentials = credentials(args)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_root_certificates(std::mem::replace(
            &mut credentials.roots,
            rustls::RootCertStore::empty(),
        ));
    let mut config = match credentials.client.take() {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| anyhow!("--cert-dir: the key does not fit the certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(args.authority.clone())
        .map_err(|e| anyhow!("--authority {:?}: {e}", args.authority))?;
    let service = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let address = address.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = endpoint
        .connect_with_connector(service)
        .await
        .map_err(|e| anyhow!("connecting to {} over TLS: {e}", args.xds_address))?;
    Ok((channel, Some(credentials)))
}

/// Asks bowline for `type_url` (naming `names`) and returns the first response.
pub async fn ask(
    args: &XdsArgs,
    type_url: &str,
    names: Vec<String>,
) -> anyhow::Result<xds_discovery::DiscoveryResponse> {
    let exchange = async {
        let (channel, credentials) = channel(args).await?;
        let identity = credentials.as_ref().and_then(|c| c.identity.as_ref());
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let request = xds_discovery::DiscoveryRequest {
            node: Some(caller_node(identity)),
            type_url: type_url.to_string(),
            resource_names: names,
            ..Default::default()
        };
        // The request stream stays open until the answer is read, as an ADS client's does.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(request).await.ok();
        let mut stream = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(token) = credentials.as_ref().and_then(|c| c.token.as_ref()) {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| anyhow!("--token-file: the token is not a valid header value"))?;
            stream.metadata_mut().insert("authorization", value);
        }
        let mut responses = client
            .stream_aggregated_resources(stream)
            .await
            .map_err(|s| refusal(args, type_url, &s))?
            .into_inner();
        let first = responses.next().await;
        drop(tx);
        match first {
            Some(Ok(r)) => Ok(r),
            Some(Err(s)) => Err(refusal(args, type_url, &s)),
            None => Err(anyhow!(
                "{}: the stream ended without an answer to {type_url}",
                args.xds_address
            )),
        }
    };
    tokio::time::timeout(args.timeout, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "{}: no answer to {type_url} within {:?}",
                args.xds_address,
                args.timeout
            )
        })?
}

/// The error for a status that ended the debug stream.
fn refusal(args: &XdsArgs, type_url: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unauthenticated if args.plaintext => anyhow!(
            "{} refused {type_url}: {}. bowline answers debug requests only to a caller that \
             proved its identity: use the TLS port (15012) with --cert-dir, without --plaintext",
            args.xds_address,
            status.message()
        ),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => anyhow!(
            "{} refused {type_url}: {}",
            args.xds_address,
            status.message()
        ),
        _ => anyhow!(
            "{}: {type_url} failed: {} ({:?})",
            args.xds_address,
            status.message(),
            status.code()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=1\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"{\"a\":1}");
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nno such path")
            .unwrap_err()
            .to_string();
        assert!(e.contains("404") && e.contains("no such path"), "{e}");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
    }

    #[test]
    fn token_claims() {
        use base64::Engine;
        let token = |claims: &str| {
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.{}.sig", e.encode("{}"), e.encode(claims))
        };
        let spiffe = token(r#"{"sub":"spiffe://cluster.local/ns/istio-system/sa/admin"}"#);
        let id = token_claim(&spiffe).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("istio-system", "admin")
        );
        let kube = token(r#"{"sub":"system:serviceaccount:shop:dev"}"#);
        let id = token_claim(&kube).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("shop", "dev")
        );
        assert_eq!(token_claim("not-a-token"), None);
    }

    #[test]
    fn node_claims_the_certificate_identity() {
        let id = Identity::new("cluster.local", "istio-system", "istioctl").unwrap();
        let node = caller_node(Some(&id));
        assert_eq!(
            node.id,
            "sidecar~0.0.0.0~bowline-cli.istio-system~istio-system.svc.cluster.local"
        );
        let meta = crate::envoy::struct_to_json(node.metadata.as_ref().unwrap());
        assert_eq!(meta["SERVICE_ACCOUNT"], "istioctl");
        assert_eq!(meta["NAMESPACE"], "istio-system");
    }
}
