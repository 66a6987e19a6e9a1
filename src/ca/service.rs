//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, wire-compatible with istiod's, so
//! Istio's own agents can use bowline as their CA.
//!
//! Contract: the caller must authenticate (see [`super::authn`]); the certificate's only SAN is
//! the caller's SPIFFE ID, whatever the CSR asks for; the lifetime is the requested
//! `validity_duration`, capped at the workload TTL. The answer is the chain, leaf first, root
//! last. Refusals are logged with the caller's address, never with the CSR or a token; istiod's
//! `citadel_server_*` counters count requests, authentication failures and issued certificates.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::authn::{Authenticators, Caller};
use super::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use super::pb::{IstioCertificateRequest, IstioCertificateResponse};
use super::{Ca, CaError};

#[derive(Clone)]
pub struct CertificateService {
    ca: Arc<Ca>,
    authn: Authenticators,
}

impl CertificateService {
    pub fn new(ca: Arc<Ca>, authn: Authenticators) -> CertificateService {
        CertificateService { ca, authn }
    }

    pub fn into_service(self) -> IstioCertificateServiceServer<CertificateService> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        metrics::counter!("citadel_server_csr_count").increment(1);
        let caller = Caller::from_request(&request);
        let remote = caller
            .remote
            .map(|r| r.to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let identity = match self.authn.authenticate(&caller).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                metrics::counter!("citadel_server_authentication_failure_count").increment(1);
                tracing::warn!(%remote, "certificate refused: the caller presented no credential");
                return Err(Status::unauthenticated(
                    "authenticate with a bowline token (authorization: Bearer) or a client certificate",
                ));
            }
            Err(e) => {
                metrics::counter!("citadel_server_authentication_failure_count").increment(1);
                tracing::warn!(%remote, error = %e, "certificate refused: authentication failed");
                return Err(Status::unauthenticated(format!(
                    "authentication failed: {e}"
                )));
            }
        };
        let req = request.into_inner();
        let ttl = Duration::from_secs(u64::try_from(req.validity_duration).unwrap_or_default());
        match self.ca.sign_csr(&identity, &req.csr, ttl) {
            Ok(cert_chain) => {
                tracing::info!(%remote, identity = %identity, "certificate signed");
                metrics::counter!("citadel_server_success_cert_issuance_count").increment(1);
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(e) => {
                match e {
                    CaError::Csr(_) => {
                        metrics::counter!("citadel_server_csr_parsing_err_count").increment(1)
                    }
                    _ => metrics::counter!("citadel_server_csr_sign_err_count").increment(1),
                }
                tracing::warn!(%remote, identity = %identity, error = %e, "certificate refused");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }
}
