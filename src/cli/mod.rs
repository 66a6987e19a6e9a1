//! The command line: `serve`, `validate`, `bootstrap`, `load`.
//!
//! Contract: parse arguments, call the stages, print. Errors here are `anyhow` and end the
//! process with a one-line message and a non-zero exit.

pub mod bootstrap;
pub mod load;
pub mod serve;
pub mod validate;

use clap::{Parser, Subcommand};

/// bowline: a service-mesh control plane for stock Envoy that reads Istio configuration.
#[derive(Debug, Parser)]
#[command(name = "bowline", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve xDS to Envoy proxies from a directory of Istio and Kubernetes YAML.
    Serve(serve::ServeArgs),
    /// Check Istio and Kubernetes YAML; print one line per problem; exit 1 if any is invalid.
    Validate(validate::ValidateArgs),
    /// Print an Envoy bootstrap (JSON) that connects a stock Envoy to bowline over ADS.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Load an xDS server with simulated proxies and measure convergence (see testdata/load/).
    Load(load::LoadArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Load(args) => load::run(args),
    }
}
