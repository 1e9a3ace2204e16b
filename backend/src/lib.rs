//! The Sextant companion backend.
//!
//! Implemented so far: [`model`], the reproducible builder of the runtime's learned int8
//! descriptor model (`sextant model build`), so the backend can retrain it later.
//!
//! - [`pki`]: the fleet CA (ECDSA P-256), device and server certificates, the CRL that rustls
//!   consults to refuse revoked devices, TLS 1.3 configurations with ALPN `sextant/1`, and the
//!   Ed25519 release key that signs model metadata.
//! - [`store`]: the [`store::Storage`] trait and its SQLite implementation (WAL,
//!   `synchronous=FULL`, transactional migrations, telemetry stored once per
//!   `(device, sequence)` in batched transactions), and content-addressed model blobs.
//!
//! - [`registry`]: publishing a model (content-addressed blob + metadata signed with the
//!   Ed25519 release key) and assignments (per device, or the fleet default).
//! - [`server`]: `sextant backend serve`, the quinn server (mutual TLS, CRL reloaded on change)
//!   that drives one [`sextant_proto::Server`] per connection: sync, resumable downloads and
//!   telemetry ingest with group commit.
//!
//! Planned (see `ARCHITECTURE.md`, "Agent and backend"): staged rollouts with automatic
//! rollback, fleet monitoring and retraining, the admin listener.

#![warn(missing_docs)]

mod error;
pub mod model;
pub mod pki;
pub mod registry;
pub mod server;
pub mod store;

pub use error::{BackendError, Result};
