//! bowline: a service-mesh control plane that reads Istio configuration and serves it to stock
//! Envoy over xDS.
//!
//! The crate is laid out as the pipeline it implements:
//! `source` → `model` → `translate` → `cache` → `xds`, with `admin` and `cli` at the edges.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod cache;
pub mod cli;
pub mod model;
pub mod source;
pub mod translate;
pub mod xds;
