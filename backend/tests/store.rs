//! The SQLite store and blob store on real files in temporary directories.

use sextant_backend::store::{
    Assignment, DataDir, DeviceRecord, Durability, ModelRecord, SqliteStore, Storage, StoreError,
    TelemetryRow, sqlite::MIGRATIONS,
};

fn ev(device: &str, seq: u64) -> TelemetryRow {
    TelemetryRow {
        device_id: device.into(),
        sequence: seq,
        recorded_at_ms: 1_700_000_000_000 + seq as i64,
        payload: format!("{device}/{seq}").into_bytes(),
        shadow: None,
    }
}

#[test]
fn opens_in_wal_with_full_sync_and_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let d = DataDir::open(dir.path()).unwrap();
    assert_eq!(d.db.pragma("journal_mode").unwrap(), "wal");
    assert_eq!(d.db.pragma("synchronous").unwrap(), "2", "FULL");
    assert_eq!(d.db.pragma("foreign_keys").unwrap(), "1");
    assert_eq!(d.db.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert!(dir.path().join("sextant.db").is_file());
    assert!(dir.path().join("blobs/sha256").is_dir());
    let n = SqliteStore::open(&dir.path().join("n.db"), Durability::Normal).unwrap();
    assert_eq!(n.pragma("synchronous").unwrap(), "1", "NORMAL");
}

#[test]
fn ingest_stores_each_device_sequence_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap();
    let batch: Vec<_> = (1..=100).map(|s| ev("a", s)).collect();
    let r = db.ingest(&batch, 1).unwrap();
    assert_eq!((r.new, r.duplicates), (100, 0));
    // A retried, overlapping batch: only the new half counts.
    let retry: Vec<_> = (51..=150).map(|s| ev("a", s)).collect();
    let r = db.ingest(&retry, 2).unwrap();
    assert_eq!((r.new, r.duplicates), (50, 50));
    // Same sequence numbers from another device are distinct events.
    let other: Vec<_> = (1..=10).map(|s| ev("b", s)).collect();
    assert_eq!(db.ingest(&other, 3).unwrap().new, 10);
    // Duplicates inside one batch count once.
    let dup = vec![ev("c", 1), ev("c", 1), ev("c", 2)];
    let r = db.ingest(&dup, 4).unwrap();
    assert_eq!((r.new, r.duplicates), (2, 1));
    assert_eq!(db.telemetry_count("a").unwrap(), 150);
    assert_eq!(db.telemetry_total().unwrap(), 162);
    drop(db);
    let db = SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap();
    assert_eq!(db.telemetry_total().unwrap(), 162, "committed rows persist");
}

#[test]
fn a_failing_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap();
    let mut batch: Vec<_> = (1..=10).map(|s| ev("a", s)).collect();
    batch.push(ev("a", u64::MAX)); // does not fit an INTEGER column
    assert!(matches!(db.ingest(&batch, 1), Err(StoreError::Invalid(_))));
    assert_eq!(
        db.telemetry_total().unwrap(),
        0,
        "the transaction rolled back"
    );
}

#[test]
fn devices_models_and_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap();
    let dev = DeviceRecord {
        device_id: "d1".into(),
        device_class: "phone-high".into(),
        region: "u0".into(),
        last_seen_ms: 10,
    };
    db.upsert_device(&dev).unwrap();
    db.upsert_device(&DeviceRecord {
        last_seen_ms: 5,
        ..dev.clone()
    })
    .unwrap();
    assert_eq!(
        db.device("d1").unwrap().unwrap().last_seen_ms,
        10,
        "last seen never goes back"
    );
    assert_eq!(db.device("nope").unwrap(), None);

    let m1 = ModelRecord {
        version: 1,
        sha256: [1; 32],
        length: 100,
        metadata: b"meta1".to_vec(),
        signature: vec![9; 64],
        key_id: [3; 8],
    };
    db.put_model(&m1).unwrap();
    db.put_model(&m1).unwrap();
    assert!(matches!(
        db.put_model(&ModelRecord {
            sha256: [2; 32],
            ..m1.clone()
        }),
        Err(StoreError::ModelConflict { version: 1 })
    ));
    assert_eq!(db.model(1).unwrap().unwrap(), m1);
    let m2 = ModelRecord {
        version: 2,
        sha256: [2; 32],
        ..m1.clone()
    };
    db.put_model(&m2).unwrap();

    let a = Assignment {
        device_id: "d1".into(),
        model_version: 1,
        shadow_version: Some(2),
        assigned_at_ms: 20,
    };
    db.set_assignment(&a).unwrap();
    assert_eq!(db.assignment("d1").unwrap().unwrap(), a);
    let a2 = Assignment {
        model_version: 2,
        shadow_version: None,
        ..a.clone()
    };
    db.set_assignment(&a2).unwrap();
    assert_eq!(db.assignment("d1").unwrap().unwrap(), a2);
    assert!(matches!(
        db.set_assignment(&Assignment {
            model_version: 7,
            ..a
        }),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn refuses_a_database_newer_than_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut future: Vec<&str> = MIGRATIONS.to_vec();
    future.push("CREATE TABLE from_the_future (x INTEGER);");
    let db = SqliteStore::open_with_migrations(&path, Durability::Full, &future).unwrap();
    assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64 + 1);
    drop(db);
    match SqliteStore::open(&path, Durability::Full) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(
                (found, supported),
                (MIGRATIONS.len() as i64 + 1, MIGRATIONS.len() as i64)
            );
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn a_failed_migration_leaves_the_old_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path, Durability::Full).unwrap());
    let mut broken: Vec<&str> = MIGRATIONS.to_vec();
    broken.push("CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;");
    assert!(SqliteStore::open_with_migrations(&path, Durability::Full, &broken).is_err());
    let db = SqliteStore::open(&path, Durability::Full).unwrap();
    assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert!(
        db.pragma("table_info(half_done)").is_err(),
        "the half migration was rolled back"
    );
}
