//! Inbound mutual TLS: which mode a workload port accepts (istiod's `MTLSSettings`) and the
//! filter chains that implement it.
//!
//! STRICT accepts only mTLS; PERMISSIVE accepts mTLS (TLS carrying one of istiod's mesh ALPN
//! values, told apart by the `tls_inspector` listener filter) and plaintext; DISABLE accepts
//! plaintext only. A proxy without a workload certificate cannot terminate mTLS and is always
//! DISABLE; one with a certificate defaults to PERMISSIVE, as istiod does without a
//! PeerAuthentication.

use super::scope::Scope;

/// The mTLS mode of an inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    Strict,
    Permissive,
    Disable,
}

/// The mode for `port` (a workload port), or for traffic to ports the proxy does not know
/// (`None`: the passthrough chains).
pub fn inbound_mode(scope: &Scope, _port: Option<u16>) -> MtlsMode {
    if !scope.proxy.workload_certificate {
        return MtlsMode::Disable;
    }
    MtlsMode::Permissive
}
