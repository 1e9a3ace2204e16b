//! The telemetry queue on real files: caps, acknowledgement, torn tails, restarts, and a
//! fault-injecting disk (short writes, ENOSPC).

use sextant_agent::AgentError;
use sextant_agent::fsutil::FaultyDisk;
use sextant_agent::queue::{QueueConfig, RECORD_HEADER, SyncPolicy, TelemetryQueue};

const T0: u64 = 1_700_000_000_000;

fn small() -> QueueConfig {
    QueueConfig {
        segment_bytes: 1024,
        ..QueueConfig::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:06}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

fn all(q: &TelemetryQueue) -> Vec<(u64, Vec<u8>)> {
    q.peek_batch(usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.sequence, r.payload))
        .collect()
}

#[test]
fn records_survive_reopen_in_order_and_acks_delete_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut seqs = Vec::new();
    {
        let mut q = TelemetryQueue::open(dir.path(), "d1", small()).unwrap();
        for i in 0..200 {
            seqs.push(q.append(&payload(i), T0).unwrap());
        }
        assert!(q.segment_count() > 5);
    }
    let mut q = TelemetryQueue::open(dir.path(), "d1", small()).unwrap();
    let got = all(&q);
    assert_eq!(got.len(), 200);
    for (i, (s, p)) in got.iter().enumerate() {
        assert_eq!((*s, p), (seqs[i], &payload(i as u64)));
    }
    // Batches honour both limits, always returning at least one record.
    let b = q.peek_batch(10, usize::MAX).unwrap();
    assert_eq!(b.len(), 10);
    let b = q.peek_batch(100, 27).unwrap();
    assert_eq!(b.len(), 2, "13 + 14 payload bytes fit 27");
    let b = q.peek_batch(100, 5).unwrap();
    assert_eq!(
        b.len(),
        1,
        "a record larger than the byte limit still comes alone"
    );
    let segments_before = q.segment_count();
    assert_eq!(q.ack_through(seqs[149]).unwrap(), 150);
    assert!(q.segment_count() < segments_before);
    assert_eq!(q.ack_through(seqs[10]).unwrap(), 0, "acks never go back");
    drop(q);
    let mut q = TelemetryQueue::open(dir.path(), "d1", small()).unwrap();
    let got = all(&q);
    assert_eq!(got.first().map(|r| r.0), Some(seqs[150]));
    assert_eq!(got.len(), 50);
    // Acknowledge everything: segments go, and numbering continues upwards after a restart.
    q.ack_through(u64::MAX).unwrap();
    assert_eq!(q.stats().items, 0);
    assert_eq!(q.stats().acked_through, seqs[199]);
    drop(q);
    let mut q = TelemetryQueue::open(dir.path(), "d1", small()).unwrap();
    assert_eq!(q.segment_count(), 0);
    let s = q.append(b"after", T0).unwrap();
    assert!(s > seqs[199]);
}

#[test]
fn torn_tail_at_every_byte_is_cut_and_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        segment_bytes: 1 << 20,
        sync: SyncPolicy::Manual,
        ..QueueConfig::default()
    };
    {
        let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
        for i in 0..5 {
            q.append(&payload(i), T0).unwrap();
        }
    }
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let full = std::fs::read(&seg).unwrap();
    let bounds: Vec<usize> = {
        let mut v = vec![0];
        for i in 0..5 {
            v.push(v[i] + RECORD_HEADER + payload(i as u64).len());
        }
        v
    };
    for cut in 0..=full.len() {
        let work = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("state"), work.path().join("state")).unwrap();
        let mut bytes = full[..cut].to_vec();
        // Garbage after the cut, as a crash mid-write on some file systems leaves.
        if cut < full.len() {
            bytes.extend_from_slice(&[0xa5; 7]);
        }
        std::fs::write(work.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let mut q = TelemetryQueue::open(work.path(), "d", cfg.clone()).unwrap();
        let whole = bounds.iter().filter(|b| **b <= cut).count() - 1;
        let got = all(&q);
        assert_eq!(got.len(), whole, "cut at {cut}");
        for (i, (_, p)) in got.iter().enumerate() {
            assert_eq!(p, &payload(i as u64));
        }
        // The file was cut back to the last whole record, so appends continue cleanly.
        q.append(b"next", T0).unwrap();
        drop(q);
        let q = TelemetryQueue::open(work.path(), "d", cfg.clone()).unwrap();
        let got = all(&q);
        assert_eq!(got.len(), whole + 1);
        assert_eq!(got.last().unwrap().1, b"next");
    }
}

#[test]
fn item_byte_and_age_caps_drop_oldest_and_counts_persist() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        max_items: 64,
        max_bytes: 1 << 20,
        max_age_ms: 60_000,
        segment_bytes: 512,
        ..QueueConfig::default()
    };
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
    let mut last = 0;
    for i in 0..200 {
        last = q.append(&payload(i), T0).unwrap();
    }
    let st = q.stats();
    assert!(st.items <= 64 && st.items >= 60, "items {}", st.items);
    assert_eq!(st.dropped.by_items, 200 - st.items);
    let got = all(&q);
    assert_eq!(got.last().unwrap().0, last, "newest kept");
    assert_eq!(
        got.first().unwrap().1,
        payload(200 - st.items),
        "oldest dropped first"
    );
    drop(q);
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
    assert_eq!(
        q.stats().dropped.by_items,
        200 - st.items,
        "drop count persisted"
    );

    // Age: everything recorded at T0 is too old a minute and a bit later.
    let n = q.expire(T0 + 61_000).unwrap();
    assert_eq!(n, st.items);
    assert_eq!(q.stats().items, 0);
    assert_eq!(q.stats().dropped.by_age, st.items);
    q.add_handoff_drops(3).unwrap();
    drop(q);

    let byte_cfg = QueueConfig {
        max_bytes: 4096,
        max_record_bytes: 1024,
        ..cfg
    };
    let mut q = TelemetryQueue::open(dir.path(), "d", byte_cfg).unwrap();
    for _ in 0..100 {
        q.append(&[7u8; 100], T0 + 61_000).unwrap();
    }
    let st2 = q.stats();
    assert!(st2.bytes <= 4096, "bytes {}", st2.bytes);
    assert_eq!(st2.dropped.by_bytes, 100 - st2.items);
    assert_eq!(st2.dropped.by_handoff, 3);
    assert_eq!(st2.dropped.by_age, st.items);
    assert!(matches!(
        q.append(&[0u8; 2000], T0),
        Err(AgentError::RecordTooLarge {
            len: 2000,
            max: 1024
        })
    ));
}

#[test]
fn queue_refuses_another_devices_directory() {
    let dir = tempfile::tempdir().unwrap();
    TelemetryQueue::open(dir.path(), "a", small()).unwrap();
    assert!(matches!(
        TelemetryQueue::open(dir.path(), "b", small()),
        Err(AgentError::InvalidConfig(_))
    ));
}

#[test]
fn short_writes_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::new(u64::MAX, true);
    let mut q = TelemetryQueue::open_with_disk(dir.path(), "d", small(), Box::new(disk)).unwrap();
    for i in 0..100 {
        q.append(&payload(i), T0).unwrap();
    }
    drop(q);
    let q = TelemetryQueue::open(dir.path(), "d", small()).unwrap();
    let got = all(&q);
    assert_eq!(got.len(), 100);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, r)| r.1 == payload(i as u64))
    );
}

#[test]
fn full_disk_is_a_typed_error_and_loses_nothing_stored() {
    for short in [false, true] {
        for sync in [SyncPolicy::EveryAppend, SyncPolicy::Manual] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = QueueConfig { sync, ..small() };
            let disk = FaultyDisk::new(3000, short);
            let mut q = TelemetryQueue::open_with_disk(
                dir.path(),
                "d",
                cfg.clone(),
                Box::new(disk.clone()),
            )
            .unwrap();
            let mut stored = Vec::new();
            let mut i = 0;
            let err = loop {
                match q.append(&payload(i), T0) {
                    Ok(s) => stored.push((s, payload(i))),
                    Err(e) => break e,
                }
                i += 1;
            };
            assert!(
                matches!(err, AgentError::DiskFull { .. }),
                "expected DiskFull, got {err:?}"
            );
            // A batch that does not fit is refused whole.
            let batch = [payload(1000), payload(1001)];
            assert!(matches!(
                q.append_batch(batch.iter().map(Vec::as_slice), T0),
                Err(AgentError::DiskFull { .. })
            ));
            assert_eq!(all(&q), stored, "what was stored is intact");
            // Space comes back: appending resumes, numbering continues.
            disk.set_budget(u64::MAX);
            let s = q.append(b"after", T0).unwrap();
            assert!(s > stored.last().unwrap().0);
            stored.push((s, b"after".to_vec()));
            drop(q);
            let q = TelemetryQueue::open(dir.path(), "d", cfg).unwrap();
            assert_eq!(all(&q), stored, "short={short} sync={sync:?}");
        }
    }
}
