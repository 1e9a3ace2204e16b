//! Raw telemetry ingest rate of the SQLite store.
//!
//! - `one_writer/<sync>/<batch>`: one writer, one transaction per batch of `batch` events
//!   (160-byte payloads, all new), `synchronous` FULL or NORMAL.
//! - `producers_100/<sync>/<batch>`: 100 producer threads (one per device, standing in for 100
//!   agent connections) send uploads of 100 events each through a bounded channel to one writer
//!   thread, which coalesces uploads into transactions of up to `batch` events — the shape of
//!   the backend's ingest path, minus the network and CBOR decoding.
//!
//! `cargo bench -p sextant-backend --bench ingest`. The database lives in a temporary directory
//! (set `TMPDIR` to measure another disk); throughput is in events per second.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sextant_backend::store::{Durability, SqliteStore, Storage, TelemetryRow};

const PAYLOAD: usize = 160;

fn row(device: usize, seq: u64) -> TelemetryRow {
    TelemetryRow {
        device_id: format!("device-{device:04}"),
        sequence: seq,
        recorded_at_ms: 1_700_000_000_000 + seq as i64,
        payload: vec![(seq % 251) as u8; PAYLOAD],
        shadow: None,
    }
}

fn open(dir: &tempfile::TempDir, d: Durability) -> SqliteStore {
    match SqliteStore::open(&dir.path().join("bench.db"), d) {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    }
}

fn name(d: Durability) -> &'static str {
    match d {
        Durability::Full => "full",
        Durability::Normal => "normal",
    }
}

fn one_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_writer");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for d in [Durability::Full, Durability::Normal] {
        for batch in [100usize, 1_000, 10_000] {
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(name(d), batch), &batch, |b, &batch| {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut db = open(&dir, d);
                let mut next = 0u64;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let rows: Vec<_> = (0..batch)
                            .map(|i| {
                                next += 1;
                                row(i % 100, next)
                            })
                            .collect();
                        let t = Instant::now();
                        let r = db.ingest(&rows, 0).expect("ingest");
                        total += t.elapsed();
                        assert_eq!(r.new, batch as u64);
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

fn producers_100(c: &mut Criterion) {
    const PRODUCERS: usize = 100;
    const PER_PRODUCER: u64 = 1_000;
    const UPLOAD: u64 = 100;
    let mut g = c.benchmark_group("producers_100");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(PRODUCERS as u64 * PER_PRODUCER));
    for d in [Durability::Full, Durability::Normal] {
        for batch in [1_000usize, 5_000] {
            g.bench_with_input(BenchmarkId::new(name(d), batch), &batch, |b, &batch| {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut db = open(&dir, d);
                let mut round = 0u64;
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        round += 1;
                        let base = round * PER_PRODUCER;
                        let (tx, rx) = mpsc::sync_channel::<Vec<TelemetryRow>>(PRODUCERS);
                        let producers: Vec<_> = (0..PRODUCERS)
                            .map(|p| {
                                let tx = tx.clone();
                                std::thread::spawn(move || {
                                    for chunk in 0..PER_PRODUCER / UPLOAD {
                                        let first = base + chunk * UPLOAD;
                                        let upload =
                                            (first..first + UPLOAD).map(|s| row(p, s)).collect();
                                        if tx.send(upload).is_err() {
                                            return;
                                        }
                                    }
                                })
                            })
                            .collect();
                        drop(tx);
                        let mut stored = 0u64;
                        let mut buf: Vec<TelemetryRow> = Vec::with_capacity(batch + 100);
                        while let Ok(first) = rx.recv() {
                            buf.extend(first);
                            while buf.len() < batch {
                                match rx.try_recv() {
                                    Ok(r) => buf.extend(r),
                                    Err(_) => break,
                                }
                            }
                            stored += db.ingest(&buf, 0).expect("ingest").new;
                            buf.clear();
                        }
                        for p in producers {
                            p.join().expect("producer");
                        }
                        assert_eq!(stored, PRODUCERS as u64 * PER_PRODUCER);
                    }
                    start.elapsed()
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, one_writer, producers_100);
criterion_main!(benches);
