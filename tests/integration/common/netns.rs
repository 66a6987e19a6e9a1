//! Network namespaces as pods: a namespace of the test's own (loopback only, with the addresses
//! the test gives it), istio-init's iptables capture, and running test code inside it.
//!
//! Code given to [`Netns::run`] runs on a thread that has entered the namespace, with a runtime
//! of its own: its sockets, and the processes it spawns, live in the namespace. Nothing is
//! routed out of it; the namespace is deleted on drop.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The group Envoy runs as; its own connections are not captured (istio-init excludes the
/// proxy's uid and gid 1337; the test excludes by group so Envoy keeps reading root's cache).
pub const PROXY_GID: u32 = 1337;

/// A namespace, deleted on drop; it derefs to its [`NsHandle`].
pub struct Netns {
    handle: NsHandle,
}

/// The name of a namespace, to act in it from anywhere (it does not own the namespace).
#[derive(Debug, Clone)]
pub struct NsHandle {
    pub name: String,
}

impl std::ops::Deref for Netns {
    type Target = NsHandle;
    fn deref(&self) -> &NsHandle {
        &self.handle
    }
}

fn missing(what: &str) -> Option<Netns> {
    assert!(!super::ci(), "CI=true: {what}");
    eprintln!("skipping: {what}");
    None
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Netns {
    /// Creates a namespace with `lo` up and `addresses` (IPv4, /32) on it, or returns `None`
    /// (after saying why) when this machine cannot: not root, or no `ip`/`iptables`. With
    /// `CI=true` that is a failure instead.
    pub fn create(tag: &str, addresses: &[&str]) -> Option<Netns> {
        if !nix::unistd::Uid::effective().is_root() {
            return missing("network namespace tests need root");
        }
        for tool in ["ip", "iptables"] {
            if run(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
                return missing(&format!("{tool} not found"));
            }
        }
        let name = format!(
            "bl-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        let ns = Netns {
            handle: NsHandle { name },
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        for a in addresses {
            ns.exec(&["ip", "addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        Some(ns)
    }
}

static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

/// Joins two namespaces with a veth pair: `a_ip` and `b_ip` (`/prefix`) on its ends, both up.
/// The pair lives in the namespaces and goes with them.
pub fn veth(a: &NsHandle, a_ip: &str, b: &NsHandle, b_ip: &str, prefix: u8) {
    let n = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
    let tag = std::process::id() % 100_000;
    let (na, nb) = (format!("bl{tag}x{n}a"), format!("bl{tag}x{n}b"));
    run(&[
        "ip", "link", "add", &na, "netns", &a.name, "type", "veth", "peer", "name", &nb, "netns",
        &b.name,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    for (ns, dev, ip) in [(a, &na, a_ip), (b, &nb, b_ip)] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/{prefix}"), "dev", dev]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
}

impl NsHandle {
    /// istio-init's inbound capture: every TCP connection arriving at the namespace is
    /// redirected to the proxy's inbound port.
    pub fn capture_inbound(&self, inbound_port: u16) {
        let port = inbound_port.to_string();
        let rules: [&[&str]; 3] = [
            &["-N", "ISTIO_INBOUND"],
            &[
                "-A",
                "ISTIO_INBOUND",
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ],
            &["-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"],
        ];
        for rule in rules {
            let mut args = vec!["iptables", "-t", "nat"];
            args.extend_from_slice(rule);
            self.exec(&args);
        }
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full).unwrap_or_else(|e| panic!("{e}"));
    }

    /// istio-init's outbound capture: TCP from anyone but the proxy's group, to anything but
    /// loopback, is redirected to the proxy's outbound port.
    pub fn capture_outbound(&self, proxy_port: u16) {
        let port = proxy_port.to_string();
        let rules: [&[&str]; 6] = [
            &["-N", "ISTIO_REDIRECT"],
            &[
                "-A",
                "ISTIO_REDIRECT",
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ],
            &["-N", "ISTIO_OUTPUT"],
            &[
                "-A",
                "ISTIO_OUTPUT",
                "-m",
                "owner",
                "--gid-owner",
                "1337",
                "-j",
                "RETURN",
            ],
            &["-A", "ISTIO_OUTPUT", "-d", "127.0.0.0/8", "-j", "RETURN"],
            &["-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"],
        ];
        for rule in rules {
            let mut args = vec!["iptables", "-t", "nat"];
            args.extend_from_slice(rule);
            self.exec(&args);
        }
        self.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-j",
            "ISTIO_OUTPUT",
        ]);
    }

    /// Runs `f` inside the namespace (see the module docs) and returns its result; a panic in
    /// `f` is a panic here.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A backend kept running in a namespace by a thread of its own (a runtime that ends with a
/// `run` call would take the backend with it), until dropped; at most 10 minutes.
pub struct App {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    /// The HTTP backend (`spawn_backend`) on `at`.
    pub fn http(ns: &NsHandle, at: std::net::SocketAddr, name: &str) -> App {
        App::start(ns, at, name, false)
    }

    /// The TCP echo backend (`spawn_tcp_echo`) on `at`.
    pub fn tcp_echo(ns: &NsHandle, at: std::net::SocketAddr, name: &str) -> App {
        App::start(ns, at, name, true)
    }

    fn start(ns: &NsHandle, at: std::net::SocketAddr, name: &str, echo: bool) -> App {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, name, flag) = (ns.clone(), name.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            ns.run(move || async move {
                let _backend = if echo {
                    super::spawn_tcp_echo(at, &name).await
                } else {
                    super::spawn_backend(at, &name).await
                }
                .expect("backend");
                let _ = ready_tx.send(());
                let deadline = Instant::now() + Duration::from_secs(600);
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("backend started");
        App {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
