//! The SQLite implementation of [`Storage`] (see the module docs of [`crate::store`] for the
//! choices of journal mode, synchronous level and migrations).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Assignment, DeviceRecord, IngestOutcome, ModelRecord, Result, ShadowAggregate, Storage,
    StoreError, TelemetryRow,
};

/// Schema migrations, in order: migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE devices (
        device_id    TEXT PRIMARY KEY NOT NULL,
        device_class TEXT NOT NULL,
        region       TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE models (
        version   INTEGER PRIMARY KEY NOT NULL,
        sha256    BLOB NOT NULL CHECK (length(sha256) = 32),
        length    INTEGER NOT NULL,
        metadata  BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE TABLE assignments (
        device_id      TEXT PRIMARY KEY NOT NULL,
        model_version  INTEGER NOT NULL REFERENCES models(version),
        shadow_version INTEGER REFERENCES models(version),
        assigned_at_ms INTEGER NOT NULL
    );
    CREATE TABLE telemetry (
        device_id      TEXT NOT NULL,
        sequence       INTEGER NOT NULL,
        recorded_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        payload        BLOB NOT NULL,
        PRIMARY KEY (device_id, sequence)
    ) WITHOUT ROWID;",
    // 2: which release key signed a model (first 8 bytes of the SHA-256 of its public key), and
    // the fleet-wide default assignment lives in `assignments` under the device id `*`.
    "ALTER TABLE models ADD COLUMN key_id BLOB NOT NULL DEFAULT x'0000000000000000'
        CHECK (length(key_id) = 8);",
    // 3: shadow-run reports, one row per report (also kept as a telemetry row), so monitoring
    // aggregates them without decoding payloads.
    "CREATE TABLE shadow_reports (
        device_id                 TEXT NOT NULL,
        sequence                  INTEGER NOT NULL,
        baseline                  INTEGER NOT NULL,
        candidate                 INTEGER NOT NULL,
        frames                    INTEGER NOT NULL,
        baseline_localized        INTEGER NOT NULL,
        candidate_localized       INTEGER NOT NULL,
        both_localized            INTEGER NOT NULL,
        median_translation_diff_m REAL NOT NULL,
        median_rotation_diff_rad  REAL NOT NULL,
        baseline_median_us        INTEGER NOT NULL,
        candidate_median_us       INTEGER NOT NULL,
        PRIMARY KEY (device_id, sequence)
    ) WITHOUT ROWID;
    CREATE INDEX shadow_reports_pair ON shadow_reports (candidate, baseline);",
];

const INSERT_TELEMETRY: &str =
    "INSERT INTO telemetry (device_id, sequence, recorded_at_ms, received_at_ms, payload)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (device_id, sequence) DO NOTHING";

const INSERT_SHADOW: &str = "INSERT INTO shadow_reports (device_id, sequence, baseline, candidate,
        frames, baseline_localized, candidate_localized, both_localized,
        median_translation_diff_m, median_rotation_diff_rad, baseline_median_us,
        candidate_median_us)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
     ON CONFLICT (device_id, sequence) DO NOTHING";

/// Inserts one event (and its shadow figures) inside the caller's transaction; `true` if new.
fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    e: &TelemetryRow,
    received_at_ms: i64,
) -> Result<bool> {
    let seq = to_i64(e.sequence, "sequence above i64::MAX")?;
    let n = tx.prepare_cached(INSERT_TELEMETRY)?.execute(params![
        e.device_id,
        seq,
        e.recorded_at_ms,
        received_at_ms,
        e.payload
    ])?;
    if n == 1
        && let Some(f) = &e.shadow
    {
        tx.prepare_cached(INSERT_SHADOW)?.execute(params![
            e.device_id,
            seq,
            to_i64(f.baseline, "model version above i64::MAX")?,
            to_i64(f.candidate, "model version above i64::MAX")?,
            f.frames,
            f.baseline_localized,
            f.candidate_localized,
            f.both_localized,
            f64::from(f.median_translation_diff_m),
            f64::from(f.median_rotation_diff_rad),
            f.baseline_median_us,
            f.candidate_median_us
        ])?;
    }
    Ok(n == 1)
}

/// The device id of the fleet-wide default assignment row (see [`SqliteStore::effective_assignment`]).
pub const DEFAULT_ASSIGNMENT: &str = "*";

/// The `synchronous` level (see the module docs of [`crate::store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a committed transaction survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash; the last commits may be lost on power loss.
    Normal,
}

/// SQLite-backed [`Storage`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn to_i64(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(what))
}

fn sha_from(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "sha256 is not 32 bytes".into(),
        )
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`: WAL, the chosen `synchronous` level,
    /// foreign keys on, and all pending migrations applied.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::configure(conn, durability, MIGRATIONS)
    }

    /// Opens with a caller-supplied migration list (tests of the migration machinery).
    #[doc(hidden)]
    pub fn open_with_migrations(
        path: &Path,
        durability: Durability,
        migrations: &[&str],
    ) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::configure(conn, durability, migrations)
    }

    fn configure(
        mut conn: Connection,
        durability: Durability,
        migrations: &[&str],
    ) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite refused WAL mode");
        }
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, migrations)?;
        Ok(SqliteStore { conn })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
    }

    /// A `PRAGMA` value, for checks and diagnostics (e.g. `journal_mode`, `synchronous`).
    pub fn pragma(&self, name: &str) -> Result<String> {
        Ok(self
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })?)
    }

    /// Sets the page cache size of this connection, in KiB.
    pub fn set_cache_kib(&self, kib: u32) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))?;
        Ok(())
    }

    /// Runs a `PASSIVE` WAL checkpoint (copies committed pages into the database file without
    /// blocking the writer or readers); returns (WAL frames, frames checkpointed). Once a
    /// checkpoint has caught up, the writer's next transaction restarts the WAL from its start,
    /// so the WAL file stays bounded.
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }

    /// Stores several batches in **one** transaction (one WAL fsync for all of them: group
    /// commit), each event once per `(device_id, sequence)`; returns each batch's outcome in
    /// order. The backend's ingest writer coalesces the batches of many connections this way.
    pub fn ingest_many(
        &mut self,
        batches: &[&[TelemetryRow]],
        received_at_ms: i64,
    ) -> Result<Vec<IngestOutcome>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outs = Vec::with_capacity(batches.len());
        for events in batches {
            let mut out = IngestOutcome::default();
            for e in *events {
                if insert_event(&tx, e, received_at_ms)? {
                    out.new += 1;
                } else {
                    out.duplicates += 1;
                }
            }
            outs.push(out);
        }
        tx.commit()?;
        Ok(outs)
    }

    /// Shadow-run reports added up per (baseline, candidate) pair, newest candidate first.
    pub fn shadow_summary(&self) -> Result<Vec<ShadowAggregate>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT baseline, candidate, count(DISTINCT device_id), count(*), sum(frames),
                    sum(baseline_localized), sum(candidate_localized), sum(both_localized),
                    sum(baseline_median_us * frames) * 1.0 / max(sum(frames), 1),
                    sum(candidate_median_us * frames) * 1.0 / max(sum(frames), 1)
             FROM shadow_reports GROUP BY baseline, candidate
             ORDER BY candidate DESC, baseline DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ShadowAggregate {
                baseline: r.get::<_, i64>(0)? as u64,
                candidate: r.get::<_, i64>(1)? as u64,
                devices: r.get::<_, i64>(2)? as u64,
                reports: r.get::<_, i64>(3)? as u64,
                frames: r.get::<_, i64>(4)? as u64,
                baseline_localized: r.get::<_, i64>(5)? as u64,
                candidate_localized: r.get::<_, i64>(6)? as u64,
                both_localized: r.get::<_, i64>(7)? as u64,
                baseline_latency_us: r.get(8)?,
                candidate_latency_us: r.get(9)?,
            })
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// What `device_id` should run: its own assignment, else the fleet default (`*`).
    pub fn effective_assignment(&self, device_id: &str) -> Result<Option<Assignment>> {
        match self.assignment(device_id)? {
            Some(a) => Ok(Some(a)),
            None => Ok(self.assignment(DEFAULT_ASSIGNMENT)?.map(|a| Assignment {
                device_id: device_id.to_owned(),
                ..a
            })),
        }
    }

    /// The highest registered model version, if any.
    pub fn latest_model_version(&self) -> Result<Option<u64>> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT max(version) FROM models", [], |r| r.get(0))?;
        Ok(v.map(|v| v as u64))
    }

    /// Sequence numbers stored for a device, ascending (tests and audits).
    pub fn telemetry_sequences(&self, device_id: &str) -> Result<Vec<u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sequence FROM telemetry WHERE device_id = ?1 ORDER BY sequence",
        )?;
        let rows = stmt.query_map([device_id], |r| r.get::<_, i64>(0))?;
        rows.map(|r| r.map(|v| v as u64).map_err(StoreError::from))
            .collect()
    }

    /// Total stored telemetry events.
    pub fn telemetry_total(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM telemetry", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    let supported = migrations.len() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             one     INTEGER PRIMARY KEY CHECK (one = 1),
             version INTEGER NOT NULL
         );
         INSERT OR IGNORE INTO schema_version (one, version) VALUES (1, 0);",
    )?;
    let found: i64 = tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        tracing::info!(to = i + 1, "applying schema migration");
        tx.execute_batch(sql)?;
        tx.execute("UPDATE schema_version SET version = ?1", [i as i64 + 1])?;
    }
    tx.commit()?;
    Ok(())
}

impl Storage for SqliteStore {
    fn upsert_device(&mut self, d: &DeviceRecord) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO devices (device_id, device_class, region, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id) DO UPDATE SET
                   device_class = excluded.device_class,
                   region = excluded.region,
                   last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?
            .execute(params![
                d.device_id,
                d.device_class,
                d.region,
                d.last_seen_ms
            ])?;
        Ok(())
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT device_id, device_class, region, last_seen_ms FROM devices WHERE device_id = ?1",
            )?
            .query_row([id], |r| {
                Ok(DeviceRecord {
                    device_id: r.get(0)?,
                    device_class: r.get(1)?,
                    region: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                })
            })
            .optional()?)
    }

    fn put_model(&mut self, m: &ModelRecord) -> Result<()> {
        let version = to_i64(m.version, "model version above i64::MAX")?;
        let length = to_i64(m.length, "model length above i64::MAX")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT sha256 FROM models WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(sha) if sha == m.sha256 => {}
            Some(_) => return Err(StoreError::ModelConflict { version: m.version }),
            None => {
                tx.execute(
                    "INSERT INTO models (version, sha256, length, metadata, signature, key_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        version,
                        &m.sha256[..],
                        length,
                        m.metadata,
                        m.signature,
                        &m.key_id[..]
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn model(&self, version: u64) -> Result<Option<ModelRecord>> {
        let v = to_i64(version, "model version above i64::MAX")?;
        Ok(self
            .conn
            .prepare_cached(
                "SELECT version, sha256, length, metadata, signature, key_id
                 FROM models WHERE version = ?1",
            )?
            .query_row([v], |r| {
                Ok(ModelRecord {
                    version: r.get::<_, i64>(0)? as u64,
                    sha256: sha_from(r.get(1)?)?,
                    length: r.get::<_, i64>(2)? as u64,
                    metadata: r.get(3)?,
                    signature: r.get(4)?,
                    key_id: r.get::<_, Vec<u8>>(5)?.try_into().map_err(|_| {
                        rusqlite::Error::FromSqlConversionFailure(
                            5,
                            rusqlite::types::Type::Blob,
                            "key_id is not 8 bytes".into(),
                        )
                    })?,
                })
            })
            .optional()?)
    }

    fn set_assignment(&mut self, a: &Assignment) -> Result<()> {
        let mv = to_i64(a.model_version, "model version above i64::MAX")?;
        let sv = a
            .shadow_version
            .map(|v| to_i64(v, "model version above i64::MAX"))
            .transpose()?;
        for v in std::iter::once(a.model_version).chain(a.shadow_version) {
            if self.model(v)?.is_none() {
                return Err(StoreError::NotFound(format!("model version {v}")));
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO assignments (device_id, model_version, shadow_version, assigned_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id) DO UPDATE SET
                   model_version = excluded.model_version,
                   shadow_version = excluded.shadow_version,
                   assigned_at_ms = excluded.assigned_at_ms",
            )?
            .execute(params![a.device_id, mv, sv, a.assigned_at_ms])?;
        Ok(())
    }

    fn assignment(&self, id: &str) -> Result<Option<Assignment>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT device_id, model_version, shadow_version, assigned_at_ms
                 FROM assignments WHERE device_id = ?1",
            )?
            .query_row([id], |r| {
                Ok(Assignment {
                    device_id: r.get(0)?,
                    model_version: r.get::<_, i64>(1)? as u64,
                    shadow_version: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    assigned_at_ms: r.get(3)?,
                })
            })
            .optional()?)
    }

    fn ingest(&mut self, events: &[TelemetryRow], received_at_ms: i64) -> Result<IngestOutcome> {
        Ok(self
            .ingest_many(&[events], received_at_ms)?
            .pop()
            .unwrap_or_default())
    }

    fn telemetry_count(&self, id: &str) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM telemetry WHERE device_id = ?1")?
            .query_row([id], |r| r.get(0))?;
        Ok(n as u64)
    }
}
