//! The command line: `serve`, `validate`, `bootstrap`, `token`, `inject`, `istio-iptables`,
//! `load`, and istioctl's views of the proxies, `proxy-status` and `proxy-config`.
//!
//! Contract: parse arguments, call the stages, print. Errors here are `anyhow` and end the
//! process with a one-line message and a non-zero exit.

pub mod bootstrap;
pub mod inject;
pub mod istio_iptables;
pub mod load;
pub mod proxy;
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
    /// Inject the stock Envoy sidecar into Pods and workloads' pod templates (as
    /// `istioctl kube-inject`); prints YAML.
    Inject(inject::InjectArgs),
    /// Install istio-init's traffic capture (iptables NAT rules) in this network namespace;
    /// the injected `istio-init` container runs it.
    IstioIptables(istio_iptables::IstioIptablesArgs),
    /// Load an xDS server with simulated proxies and measure convergence (see testdata/load/).
    Load(load::LoadArgs),
    /// Print each connected proxy's sync state, as `istioctl proxy-status` (asks bowline's
    /// xDS port for `istio.io/debug/syncz`, proving an identity with a client certificate of
    /// the mesh's CA or a token); with a proxy, compare what bowline sent it with what its Envoy
    /// holds.
    ProxyStatus(proxy::ProxyStatusArgs),
    /// Print an Envoy's clusters, listeners, routes, endpoints, secrets or bootstrap from its
    /// config dump (its admin API or a saved file), as `istioctl proxy-config`.
    ProxyConfig(proxy::ProxyConfigArgs),
    /// Print a token that proves a workload identity to bowline (signed with the key in
    /// --ca-dir), for `authorization: Bearer` or an Istio agent.
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[arg(long = "ca-dir")]
    pub ca_dir: std::path::PathBuf,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long = "service-account", default_value = "default")]
    pub service_account: String,
    #[arg(long = "trust-domain", default_value = "cluster.local")]
    pub trust_domain: String,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = |s: &str| crate::model::networking::parse_duration(s))]
    pub ttl: std::time::Duration,
}

pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Load(args) => load::run(args),
        Command::Inject(args) => inject::run(args),
        Command::IstioIptables(args) => istio_iptables::run(args),
        Command::ProxyStatus(args) => proxy::run_status(args),
        Command::ProxyConfig(args) => proxy::run_config(args),
        Command::Token(args) => {
            let token = bootstrap::sign_token(
                &args.ca_dir,
                &args.trust_domain,
                &args.namespace,
                &args.service_account,
                args.ttl,
            )?;
            println!("{token}");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
