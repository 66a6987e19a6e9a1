//! The `spec` of the `networking.istio.io` kinds bowline serves (VirtualService,
//! DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, Gateway) as serde structs that follow
//! the CRD schema field for field (v1, v1beta1 and v1alpha3 share it). Unknown fields are
//! rejected, optional fields default, durations stay strings (see [`parse_duration`]), and proto
//! `oneof`s are Rust enums whose deserialization refuses two members at once. Semantic checks
//! live in `validation`; this module only knows shapes.
//! One file per kind (WorkloadEntry with ServiceEntry, whose endpoints it shapes) and the types
//! and helpers several kinds share in `common`; every type is re-exported here, so paths stay
//! `networking::Name`.

mod common;
mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
