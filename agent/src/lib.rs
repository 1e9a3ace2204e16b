//! The on-device sync agent that Sextant apps link beside the runtime.
//!
//! Planned (see `ARCHITECTURE.md`, "Agent and backend"): a content-addressed model store with atomic
//! installs and local rollback, model sync over QUIC with signed metadata, shadow runs of a candidate
//! model, and a durable telemetry queue. Nothing is implemented yet.
