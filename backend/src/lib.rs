//! The Sextant companion backend.
//!
//! Planned (see `ARCHITECTURE.md`, "Agent and backend"): the signed model registry, staged rollouts
//! with automatic rollback, deduplicated telemetry ingest into SQLite, fleet monitoring and retraining.
//! Nothing is implemented yet.
