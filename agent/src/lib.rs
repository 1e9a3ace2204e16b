//! The on-device sync agent that Sextant apps link beside the runtime: the storage, crypto and
//! durability building blocks it is made of.
//!
//! What exists (each module's docs are its design note):
//!
//! - [`queue`]: the durable telemetry queue — append-only segment files of CRC32C-checked
//!   records carrying `(device, sequence)`; survives `kill -9` at any instant (torn tails are
//!   detected and cut on open), deletes records only when acknowledged, enforces item, byte and
//!   age caps by dropping the oldest and counting what it dropped, and keeps sequence numbers
//!   monotonic across restarts; uploads read just-appended records from a bounded memory copy.
//! - [`handoff`]: the lock-free, fixed-capacity hand-off (`heapless::spsc`) from the runtime's
//!   frame path; a full ring drops and counts, never blocks the camera thread.
//! - [`store`]: the content-addressed model store — resumable downloads with verified prefixes,
//!   atomic installs, active / last-known-good pointers and local rollback after a failed
//!   self-check (or a crash during one).
//! - [`trust`]: the device's checks on `sextant_proto`'s signed model metadata (pinned Ed25519
//!   release key over the canonical bytes, expiry, version floor, length and hash), each
//!   refusal its own error.
//! - [`backoff`]: exponential backoff with full, seeded jitter, and the download-condition policy.
//! - [`fsutil`]: atomic checksummed state files, directory fsync, and the [`fsutil::Disk`]
//!   trait through which the queue writes (so tests inject short writes and a full disk).
//!
//! - [`runner`]: the QUIC client (quinn, mutual TLS) that drives `sextant_proto`'s state
//!   machine with these pieces: sync, verified resumable downloads, atomic install, activation
//!   with self-check and local rollback, telemetry upload deleted only on acknowledgement.
//! - [`slot`]: the lock-free hot-swap handle of the active model that the frame path reads.
//! - [`sim`]: a simulated device (frame path → hand-off → queue → agent), `sextant agent run`.
//! - [`tls`]: the device's TLS 1.3 client configuration.
//! - [`refusals`]: the persisted list of refused model releases (not fetched again after a
//!   restart).
//!
//! - [`shadow`]: shadow runs — the candidate beside the active model, summarised per window
//!   of frames in shadow reports.
//!
//! ```
//! use sextant_agent::queue::{QueueConfig, TelemetryQueue};
//! let dir = tempfile::tempdir()?;
//! let mut q = TelemetryQueue::open(dir.path(), "device-1", QueueConfig::default())?;
//! let seq = q.append(b"event", 1_700_000_000_000)?;
//! let batch = q.peek_batch(100, 64 << 10)?;
//! assert_eq!((batch[0].sequence, &batch[0].payload[..]), (seq, &b"event"[..]));
//! q.ack_through(seq)?; // the backend stored it
//! assert_eq!(q.stats().items, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod backoff;
pub mod bench;
mod error;
pub mod fsutil;
pub mod handoff;
pub mod probe;
pub mod queue;
pub mod refusals;
pub mod runner;
pub mod shadow;
pub mod sim;
pub mod slot;
pub mod store;
pub mod tls;
pub mod trust;

pub use error::{AgentError, Result};
