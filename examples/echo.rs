//! A tiny HTTP backend for the demo: answers every request with its name (body and `x-backend`
//! header), echoing the request path and headers in `x-echo-path` / `x-echo-headers`.
//!
//!     cargo run --example echo -- --addr 127.0.0.11:8080 --name v1
//!
//! The server code is the test suite's (`tests/integration/common/backend.rs`), so it is written once.

#[path = "../tests/integration/common/backend.rs"]
mod backend;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "HTTP backend that answers every request with its name")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.11:8080")]
    addr: SocketAddr,
    /// Name to answer with (e.g. the version: v1).
    #[arg(long, default_value = "v1")]
    name: String,
    /// Exit after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = backend::spawn_backend(args.addr, &args.name).await?;
    eprintln!("echo {}: listening on {}", server.name, server.addr);
    if args.seconds > 0 {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    eprintln!("echo {}: served {} requests", server.name, server.served());
    Ok(())
}
