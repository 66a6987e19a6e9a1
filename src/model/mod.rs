//! The typed, validated view of the mesh.
//!
//! Contract: `model` turns parsed documents into immutable values: Istio resources as serde
//! structs that reject unknown fields (`networking`, `security`), the Kubernetes kinds read in file mode
//! (`kube`; `credential` reads gateways' certificates from Secrets), their validation (`validation`, shared by the CLI, the file source and the
//! webhook), the service registry built from Services, EndpointSlices, ServiceEntries and
//! WorkloadEntries (`registry`), mesh-wide settings (`mesh`), the proxy asking for config
//! (`proxy`) and the workload identity it has proven (`identity`). Nothing here does I/O,
//! knows tokio, gRPC, Envoy types or Kubernetes clients; an invalid resource becomes a
//! `Diagnostic`, never a panic.

pub mod auto_address;
pub mod credential;
pub mod diagnostic;
pub mod gateway;
pub mod identity;
pub mod index;
pub mod kube;
pub mod networking;
pub mod resource;
pub mod security;
pub mod validation;

pub use diagnostic::{Diagnostic, Severity};
pub use resource::{Kind, ObjectMeta, Parsed, Resource, ResourceKey, Spec};
pub mod config;
pub mod mesh;
pub mod proxy;
pub mod registry;
pub mod workload;

#[cfg(test)]
pub mod testing;

pub use config::{Change, Model};
pub use identity::Identity;
pub use mesh::MeshConfig;
pub use proxy::{Proxy, ProxyClass, SecretSource};
