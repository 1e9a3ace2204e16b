//! The queue's memory copy of just-appended records, and what it knows about the records it
//! encoded itself: records appended by this process are served from memory (no read back);
//! records found on disk after a restart, or beyond the copy's size, are read from the segment
//! files and checked; both give the same bytes. Also the deferred acknowledgement cursor.

use sextant_agent::AgentError;
use sextant_agent::queue::{DEFERRED_SEGMENTS, QueueConfig, RawBatch, SyncPolicy, TelemetryQueue};
use sextant_proto::{
    ComputeBackend, FailureReason, Label, LocalizationEvent, ModelVersion, Outcome, PoseSource,
    RecordBody, SliceKeys, StageTimings,
};

const T0: u64 = 1_700_000_000_000;

fn body(i: u64) -> RecordBody {
    RecordBody::Localization(LocalizationEvent {
        model: ModelVersion(i % 3),
        slice: SliceKeys {
            device_class: Label::new("pixel-8").unwrap(),
            app_version: Label::new(format!("1.{}", i % 7)).unwrap(),
            backend: ComputeBackend::Cpu,
            region: None,
        },
        outcome: if i.is_multiple_of(5) {
            Outcome::Failed {
                reason: FailureReason::TooFewMatches,
            }
        } else {
            Outcome::Localized {
                source: PoseSource::Visual,
            }
        },
        confidence: (i % 100) as f32 / 100.0,
        inliers: (i * 7 % 500) as u32,
        timings: StageTimings::default(),
    })
}

fn encoded(i: u64) -> Vec<u8> {
    let mut v = Vec::new();
    body(i).encode_cbor(&mut v);
    v
}

fn config(memory_bytes: usize) -> QueueConfig {
    QueueConfig {
        segment_bytes: 16 << 10,
        sync: SyncPolicy::Manual,
        memory_bytes,
        ..QueueConfig::default()
    }
}

/// Every queued record as `(sequence, payload, encoded_here, from_memory)`.
fn peek(q: &TelemetryQueue) -> Vec<(u64, Vec<u8>, bool, bool)> {
    let mut raw = RawBatch::default();
    q.peek_raw(usize::MAX, usize::MAX, &mut raw).unwrap();
    raw.records
        .iter()
        .map(|r| {
            (
                r.sequence,
                raw.payload(r).to_vec(),
                r.encoded_here,
                r.from_memory,
            )
        })
        .collect()
}

#[test]
fn appended_records_come_from_memory_and_after_a_restart_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = TelemetryQueue::open(dir.path(), "d", config(1 << 20)).unwrap();
    let a = q.append_bodies((0..300).map(body), T0).unwrap();
    let b = q.append_bodies((300..500).map(body), T0 + 1).unwrap();
    assert_eq!((a.start + 300, b.start), (a.end, a.end));
    assert!(q.segment_count() > 1, "the test spans segments");
    let got = peek(&q);
    assert_eq!(got.len(), 500);
    for (i, (seq, payload, here, mem)) in got.iter().enumerate() {
        assert_eq!(*seq, a.start + i as u64);
        assert_eq!(payload, &encoded(i as u64), "record {i}");
        assert!(
            *here && *mem,
            "record {i}: encoded here, served from memory"
        );
    }
    let st = q.stats();
    assert_eq!((st.read_from_memory, st.read_from_disk), (500, 0));
    // Acknowledging part of a batch: the rest of it still comes from memory, in place.
    q.ack_through(a.start + 149).unwrap();
    let got = peek(&q);
    assert_eq!(got.len(), 350);
    assert_eq!(got[0].0, a.start + 150);
    assert_eq!(got[0].1, encoded(150));
    assert!(got.iter().all(|r| r.3));
    drop(q);

    // A restart: the records are found on disk, read back from it and checked; this process
    // did not encode them.
    let q = TelemetryQueue::open(dir.path(), "d", config(1 << 20)).unwrap();
    let got = peek(&q);
    assert_eq!(got.len(), 350);
    for (k, (seq, payload, here, mem)) in got.iter().enumerate() {
        let i = 150 + k as u64;
        assert_eq!((*seq, payload), (a.start + i, &encoded(i)));
        assert!(!*here && !*mem, "record {i}: from disk, not encoded here");
    }
    let st = q.stats();
    assert_eq!((st.read_from_memory, st.read_from_disk), (0, 350));
}

#[test]
fn beyond_the_memory_copy_records_are_read_from_disk_in_order() {
    // Room for some of the five batches: the oldest are in memory, the rest on disk only.
    let dir = tempfile::tempdir().unwrap();
    let mut q = TelemetryQueue::open(dir.path(), "d", config(64 << 10)).unwrap();
    let mut first = None;
    for k in 0..5u64 {
        let r = q
            .append_bodies((k * 100..(k + 1) * 100).map(body), T0)
            .unwrap();
        first.get_or_insert(r.start);
    }
    let first = first.unwrap();
    let got = peek(&q);
    assert_eq!(got.len(), 500);
    for (i, (seq, payload, here, _)) in got.iter().enumerate() {
        assert_eq!((*seq, payload), (first + i as u64, &encoded(i as u64)));
        assert!(*here, "encoded here, wherever it is read from");
    }
    let from_memory = got.iter().take_while(|r| r.3).count();
    assert!((100..500).contains(&from_memory), "{from_memory}");
    assert!(got[from_memory..].iter().all(|r| !r.3));
    // As records are acknowledged the copy takes new appends again.
    q.ack_through(first + 299).unwrap();
    let later = q.append_bodies((500..600).map(body), T0).unwrap();
    let got = peek(&q);
    assert_eq!(got.len(), 300);
    assert!(
        got[..200].iter().all(|r| !r.3),
        "appended while the copy was full"
    );
    assert!(got[200..].iter().all(|r| r.3), "appended after it emptied");
    assert_eq!(got[200].0, later.start);
    assert_eq!(got[299].1, encoded(599));

    // No memory copy at all: everything is read back, still known to be encoded here.
    let dir = tempfile::tempdir().unwrap();
    let mut q = TelemetryQueue::open(dir.path(), "d", config(0)).unwrap();
    q.append_bodies((0..50).map(body), T0).unwrap();
    let got = peek(&q);
    assert!(got.iter().all(|r| r.2 && !r.3));
    assert_eq!(q.stats().read_from_disk, 50);
}

#[test]
fn only_bodies_the_queue_encoded_are_marked_encoded_here() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = TelemetryQueue::open(dir.path(), "d", config(1 << 20)).unwrap();
    q.append_bodies((0..10).map(body), T0).unwrap();
    q.append_batch([b"not cbor".as_slice(), &[0xff]], T0)
        .unwrap();
    q.append_from(T0, {
        let mut n = 0;
        move |out: &mut Vec<u8>| {
            n += 1;
            out.extend_from_slice(&encoded(99));
            n <= 3
        }
    })
    .unwrap();
    q.append_bodies((10..20).map(body), T0).unwrap();
    let marks: Vec<bool> = peek(&q).iter().map(|r| r.2).collect();
    let want: Vec<bool> = (0..25).map(|i| !(10..15).contains(&i)).collect();
    assert_eq!(marks, want);
}

/// A record this process encoded is still checked against its checksum when it is read back
/// from disk: a flipped bit is an error, never a wrong record.
#[test]
fn records_encoded_here_but_read_from_disk_are_still_checksummed() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = TelemetryQueue::open(dir.path(), "d", config(0)).unwrap();
    q.append_bodies((0..20).map(body), T0).unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let mut raw = RawBatch::default();
    assert!(matches!(
        q.peek_raw(usize::MAX, usize::MAX, &mut raw),
        Err(AgentError::CorruptRecord { .. })
    ));
}

#[test]
fn caps_and_expiry_keep_the_memory_copy_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        max_items: 160,
        max_age_ms: 60_000,
        ..config(1 << 20)
    };
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg).unwrap();
    let mut seqs = Vec::new();
    for k in 0..10u64 {
        let r = q
            .append_bodies((k * 20..(k + 1) * 20).map(body), T0 + k * 10_000)
            .unwrap();
        seqs.extend(r);
    }
    let got = peek(&q);
    let first = seqs.len() - got.len();
    assert!(first > 0, "the item cap dropped the oldest");
    for (k, r) in got.iter().enumerate() {
        assert_eq!((r.0, &r.1), (seqs[first + k], &encoded((first + k) as u64)));
        assert!(r.3);
    }
    // Expire everything older than 30 s before the last append.
    q.expire(T0 + 90_000 + 30_000).unwrap();
    let got = peek(&q);
    assert_eq!(got.first().map(|r| r.0), Some(seqs[120]));
    assert_eq!(got.len(), 80);
    assert!(got.iter().all(|r| r.3));
}

#[test]
fn deferred_acks_are_durable_on_flush_or_after_several_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        segment_bytes: 4 << 10,
        ..config(1 << 20)
    };
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
    let r = q.append_bodies((0..400).map(body), T0).unwrap();
    for i in 400..1000 {
        q.append_bodies([body(i)], T0).unwrap();
    }
    let segments = q.segment_count();
    assert!(segments > DEFERRED_SEGMENTS + 2, "{segments}");
    // Five records: deleted in memory, not yet on disk; a crash would send them again.
    assert_eq!(q.ack_through_deferred(r.start + 4).unwrap(), 5);
    assert!(q.acks_pending());
    drop(q);
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
    assert_eq!(q.stats().items, 1000, "the cursor was not durable");
    // Flushed: durable.
    q.ack_through_deferred(r.start + 4).unwrap();
    q.flush_acks().unwrap();
    assert!(!q.acks_pending());
    drop(q);
    let mut q = TelemetryQueue::open(dir.path(), "d", cfg.clone()).unwrap();
    assert_eq!(q.stats().items, 995);
    // Acknowledging whole segments one record at a time: the cursor stays lazy until
    // DEFERRED_SEGMENTS of them are done, then it is written and they are deleted at once.
    let before = q.segment_count();
    let mut seq = r.start + 5;
    while q.segment_count() == before {
        q.ack_through_deferred(seq).unwrap();
        seq += 1;
        assert!(seq < r.start + 1000, "never flushed");
    }
    assert!(!q.acks_pending());
    assert_eq!(q.segment_count(), before - DEFERRED_SEGMENTS);
    drop(q);
    let q = TelemetryQueue::open(dir.path(), "d", cfg).unwrap();
    assert_eq!(q.stats().acked_through, seq - 1);
}
