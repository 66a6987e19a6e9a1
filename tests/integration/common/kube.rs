//! A real Kubernetes API for tests: etcd, kube-apiserver and kube-controller-manager started by
//! `hack/kube-env.sh` from the binaries it built (no kubelet: tests create Nodes and Pods and
//! set Pod status as a kubelet would), stopped when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{TempDir, ci};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/kube-env.sh");

pub struct KubeEnv {
    dir: TempDir,
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
}

/// The directory of the built binaries: `$KUBE_ENV_BIN` (set by `make test`). Without it,
/// panics under `CI=true`, otherwise prints why and returns `None`.
pub fn kube_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("KUBE_ENV_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match bin {
        Some(b) if b.join("kube-apiserver").is_file() => Some(b),
        other => {
            let why = match other {
                Some(b) => format!("no kube-apiserver in KUBE_ENV_BIN={}", b.display()),
                None => {
                    "KUBE_ENV_BIN is not set (make test builds the Kubernetes binaries and sets it)"
                        .to_string()
                }
            };
            if ci() {
                panic!("{why}; CI=true makes this fatal");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

impl KubeEnv {
    /// Starts a fresh API server; `None` when the binaries are missing outside CI.
    pub fn start() -> Option<KubeEnv> {
        let bin = kube_bin()?;
        let dir = TempDir::new("kube-env");
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(dir.path())
            .env("KUBE_ENV_BIN", &bin)
            .stderr(Stdio::piped())
            .output()
            .expect("run hack/kube-env.sh");
        assert!(
            out.status.success(),
            "hack/kube-env.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(kubeconfig.is_file(), "no kubeconfig at {kubeconfig:?}");
        Some(KubeEnv {
            dir,
            kubeconfig,
            bin,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops only kube-apiserver (an outage; etcd keeps the data).
    pub fn apiserver_stop(&self) {
        self.script("apiserver-stop");
    }

    /// Starts kube-apiserver again as it was first started; returns once it is ready.
    pub fn apiserver_start(&self) {
        self.script("apiserver-start");
    }

    fn script(&self, command: &str) {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(command)
            .arg(self.dir.path())
            .output()
            .expect("run hack/kube-env.sh");
        assert!(
            out.status.success(),
            "hack/kube-env.sh {command} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs kubectl with the admin kubeconfig, `stdin` piped in.
    pub fn kubectl_raw(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.unwrap_or_default().as_bytes())
                .expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_raw(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// bowline's CRDs (manifests/crds.yaml: Istio's kinds and versions, validated by the
    /// webhook), established.
    pub fn install_istio_crds(&self) {
        self.kubectl(&[
            "apply",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crds.yaml"),
        ]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
    }

    /// A Node for Pods to run on (the EndpointSlice controller lists only Pods on a Node).
    pub fn node(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}}}}\n"
        ));
    }

    /// A running, ready Pod with `ip`, as a kubelet would report it.
    pub fn ready_pod(&self, ns: &str, name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{}}}}}\n\
             spec:\n  nodeName: node-1\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: app, ports: [{{containerPort: 9080}}]}}]\n",
            labels.join(", ")
        ));
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}},{{"type":"ContainersReady","status":"True"}}]}}}}"#
        );
        self.kubectl(&[
            "patch",
            "pod",
            "-n",
            ns,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }

    /// Waits until `cond` holds for kubectl's output of `args`.
    pub fn wait_for(&self, args: &[&str], timeout: Duration, cond: impl Fn(&str) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = self.kubectl_raw(args, None);
            if out.status.success() && cond(&String::from_utf8_lossy(&out.stdout)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A TCP forwarder between bowline and the API server that a test can cut (every connection
/// dropped, new ones refused) and restore: a network partition with the API server still up.
pub struct Partition {
    pub addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Forwards a loopback port to `upstream` (runs on the caller's tokio runtime).
    pub async fn start(upstream: std::net::SocketAddr) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Partition { addr, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeEnv {
    /// The API server's address (from the kubeconfig).
    pub fn apiserver_addr(&self) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server in kubeconfig");
        server
            .trim()
            .trim_start_matches("https://")
            .parse()
            .expect("host:port")
    }

    /// A copy of the admin kubeconfig that reaches the API server at `addr` instead.
    pub fn kubeconfig_via(&self, addr: std::net::SocketAddr) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let original = self.apiserver_addr().to_string();
        let path = self.dir().join(format!("kubeconfig-via-{}", addr.port()));
        std::fs::write(&path, text.replace(&original, &addr.to_string())).expect("kubeconfig");
        path
    }
}
