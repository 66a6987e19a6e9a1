//! `bowline load`: an ADS load generator for any xDS server (bowline, istiod, ...).
//!
//! Contract: from a scenario (the mesh, the proxies, a timeline of changes) it writes the
//! mesh as Istio/Kubernetes YAML into a config directory the server watches, opens one ADS
//! stream per simulated proxy — each with its own node id and metadata, state of the world or
//! delta, subscribing and ACKing as Envoy does — then makes each change by writing a file (or
//! restarting a server it runs) and measures, per proxy, the time from the change to the ACK
//! of the push that brought the expected state. What "converged" means is explicit per change
//! (a marker route present, an endpoint address present or gone, a cluster present); nothing
//! is inferred from the server's versions, so the same run works against any server. The
//! result is a `Report`: convergence percentiles, responses and bytes per proxy, errors (a
//! resource that does not decode; nothing is ever NACKed), connect times, and the server's
//! CPU and peak RSS when its pid is known. Every wait is bounded in time and every loop in
//! count; traffic goes to the given address only (loopback unless the caller allows more).

pub mod client;
pub mod decode;
pub mod mesh;
pub mod report;
pub mod run;
pub mod scenario;
pub mod server;
pub mod template;

pub use report::Report;
pub use run::{Options, run};
pub use scenario::Scenario;

/// Errors of a load run. A run that completes but does not converge is not an error: the
/// report says so.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("scenario {file}: {message}")]
    Scenario { file: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("config directory: {0}")]
    ConfigDir(String),
    #[error("server: {0}")]
    Server(String),
    #[error("timeline step: {0}")]
    Step(String),
    #[error("istio benchmark {file}: {source}")]
    Template {
        file: String,
        source: template::TemplateError,
    },
}
