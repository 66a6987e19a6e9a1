//! `bowline validate -f PATH...`: the same parsing and validation the server and the webhook
//! use, one line per problem: `<file>:<kind>/<namespace>/<name>: <field>: <message>`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::model::resource::parse_yaml;
use crate::source::file::{read_regular, yaml_files};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A YAML file, a directory (searched recursively for *.yaml, *.yml), or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also print warnings (they never fail validation).
    #[arg(long)]
    pub warnings: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut inputs: Vec<(String, String)> = Vec::new();
    // What is in the directories but cannot be read: each is one invalid input.
    let mut unreadable: Vec<String> = Vec::new();
    for path in &args.files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            inputs.push(("-".to_string(), text));
        } else if path.is_dir() {
            let listing =
                yaml_files(path).with_context(|| format!("reading {}", path.display()))?;
            unreadable.extend(listing.problems.iter().map(|d| d.to_string()));
            for file in listing.files {
                // Regular files only, opened without blocking (a FIFO would hang the read).
                match read_regular(&file) {
                    Ok(text) => inputs.push((file.display().to_string(), text)),
                    Err(e) => unreadable.push(format!("{}: cannot read: {e}", file.display())),
                }
            }
        } else {
            let text = read_regular(path).with_context(|| format!("reading {}", path.display()))?;
            inputs.push((path.display().to_string(), text));
        }
    }
    let mut invalid = unreadable.len();
    let mut valid = 0usize;
    for line in &unreadable {
        println!("{line}");
    }
    for (origin, text) in &inputs {
        for doc in parse_yaml(text, origin) {
            if doc.resource.is_some() {
                valid += 1;
            } else {
                invalid += 1;
            }
            for d in doc.diagnostics {
                if d.is_error() || args.warnings {
                    println!("{d}");
                }
            }
        }
    }
    eprintln!("{valid} valid, {invalid} invalid");
    Ok(if invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
