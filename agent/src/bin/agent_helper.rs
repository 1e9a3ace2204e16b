//! Test helper for the agent's crash tests; not part of the agent's API.
//!
//! - `sextant-agent-helper queue DIR DEVICE every|manual|group`: appends to a telemetry queue in a loop
//!   and prints each sequence number on stdout *after* its append returned (`A <seq>`), and each
//!   acknowledgement after `ack_through` returned (`K <seq>`), so the parent
//!   (`tests/queue_kill.rs`) knows what must survive its SIGKILL.
//! - `sextant-agent-helper crash-activate ROOT VERSION SHA256HEX`: opens the model store at ROOT
//!   and activates the model with a self-check that aborts the process, as a model that crashes
//!   the runtime when loaded would (`tests/model_store.rs`).

use std::io::Write;
use std::process::ExitCode;

use sextant_agent::queue::{QueueConfig, SyncPolicy, TelemetryQueue};
use sextant_agent::store::{ModelRef, ModelStore};

/// The payload of record `seq`: deterministic, so the parent can check every byte.
fn payload(seq: u64) -> Vec<u8> {
    let n = 16 + (seq.wrapping_mul(2_654_435_761) % 300) as usize;
    (0..n)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

fn queue(dir: &str, device: &str, sync: &str) -> ExitCode {
    let config = QueueConfig {
        segment_bytes: 4096,
        sync: match sync {
            "manual" => SyncPolicy::Manual,
            "group" => SyncPolicy::Group { max_delay_ms: 5 },
            _ => SyncPolicy::EveryAppend,
        },
        ..QueueConfig::default()
    };
    let mut q = match TelemetryQueue::open(std::path::Path::new(dir), device, config) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let next = q.stats().next_sequence;
        let seq = match q.append(&payload(next), 1_700_000_000_000) {
            Ok(seq) => seq,
            Err(e) => {
                eprintln!("append: {e}");
                return ExitCode::FAILURE;
            }
        };
        if writeln!(out, "A {seq}").and_then(|()| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
        // Every 37th record, acknowledge all but the last 20 (as if the backend had).
        if seq.is_multiple_of(37) && seq > 20 {
            if let Err(e) = q.ack_through(seq - 20) {
                eprintln!("ack: {e}");
                return ExitCode::FAILURE;
            }
            if writeln!(out, "K {}", seq - 20)
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
        }
    }
}

fn crash_activate(root: &str, version: &str, sha: &str) -> ExitCode {
    let (Ok(version), Some(sha256)) = (version.parse::<u64>(), parse_hex32(sha)) else {
        eprintln!("bad version or digest");
        return ExitCode::FAILURE;
    };
    let mut store = match ModelStore::open(std::path::Path::new(root)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = store.activate(ModelRef { version, sha256 }, |_| std::process::abort());
    eprintln!("self-check returned: {r:?}");
    ExitCode::FAILURE
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["queue", dir, device, sync] => queue(dir, device, sync),
        ["crash-activate", root, version, sha] => crash_activate(root, version, sha),
        _ => {
            eprintln!(
                "usage: sextant-agent-helper queue DIR DEVICE every|manual|group\n       sextant-agent-helper crash-activate ROOT VERSION SHA256HEX"
            );
            ExitCode::FAILURE
        }
    }
}
