//! The server under test when `bowline load` runs it: spawn, wait until its xDS port accepts,
//! kill and restart; and its resource use read from `/proc` (peak RSS, CPU time), which also
//! works for an external server given its pid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::LoadError;

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A command line to run the server (no shell).
#[derive(Debug, Clone)]
pub struct ServerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The server's standard output and error go here (discarded when absent).
    pub log: Option<PathBuf>,
}

/// Resource use of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat` (`None` when the process is gone or
/// this is not Linux).
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The kernel's USER_HZ is 100 on every Linux platform Rust targets.
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
    Some(Usage {
        rss_bytes: kib("VmRSS:"),
        peak_rss_bytes: kib("VmHWM:"),
        cpu_seconds,
    })
}

/// A running server process.
pub struct Server {
    command: ServerCommand,
    addr: SocketAddr,
    child: Option<tokio::process::Child>,
    /// Peak RSS and CPU of earlier incarnations (before restarts).
    pub past_peak_rss: u64,
    pub past_cpu_seconds: f64,
    pub restarts: u32,
}

impl Server {
    /// Starts the server and waits until its xDS port accepts connections.
    pub async fn start(command: ServerCommand, addr: SocketAddr) -> Result<Server, LoadError> {
        let mut server = Server {
            command,
            addr,
            child: None,
            past_peak_rss: 0,
            past_cpu_seconds: 0.0,
            restarts: 0,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Resource use so far: current RSS, the peak over every incarnation, total CPU.
    pub fn usage(&self) -> Usage {
        let now = self.pid().and_then(usage).unwrap_or_default();
        Usage {
            rss_bytes: now.rss_bytes,
            peak_rss_bytes: now.peak_rss_bytes.max(self.past_peak_rss),
            cpu_seconds: now.cpu_seconds + self.past_cpu_seconds,
        }
    }

    async fn spawn(&mut self) -> Result<(), LoadError> {
        let (stdout, stderr) = match &self.command.log {
            Some(path) => {
                let io = |e| LoadError::Io {
                    what: format!("opening server log {}", path.display()),
                    source: e,
                };
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io)?;
                let copy = file.try_clone().map_err(io)?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let mut child = tokio::process::Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadError::Io {
                what: format!("starting {}", self.command.program.display()),
                source: e,
            })?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LoadError::Server(format!(
                    "{} exited with {status} before accepting connections",
                    self.command.program.display()
                )));
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.start_kill();
                return Err(LoadError::Server(format!(
                    "no connection accepted on {} within {}s",
                    self.addr,
                    READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server (SIGKILL, as when a pod is lost) and waits for it to exit.
    pub async fn kill(&mut self) -> Result<(), LoadError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(u) = child.id().and_then(usage) {
            self.past_peak_rss = self.past_peak_rss.max(u.peak_rss_bytes);
            self.past_cpu_seconds += u.cpu_seconds;
        }
        let _ = child.start_kill();
        tokio::time::timeout(EXIT_TIMEOUT, child.wait())
            .await
            .map_err(|_| LoadError::Server("the server did not exit after SIGKILL".into()))?
            .map_err(|e| LoadError::Io {
                what: "waiting for the server to exit".into(),
                source: e,
            })?;
        Ok(())
    }

    /// Kills and starts the server again.
    pub async fn restart(&mut self) -> Result<(), LoadError> {
        self.kill().await?;
        self.restarts += 1;
        self.spawn().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.peak_rss_bytes >= u.rss_bytes);
    }
}
