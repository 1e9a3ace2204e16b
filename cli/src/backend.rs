//! `sextant backend …`: fleet PKI and the model release key.
//!
//! - `sextant backend ca init --dir DIR` creates the fleet CA (ECDSA P-256).
//! - `sextant backend issue-device --ca DIR --device-id ID --out DIR` issues a device's client
//!   certificate; `issue-server --ca DIR --name HOST… --out DIR` the server's certificate.
//! - `sextant backend revoke --ca DIR --device-id ID` revokes a device and re-signs `crl.pem`.
//! - `sextant backend keygen --out DIR` creates the Ed25519 release key that signs model
//!   metadata (`release.key.pk8`, mode 0600, and `release.pub` to pin on devices). The same
//!   step is available to other subcommands as [`release_keygen`].
//! - `sextant backend serve --ca DIR --cert FILE --key FILE [--listen ADDR] [--data DIR]` runs
//!   the QUIC server (mutual TLS, ALPN `sextant/1`); it prints `listening on ADDR` once bound.
//! - `sextant backend assign [--data DIR] (--device ID | --all) --model N` sets what a device
//!   (or every device without its own assignment) runs.
//! - `sextant backend status [--data DIR]` prints registered models, stored telemetry and the
//!   shadow-run reports per (candidate, baseline) pair.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sextant_backend::pki;

/// Flags of `sextant backend`.
#[derive(Debug, Args)]
pub struct BackendArgs {
    #[command(subcommand)]
    command: BackendCommand,
}

#[derive(Debug, Subcommand)]
enum BackendCommand {
    /// The fleet certificate authority (`ca init`).
    Ca(CaArgs),
    /// Issue a device's client certificate (mutual TLS).
    IssueDevice {
        /// The CA directory (from `ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// The device id (1–128 characters of [A-Za-z0-9._:-]); goes into the certificate.
        #[arg(long)]
        device_id: String,
        /// Where to write device.crt.pem, device.key.pem and ca.crt.pem.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue the backend server's certificate.
    IssueServer {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// DNS names or IP addresses the server answers on (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Where to write server.crt.pem, server.key.pem and ca.crt.pem.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke every certificate of a device and re-sign the revocation list.
    Revoke {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// The device to revoke.
        #[arg(long)]
        device_id: String,
    },
    /// Create the Ed25519 release key that signs model metadata.
    Keygen {
        /// Directory for release.key.pk8 (0600) and release.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the QUIC server devices sync with (models, assignments, telemetry ingest).
    Serve(ServeArgs),
    /// Set which model a device (or, with --all, every device without its own) runs.
    Assign {
        /// Data directory (default: $SEXTANT_DATA_DIR, else $XDG_DATA_HOME/sextant, else
        /// ~/.local/share/sextant).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The device.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        device: Option<String>,
        /// The fleet default, for devices without an assignment of their own.
        #[arg(long)]
        all: bool,
        /// Model version to run (must be published).
        #[arg(long)]
        model: u64,
        /// Candidate version to shadow.
        #[arg(long)]
        shadow: Option<u64>,
    },
    /// Print registered models and stored telemetry counts.
    Status {
        /// Data directory (default as for `serve`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Also count this device's stored events.
        #[arg(long)]
        device: Vec<String>,
    },
}

/// Flags of `sextant backend serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// The CA directory: ca.crt.pem (trust root for devices) and crl.pem (reloaded on change).
    #[arg(long)]
    ca: PathBuf,
    /// The server certificate (from `issue-server`).
    #[arg(long)]
    cert: PathBuf,
    /// The server private key.
    #[arg(long)]
    key: PathBuf,
    /// UDP address to listen on (port 0: any free port; the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Data directory (default: $SEXTANT_DATA_DIR, else $XDG_DATA_HOME/sextant, else
    /// ~/.local/share/sextant).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seconds after which devices sync again.
    #[arg(long, default_value_t = 300)]
    resync_after_s: u32,
    /// SQLite synchronous level: `full` (survives power loss; the default) or `normal`.
    #[arg(long, default_value = "full")]
    durability: String,
    /// Model chunk size in bytes.
    #[arg(long, default_value_t = 256 << 10)]
    chunk_len: u32,
}

#[derive(Debug, Args)]
struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a new fleet CA (refuses to overwrite one).
    Init {
        /// The CA directory to create.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Sextant fleet CA")]
        name: String,
    },
}

/// Runs `sextant backend …`.
pub fn run(args: BackendArgs) -> anyhow::Result<()> {
    match args.command {
        BackendCommand::Ca(CaArgs {
            command: CaCommand::Init { dir, name },
        }) => {
            let cert = pki::init_ca(&dir, &name)
                .with_context(|| format!("creating the fleet CA in {}", dir.display()))?;
            println!("fleet CA: {}", cert.display());
            println!("key:      {} (mode 0600)", dir.join(pki::CA_KEY).display());
            println!("CRL:      {}", dir.join(pki::CRL).display());
        }
        BackendCommand::IssueDevice { ca, device_id, out } => {
            let f = pki::issue_device(&ca, &device_id, &out)
                .with_context(|| format!("issuing a certificate for device {device_id}"))?;
            print_issued(&f);
        }
        BackendCommand::IssueServer { ca, names, out } => {
            let f =
                pki::issue_server(&ca, &names, &out).context("issuing the server certificate")?;
            print_issued(&f);
        }
        BackendCommand::Revoke { ca, device_id } => {
            let serials = pki::revoke_device(&ca, &device_id)
                .with_context(|| format!("revoking device {device_id}"))?;
            println!(
                "revoked {} certificate(s) of {device_id}; {} re-signed",
                serials.len(),
                ca.join(pki::CRL).display()
            );
        }
        BackendCommand::Keygen { out } => release_keygen(&out)?,
        BackendCommand::Serve(a) => serve(a)?,
        BackendCommand::Assign {
            data,
            device,
            all: _,
            model,
            shadow,
        } => {
            let dir = data.unwrap_or_else(sextant_backend::store::default_data_dir);
            let mut d = sextant_backend::store::DataDir::open(&dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            sextant_backend::registry::assign(&mut d, device.as_deref(), model, shadow, now_ms())
                .context("setting the assignment")?;
            println!(
                "{} now runs model {model}",
                device
                    .as_deref()
                    .unwrap_or("every device without its own assignment")
            );
        }
        BackendCommand::Status { data, device } => {
            let dir = data.unwrap_or_else(sextant_backend::store::default_data_dir);
            let d = sextant_backend::store::DataDir::open(&dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            use sextant_backend::store::Storage as _;
            println!("data directory: {}", dir.display());
            match d.db.latest_model_version()? {
                Some(v) => println!("latest model: {v}"),
                None => println!("latest model: none"),
            }
            if let Some(a) =
                d.db.assignment(sextant_backend::store::DEFAULT_ASSIGNMENT)?
            {
                match a.shadow_version {
                    Some(s) => println!("fleet default: model {} (shadow {s})", a.model_version),
                    None => println!("fleet default: model {}", a.model_version),
                }
            }
            println!("telemetry events stored: {}", d.db.telemetry_total()?);
            for dev in device {
                println!("{dev}: {} events", d.db.telemetry_count(&dev)?);
            }
            for s in d.db.shadow_summary()? {
                let pct = |n: u64| 100.0 * n as f64 / s.frames.max(1) as f64;
                println!(
                    "shadow v{} vs v{}: {} reports from {} device(s), {} frames; localized: \
                     baseline {:.1} %, candidate {:.1} %, both {:.1} %; median latency: \
                     baseline {:.0} us, candidate {:.0} us",
                    s.candidate,
                    s.baseline,
                    s.reports,
                    s.devices,
                    s.frames,
                    pct(s.baseline_localized),
                    pct(s.candidate_localized),
                    pct(s.both_localized),
                    s.baseline_latency_us,
                    s.candidate_latency_us
                );
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    use sextant_backend::server::{ServeConfig, serve_blocking};
    let data = a
        .data
        .unwrap_or_else(sextant_backend::store::default_data_dir);
    let mut cfg = ServeConfig::new(a.listen, data.clone(), a.ca, a.cert, a.key);
    cfg.resync_after_s = a.resync_after_s;
    cfg.durability = match a.durability.as_str() {
        "full" => sextant_backend::store::Durability::Full,
        "normal" => sextant_backend::store::Durability::Normal,
        other => anyhow::bail!("--durability must be full or normal, not {other:?}"),
    };
    anyhow::ensure!(
        a.chunk_len >= 1 && a.chunk_len + 128 <= cfg.protocol.max_frame_len,
        "--chunk-len must be between 1 and {}",
        cfg.protocol.max_frame_len - 128
    );
    cfg.protocol.chunk_len = a.chunk_len;
    serve_blocking(cfg, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = writeln!(out, "data directory: {}", data.display());
        let _ = out.flush();
    })
    .context("serving")
}

fn print_issued(f: &pki::IssuedFiles) {
    println!("certificate: {}", f.cert.display());
    println!("key:         {} (mode 0600)", f.key.display());
    println!("CA to pin:   {}", f.ca.display());
    println!("serial:      {}", f.serial);
}

/// Creates the Ed25519 release key in `out` and prints where it went and the public key to pin.
pub fn release_keygen(out: &Path) -> anyhow::Result<()> {
    let key = pki::ReleaseKey::generate(out)
        .with_context(|| format!("creating the release key in {}", out.display()))?;
    println!(
        "release key: {} (mode 0600)",
        out.join(pki::RELEASE_KEY).display()
    );
    println!("public key:  {}", out.join(pki::RELEASE_PUB).display());
    let hex: String = key
        .public_key()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("pin on devices: {hex}");
    Ok(())
}
