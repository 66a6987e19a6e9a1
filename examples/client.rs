//! The demo's client loop: sends `GET /` with a Host header (default `echo`) to the client-side
//! Envoy listener (default 127.0.0.10:80) and prints, every second, which backend answered how
//! often, e.g. `v1: 41  v2: 9  errors: 0`. Bounded: stops after `--seconds`.
//!
//!     cargo run --example client -- --addr 127.0.0.10:80 --host echo --seconds 60
//!
//! The HTTP client is the test suite's (`tests/integration/common/http.rs`).

#[path = "../tests/integration/common/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::time::MissedTickBehavior;

#[derive(Parser)]
#[command(about = "Send requests through Envoy and print who answered, once a second")]
struct Args {
    /// Envoy listener to send requests to.
    #[arg(long, default_value = "127.0.0.10:80")]
    addr: SocketAddr,
    /// Host header (the service name).
    #[arg(long, default_value = "echo")]
    host: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rate > 0 && args.rate <= 10_000,
        "--rate must be 1..=10000"
    );
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut client = http::HttpClient::new(args.addr).with_timeout(Duration::from_secs(2));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = http::Tally::default();
    let mut second = http::Tally::default();
    let mut window = Instant::now();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    eprintln!(
        "sending {} requests/s to {} with Host: {} for {}s (Ctrl-C stops)",
        args.rate, args.addr, args.host, args.seconds
    );
    while Instant::now() < end {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = ticker.tick() => {}
        }
        let r = client.get(&args.host, &args.path, &[]).await;
        second.record(r);
        if window.elapsed() >= Duration::from_secs(1) {
            for name in second.counts.keys() {
                names.insert(name.clone(), 0);
            }
            add(&mut total, &second);
            let line: Vec<String> = names
                .keys()
                .map(|name| format!("{name}: {}", second.count(name)))
                .chain([format!("errors: {}", second.errors)])
                .collect();
            let mut line = line.join("  ");
            if let Some(e) = &second.last_error {
                line.push_str(&format!("  (last error: {e})"));
            }
            println!("{line}");
            second = http::Tally::default();
            window = Instant::now();
        }
    }
    add(&mut total, &second);
    println!("total: {total}");
    Ok(())
}

fn add(total: &mut http::Tally, part: &http::Tally) {
    for (name, n) in &part.counts {
        *total.counts.entry(name.clone()).or_default() += n;
    }
    total.errors += part.errors;
    total.sent += part.sent;
    if part.last_error.is_some() {
        total.last_error.clone_from(&part.last_error);
    }
}
