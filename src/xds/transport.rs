//! The ADS gRPC transport: the two ADS methods over HTTP/2 with gRPC framing, in front of the
//! `Ads` service.
//!
//! Requests are decoded with tonic's streaming decoder. Responses are framed here, each
//! message into a buffer of its own size that is freed once written: tonic's response encoder
//! keeps one buffer per stream that grows to the largest response ever sent and is never
//! shrunk, which at thousands of long-lived ADS streams with responses of hundreds of KiB is
//! most of the server's memory. The stream ends with gRPC trailers (`grpc-status`, and
//! `grpc-message` on error). Compressed requests are refused; responses are not compressed.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use futures::Stream;
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use super::Ads;

const STREAM_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Largest request accepted (Envoy's requests are small; initial delta requests list every
/// resource version the proxy holds).
const MAX_REQUEST: usize = 16 * 1024 * 1024;
/// Largest response sent.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// The ADS service as an HTTP service for tonic's server.
#[derive(Clone)]
pub struct AdsService {
    ads: Ads,
}

impl AdsService {
    pub fn new(ads: Ads) -> AdsService {
        AdsService { ads }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let ads = self.ads.clone();
        Box::pin(async move {
            if let Some(encoding) = request.headers().get("grpc-encoding")
                && encoding.as_bytes() != b"identity"
            {
                return Ok(Status::unimplemented(format!(
                    "request compression {encoding:?} is not supported"
                ))
                .into_http());
            }
            let path = request.uri().path().to_string();
            // Metadata (the caller's bearer token) and extensions (remote address, TLS peer)
            // go with the request: the stream authenticates from them.
            let (parts, body) = request.into_parts();
            let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers);
            let extensions = parts.extensions;
            let response = match path.as_str() {
                STREAM_PATH => {
                    let requests = tonic::Streaming::new_request(
                        ProstDecoder::<xds_discovery::DiscoveryRequest>::default(),
                        body,
                        None,
                        Some(MAX_REQUEST),
                    );
                    ads.stream_aggregated_resources(tonic::Request::from_parts(
                        metadata, extensions, requests,
                    ))
                    .await
                    .map(|r| tonic::body::Body::new(Framed::new(r.into_inner())))
                }
                DELTA_PATH => {
                    let requests = tonic::Streaming::new_request(
                        ProstDecoder::<xds_discovery::DeltaDiscoveryRequest>::default(),
                        body,
                        None,
                        Some(MAX_REQUEST),
                    );
                    ads.delta_aggregated_resources(tonic::Request::from_parts(
                        metadata, extensions, requests,
                    ))
                    .await
                    .map(|r| tonic::body::Body::new(Framed::new(r.into_inner())))
                }
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(match response {
                Ok(body) => {
                    let mut response = http::Response::new(body);
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Decodes one protobuf message per gRPC frame.
struct ProstDecoder<T>(std::marker::PhantomData<T>);

impl<T> Default for ProstDecoder<T> {
    fn default() -> Self {
        ProstDecoder(std::marker::PhantomData)
    }
}

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}

type Source<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A response stream as an HTTP body: one data frame per message, then the trailers.
struct Framed<T> {
    source: Option<Source<T>>,
}

impl<T> Framed<T> {
    fn new(source: Source<T>) -> Framed<T> {
        Framed {
            source: Some(source),
        }
    }
}

/// The gRPC trailers for a final status.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only a message that cannot be a header value fails; keep the code.
        map = http::HeaderMap::new();
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}

/// A message with the gRPC frame header (uncompressed flag, big-endian length), in a buffer
/// of exactly its size.
fn frame<T: Message>(message: &T) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    if len > MAX_RESPONSE {
        return Err(Status::out_of_range(format!(
            "response of {len} bytes exceeds the {MAX_RESPONSE}-byte limit"
        )));
    }
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message
        .encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(Bytes::from(buf))
}

impl<T: Message + 'static> http_body::Body for Framed<T> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(source) = this.source.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match source.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(message))) => match frame(&message) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => status,
            },
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        this.source = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_grpc_header() {
        let response = xds_discovery::DiscoveryResponse {
            version_info: "v1".into(),
            ..Default::default()
        };
        let bytes = frame(&response).unwrap();
        assert_eq!(bytes[0], 0);
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - 5);
        assert_eq!(
            xds_discovery::DiscoveryResponse::decode(&bytes[5..]).unwrap(),
            response
        );
    }

    #[test]
    fn trailers_name_the_status() {
        let ok = trailers(&Status::ok(""));
        assert_eq!(ok.get("grpc-status").unwrap(), "0");
        let bad = trailers(&Status::invalid_argument("no node"));
        assert_eq!(bad.get("grpc-status").unwrap(), "3");
        // Percent-encoded, as the gRPC spec has it.
        assert_eq!(bad.get("grpc-message").unwrap(), "no%20node");
    }
}
