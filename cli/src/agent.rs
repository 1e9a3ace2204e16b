//! `sextant agent run`: a simulated device — frame path, lock-free hand-off, durable telemetry
//! queue and the sync agent — talking to `sextant backend serve` over QUIC with mutual TLS.
//!
//! It prints one JSON object per line on stdout as things happen (`connected`, `assigned`,
//! `download_started`, `download_progress`, `activated`, `refused`, `rolled_back`, `uploaded`,
//! `generated`, `disconnected`) and a final `summary`, so scripts and tests can follow it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use sextant_agent::backoff::{BackoffPolicy, DownloadConditions, DownloadPolicy};
use sextant_agent::queue::{QueueConfig, SyncPolicy};
use sextant_agent::runner::{AgentConfig, AgentEvent};
use sextant_agent::sim::{SimConfig, SimEvent, run_blocking};
use sextant_agent::trust::PinnedKey;

/// Flags of `sextant agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run a simulated device against a backend.
    Run(Box<RunArgs>),
    /// Benchmarks on loopback against a real `sextant backend serve` child process.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Send one kind of bad input to a backend and report how it answered (robustness tests).
    #[command(hide = true)]
    Probe {
        /// The backend's UDP address.
        #[arg(long)]
        server: SocketAddr,
        /// The fleet CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// A device certificate.
        #[arg(long)]
        cert: PathBuf,
        /// Its key.
        #[arg(long)]
        key: PathBuf,
        /// The device id to claim in the handshake.
        #[arg(long)]
        device_id: String,
        /// random | oversized | truncated-cbor | truncated-frame | wrong-message | valid
        #[arg(long)]
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Many devices upload telemetry at once: events/s stored and acknowledgement latency.
    Ingest {
        /// Concurrent devices (each its own certificate and QUIC connection).
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Events per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// SQLite synchronous level of the backend: full or normal.
        #[arg(long, default_value = "full")]
        durability: String,
    },
    /// Model download through the protocol vs a bare quinn stream of the same size.
    Download {
        /// Model size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Rounds (alternating bare and model).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The device's state directory (model store, telemetry queue, floor).
    #[arg(long)]
    dir: PathBuf,
    /// The backend's UDP address.
    #[arg(long)]
    server: SocketAddr,
    /// Name in the server certificate (default: the server's IP address).
    #[arg(long)]
    server_name: Option<String>,
    /// The fleet CA certificate (ca.crt.pem).
    #[arg(long)]
    ca: PathBuf,
    /// This device's certificate (device.crt.pem).
    #[arg(long)]
    cert: PathBuf,
    /// This device's private key (device.key.pem).
    #[arg(long)]
    key: PathBuf,
    /// The pinned release public key (release.pub).
    #[arg(long)]
    release_pub: PathBuf,
    /// The device id in the certificate.
    #[arg(long)]
    device_id: String,
    /// Device class label.
    #[arg(long, default_value = "sim-phone")]
    device_class: String,
    /// Localisation events the simulated frame path produces.
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Events per second (0: as fast as the queue takes them).
    #[arg(long, default_value_t = 30)]
    rate: u64,
    /// Exit once every event is acknowledged and the model is settled.
    #[arg(long)]
    exit_when_idle: bool,
    /// Exit after this many seconds.
    #[arg(long)]
    run_for_s: Option<f64>,
    /// Sync at least this often (ms).
    #[arg(long, default_value_t = 30_000)]
    sync_interval_ms: u64,
    /// First reconnect delay ceiling (ms); doubles per failure, with full jitter.
    #[arg(long, default_value_t = 500)]
    backoff_base_ms: u64,
    /// Largest reconnect delay ceiling (ms).
    #[arg(long, default_value_t = 60_000)]
    backoff_cap_ms: u64,
    /// Simulated link speed for model downloads (bytes/s).
    #[arg(long)]
    max_download_rate: Option<u64>,
    /// Make downloads durable every this many bytes.
    #[arg(long, default_value_t = 1 << 20)]
    checkpoint_bytes: u64,
    /// Most records per telemetry batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// The network is metered (downloads above the allowance wait for an unmetered one).
    #[arg(long)]
    metered: bool,
    /// The device is not charging.
    #[arg(long)]
    on_battery: bool,
    /// Battery level, percent.
    #[arg(long, default_value_t = 80)]
    battery: u8,
    /// Telemetry queue cap, in records.
    #[arg(long, default_value_t = 200_000)]
    queue_max_items: u64,
    /// Frames per shadow report while a shadow candidate is installed.
    #[arg(long, default_value_t = 100)]
    shadow_window: u32,
}

/// Runs `sextant agent …`.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Run(a) => run_device(*a),
        AgentCommand::Bench { which } => bench(which),
        AgentCommand::Probe {
            server,
            ca,
            cert,
            key,
            device_id,
            kind,
        } => {
            let probe: sextant_agent::probe::Probe =
                kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let r = sextant_agent::probe::probe_blocking(
                server,
                &server.ip().to_string(),
                &ca,
                &cert,
                &key,
                &device_id,
                probe,
            )
            .context("probe")?;
            line(&json!({
                "event": "probe",
                "connected": r.connected,
                "error_frame": r.error_frame,
                "close_code": r.close_code,
                "detail": r.detail,
            }));
            Ok(())
        }
    }
}

fn line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn event_json(e: &SimEvent) -> serde_json::Value {
    match e {
        SimEvent::Generated { appended, dropped } => {
            json!({"event": "generated", "appended": appended, "dropped": dropped})
        }
        SimEvent::Agent(a) => match a {
            AgentEvent::Connected => json!({"event": "connected"}),
            AgentEvent::Disconnected { reason } => {
                json!({"event": "disconnected", "reason": reason})
            }
            AgentEvent::Assigned { version } => json!({"event": "assigned", "version": version}),
            AgentEvent::DownloadStarted {
                version,
                offset,
                length,
            } => {
                json!({"event": "download_started", "version": version, "offset": offset, "length": length})
            }
            AgentEvent::DownloadProgress { version, offset } => {
                json!({"event": "download_progress", "version": version, "offset": offset})
            }
            AgentEvent::DownloadFailed { version, reason } => {
                json!({"event": "download_failed", "version": version, "reason": reason})
            }
            AgentEvent::DownloadDeferred { version, reason } => {
                json!({"event": "download_deferred", "version": version, "reason": reason})
            }
            AgentEvent::Activated { version } => json!({"event": "activated", "version": version}),
            AgentEvent::ShadowInstalled { version } => {
                json!({"event": "shadow_installed", "version": version})
            }
            AgentEvent::ShadowCleared { version } => {
                json!({"event": "shadow_cleared", "version": version})
            }
            AgentEvent::Refused { version, reason } => {
                json!({"event": "refused", "version": version, "reason": reason})
            }
            AgentEvent::RolledBack { from, to, reason } => {
                json!({"event": "rolled_back", "from": from, "to": to, "reason": reason})
            }
            AgentEvent::Uploaded {
                records,
                stored,
                duplicates,
            } => {
                json!({"event": "uploaded", "records": records, "stored": stored, "duplicates": duplicates})
            }
        },
    }
}

/// Segment size of `agent run`'s telemetry queue: 4 MiB (≈ 20,000 events) rather than the
/// 1 MiB default, so that creating, syncing and deleting segment files (and the cursor write
/// that precedes each deletion) happens a quarter as often.
const AGENT_SEGMENT_BYTES: u64 = 4 << 20;

/// `agent run`'s telemetry queue fsyncs at most this often ([`SyncPolicy::Group`]): a kill
/// loses nothing appended, power loss at most about the last 100 ms of events.
const AGENT_GROUP_SYNC_MS: u32 = 100;

fn run_device(a: RunArgs) -> anyhow::Result<()> {
    let pinned = sextant_backend::pki::load_public_key(&a.release_pub)
        .with_context(|| format!("reading the release key {}", a.release_pub.display()))?;
    let agent = AgentConfig {
        dir: a.dir,
        server: a.server,
        server_name: a.server_name.unwrap_or_else(|| a.server.ip().to_string()),
        ca_cert: a.ca,
        device_cert: a.cert,
        device_key: a.key,
        pinned: vec![PinnedKey(pinned)],
        device_id: a.device_id,
        device_class: a.device_class,
        sync_interval: Duration::from_millis(a.sync_interval_ms.max(10)),
        backoff: BackoffPolicy {
            base: Duration::from_millis(a.backoff_base_ms.max(1)),
            cap: Duration::from_millis(a.backoff_cap_ms.max(a.backoff_base_ms.max(1))),
        },
        conditions: DownloadConditions {
            unmetered: !a.metered,
            charging: !a.on_battery,
            battery_percent: a.battery,
            free_bytes: u64::MAX / 2,
        },
        download_policy: DownloadPolicy::default(),
        max_download_rate: a.max_download_rate,
        batch_records: a.batch.max(1),
        checkpoint_bytes: a.checkpoint_bytes.max(1),
    };
    let cfg = SimConfig {
        agent,
        queue: QueueConfig {
            max_items: a.queue_max_items.max(1),
            segment_bytes: AGENT_SEGMENT_BYTES,
            sync: SyncPolicy::Group {
                max_delay_ms: AGENT_GROUP_SYNC_MS,
            },
            ..QueueConfig::default()
        },
        events_total: a.events,
        events_per_sec: a.rate,
        exit_when_idle: a.exit_when_idle,
        run_for: a
            .run_for_s
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        shadow_window: a.shadow_window.max(1),
    };
    let summary = run_blocking(cfg, Arc::new(|e| line(&event_json(&e)))).context("agent")?;
    line(&json!({
        "event": "summary",
        "appended": summary.appended,
        "acked": summary.acked,
        "duplicates": summary.duplicates,
        "queued": summary.queued,
        "dropped": {
            "by_items": summary.dropped[0],
            "by_bytes": summary.dropped[1],
            "by_age": summary.dropped[2],
            "by_handoff": summary.dropped[3],
        },
        "active": summary.active,
        "shadow": summary.shadow,
        "floor": summary.floor,
        "cpu_ms": summary.cpu_ms,
        "producer_cpu_ms": summary.producer_cpu_ms,
        "agent_cpu_ms": summary.producer_cpu_ms.map(|p| summary.cpu_ms.saturating_sub(p)),
        "download_bytes": summary.download_bytes,
        "read_from": { "memory": summary.read_from[0], "disk": summary.read_from[1] },
    }));
    Ok(())
}

/// A temporary fleet with a backend child process, for the benchmarks.
struct BenchFleet {
    dir: tempfile_dir::Dir,
    backend: std::process::Child,
    addr: SocketAddr,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for BenchFleet {
    fn drop(&mut self) {
        let _ = self.backend.kill();
        let _ = self.backend.wait();
    }
}

fn bench_fleet(
    devices: usize,
    model: Option<&[u8]>,
    durability: &str,
) -> anyhow::Result<BenchFleet> {
    use sextant_backend::{pki, registry, store};
    use std::io::BufRead as _;
    let root = std::env::temp_dir().join(format!("sextant-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = tempfile_dir::Dir(root.clone());
    pki::init_ca(&root.join("ca"), "bench CA")?;
    pki::issue_server(
        &root.join("ca"),
        &["127.0.0.1".into()],
        &root.join("server"),
    )?;
    for i in 0..devices {
        let id = format!("bench-{i}");
        pki::issue_device(&root.join("ca"), &id, &root.join("devices").join(&id))?;
    }
    if let Some(bytes) = model {
        let key = pki::ReleaseKey::generate(&root.join("release"))?;
        let mut data = store::DataDir::open(&root.join("data"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        registry::publish(
            &mut data,
            &key,
            &registry::PublishRequest {
                bytes,
                family: "bench",
                version: 1,
                floor: 1,
                issued_at_s: now,
                expires_at_s: now + 86_400,
            },
        )?;
        registry::assign(&mut data, None, 1, None, 0)?;
    }
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let mut backend = std::process::Command::new(std::env::current_exe()?)
        .args([
            "backend",
            "serve",
            "--ca",
            &s(root.join("ca")),
            "--cert",
            &s(root.join("server/server.crt.pem")),
            "--key",
            &s(root.join("server/server.key.pem")),
            "--listen",
            "127.0.0.1:0",
            "--data",
            &s(root.join("data")),
            "--durability",
            durability,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = backend.stdout.take().context("backend stdout")?;
    let mut first = String::new();
    std::io::BufReader::new(stdout).read_line(&mut first)?;
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .context("backend did not start")?
        .parse()?;
    Ok(BenchFleet { dir, backend, addr })
}

fn bench(which: BenchCommand) -> anyhow::Result<()> {
    use sextant_agent::bench::{BenchDevice, download_blocking, ingest_blocking};
    match which {
        BenchCommand::Ingest {
            agents,
            batch,
            seconds,
            durability,
        } => {
            let f = bench_fleet(agents, None, &durability)?;
            let root = f.dir.0.clone();
            let devices: Vec<BenchDevice> = (0..agents)
                .map(|i| {
                    let d = root.join("devices").join(format!("bench-{i}"));
                    BenchDevice {
                        id: format!("bench-{i}"),
                        cert: d.join("device.crt.pem"),
                        key: d.join("device.key.pem"),
                    }
                })
                .collect();
            let pid = f.backend.id();
            let r = ingest_blocking(
                f.addr,
                &root.join("ca/ca.crt.pem"),
                &devices,
                batch,
                Duration::from_secs_f64(seconds.max(0.1)),
                &move || sextant_agent::sim::cpu_ms_of(pid),
            )?;
            let stored = {
                let db = sextant_backend::store::SqliteStore::open(
                    &root.join("data/sextant.db"),
                    sextant_backend::store::Durability::Normal,
                )?;
                db.telemetry_total()?
            };
            line(&json!({
                "bench": "ingest",
                "agents": agents,
                "batch": batch,
                "durability": durability,
                "events_acked": r.events,
                "events_stored": stored,
                "seconds": r.seconds,
                "events_per_s": r.rate(),
                "ack_latency_ms": {"p50": r.percentile(50.0), "p90": r.percentile(90.0), "p99": r.percentile(99.0), "max": r.percentile(100.0)},
                "batches": r.latencies_ms.len(),
                "server_cpu_ms": r.server_cpu_ms,
                "server_cpu_us_per_event": r.server_cpu_ms.map(|ms| ms as f64 * 1e3 / r.events.max(1) as f64),
                "client_cpu_ms": r.client_cpu_ms,
                "client_cpu_us_per_event": r.client_cpu_ms as f64 * 1e3 / r.events.max(1) as f64,
                "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            }));
        }
        BenchCommand::Download { mib, rounds } => {
            let len = mib.max(1) << 20;
            let model: Vec<u8> = (0..len)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let f = bench_fleet(1, Some(&model), "full")?;
            let root = f.dir.0.clone();
            let d = root.join("devices/bench-0");
            let dev = BenchDevice {
                id: "bench-0".into(),
                cert: d.join("device.crt.pem"),
                key: d.join("device.key.pem"),
            };
            let (bare, via) = download_blocking(
                f.addr,
                &root.join("ca/ca.crt.pem"),
                &dev,
                &root.join("server/server.crt.pem"),
                &root.join("server/server.key.pem"),
                len,
                rounds.max(1),
            )?;
            let med = |v: &[sextant_agent::bench::Throughput]| {
                let mut x: Vec<f64> = v.iter().map(|t| t.mib_s()).collect();
                x.sort_by(f64::total_cmp);
                x[x.len() / 2]
            };
            let (b, m) = (med(&bare), med(&via));
            line(&json!({
                "bench": "download",
                "mib": mib,
                "rounds": rounds,
                "bare_quinn_mib_s": bare.iter().map(|t| t.mib_s()).collect::<Vec<_>>(),
                "model_download_mib_s": via.iter().map(|t| t.mib_s()).collect::<Vec<_>>(),
                "median_bare_mib_s": b,
                "median_model_mib_s": m,
                "ratio": m / b,
            }));
        }
    }
    Ok(())
}
