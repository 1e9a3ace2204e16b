//! The lock-free hand-off from the runtime's frame path to the agent.
//!
//! The camera thread must never wait for disk or network, so telemetry leaves the frame path
//! through a fixed-capacity single-producer single-consumer ring ([`heapless::spsc`]): the
//! producer side ([`FrameTap`]) is wait-free; when the ring is full the event is dropped and
//! counted, never blocking. The agent's side ([`TapDrain`]) pops events in batches and appends
//! them to the [`TelemetryQueue`] with one write per batch (and one fsync, or fewer under
//! [`crate::queue::SyncPolicy::Group`]), adding the hand-off's drop count to the queue's
//! persisted counters. Each event is encoded straight into the queue's write buffer; telemetry
//! records ([`RecordBody`]) go through [`TapDrain::drain_records_into`], so that the queue knows
//! it encoded them itself (well-formed by construction, not checked again before upload).
//!
//! ```
//! use sextant_agent::handoff::Handoff;
//! let mut ring: Handoff<u32, 64> = Handoff::new();
//! let (mut tap, mut drain) = ring.split();
//! assert!(tap.push(7));
//! assert_eq!(drain.pop(), Some(7));
//! ```
//!
//! The ring borrows its storage; an app that keeps it for the life of the process can put it in
//! a `static` or leak one `Box` at start-up to get `'static` ends to hand to two threads.

use std::sync::atomic::{AtomicU64, Ordering};

use heapless::spsc::{Consumer, Producer, Queue};
use sextant_proto::RecordBody;

use crate::error::Result;
use crate::queue::TelemetryQueue;

/// Storage for a ring of `N - 1` items of `T` plus its drop counter.
#[derive(Debug)]
pub struct Handoff<T, const N: usize> {
    ring: Queue<T, N>,
    dropped: AtomicU64,
}

impl<T, const N: usize> Default for Handoff<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Handoff<T, N> {
    /// An empty ring (holds `N - 1` items).
    pub const fn new() -> Self {
        Self {
            ring: Queue::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Splits into the producer end (frame path) and the consumer end (agent).
    pub fn split(&mut self) -> (FrameTap<'_, T>, TapDrain<'_, T>) {
        let (p, c) = self.ring.split();
        let dropped = &self.dropped;
        (FrameTap { p, dropped }, TapDrain { c, dropped })
    }
}

/// The frame path's end: never blocks, never allocates.
pub struct FrameTap<'a, T> {
    p: Producer<'a, T>,
    dropped: &'a AtomicU64,
}

impl<T> FrameTap<'_, T> {
    /// Whether a push would succeed now (a producer that prefers to wait, e.g. a replay or a
    /// benchmark, checks this instead of losing events; the camera path just pushes).
    pub fn has_room(&self) -> bool {
        self.p.ready()
    }

    /// Offers an event; returns `false` (and counts a drop) if the ring is full.
    pub fn push(&mut self, item: T) -> bool {
        match self.p.enqueue(item) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The agent's end.
pub struct TapDrain<'a, T> {
    c: Consumer<'a, T>,
    dropped: &'a AtomicU64,
}

impl<T> TapDrain<'_, T> {
    /// Pops one event.
    pub fn pop(&mut self) -> Option<T> {
        self.c.dequeue()
    }

    /// Takes the number of events dropped since the last call (resets it to zero).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Moves up to `max` events into `queue` as one batch (one write; see the queue's
    /// [`crate::queue::SyncPolicy`] for when it is fsynced), encoding each with `encode`
    /// straight into the queue's write buffer, and adds the hand-off's drops to the queue's
    /// persisted counters. Returns how many events were appended. If the append fails, the
    /// popped events are lost and counted as hand-off drops (the frame path has moved on; there
    /// is nowhere to keep them).
    pub fn drain_into(
        &mut self,
        queue: &mut TelemetryQueue,
        max: usize,
        now_ms: u64,
        mut encode: impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<usize> {
        let c = &mut self.c;
        let mut popped = 0usize;
        let appended = queue.append_from(now_ms, |out| {
            if popped == max {
                return false;
            }
            let Some(item) = c.dequeue() else {
                return false;
            };
            popped += 1;
            encode(&item, out);
            true
        });
        self.settle(queue, popped, appended)
    }

    /// Adds the drops (and the popped events of a failed append) to the queue's counters.
    fn settle(
        &mut self,
        queue: &mut TelemetryQueue,
        popped: usize,
        appended: Result<std::ops::Range<u64>>,
    ) -> Result<usize> {
        if appended.is_err() {
            self.dropped.fetch_add(popped as u64, Ordering::Relaxed);
        }
        let dropped = self.take_dropped();
        if let Err(e) = queue.add_handoff_drops(dropped) {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            return Err(e);
        }
        appended.map(|_| popped)
    }
}

impl TapDrain<'_, RecordBody> {
    /// [`TapDrain::drain_into`] for telemetry records, through
    /// [`TelemetryQueue::append_bodies`]: each is encoded with [`RecordBody::encode_cbor`], and
    /// the queue marks the records as encoded here (well-formed by construction).
    pub fn drain_records_into(
        &mut self,
        queue: &mut TelemetryQueue,
        max: usize,
        now_ms: u64,
    ) -> Result<usize> {
        let c = &mut self.c;
        let mut popped = 0usize;
        let bodies = std::iter::from_fn(|| {
            if popped == max {
                return None;
            }
            let body = c.dequeue()?;
            popped += 1;
            Some(body)
        });
        let appended = queue.append_bodies(bodies, now_ms);
        self.settle(queue, popped, appended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueConfig;

    #[test]
    fn full_ring_drops_and_counts_without_blocking() {
        let mut ring: Handoff<u64, 8> = Handoff::new();
        let (mut tap, mut drain) = ring.split();
        let accepted = (0..20).filter(|i| tap.push(*i)).count();
        assert_eq!(accepted, 7);
        assert_eq!(drain.take_dropped(), 13);
        assert_eq!(drain.take_dropped(), 0);
        let got: Vec<u64> = std::iter::from_fn(|| drain.pop()).collect();
        assert_eq!(got, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn producer_thread_and_drain_into_disk_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = TelemetryQueue::open(dir.path(), "dev", QueueConfig::default()).unwrap();
        let mut ring: Handoff<u64, 256> = Handoff::new();
        let (mut tap, mut drain) = ring.split();
        let total = 20_000u64;
        let mut stored = 0usize;
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..total {
                    tap.push(i);
                }
            });
            loop {
                let n = drain
                    .drain_into(&mut q, 1024, 1, |i, out| {
                        out.extend_from_slice(&i.to_le_bytes())
                    })
                    .unwrap();
                stored += n;
                let st = q.stats();
                if stored as u64 + st.dropped.by_handoff == total {
                    break;
                }
                std::thread::yield_now();
            }
        });
        let recs = q.peek_batch(usize::MAX, usize::MAX).unwrap();
        assert_eq!(recs.len(), stored);
        // What arrived is in order, with no duplicates.
        let vals: Vec<u64> = recs
            .iter()
            .map(|r| u64::from_le_bytes(r.payload[..8].try_into().unwrap()))
            .collect();
        assert!(vals.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(q.stats().dropped.by_handoff + stored as u64, total);
    }

    #[test]
    fn telemetry_records_are_encoded_into_the_queue_and_marked_as_encoded_here() {
        use sextant_proto::{
            ComputeBackend, Label, LocalizationEvent, ModelVersion, Outcome, PoseSource, SliceKeys,
            StageTimings,
        };
        let body = |i: u32| {
            RecordBody::Localization(LocalizationEvent {
                model: ModelVersion(1),
                slice: SliceKeys {
                    device_class: Label::new("phone").unwrap(),
                    app_version: Label::new("1.0").unwrap(),
                    backend: ComputeBackend::Cpu,
                    region: None,
                },
                outcome: Outcome::Localized {
                    source: PoseSource::Visual,
                },
                confidence: 0.5,
                inliers: i,
                timings: StageTimings::default(),
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let mut q = TelemetryQueue::open(dir.path(), "dev", QueueConfig::default()).unwrap();
        let mut ring: Handoff<RecordBody, 64> = Handoff::new();
        let (mut tap, mut drain) = ring.split();
        for i in 0..50 {
            assert!(tap.push(body(i)));
        }
        assert_eq!(drain.drain_records_into(&mut q, 30, 1).unwrap(), 30);
        assert_eq!(drain.drain_records_into(&mut q, 30, 1).unwrap(), 20);
        assert_eq!(drain.drain_records_into(&mut q, 30, 1).unwrap(), 0);
        let mut raw = crate::queue::RawBatch::default();
        q.peek_raw(usize::MAX, usize::MAX, &mut raw).unwrap();
        assert_eq!(raw.records.len(), 50);
        for (i, r) in raw.records.iter().enumerate() {
            assert!(r.encoded_here && r.from_memory);
            let mut want = Vec::new();
            body(i as u32).encode_cbor(&mut want);
            assert_eq!(raw.payload(r), &want[..]);
        }
    }
}
