//! The ADS gRPC transport: the two ADS methods over HTTP/2 with gRPC framing, in front of the
//! `Ads` service.
//!
//! Both directions are framed here rather than by tonic's codec, for memory: tonic keeps one
//! buffer per stream and direction that grows to the largest message ever seen and is never
//! shrunk, which at thousands of long-lived ADS streams (responses of hundreds of KiB,
//! requests naming every resource a proxy holds) is most of the server's memory. Here each
//! response is framed by the stream's task into a buffer of its own size that is freed once
//! written, and a request is gathered in a buffer that is released as soon as it is decoded.
//! The stream ends with gRPC trailers (`grpc-status`, and `grpc-message` on error).
//! Compressed requests are refused; responses are not compressed.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use http_body::{Body, Frame};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use super::Ads;
use crate::ca::authn::Caller;

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
            let caller = Caller::from_request(&tonic::Request::from_parts(
                tonic::metadata::MetadataMap::from_headers(parts.headers),
                parts.extensions,
                (),
            ));
            let response = match path.as_str() {
                STREAM_PATH => {
                    ads.open::<xds_discovery::DiscoveryRequest>(caller, Requests::new(body))
                        .await
                }
                DELTA_PATH => {
                    ads.open::<xds_discovery::DeltaDiscoveryRequest>(caller, Requests::new(body))
                        .await
                }
                other => Err(Status::unimplemented(format!("no method {other}"))),
            }
            .map(|responses| tonic::body::Body::new(Framed::new(responses)));
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

/// A request stream: one protobuf message per gRPC frame, gathered in a buffer that is
/// released whenever no partial message is left in it.
pub struct Requests<T> {
    body: tonic::body::Body,
    buf: BytesMut,
    done: bool,
    _message: std::marker::PhantomData<fn() -> T>,
}

impl<T: Message + Default> Requests<T> {
    pub fn new(body: tonic::body::Body) -> Requests<T> {
        Requests {
            body,
            buf: BytesMut::new(),
            done: false,
            _message: std::marker::PhantomData,
        }
    }

    /// The next request; `None` when the client has finished sending.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(message) = self.decode()? {
                return Ok(Some(message));
            }
            if self.done {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(Status::internal("request stream ended inside a message")),
                };
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None => self.done = true,
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The first whole message in the buffer, if there is one.
    fn decode(&mut self) -> Result<Option<T>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::internal(
                "compressed request without a grpc-encoding",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_REQUEST {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes exceeds the {MAX_REQUEST}-byte limit"
            )));
        }
        if self.buf.len() < 5 + len {
            // The buffer grows with what arrives, not with what the header announces.
            return Ok(None);
        }
        let mut message = self.buf.split_to(5 + len);
        message.advance(5);
        if self.buf.is_empty() {
            // Nothing pending: let the allocation go with the decoded message.
            self.buf = BytesMut::new();
        }
        T::decode(message)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}

/// What a stream's task sends towards its client: a framed response, or the status that ends
/// the stream (boxed, so the per-stream queue stays small).
pub type Outgoing = Result<Bytes, Box<Status>>;

/// A response stream as an HTTP body: the framed responses its task queues, then the
/// trailers.
struct Framed {
    responses: Option<mpsc::Receiver<Outgoing>>,
}

impl Framed {
    fn new(responses: mpsc::Receiver<Outgoing>) -> Framed {
        Framed {
            responses: Some(responses),
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
pub fn frame<T: Message>(message: &T) -> Result<Bytes, Status> {
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

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(responses) = this.responses.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match responses.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(status))) => *status,
            Poll::Ready(None) => Status::ok(""),
        };
        this.responses = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.responses.is_none()
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

    /// A request body delivered in the given chunks.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn requests(chunks: Vec<Bytes>) -> Requests<xds_discovery::DiscoveryRequest> {
        Requests::new(tonic::body::Body::new(Chunks(chunks.into())))
    }

    fn request(nonce: &str) -> xds_discovery::DiscoveryRequest {
        xds_discovery::DiscoveryRequest {
            response_nonce: nonce.into(),
            resource_names: (0..50).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn requests_are_decoded_across_and_within_chunks() {
        let (a, b, c) = (
            frame(&request("1")).unwrap(),
            frame(&request("2")).unwrap(),
            frame(&request("3")).unwrap(),
        );
        // `a` split in three (inside the header, inside the body); `b` and `c` in one chunk.
        let mut both = a.slice(200..).to_vec();
        both.extend_from_slice(&b);
        both.extend_from_slice(&c);
        let mut stream = requests(vec![a.slice(..3), a.slice(3..200), Bytes::from(both)]);
        for nonce in ["1", "2", "3"] {
            let got = stream.message().await.unwrap().unwrap();
            assert_eq!(got, request(nonce));
        }
        assert_eq!(
            stream.buf.capacity(),
            0,
            "no buffer is kept between requests"
        );
        assert!(stream.message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_request_frames_end_the_stream() {
        let whole = frame(&request("1")).unwrap();
        let mut truncated = requests(vec![whole.slice(..whole.len() - 1)]);
        assert_eq!(
            truncated.message().await.unwrap_err().code(),
            tonic::Code::Internal
        );
        let mut compressed = whole.to_vec();
        compressed[0] = 1;
        let mut compressed = requests(vec![Bytes::from(compressed)]);
        assert_eq!(
            compressed.message().await.unwrap_err().code(),
            tonic::Code::Internal
        );
        let mut huge = vec![0u8];
        huge.extend_from_slice(&((MAX_REQUEST + 1) as u32).to_be_bytes());
        let mut huge = requests(vec![Bytes::from(huge)]);
        assert_eq!(
            huge.message().await.unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        let mut garbage = vec![0u8, 0, 0, 0, 2, 0xff, 0xff];
        garbage.truncate(7);
        let mut garbage = requests(vec![Bytes::from(garbage)]);
        assert_eq!(
            garbage.message().await.unwrap_err().code(),
            tonic::Code::InvalidArgument
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
