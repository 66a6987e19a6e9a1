//! bowline: a service-mesh control plane that reads Istio configuration and serves it to stock
//! Envoy over xDS.
//!
//! The crate is laid out as the pipeline it implements:
//! `source` → `model` → `translate` → `cache` → `xds`, with `ca`, `webhook`, `admin`, `cli` and
//! `load` (the ADS load generator) at the edges; `envoy` is the Envoy vocabulary (resource
//! types, message packing and JSON) the stages share; `net` admits plaintext connections.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod cache;
pub mod cli;
pub mod envoy;
pub mod load;
pub mod model;
pub mod monitoring;
pub mod net;
pub mod push;
pub mod source;
pub mod translate;
pub mod webhook;
pub mod xds;
