//! Shared harness of the fleet end-to-end tests: a fleet CA, release key and data directory in a
//! temporary folder, and the `sextant` binary run as real child processes (backend and
//! simulated devices) talking QUIC over loopback. Nothing is mocked.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One test at a time per test binary: every test starts a backend and several agents, and the
/// CI machine has two cores.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn sextant() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sextant"));
    c.env("SEXTANT_LOG", "warn");
    c
}

pub fn run_ok(args: &[&str]) -> String {
    let out = sextant().args(args).output().expect("sextant runs");
    assert!(
        out.status.success(),
        "sextant {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The shipped descriptor model.
pub fn shipped_model() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/descriptor-v1/model.onnx");
    std::fs::read(p).expect("models/descriptor-v1/model.onnx")
}

/// A different but equally valid model file: the shipped one with an ONNX `doc_string`
/// (field 6, ignored by the runtime) of `pad` bytes appended, so each version has its own hash.
pub fn model_variant(tag: &str, pad: usize) -> Vec<u8> {
    let mut v = shipped_model();
    let mut doc = format!("sextant test model {tag} ").into_bytes();
    doc.resize(doc.len() + pad, b'.');
    v.push(0x32);
    let mut n = doc.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            break;
        }
        v.push(b | 0x80);
    }
    v.extend_from_slice(&doc);
    v
}

/// A free UDP port on loopback (bound then released).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind")
        .port()
}

/// A child process whose stdout lines are collected (JSON lines for agents).
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sextant");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen2.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen,
            name: name.to_owned(),
        }
    }

    /// Waits for a stdout line satisfying `pred` (JSON lines are parsed; others are `Value::String`).
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "{}: timed out waiting for {what}; output so far:\n{}",
                    self.name,
                    self.seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Waits for `{"event": name, ...}`.
    pub fn wait_event(&self, name: &str, timeout: Duration) -> Value {
        self.wait_for(name, timeout, |v| v["event"] == name)
    }

    /// Every line seen so far, parsed.
    pub fn events(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Waits for exit (with a deadline) and asserts success.
    pub fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(
                    st.success(),
                    "{} exited with {st}; output:\n{}",
                    self.name,
                    self.seen.lock().unwrap().join("\n")
                );
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "{} did not exit in time; output:\n{}",
                    self.name,
                    self.seen.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The final `summary` line.
    pub fn summary(&self) -> Value {
        self.events()
            .into_iter()
            .rev()
            .find(|v| v["event"] == "summary")
            .unwrap_or_else(|| {
                panic!(
                    "{}: no summary; output:\n{}",
                    self.name,
                    self.seen.lock().unwrap().join("\n")
                )
            })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet in a temporary folder.
pub struct Fleet {
    pub root: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Fleet {
        let root = tempfile::tempdir().expect("tempdir");
        let f = Fleet { root };
        run_ok(&["backend", "ca", "init", "--dir", s(&f.ca())]);
        run_ok(&[
            "backend",
            "issue-server",
            "--ca",
            s(&f.ca()),
            "--name",
            "127.0.0.1",
            "--out",
            s(&f.path("server")),
        ]);
        run_ok(&["backend", "keygen", "--out", s(&f.path("release"))]);
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    pub fn ca(&self) -> PathBuf {
        self.path("ca")
    }
    pub fn data(&self) -> PathBuf {
        self.path("data")
    }
    pub fn release_key(&self) -> PathBuf {
        self.path("release/release.key.pk8")
    }

    /// Issues a device certificate; returns its folder.
    pub fn device(&self, id: &str) -> PathBuf {
        let out = self.path(&format!("devices/{id}"));
        run_ok(&[
            "backend",
            "issue-device",
            "--ca",
            s(&self.ca()),
            "--device-id",
            id,
            "--out",
            s(&out),
        ]);
        out
    }

    /// Publishes `bytes` as `version` (fleet default unless `assign` is false).
    pub fn publish(&self, bytes: &[u8], version: u64, assign: bool) {
        let file = self.path(&format!("model-v{version}.onnx"));
        std::fs::write(&file, bytes).unwrap();
        let v = version.to_string();
        let (key, data) = (self.release_key(), self.data());
        let mut args = vec![
            "model",
            "publish",
            "--model",
            s(&file),
            "--version",
            &v,
            "--release-key",
            s(&key),
            "--data",
            s(&data),
        ];
        if assign {
            args.push("--assign-all");
        }
        run_ok(&args);
    }

    pub fn assign_all(&self, version: u64) {
        run_ok(&[
            "backend",
            "assign",
            "--data",
            s(&self.data()),
            "--all",
            "--model",
            &version.to_string(),
        ]);
    }

    /// Starts `sextant backend serve` on `port` (0: any); returns it and its address.
    pub fn backend(&self, port: u16, extra: &[&str]) -> (Proc, SocketAddr) {
        let mut cmd = sextant();
        cmd.args([
            "backend",
            "serve",
            "--ca",
            s(&self.ca()),
            "--cert",
            s(&self.path("server/server.crt.pem")),
            "--key",
            s(&self.path("server/server.key.pem")),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            s(&self.data()),
        ])
        .args(extra);
        let p = Proc::spawn(cmd, "backend");
        let line = p.wait_for("listening", Duration::from_secs(20), |v| {
            v.as_str().is_some_and(|l| l.starts_with("listening on "))
        });
        let addr = line
            .as_str()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.parse().ok())
            .expect("address");
        (p, addr)
    }

    /// Starts a simulated device with certificate folder `cert_dir` claiming `id`.
    pub fn agent_with(
        &self,
        id: &str,
        cert_dir: &Path,
        server: SocketAddr,
        extra: &[&str],
    ) -> Proc {
        let mut cmd = sextant();
        cmd.args([
            "agent",
            "run",
            "--dir",
            s(&self.path(&format!("agents/{id}"))),
            "--server",
            &server.to_string(),
            "--ca",
            s(&self.ca().join("ca.crt.pem")),
            "--cert",
            s(&cert_dir.join("device.crt.pem")),
            "--key",
            s(&cert_dir.join("device.key.pem")),
            "--release-pub",
            s(&self.path("release/release.pub")),
            "--device-id",
            id,
            "--backoff-base-ms",
            "50",
            "--backoff-cap-ms",
            "400",
        ])
        .args(extra);
        Proc::spawn(cmd, &format!("agent {id}"))
    }

    pub fn agent(&self, id: &str, server: SocketAddr, extra: &[&str]) -> Proc {
        let dir = self.path(&format!("devices/{id}"));
        self.agent_with(id, &dir, server, extra)
    }

    /// Stored telemetry sequence numbers of a device, read from the backend's database.
    pub fn stored(&self, device: &str) -> Vec<u64> {
        let db = sextant_backend::store::SqliteStore::open(
            &self.data().join("sextant.db"),
            sextant_backend::store::Durability::Full,
        )
        .expect("open db");
        db.telemetry_sequences(device).expect("query")
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Fleet {
    /// Sets the fleet default to `model`, with `shadow` as the candidate to shadow.
    pub fn assign_all_with_shadow(&self, model: u64, shadow: u64) {
        run_ok(&[
            "backend",
            "assign",
            "--data",
            s(&self.data()),
            "--all",
            "--model",
            &model.to_string(),
            "--shadow",
            &shadow.to_string(),
        ]);
    }

    /// `sextant backend status` on the fleet's data directory.
    pub fn status(&self) -> String {
        run_ok(&["backend", "status", "--data", s(&self.data())])
    }
}
