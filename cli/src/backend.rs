//! `sextant backend …`: fleet PKI and the model release key.
//!
//! - `sextant backend ca init --dir DIR` creates the fleet CA (ECDSA P-256).
//! - `sextant backend issue-device --ca DIR --device-id ID --out DIR` issues a device's client
//!   certificate; `issue-server --ca DIR --name HOST… --out DIR` the server's certificate.
//! - `sextant backend revoke --ca DIR --device-id ID` revokes a device and re-signs `crl.pem`.
//! - `sextant backend keygen --out DIR` creates the Ed25519 release key that signs model
//!   metadata (`release.key.pk8`, mode 0600, and `release.pub` to pin on devices). The same
//!   step is available to other subcommands as [`release_keygen`].

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
    }
    Ok(())
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
