#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bowline::cli::Cli::parse();
    match bowline::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bowline: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
