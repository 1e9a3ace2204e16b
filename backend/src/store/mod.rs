//! Backend storage: a small [`Storage`] trait, its SQLite implementation, and the
//! content-addressed blob store for model files.
//!
//! # Data directory
//!
//! ```text
//! <data>/sextant.db   (+ -wal, -shm)   devices, models, assignments, telemetry
//! <data>/blobs/sha256/ab/cdef…         model files, named by the SHA-256 of their bytes
//! ```
//!
//! [`DataDir`] opens both. The default data directory is `$SEXTANT_DATA_DIR`, else
//! `$XDG_DATA_HOME/sextant`, else `~/.local/share/sextant` ([`default_data_dir`]).
//!
//! # SQLite choices
//!
//! - **WAL** journal: readers (monitoring queries) do not block the ingest writer, and a commit
//!   is one sequential append to the WAL.
//! - **`synchronous=FULL`** by default: the backend acknowledges telemetry to a device only after
//!   the batch's transaction commits, and the device then deletes those records for good. With
//!   `NORMAL`, WAL commits are durable against a process crash but the last transactions can be
//!   lost on power failure — after they were acknowledged, i.e. lost data. `FULL` fsyncs the WAL
//!   at every commit; ingest batches records (one transaction per batch), so that is one fsync
//!   per batch, not per record. [`Durability::Normal`] exists for measurements and for
//!   deployments on storage with power-loss protection.
//! - **Migrations**: `schema_version` holds one row; each migration in [`sqlite::MIGRATIONS`] runs
//!   in one `IMMEDIATE` transaction together with the version bump, so a failed migration
//!   leaves the previous schema intact. A database newer than the code is refused
//!   ([`StoreError::SchemaTooNew`]) rather than misread.
//! - **Telemetry dedup**: `telemetry` is keyed by `(device_id, sequence)` (a `WITHOUT ROWID`
//!   table); ingest is `INSERT … ON CONFLICT DO NOTHING` in one transaction per batch and reports
//!   how many rows were new, so a retried batch is stored once and acknowledged again.

use std::path::{Path, PathBuf};

pub mod blobs;
pub mod sqlite;

pub use blobs::BlobStore;
pub use sqlite::{DEFAULT_ASSIGNMENT, Durability, SqliteStore};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by newer code; refusing to guess at its schema.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A model version is already registered with different content.
    #[error("model version {version} is already registered with a different sha256")]
    ModelConflict {
        /// The version.
        version: u64,
    },
    /// A referenced row does not exist (e.g. an assignment to an unknown model).
    #[error("{0} not found")]
    NotFound(String),
    /// A stored blob's bytes do not hash to its name.
    #[error("blob {expected} is corrupt: its bytes hash to {actual}")]
    BlobCorrupt {
        /// The name (hex digest).
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A value does not fit the schema (e.g. an integer above `i64::MAX`).
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

/// Result alias for the storage layer.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// A device known to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The id in the device's client certificate.
    pub device_id: String,
    /// Device class (a monitoring slice), e.g. `phone-high`.
    pub device_class: String,
    /// Coarse region (a monitoring slice), e.g. a 2-character geohash.
    pub region: String,
    /// Last time the device connected (ms since the Unix epoch).
    pub last_seen_ms: i64,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    /// Release number.
    pub version: u64,
    /// SHA-256 of the model file (the blob's name).
    pub sha256: [u8; 32],
    /// File length in bytes.
    pub length: u64,
    /// The signed metadata's canonical bytes.
    pub metadata: Vec<u8>,
    /// The release key's Ed25519 signature over `metadata`.
    pub signature: Vec<u8>,
    /// Which release key signed: the first 8 bytes of the SHA-256 of its public key.
    pub key_id: [u8; 8],
}

/// What a device should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The device.
    pub device_id: String,
    /// The model version it should serve with.
    pub model_version: u64,
    /// A candidate to run in shadow beside it, if any.
    pub shadow_version: Option<u64>,
    /// When the assignment was made (ms since the Unix epoch).
    pub assigned_at_ms: i64,
}

/// One telemetry event as stored: identified by `(device_id, sequence)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRow {
    /// The reporting device.
    pub device_id: String,
    /// The device's sequence number.
    pub sequence: u64,
    /// When the device recorded it (ms since the Unix epoch, device clock).
    pub recorded_at_ms: i64,
    /// The encoded event.
    pub payload: Vec<u8>,
    /// When the event is a shadow-run report: its figures, also stored in `shadow_reports` so
    /// that monitoring reads them without decoding payloads.
    pub shadow: Option<ShadowFigures>,
}

/// The figures of one shadow-run report (see `sextant_proto::ShadowReport`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ShadowFigures {
    /// The active model whose results were used.
    pub baseline: u64,
    /// The candidate run in shadow.
    pub candidate: u64,
    /// Frames both models saw.
    pub frames: u32,
    /// Frames the baseline localised.
    pub baseline_localized: u32,
    /// Frames the candidate localised.
    pub candidate_localized: u32,
    /// Frames both localised.
    pub both_localized: u32,
    /// Median translation difference where both localised (m).
    pub median_translation_diff_m: f32,
    /// Median rotation difference where both localised (rad).
    pub median_rotation_diff_rad: f32,
    /// Median end-to-end latency of the baseline (µs).
    pub baseline_median_us: u32,
    /// Median end-to-end latency of the candidate (µs).
    pub candidate_median_us: u32,
}

/// Shadow reports of one (baseline, candidate) pair, added up over devices.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowAggregate {
    /// The active model.
    pub baseline: u64,
    /// The candidate.
    pub candidate: u64,
    /// Devices that reported.
    pub devices: u64,
    /// Reports.
    pub reports: u64,
    /// Frames both models saw.
    pub frames: u64,
    /// Frames the baseline localised.
    pub baseline_localized: u64,
    /// Frames the candidate localised.
    pub candidate_localized: u64,
    /// Frames both localised.
    pub both_localized: u64,
    /// Frame-weighted mean of the reports' baseline median latencies (µs).
    pub baseline_latency_us: f64,
    /// Frame-weighted mean of the reports' candidate median latencies (µs).
    pub candidate_latency_us: f64,
}

/// The outcome of ingesting a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events stored now.
    pub new: u64,
    /// Events that were already stored (a retried upload).
    pub duplicates: u64,
}

/// What the backend needs from a database. Small on purpose: the SQLite implementation is the
/// embedded default; a PostgreSQL one can follow for deployments that outgrow one machine.
pub trait Storage {
    /// Inserts or updates a device.
    fn upsert_device(&mut self, device: &DeviceRecord) -> Result<()>;
    /// Looks a device up.
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>>;
    /// Registers a model version; re-registering identical content is a no-op, different content
    /// under the same version is [`StoreError::ModelConflict`].
    fn put_model(&mut self, model: &ModelRecord) -> Result<()>;
    /// Looks a model version up.
    fn model(&self, version: u64) -> Result<Option<ModelRecord>>;
    /// Sets what a device should run (both versions must be registered).
    fn set_assignment(&mut self, assignment: &Assignment) -> Result<()>;
    /// What a device should run.
    fn assignment(&self, device_id: &str) -> Result<Option<Assignment>>;
    /// Stores a batch of events in one transaction, each `(device_id, sequence)` once.
    fn ingest(&mut self, events: &[TelemetryRow], received_at_ms: i64) -> Result<IngestOutcome>;
    /// Number of stored events of a device.
    fn telemetry_count(&self, device_id: &str) -> Result<u64>;
}

/// The default data directory: `$SEXTANT_DATA_DIR`, else `$XDG_DATA_HOME/sextant`, else
/// `$HOME/.local/share/sextant`, else `./sextant-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SEXTANT_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("sextant");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/sextant");
    }
    PathBuf::from("sextant-data")
}

/// A backend data directory: the database and the blob store.
#[derive(Debug)]
pub struct DataDir {
    /// The database.
    pub db: SqliteStore,
    /// The model blobs.
    pub blobs: BlobStore,
}

impl DataDir {
    /// Opens (creating if needed) `dir/sextant.db` and `dir/blobs`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err("create data directory", dir))?;
        Ok(DataDir {
            db: SqliteStore::open(&dir.join("sextant.db"), Durability::Full)?,
            blobs: BlobStore::open(&dir.join("blobs"))?,
        })
    }
}
