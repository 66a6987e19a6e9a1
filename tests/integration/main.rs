//! bowline's integration tests, one binary (so the crate and its dependencies are linked once):
//! real bowline and real Envoy processes, a real Kubernetes API server, real mutual TLS, and the
//! differential and golden checks of translation. Each module is one area; `common` is the
//! shared harness. Run one area with `cargo test --test integration <module>::`.

mod common;

mod authz;
mod cache_incremental;
mod corpus_validation;
mod debug_xds;
mod e2e;
mod envoy_acceptance;
mod gateway;
mod gateway_kube;
mod gateway_sds;
mod golden;
mod inject;
mod istioctl;
mod kube;
mod load_smoke;
mod manifests;
mod mesh;
mod mesh_mtls;
mod metrics;
mod parts;
mod pilot_agent;
mod proxy_cli;
mod security;
mod traffic;
mod traffic_dr;
mod traffic_http;
mod trust_domain;
mod websocket;
mod xds_protocol;
