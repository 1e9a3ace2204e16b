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
//! Planned (see `ARCHITECTURE.md`, "Agent and backend"): the QUIC server that drives
//! `sextant_proto`'s state machines with these pieces, the signed model registry on top of the
//! store, staged rollouts with automatic rollback, fleet monitoring and retraining.

#![warn(missing_docs)]

pub mod model;
pub mod pki;
pub mod store;
