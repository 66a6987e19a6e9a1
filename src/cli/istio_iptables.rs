//! `bowline istio-iptables`: the traffic capture istio-init installs in a pod's network
//! namespace, for a stock Envoy sidecar (the injected `istio-init` container runs it).
//!
//! The flags are istio-iptables' own (`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x ''
//! -b '*' -d 15090,15021,15020 [-o PORTS]`), and so are the NAT rules: chains ISTIO_INBOUND,
//! ISTIO_REDIRECT, ISTIO_IN_REDIRECT and ISTIO_OUTPUT; inbound TCP to the inbound capture port
//! (15006) except excluded ports; outbound TCP to the proxy port (15001) except the proxy's own
//! (uid/gid 1337), loopback, 127.0.0.6 (inbound passthrough) and excluded ranges and ports.
//! IPv4 only, REDIRECT only (TPROXY and DNS capture need istio-agent's companions).
//!
//! [`rules`] is pure; the rules are applied atomically with `iptables-restore --noflush`, or
//! with one `iptables` command each when there is no `iptables-restore`. `--dry-run` prints
//! them instead. Arguments after `--` are a bowline command run first (the injected init
//! container writes the Envoy bootstrap with `-- bootstrap ...`): it has no side effects on
//! the network, so a failed bootstrap leaves the namespace untouched.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;

#[derive(Debug, Clone, clap::Args)]
pub struct IstioIptablesArgs {
    /// Port outbound TCP is redirected to (Envoy's `virtualOutbound` listener).
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    pub proxy_port: u16,
    /// Port inbound TCP is redirected to (Envoy's `virtualInbound` listener).
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    pub inbound_capture_port: u16,
    /// The HBONE tunnel port, never captured.
    #[arg(short = 'e', long = "inbound-tunnel-port", default_value_t = 15008)]
    pub inbound_tunnel_port: u16,
    /// The proxy's user id(s), comma-separated: their traffic is not captured.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    pub proxy_uid: String,
    /// The proxy's group id(s), comma-separated (default: the user ids).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT, or NONE (no rules at all).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    pub mode: String,
    /// Inbound ports to capture, comma-separated, or `*` (all); empty captures no inbound.
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "")]
    pub inbound_ports: String,
    /// Inbound ports never captured when `-b` is `*`.
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "")]
    pub inbound_exclude_ports: String,
    /// Outbound destination ranges to capture (CIDRs, comma-separated), or `*` (all).
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "")]
    pub outbound_ranges: String,
    /// Outbound destination ranges never captured.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    pub outbound_exclude_ranges: String,
    /// Outbound destination ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    pub outbound_exclude_ports: String,
    /// Outbound destination ports always captured, whatever the destination.
    #[arg(short = 'q', long = "istio-local-outbound-ports", default_value = "")]
    pub outbound_ports: String,
    /// Print the rules (iptables-restore input) instead of applying them; the command after
    /// `--` is not run.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    /// A bowline command to run before the rules are applied, e.g. `-- bootstrap -o FILE ...`.
    #[arg(last = true)]
    pub then: Vec<String>,
}

/// One rule of the `nat` table: the chain it is appended to and its match and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub args: Vec<String>,
}

/// The chains to create and the rules to append, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub chains: Vec<&'static str>,
    pub rules: Vec<Rule>,
}

pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn ports(flag: &str, s: &str) -> anyhow::Result<Vec<String>> {
    split(s)
        .map(|p| {
            p.parse::<u16>()
                .map(|n| n.to_string())
                .map_err(|_| anyhow::anyhow!("{flag}: {p:?} is not a port"))
        })
        .collect()
}

fn ids(flag: &str, s: &str) -> anyhow::Result<Vec<String>> {
    split(s)
        .map(|p| {
            p.parse::<u32>()
                .map(|n| n.to_string())
                .map_err(|_| anyhow::anyhow!("{flag}: {p:?} is not a numeric id"))
        })
        .collect()
}

/// Destination ranges: `*`, or IPv4 CIDRs (bare addresses are /32). IPv6 entries are
/// skipped, as the IPv4 table istio-iptables writes skips them.
enum Ranges {
    All,
    Some(Vec<Ipv4Net>),
}

fn ranges(flag: &str, s: &str) -> anyhow::Result<Ranges> {
    if s.trim() == "*" {
        return Ok(Ranges::All);
    }
    let mut out = Vec::new();
    for r in split(s) {
        if r.contains(':') {
            continue;
        }
        let net = match r.parse::<Ipv4Net>() {
            Ok(n) => n,
            Err(_) => match r.parse::<Ipv4Addr>() {
                Ok(a) => Ipv4Net::from(a),
                Err(_) => bail!("{flag}: {r:?} is not an IPv4 CIDR"),
            },
        };
        out.push(net.trunc());
    }
    Ok(Ranges::Some(out))
}

fn rule(chain: &'static str, args: &[&str]) -> Rule {
    Rule {
        chain,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

/// The NAT rules istio-init installs for these flags (REDIRECT mode, IPv4).
pub fn rules(args: &IstioIptablesArgs) -> anyhow::Result<Rules> {
    match args.mode.as_str() {
        "REDIRECT" => {}
        "NONE" => return Ok(Rules::default()),
        other => bail!("-m: {other:?} is not supported (REDIRECT or NONE)"),
    }
    let uids = ids("-u", &args.proxy_uid)?;
    let gids = match &args.proxy_gid {
        Some(g) => ids("-g", g)?,
        None => uids.clone(),
    };
    let inbound_all = args.inbound_ports.trim() == "*";
    let inbound = if inbound_all {
        Vec::new()
    } else {
        ports("-b", &args.inbound_ports)?
    };
    let inbound_exclude = ports("-d", &args.inbound_exclude_ports)?;
    let outbound_exclude = ports("-o", &args.outbound_exclude_ports)?;
    let outbound_include = ports("-q", &args.outbound_ports)?;
    let include = ranges("-i", &args.outbound_ranges)?;
    let Ranges::Some(exclude) = ranges("-x", &args.outbound_exclude_ranges)? else {
        bail!("-x: `*` is not a valid exclusion");
    };
    let include_loopback =
        matches!(&include, Ranges::Some(nets) if nets.iter().any(|n| n.addr().is_loopback()));
    let (proxy, inbound_capture, tunnel) = (
        args.proxy_port.to_string(),
        args.inbound_capture_port.to_string(),
        args.inbound_tunnel_port.to_string(),
    );

    let mut r = Vec::new();
    r.push(rule(
        ISTIO_INBOUND,
        &["-p", "tcp", "--dport", &tunnel, "-j", "RETURN"],
    ));
    r.push(rule(
        ISTIO_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &proxy],
    ));
    r.push(rule(
        ISTIO_IN_REDIRECT,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &inbound_capture,
        ],
    ));
    // Inbound: everything but the excluded ports, or only the listed ones.
    if inbound_all || !inbound.is_empty() {
        r.push(rule("PREROUTING", &["-p", "tcp", "-j", ISTIO_INBOUND]));
        if inbound_all {
            for port in &inbound_exclude {
                r.push(rule(
                    ISTIO_INBOUND,
                    &["-p", "tcp", "--dport", port, "-j", "RETURN"],
                ));
            }
            r.push(rule(ISTIO_INBOUND, &["-p", "tcp", "-j", ISTIO_IN_REDIRECT]));
        } else {
            for port in &inbound {
                r.push(rule(
                    ISTIO_INBOUND,
                    &["-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT],
                ));
            }
        }
    }
    // Outbound.
    r.push(rule("OUTPUT", &["-j", ISTIO_OUTPUT]));
    for port in &outbound_exclude {
        for proto in ["tcp", "udp"] {
            r.push(rule(
                ISTIO_OUTPUT,
                &["-p", proto, "--dport", port, "-j", "RETURN"],
            ));
        }
    }
    // 127.0.0.6 is the source the inbound passthrough cluster binds.
    r.push(rule(
        ISTIO_OUTPUT,
        &["-o", "lo", "-s", "127.0.0.6/32", "-j", "RETURN"],
    ));
    for (owner, list) in [("--uid-owner", &uids), ("--gid-owner", &gids)] {
        for id in list {
            // The proxy calling its own pod through a service VIP goes back through the
            // inbound side: app → Envoy (client) → Envoy (server) → app.
            r.push(rule(
                ISTIO_OUTPUT,
                &[
                    "-o",
                    "lo",
                    "!",
                    "-d",
                    "127.0.0.1/32",
                    "-p",
                    "tcp",
                    "!",
                    "--dport",
                    &tunnel,
                    "-m",
                    "owner",
                    owner,
                    id,
                    "-j",
                    ISTIO_IN_REDIRECT,
                ],
            ));
            // The app calling itself over loopback is left alone...
            if !include_loopback {
                r.push(rule(
                    ISTIO_OUTPUT,
                    &["-o", "lo", "-m", "owner", "!", owner, id, "-j", "RETURN"],
                ));
            }
            // ...and so is everything else the proxy sends (no loops).
            r.push(rule(
                ISTIO_OUTPUT,
                &["-m", "owner", owner, id, "-j", "RETURN"],
            ));
        }
    }
    r.push(rule(ISTIO_OUTPUT, &["-d", "127.0.0.1/32", "-j", "RETURN"]));
    for net in &exclude {
        r.push(rule(
            ISTIO_OUTPUT,
            &["-d", &net.to_string(), "-j", "RETURN"],
        ));
    }
    for port in &outbound_include {
        r.push(rule(
            ISTIO_OUTPUT,
            &["-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT],
        ));
    }
    match &include {
        Ranges::All => r.push(rule(ISTIO_OUTPUT, &["-j", ISTIO_REDIRECT])),
        Ranges::Some(nets) => {
            for net in nets {
                r.push(rule(
                    ISTIO_OUTPUT,
                    &["-d", &net.to_string(), "-j", ISTIO_REDIRECT],
                ));
            }
        }
    }
    Ok(Rules {
        chains: vec![
            ISTIO_INBOUND,
            ISTIO_REDIRECT,
            ISTIO_IN_REDIRECT,
            ISTIO_OUTPUT,
        ],
        rules: r,
    })
}

/// iptables' own quoting is needed only for empty or spaced arguments, which no rule has.
fn join(args: &[String]) -> String {
    args.join(" ")
}

impl Rules {
    /// `iptables-restore` input (for `--noflush`: creates the chains, appends the rules).
    pub fn restore_text(&self) -> String {
        if self.chains.is_empty() && self.rules.is_empty() {
            return String::new();
        }
        let mut out = String::from("* nat\n");
        for chain in &self.chains {
            out.push_str(&format!("-N {chain}\n"));
        }
        for r in &self.rules {
            out.push_str(&format!("-A {} {}\n", r.chain, join(&r.args)));
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The same rules as `iptables` invocations (arguments after `iptables`).
    pub fn commands(&self) -> Vec<Vec<String>> {
        let nat = |v: &[&str]| -> Vec<String> {
            ["-t", "nat"]
                .iter()
                .chain(v)
                .map(|s| s.to_string())
                .collect()
        };
        let mut out: Vec<Vec<String>> = self.chains.iter().map(|c| nat(&["-N", c])).collect();
        for r in &self.rules {
            let mut cmd = nat(&["-A", r.chain]);
            cmd.extend(r.args.iter().cloned());
            out.push(cmd);
        }
        out
    }
}

fn apply(rules: &Rules) -> anyhow::Result<()> {
    if rules.rules.is_empty() {
        return Ok(());
    }
    let text = rules.restore_text();
    match Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(text.as_bytes())
                    .context("writing to iptables-restore")?;
            }
            let out = child.wait_with_output().context("iptables-restore")?;
            if !out.status.success() {
                bail!(
                    "iptables-restore failed ({}): {}\ninput:\n{text}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no iptables-restore; applying the rules one iptables command at a time");
            for cmd in rules.commands() {
                let out = Command::new("iptables")
                    .args(&cmd)
                    .output()
                    .context("running iptables")?;
                if !out.status.success() {
                    bail!(
                        "iptables {} failed: {}",
                        cmd.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e).context("running iptables-restore"),
    }
}

pub fn run(args: IstioIptablesArgs) -> anyhow::Result<ExitCode> {
    let rules = rules(&args)?;
    if args.dry_run {
        print!("{}", rules.restore_text());
        return Ok(ExitCode::SUCCESS);
    }
    if !args.then.is_empty() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(
            std::iter::once("bowline".to_string()).chain(args.then.clone()),
        )
        .context("the command after --")?;
        match cli.command {
            super::Command::Bootstrap(b) => {
                super::bootstrap::run(b).context("the command after --")?;
            }
            _ => bail!("after --, only `bootstrap` may run"),
        }
    }
    apply(&rules)?;
    eprintln!(
        "istio-iptables: {} rules applied\n{}",
        rules.rules.len(),
        rules.restore_text()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: IstioIptablesArgs,
    }

    fn parse(argv: &[&str]) -> IstioIptablesArgs {
        Wrap::try_parse_from(std::iter::once("istio-iptables").chain(argv.iter().copied()))
            .expect("flags parse")
            .args
    }

    fn text(argv: &[&str]) -> String {
        rules(&parse(argv)).expect("rules").restore_text()
    }

    /// Istio's `inbound-ports-wildcard` golden case (its test config has uid and gid 1337 and
    /// no outbound ranges).
    #[test]
    fn matches_istio_inbound_wildcard() {
        let got = text(&["-b", "*"]);
        let want = "* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
";
        assert_eq!(got, want);
    }

    /// What the injected istio-init runs by default: all inbound but the proxy's admin ports,
    /// all outbound.
    #[test]
    fn injected_defaults() {
        let got = text(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ]);
        for line in [
            "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN\n-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n",
        ] {
            assert!(got.contains(line), "{line} in\n{got}");
        }
    }

    #[test]
    fn outbound_ranges_and_ports() {
        let got = text(&[
            "-i",
            "10.0.0.0/8, 172.16.0.1,fd00::/8",
            "-x",
            "10.96.0.0/12",
            "-o",
            "3306",
            "-b",
            "8080,9090",
        ]);
        for line in [
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT\n-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT\n",
            "-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN\n-A ISTIO_OUTPUT -p udp --dport 3306 -j RETURN\n-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN\n",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 172.16.0.1/32 -j ISTIO_REDIRECT\nCOMMIT\n",
        ] {
            assert!(got.contains(line), "{line} in\n{got}");
        }
        assert!(
            !got.contains("fd00"),
            "IPv6 ranges are not in the IPv4 table"
        );
        assert!(!got.contains("--dport 15090"));
    }

    /// An included loopback range keeps the app's loopback traffic captured (istio's
    /// `loopback-outbound-iprange`).
    #[test]
    fn loopback_include() {
        let got = text(&["-i", "127.1.2.3/32"]);
        assert!(!got.contains("! --uid-owner"), "{got}");
        assert!(got.contains("-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT\n"));
    }

    #[test]
    fn no_inbound_without_ports() {
        let got = text(&["-i", "*"]);
        assert!(!got.contains("PREROUTING"), "{got}");
        assert!(got.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"));
    }

    #[test]
    fn none_mode_installs_nothing() {
        assert_eq!(text(&["-m", "NONE", "-b", "*", "-i", "*"]), "");
    }

    #[test]
    fn bad_flags_are_errors() {
        for argv in [
            &["-m", "TPROXY"][..],
            &["-b", "80,http"],
            &["-i", "10.0.0.0/33"],
            &["-x", "*"],
            &["-u", "envoy"],
        ] {
            assert!(rules(&parse(argv)).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn commands_match_restore_text() {
        let r = rules(&parse(&[
            "-b",
            "*",
            "-d",
            "22",
            "-i",
            "*",
            "-g",
            "1337,1338",
        ]))
        .expect("rules");
        let cmds = r.commands();
        assert_eq!(cmds[0], ["-t", "nat", "-N", "ISTIO_INBOUND"]);
        assert_eq!(cmds.len(), r.chains.len() + r.rules.len());
        let from_cmds: Vec<String> = cmds[4..].iter().map(|c| c[2..].join(" ")).collect();
        let text = r.restore_text();
        let from_text: Vec<&str> = text.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(from_cmds, from_text);
        assert!(r.restore_text().contains("--gid-owner 1338"));
    }

    #[test]
    fn then_is_a_bootstrap_command() {
        let args = parse(&[
            "-b",
            "*",
            "--",
            "bootstrap",
            "--name",
            "p",
            "--ip",
            "10.0.0.1",
        ]);
        assert_eq!(args.then, ["bootstrap", "--name", "p", "--ip", "10.0.0.1"]);
        assert_eq!(args.inbound_ports, "*");
    }

    /// The injected istio-init's arguments are this command's, and the command after `--`
    /// writes a bootstrap for the pod from the files the pod mounts (here in a temporary
    /// directory) and the downward-API values the kubelet substitutes.
    #[test]
    fn injected_init_container_runs_this_command() {
        use crate::webhook::inject::{Options, Outcome, inject_pod};
        let dir = std::env::temp_dir().join(format!("bowline-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pod = serde_json::json!({
            "metadata": {"name": "web-0", "labels": {"app": "web"},
                "annotations": {"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.0/12"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]}
        });
        let Ok(Outcome::Injected { pod, .. }) =
            inject_pod(&pod, "web", &Options::new("mesh-system"))
        else {
            panic!("not injected");
        };
        let args: Vec<String> = pod["spec"]["initContainers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| {
                a.as_str()
                    .expect("string")
                    .replace("$(POD_NAME)", "web-0")
                    .replace("$(POD_NAMESPACE)", "shop")
                    .replace("$(INSTANCE_IP)", "10.244.0.7")
                    .replace("$(SERVICE_ACCOUNT)", "web-sa")
                    .replace("/etc/istio/pod", &dir.display().to_string())
                    .replace("/etc/istio/proxy", &dir.display().to_string())
                    .replace("/var/run/secrets/tokens", &dir.display().to_string())
                    .replace("/var/run/secrets/istio", &dir.display().to_string())
            })
            .collect();
        std::fs::write(
            dir.join("labels"),
            "app=\"web\"\nsecurity.istio.io/tlsMode=\"istio\"\n",
        )
        .expect("labels");
        std::fs::write(dir.join("istio-token"), "a-token\n").expect("token");
        std::fs::write(
            dir.join("root-cert.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("root");
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("bowline".to_string()).chain(args))
                .expect("istio-init's arguments parse");
        let crate::cli::Command::IstioIptables(iptables) = cli.command else {
            panic!("not istio-iptables");
        };
        let text = rules(&iptables).expect("rules").restore_text();
        assert!(
            text.contains("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n"),
            "{text}"
        );
        let then = crate::cli::Cli::try_parse_from(
            std::iter::once("bowline".to_string()).chain(iptables.then.clone()),
        )
        .expect("the bootstrap arguments parse");
        let crate::cli::Command::Bootstrap(b) = then.command else {
            panic!("not bootstrap");
        };
        crate::cli::bootstrap::run(b).expect("bootstrap written");
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("envoy.json")).expect("bootstrap file"),
        )
        .expect("bootstrap JSON");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            doc["node"]["id"],
            "sidecar~10.244.0.7~web-0.shop~shop.svc.cluster.local"
        );
        let meta = &doc["node"]["metadata"];
        assert_eq!(meta["SERVICE_ACCOUNT"], "web-sa");
        assert_eq!(meta["LABELS"]["security.istio.io/tlsMode"], "istio");
        let xds = &doc["static_resources"]["clusters"][0];
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["address"],
            "istiod.mesh-system.svc"
        );
        assert_eq!(
            xds["transport_socket"]["typed_config"]["sni"],
            "istiod.mesh-system.svc"
        );
        assert_eq!(
            doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]["value"],
            "Bearer a-token"
        );
        let ports: Vec<&serde_json::Value> = doc["static_resources"]["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .map(|l| &l["address"]["socket_address"]["port_value"])
            .collect();
        assert_eq!(ports, [15090, 15021]);
    }
}
