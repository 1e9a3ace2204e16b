//! The durable telemetry queue: append-only segment files of checksummed records.
//!
//! # On disk
//!
//! A queue is a directory holding `state` (a checksummed cursor file, see
//! [`crate::fsutil::write_state_file`]) and segment files `seg-<first sequence, 20 digits>.log`.
//! A segment is a run of records, each
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | payload length `n` (u32 LE) |
//! | 4 | CRC32C of the other header fields and the payload (u32 LE) |
//! | 8 | sequence number (u64 LE) |
//! | 8 | recorded-at time, ms since the Unix epoch (u64 LE) |
//! | n | payload |
//!
//! The device id is stored once, in `state`; every record returned carries `(device, sequence)`.
//!
//! # Crash safety
//!
//! An append writes the whole record (or a batch of records) with `write(2)` calls on a file
//! opened for appending, and returns only after the bytes are in the kernel. A `kill -9` at any
//! instant therefore leaves a prefix of the records, possibly followed by one torn record. On
//! open every segment is scanned: the first record whose length runs past the end of the file,
//! whose checksum fails, or whose sequence number does not increase ends the segment, and the
//! file is truncated there. A torn record is never returned and nothing after it is misread.
//!
//! `state` holds the ack cursor (`acked_through`: every record with a sequence number at or below
//! it is deleted, whether acknowledged or dropped), the drop counters, and a sequence
//! reservation. It is replaced atomically (temp file, fsync, rename, directory fsync). Deleting
//! records writes the cursor first and removes whole segments after, so a crash between the two
//! only leaves segments that the next open deletes.
//!
//! # Fsync policy
//!
//! With [`SyncPolicy::EveryAppend`] (the default) each append (or batch) is `fdatasync`ed before
//! it returns: what an append returned survives power loss, at one fsync per call — which is why
//! the agent drains the frame path's hand-off queue in batches and appends them with
//! [`TelemetryQueue::append_batch`]. With [`SyncPolicy::Manual`] appends survive a process kill
//! (the kernel has the bytes) and the caller decides when to call [`TelemetryQueue::sync`] for
//! power-loss durability. [`SyncPolicy::Group`] (what `sextant agent run` uses) is group sync:
//! an append survives a kill as soon as it returns, and power loss once the segment is
//! fdatasynced — by the first append at least `max_delay_ms` after the oldest unsynced one, by
//! [`TelemetryQueue::sync_if_due`] (which the appender calls when it is idle), before a full
//! segment is closed, and on drop. Power loss can lose about the last `max_delay_ms` of
//! appends, never anything the state file made durable (cursor, counters, reservation).
//!
//! Sequence numbers stay monotonic across restarts and power loss: the state file reserves a
//! block of [`SEQ_RESERVATION`] numbers ahead of use, and a reopened queue continues after the
//! reservation, so a number whose record was lost in a power cut is never reused for another
//! record. Numbers therefore have gaps after a restart; the backend must not assume contiguity.
//!
//! # Memory copy
//!
//! Records appended by this process are also kept in memory, as written (headers included),
//! in buffers of at most [`QueueConfig::memory_bytes`] in all (4 MiB by default; allocated as
//! needed, then reused), until they are deleted; [`TelemetryQueue::peek_raw`] serves them from
//! there instead of reading them back from the segment files (no `pread`, no second checksum
//! pass). When the copy is full, later appends go to disk only (and are read
//! back from it), so what is served from memory is always the oldest records of a burst. The
//! copy changes nothing on disk: durability is the segment files', and records found on disk
//! at open are always read from disk and checked. [`QueueStats`] counts records read each way.
//!
//! Appends through [`TelemetryQueue::append_bodies`] encode each [`RecordBody`] straight into
//! the write buffer with [`RecordBody::encode_cbor`]; the queue remembers which sequence numbers
//! it encoded so ([`RawRecord::encoded_here`]): their bytes are one well-formed CBOR item by
//! construction, whether read back from memory or from disk (where the checksum holds them
//! byte for byte to what was encoded).
//!
//! # Caps
//!
//! Item, byte and age caps drop the oldest records first. When a count or byte cap is exceeded
//! the queue drops down to 15/16 of the cap, so that a queue running full persists its cursor
//! once per sixteenth of the cap rather than once per append. Every dropped record is counted
//! by cause in [`DropCounts`], which is persisted in `state` and reported in [`QueueStats`].

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_proto::RecordBody;

use crate::error::{AgentError, Result};
use crate::fsutil::{self, AppendFile, Disk, RealDisk};

/// Bytes of a record header.
pub const RECORD_HEADER: usize = 24;

/// How many sequence numbers the state file reserves ahead of use. Each reservation is one
/// durable write of the state file (two fsyncs), so it is large: at 4,096 it was the queue's
/// most frequent fsync under a fast producer (one per 4,096 events). A restart skips what was
/// left of the reservation; with 64-bit numbers, the gaps cost nothing.
pub const SEQ_RESERVATION: u64 = 1 << 16;

/// [`TelemetryQueue::ack_through_deferred`] makes the cursor durable (and deletes the
/// segments) at once when this many whole segments are acknowledged.
pub const DEFERRED_SEGMENTS: usize = 4;

const STATE_FILE: &str = "state";
const STATE_VERSION: u8 = 1;

/// When appends are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// `fdatasync` before every append (or batch) returns: survives power loss.
    #[default]
    EveryAppend,
    /// Never fsync on append; survives a process kill, and power loss only for data covered by an
    /// explicit [`TelemetryQueue::sync`].
    Manual,
    /// Group sync: an append survives a process kill as soon as it returns (the kernel has the
    /// bytes), and power loss once it has been fsynced, which happens at the first append at
    /// least `max_delay_ms` after the oldest unsynced one, when the caller's
    /// [`TelemetryQueue::sync_if_due`] finds one that old, when a full segment is closed, and
    /// when the queue is dropped. Power loss can lose the appends of about the last
    /// `max_delay_ms` (plus however long the caller waits between `sync_if_due` calls); a kill
    /// loses nothing appended.
    Group {
        /// Longest time an append stays unsynced while appends or `sync_if_due` calls go on.
        max_delay_ms: u32,
    },
}

/// Limits of a [`TelemetryQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most records kept; beyond it the oldest are dropped (`by_items`).
    pub max_items: u64,
    /// Most bytes kept on disk (headers included); beyond it the oldest are dropped (`by_bytes`).
    pub max_bytes: u64,
    /// Records older than this (by their recorded-at time) are dropped (`by_age`).
    pub max_age_ms: u64,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Largest payload accepted.
    pub max_record_bytes: usize,
    /// Fsync policy.
    pub sync: SyncPolicy,
    /// Most bytes of memory (buffer capacity) holding the copy of records appended by this
    /// process that [`TelemetryQueue::peek_raw`] serves without reading them back (0: no copy;
    /// see the module docs). Allocated as needed, then kept and reused.
    pub memory_bytes: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_items: 200_000,
            max_bytes: 64 << 20,
            max_age_ms: 7 * 24 * 3600 * 1000,
            segment_bytes: 1 << 20,
            max_record_bytes: 64 << 10,
            sync: SyncPolicy::EveryAppend,
            memory_bytes: 4 << 20,
        }
    }
}

impl QueueConfig {
    fn validate(&self) -> Result<()> {
        if self.max_items == 0 || self.max_bytes == 0 || self.segment_bytes == 0 {
            return Err(AgentError::InvalidConfig("queue caps must be positive"));
        }
        if (self.max_record_bytes + RECORD_HEADER) as u64 > self.max_bytes {
            return Err(AgentError::InvalidConfig(
                "max_record_bytes must fit within max_bytes",
            ));
        }
        if self.max_record_bytes > u32::MAX as usize {
            return Err(AgentError::InvalidConfig("max_record_bytes exceeds u32"));
        }
        Ok(())
    }
}

/// Records dropped by the queue's caps (and by the frame-path hand-off), counted since the queue
/// was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts {
    /// Dropped because the item cap was reached.
    pub by_items: u64,
    /// Dropped because the byte cap was reached.
    pub by_bytes: u64,
    /// Dropped because they were older than the age cap.
    pub by_age: u64,
    /// Dropped before reaching the disk queue, because the lock-free hand-off was full
    /// (reported through [`TelemetryQueue::add_handoff_drops`]).
    pub by_handoff: u64,
}

/// One record read back from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// The device the queue belongs to.
    pub device: Arc<str>,
    /// Per-device sequence number.
    pub sequence: u64,
    /// When it was recorded (ms since the Unix epoch, from the caller's clock).
    pub recorded_at_ms: u64,
    /// The payload, byte for byte as appended.
    pub payload: Vec<u8>,
}

/// Records read by [`TelemetryQueue::peek_raw`]: their bytes, and where each payload lies.
#[derive(Debug, Default, Clone)]
pub struct RawBatch {
    /// The records as stored (headers included).
    pub data: Vec<u8>,
    /// The records, oldest first.
    pub records: Vec<RawRecord>,
}

impl RawBatch {
    /// The payload of `r` (one of `self.records`).
    pub fn payload(&self, r: &RawRecord) -> &[u8] {
        &self.data[r.payload.clone()]
    }
}

/// One record of a [`RawBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Per-device sequence number.
    pub sequence: u64,
    /// When it was recorded (ms since the Unix epoch).
    pub recorded_at_ms: u64,
    /// Where the payload lies in [`RawBatch::data`].
    pub payload: Range<usize>,
    /// This process appended it with [`TelemetryQueue::append_bodies`]: the payload is byte for
    /// byte what [`RecordBody::encode_cbor`] wrote, so one well-formed CBOR item of a
    /// `RecordBody` by construction.
    pub encoded_here: bool,
    /// It was served from the queue's memory copy, not read back from a segment file.
    pub from_memory: bool,
}

/// A snapshot of the queue's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Records waiting for acknowledgement.
    pub items: u64,
    /// Bytes they take on disk, headers included.
    pub bytes: u64,
    /// The sequence number the next append will get.
    pub next_sequence: u64,
    /// Every record at or below this sequence number is deleted (acknowledged or dropped).
    pub acked_through: u64,
    /// Drop counters by cause.
    pub dropped: DropCounts,
    /// Sealed (non-last) segments found damaged on open and truncated at the damage (bit rot or
    /// a lost write), as opposed to the expected torn tail of the last segment.
    pub corrupt_segments: u64,
    /// Records [`TelemetryQueue::peek_raw`] served from the memory copy, since open.
    pub read_from_memory: u64,
    /// Records it read back from the segment files (and checked), since open.
    pub read_from_disk: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    device: String,
    acked_through: u64,
    seq_reserved: u64,
    dropped: DropCounts,
    corrupt: u64,
}

impl State {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.device.len());
        v.push(STATE_VERSION);
        v.extend_from_slice(&(self.device.len() as u16).to_le_bytes());
        v.extend_from_slice(self.device.as_bytes());
        for x in [
            self.acked_through,
            self.seq_reserved,
            self.dropped.by_items,
            self.dropped.by_bytes,
            self.dropped.by_age,
            self.dropped.by_handoff,
            self.corrupt,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason| AgentError::CorruptState {
            path: path.to_path_buf(),
            reason,
        };
        if b.first() != Some(&STATE_VERSION) || b.len() < 3 {
            return Err(bad("unknown queue state version"));
        }
        let n = u16::from_le_bytes([b[1], b[2]]) as usize;
        if b.len() != 3 + n + 56 {
            return Err(bad("queue state has the wrong length"));
        }
        let device = std::str::from_utf8(&b[3..3 + n])
            .map_err(|_| bad("device id is not UTF-8"))?
            .to_owned();
        let mut xs = [0u64; 7];
        for (i, x) in xs.iter_mut().enumerate() {
            let o = 3 + n + 8 * i;
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            *x = u64::from_le_bytes(w);
        }
        Ok(State {
            device,
            acked_through: xs[0],
            seq_reserved: xs[1],
            dropped: DropCounts {
                by_items: xs[2],
                by_bytes: xs[3],
                by_age: xs[4],
                by_handoff: xs[5],
            },
            corrupt: xs[6],
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    ts_ms: u64,
    segment: u64,
    offset: u64,
    len: u32,
}

impl Entry {
    fn disk_bytes(&self) -> u64 {
        RECORD_HEADER as u64 + u64::from(self.len)
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    len: u64,
    last_seq: Option<u64>,
}

struct Tail {
    first_seq: u64,
    file: Box<dyn AppendFile>,
    /// Length of the good prefix; after a failed write the file may be longer until truncated.
    good_len: u64,
    dirty: bool,
    /// When the oldest append not yet fsynced was written ([`SyncPolicy::Group`]).
    unsynced_since: Option<Instant>,
}

/// A durable, capped FIFO of telemetry records for one device. See the module docs.
pub struct TelemetryQueue {
    dir: PathBuf,
    config: QueueConfig,
    disk: Box<dyn Disk>,
    device: Arc<str>,
    state: State,
    next_seq: u64,
    /// The highest sequence number actually given to a record (acks are clamped to it).
    last_assigned: u64,
    entries: VecDeque<Entry>,
    live_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    tail: Option<Tail>,
    /// The cursor moved by [`TelemetryQueue::ack_through_deferred`] and is not durable yet.
    ack_dirty: bool,
    /// The batch being written, kept between appends: a fresh buffer of a few hundred KiB per
    /// batch is fresh pages from the kernel (page faults) every time.
    scratch: Vec<u8>,
    /// The memory copy of records appended by this process (see the module docs), oldest
    /// first: one run per appended batch.
    mem: VecDeque<MemRun>,
    /// Buffers of the memory copy not in use (their runs were deleted), reused for later runs.
    spare: Vec<Vec<u8>>,
    /// Capacity of the buffers in `mem` and `spare`: at most `config.memory_bytes`. The copy's
    /// buffers are allocated once and reused, never handed back per batch.
    pool_bytes: usize,
    /// Sequence numbers this process appended through [`TelemetryQueue::append_bodies`], as
    /// ranges (adjacent ones merged), oldest first; trimmed as records are deleted.
    encoded_here: VecDeque<Range<u64>>,
    read_from_memory: Cell<u64>,
    read_from_disk: Cell<u64>,
}

/// One appended batch in the memory copy: its records as written to segment `segment` at
/// `offset`, with sequence numbers `seqs`.
#[derive(Debug)]
struct MemRun {
    seqs: Range<u64>,
    segment: u64,
    offset: u64,
    data: Vec<u8>,
}

impl std::fmt::Debug for TelemetryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryQueue")
            .field("dir", &self.dir)
            .field("device", &self.device)
            .field("next_seq", &self.next_seq)
            .field("items", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The checksum of a whole record `rec` (header and payload): CRC32C over the length (4), then
/// the sequence number, time and payload (everything after the checksum field).
fn record_crc(rec: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&rec[..4]), &rec[8..])
}

/// Fills in the header of the record `rec` (header space followed by the payload) in place.
fn seal_record(rec: &mut [u8], seq: u64, ts_ms: u64) {
    let len = (rec.len() - RECORD_HEADER) as u32;
    rec[..4].copy_from_slice(&len.to_le_bytes());
    rec[8..16].copy_from_slice(&seq.to_le_bytes());
    rec[16..24].copy_from_slice(&ts_ms.to_le_bytes());
    let crc = record_crc(rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes one record into `out`.
#[cfg(test)]
fn encode_record(out: &mut Vec<u8>, seq: u64, ts_ms: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.extend_from_slice(payload);
    seal_record(&mut out[start..], seq, ts_ms);
}

/// Decodes the record at the start of `b`: `Some((seq, ts, payload_len))` if it is whole and its
/// checksum holds.
fn decode_record(b: &[u8], max_record: usize) -> Option<(u64, u64, usize)> {
    if b.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if len > max_record || b.len() < RECORD_HEADER + len {
        return None;
    }
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if record_crc(&b[..RECORD_HEADER + len]) != crc {
        return None;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[8..16]);
    let seq = u64::from_le_bytes(w);
    w.copy_from_slice(&b[16..24]);
    Some((seq, u64::from_le_bytes(w), len))
}

impl TelemetryQueue {
    /// Opens (creating if needed) the queue in `dir` for `device`, on the real file system.
    pub fn open(dir: &Path, device: &str, config: QueueConfig) -> Result<Self> {
        Self::open_with_disk(dir, device, config, Box::new(RealDisk))
    }

    /// Opens the queue with a caller-chosen [`Disk`] for appends (fault injection in tests).
    ///
    /// Scans every segment, truncating torn or corrupt tails, deletes segments that are wholly
    /// acknowledged, and refuses a queue that belongs to another device.
    pub fn open_with_disk(
        dir: &Path,
        device: &str,
        config: QueueConfig,
        disk: Box<dyn Disk>,
    ) -> Result<Self> {
        config.validate()?;
        if device.is_empty() || device.len() > 128 {
            return Err(AgentError::InvalidConfig("device id must be 1..=128 bytes"));
        }
        fsutil::ensure_dir(dir)?;
        let state_path = dir.join(STATE_FILE);
        let state = match fsutil::read_state_file(&state_path)? {
            Some(b) => State::decode(&b, &state_path)?,
            None => State {
                device: device.to_owned(),
                acked_through: 0,
                seq_reserved: 0,
                dropped: DropCounts::default(),
                corrupt: 0,
            },
        };
        if state.device != device {
            return Err(AgentError::InvalidConfig(
                "queue directory belongs to another device",
            ));
        }
        let mut q = TelemetryQueue {
            dir: dir.to_path_buf(),
            device: Arc::from(device),
            config,
            disk,
            state,
            next_seq: 0,
            last_assigned: 0,
            entries: VecDeque::new(),
            live_bytes: 0,
            segments: BTreeMap::new(),
            tail: None,
            ack_dirty: false,
            mem: VecDeque::new(),
            scratch: Vec::new(),
            spare: Vec::new(),
            pool_bytes: 0,
            encoded_here: VecDeque::new(),
            read_from_memory: Cell::new(0),
            read_from_disk: Cell::new(0),
        };
        q.scan()?;
        let last = q.entries.back().map_or(0, |e| e.seq);
        q.last_assigned = last.max(q.state.acked_through);
        q.next_seq = last
            .max(q.state.acked_through)
            .max(q.state.seq_reserved)
            .saturating_add(1);
        q.reserve()?;
        q.delete_consumed_segments()?;
        Ok(q)
    }

    fn scan(&mut self) -> Result<()> {
        let mut firsts = Vec::new();
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| AgentError::io("list queue directory", &self.dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| AgentError::io("list queue directory", &self.dir, e))?;
            let name = ent.file_name();
            if let Some(first) = name.to_str().and_then(parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let n = firsts.len();
        let mut prev_seq = 0u64;
        let mut truncated_any = false;
        for (i, first) in firsts.into_iter().enumerate() {
            let path = self.dir.join(segment_name(first));
            let bytes =
                std::fs::read(&path).map_err(|e| AgentError::io("read segment", &path, e))?;
            let mut off = 0usize;
            let mut last_seq = None;
            while off < bytes.len() {
                match decode_record(&bytes[off..], self.config.max_record_bytes) {
                    Some((seq, ts, len)) if seq > prev_seq => {
                        if seq > self.state.acked_through {
                            self.entries.push_back(Entry {
                                seq,
                                ts_ms: ts,
                                segment: first,
                                offset: off as u64,
                                len: len as u32,
                            });
                            self.live_bytes += (RECORD_HEADER + len) as u64;
                        }
                        prev_seq = seq;
                        last_seq = Some(seq);
                        off += RECORD_HEADER + len;
                    }
                    _ => break,
                }
            }
            if off < bytes.len() {
                if i + 1 < n {
                    // A sealed segment should never be torn: count what we lose as corrupt.
                    self.state.corrupt += 1;
                    tracing::warn!(path = %path.display(), offset = off, "corrupt record in sealed queue segment; truncating");
                } else {
                    tracing::info!(path = %path.display(), offset = off, "truncating torn tail record");
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| AgentError::io("open segment", &path, e))?;
                f.set_len(off as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| AgentError::io("truncate segment", &path, e))?;
                truncated_any = true;
            }
            self.segments.insert(
                first,
                Segment {
                    path,
                    len: off as u64,
                    last_seq,
                },
            );
        }
        if truncated_any {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&mut self) -> Result<()> {
        fsutil::write_state_file(&self.dir.join(STATE_FILE), &self.state.encode())?;
        self.ack_dirty = false;
        Ok(())
    }

    /// Makes sure the sequence reservation covers `next_seq`.
    fn reserve(&mut self) -> Result<()> {
        if self.next_seq > self.state.seq_reserved {
            self.state.seq_reserved = self.next_seq.saturating_add(SEQ_RESERVATION);
            self.persist()?;
        }
        Ok(())
    }

    /// Deletes segments whose records are all at or below the cursor, and empty sealed ones.
    fn delete_consumed_segments(&mut self) -> Result<()> {
        let head = self.state.acked_through;
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, s)| {
                let is_tail = self.tail.as_ref().is_some_and(|t| t.first_seq == **first);
                match s.last_seq {
                    Some(last) => last <= head,
                    None => !is_tail,
                }
            })
            .map(|(first, _)| *first)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for first in doomed {
            if self.tail.as_ref().is_some_and(|t| t.first_seq == first) {
                self.tail = None;
            }
            if let Some(s) = self.segments.remove(&first) {
                match std::fs::remove_file(&s.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(AgentError::io("delete segment", &s.path, e)),
                }
            }
        }
        fsutil::sync_dir(&self.dir)
    }

    /// The device this queue belongs to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Appends one record; returns its sequence number once it is written (and, with
    /// [`SyncPolicy::EveryAppend`], fsynced).
    pub fn append(&mut self, payload: &[u8], recorded_at_ms: u64) -> Result<u64> {
        self.append_batch(std::iter::once(payload), recorded_at_ms)
            .map(|r| r.start)
    }

    /// Appends several records with one write and at most one fsync; returns their sequence
    /// numbers. On error nothing of the batch is kept (a partly written batch is cut off the
    /// file) and nothing stored before is lost; a full disk is [`AgentError::DiskFull`].
    pub fn append_batch<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        recorded_at_ms: u64,
    ) -> Result<Range<u64>> {
        let mut payloads = payloads.into_iter();
        self.append_from(recorded_at_ms, |out| {
            payloads.next().map(|p| out.extend_from_slice(p)).is_some()
        })
    }

    /// [`TelemetryQueue::append_batch`] with the payloads written by `encode` straight into the
    /// queue's write buffer (no copy): each call appends one payload to `out` and returns
    /// `true`, or returns `false` (having written nothing) when there are no more.
    pub fn append_from(
        &mut self,
        recorded_at_ms: u64,
        encode: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<Range<u64>> {
        self.append_with(recorded_at_ms, false, encode)
    }

    /// Appends telemetry records, each encoded with [`RecordBody::encode_cbor`] straight into
    /// the write buffer, as [`TelemetryQueue::append_batch`] does. The queue remembers that it
    /// encoded them ([`RawRecord::encoded_here`]), so an uploader need not check that their
    /// bytes are well-formed.
    pub fn append_bodies<B: Borrow<RecordBody>>(
        &mut self,
        bodies: impl IntoIterator<Item = B>,
        recorded_at_ms: u64,
    ) -> Result<Range<u64>> {
        let mut bodies = bodies.into_iter();
        self.append_with(recorded_at_ms, true, |out| {
            bodies.next().map(|b| b.borrow().encode_cbor(out)).is_some()
        })
    }

    fn append_with(
        &mut self,
        recorded_at_ms: u64,
        encoded_here: bool,
        encode: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<Range<u64>> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let result = self.append_encoded(recorded_at_ms, encoded_here, encode, &mut buf);
        self.scratch = buf;
        result
    }

    /// Encodes the batch into `buf` and writes it; on success the batch goes into the memory
    /// copy if there is room (`buf` is then swapped for a free buffer of the copy).
    fn append_encoded(
        &mut self,
        recorded_at_ms: u64,
        encoded_here: bool,
        mut encode: impl FnMut(&mut Vec<u8>) -> bool,
        buf: &mut Vec<u8>,
    ) -> Result<Range<u64>> {
        let first = self.next_seq;
        let mut end = first;
        loop {
            let start = buf.len();
            buf.extend_from_slice(&[0; RECORD_HEADER]);
            if !encode(buf) {
                buf.truncate(start);
                break;
            }
            let len = buf.len() - start - RECORD_HEADER;
            if len > self.config.max_record_bytes {
                return Err(AgentError::RecordTooLarge {
                    len,
                    max: self.config.max_record_bytes,
                });
            }
            seal_record(&mut buf[start..], end, recorded_at_ms);
            end += 1;
        }
        if end == first {
            return Ok(first..first);
        }
        self.expire(recorded_at_ms)?;
        // Reserve before writing, so a record on disk never carries an unreserved number.
        if end > self.state.seq_reserved {
            self.state.seq_reserved = end.saturating_add(SEQ_RESERVATION);
            self.persist()?;
        }
        self.ensure_tail(first)?;
        let Some(tail) = self.tail.as_mut() else {
            return Err(AgentError::InvalidConfig("no tail segment"));
        };
        // The path only for errors (formatting it per append showed in profiles).
        let seg_path = |dir: &Path, first| dir.join(segment_name(first));
        if tail.dirty {
            tail.file.truncate(tail.good_len).map_err(|e| {
                AgentError::io(
                    "truncate after failed write",
                    seg_path(&self.dir, tail.first_seq),
                    e,
                )
            })?;
            tail.dirty = false;
        }
        let start_off = tail.good_len;
        let policy = self.config.sync;
        let written = write_all(tail.file.as_mut(), buf).and_then(|()| match policy {
            SyncPolicy::EveryAppend => tail.file.sync_data(),
            SyncPolicy::Manual => Ok(()),
            SyncPolicy::Group { max_delay_ms } => {
                let now = Instant::now();
                let since = *tail.unsynced_since.get_or_insert(now);
                if now.duration_since(since) >= Duration::from_millis(max_delay_ms.into()) {
                    tail.file.sync_data()?;
                    tail.unsynced_since = None;
                }
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut the partial batch off; if even that fails, remember to retry before the next
            // append (and the checksum hides it from the next open regardless).
            tail.dirty = tail.file.truncate(start_off).is_err();
            return Err(AgentError::io(
                "append to segment",
                seg_path(&self.dir, tail.first_seq),
                e,
            ));
        }
        tail.good_len += buf.len() as u64;
        let seg_first = tail.first_seq;
        let mut at = 0usize;
        for seq in first..end {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let e = Entry {
                seq,
                ts_ms: recorded_at_ms,
                segment: seg_first,
                offset: start_off + at as u64,
                len,
            };
            at += e.disk_bytes() as usize;
            self.live_bytes += e.disk_bytes();
            self.entries.push_back(e);
        }
        if let Some(s) = self.segments.get_mut(&seg_first) {
            s.len = start_off + buf.len() as u64;
            s.last_seq = Some(end - 1);
        }
        self.next_seq = end;
        self.last_assigned = end - 1;
        if encoded_here {
            match self.encoded_here.back_mut() {
                Some(r) if r.end == first => r.end = end,
                _ => self.encoded_here.push_back(first..end),
            }
        }
        self.keep_in_memory(first..end, seg_first, start_off, buf);
        self.enforce_caps()?;
        Ok(first..end)
    }

    /// Puts the batch just written (`buf`, records `seqs` at `offset` of `segment`) into the
    /// memory copy if its buffers have room for it, swapping `buf` for a free one of them.
    fn keep_in_memory(&mut self, seqs: Range<u64>, segment: u64, offset: u64, buf: &mut Vec<u8>) {
        let cap = self.config.memory_bytes;
        let mut data = self.spare.pop().unwrap_or_default();
        let free = data.capacity();
        let data = if buf.capacity() > 2 * buf.len() + 4096 {
            // A small batch in a large write buffer: copy it into a buffer of the copy, which
            // grows to fit if need be, and keep the write buffer.
            let grown = free.max(buf.len());
            if self.pool_bytes - free + grown > cap {
                self.put_back(data);
                return;
            }
            data.clear();
            data.reserve_exact(buf.len());
            data.extend_from_slice(buf);
            data
        } else {
            // Swap: the write buffer joins the copy and a free buffer of the copy (or a new,
            // empty one) becomes the write buffer.
            if self.pool_bytes - free + buf.capacity() > cap {
                self.put_back(data);
                return;
            }
            std::mem::swap(buf, &mut data);
            data
        };
        self.pool_bytes = self.pool_bytes - free + data.capacity();
        self.mem.push_back(MemRun {
            seqs,
            segment,
            offset,
            data,
        });
    }

    /// Returns a buffer taken from `spare` (a new, empty one is just dropped).
    fn put_back(&mut self, data: Vec<u8>) {
        if data.capacity() > 0 {
            self.spare.push(data);
        }
    }

    fn ensure_tail(&mut self, first_seq: u64) -> Result<()> {
        let full = self
            .tail
            .as_ref()
            .is_some_and(|t| t.good_len >= self.config.segment_bytes && !t.dirty);
        if full {
            // A closed segment is never synced again: make what it holds durable first.
            self.sync()?;
            self.tail = None;
        }
        if self.tail.is_some() {
            return Ok(());
        }
        // Reuse the last segment if it has room, else start a new one named by `first_seq`.
        let (seg_first, len, fresh) = match self.segments.iter().next_back() {
            Some((f, s)) if s.len < self.config.segment_bytes => (*f, s.len, false),
            _ => (first_seq, 0, true),
        };
        let path = self.dir.join(segment_name(seg_first));
        let file = self
            .disk
            .open_append(&path)
            .map_err(|e| AgentError::io("open segment", &path, e))?;
        if fresh {
            fsutil::sync_dir(&self.dir)?;
            self.segments.insert(
                seg_first,
                Segment {
                    path,
                    len: 0,
                    last_seq: None,
                },
            );
        }
        self.tail = Some(Tail {
            first_seq: seg_first,
            file,
            good_len: len,
            dirty: false,
            unsynced_since: None,
        });
        Ok(())
    }

    fn enforce_caps(&mut self) -> Result<()> {
        let mut changed = false;
        if self.entries.len() as u64 > self.config.max_items {
            let low = self.config.max_items - self.config.max_items / 16;
            while self.entries.len() as u64 > low.max(1) {
                self.drop_front();
                self.state.dropped.by_items += 1;
                changed = true;
            }
        }
        if self.live_bytes > self.config.max_bytes {
            let low = self.config.max_bytes - self.config.max_bytes / 16;
            while self.live_bytes > low && self.entries.len() > 1 {
                self.drop_front();
                self.state.dropped.by_bytes += 1;
                changed = true;
            }
        }
        if changed {
            self.persist()?;
            self.delete_consumed_segments()?;
        }
        Ok(())
    }

    fn drop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.live_bytes -= e.disk_bytes();
            self.state.acked_through = self.state.acked_through.max(e.seq);
            self.trim_memory();
        }
    }

    /// Forgets the memory copy, and which numbers this process encoded, at or below the cursor.
    fn trim_memory(&mut self) {
        let past = self.state.acked_through.saturating_add(1);
        while self.mem.front().is_some_and(|r| r.seqs.end <= past) {
            if let Some(r) = self.mem.pop_front() {
                self.spare.push(r.data);
            }
        }
        while self.encoded_here.front().is_some_and(|r| r.end <= past) {
            self.encoded_here.pop_front();
        }
    }

    /// Whether this process encoded record `seq` itself ([`TelemetryQueue::append_bodies`]).
    fn is_encoded_here(&self, seq: u64) -> bool {
        let i = self.encoded_here.partition_point(|r| r.end <= seq);
        self.encoded_here.get(i).is_some_and(|r| r.contains(&seq))
    }

    /// Drops records recorded before `now_ms - max_age_ms` (counted `by_age`); returns how many.
    pub fn expire(&mut self, now_ms: u64) -> Result<u64> {
        let cutoff = now_ms.saturating_sub(self.config.max_age_ms);
        let mut n = 0;
        while self.entries.front().is_some_and(|e| e.ts_ms < cutoff) {
            self.drop_front();
            n += 1;
        }
        if n > 0 {
            self.state.dropped.by_age += n;
            self.persist()?;
            self.delete_consumed_segments()?;
        }
        Ok(n)
    }

    /// Fsyncs the open segment (for [`SyncPolicy::Manual`] and [`SyncPolicy::Group`]).
    pub fn sync(&mut self) -> Result<()> {
        if let Some(t) = self.tail.as_mut() {
            let first = t.first_seq;
            t.file.sync_data().map_err(|e| {
                AgentError::io("fsync segment", self.dir.join(segment_name(first)), e)
            })?;
            t.unsynced_since = None;
        }
        Ok(())
    }

    /// With [`SyncPolicy::Group`]: fsyncs the open segment if its oldest unsynced append is
    /// `max_delay_ms` old or older; returns whether it did. An appender calls this while it has
    /// nothing to append, so that a burst's last appends are not left unsynced.
    pub fn sync_if_due(&mut self) -> Result<bool> {
        let SyncPolicy::Group { max_delay_ms } = self.config.sync else {
            return Ok(false);
        };
        let due = self
            .tail
            .as_ref()
            .and_then(|t| t.unsynced_since)
            .is_some_and(|since| since.elapsed() >= Duration::from_millis(max_delay_ms.into()));
        if due {
            self.sync()?;
        }
        Ok(due)
    }

    /// Whether appends await an fsync ([`SyncPolicy::Group`]).
    pub fn sync_pending(&self) -> bool {
        self.tail
            .as_ref()
            .is_some_and(|t| t.unsynced_since.is_some())
    }

    /// The oldest unacknowledged records, in sequence order: at most `max_items`, and at most
    /// `max_bytes` of payload — except that the first record is always returned, however large,
    /// so one big record cannot stall the queue. Every record read from a segment file is
    /// re-verified against its checksum as it is read; a mismatch is
    /// [`AgentError::CorruptRecord`], never a wrong record. Records in the memory copy (see the
    /// module docs) are served from it.
    pub fn peek_batch(&self, max_items: usize, max_bytes: usize) -> Result<Vec<QueuedRecord>> {
        let mut raw = RawBatch::default();
        self.peek_raw(max_items, max_bytes, &mut raw)?;
        Ok(raw
            .records
            .iter()
            .map(|r| QueuedRecord {
                device: Arc::clone(&self.device),
                sequence: r.sequence,
                recorded_at_ms: r.recorded_at_ms,
                payload: raw.payload(r).to_vec(),
            })
            .collect())
    }

    /// [`TelemetryQueue::peek_batch`] into a reusable [`RawBatch`], with no allocation per
    /// record: the records' bytes are copied from the memory copy where it holds them, else
    /// read with one `pread` per run of adjacent records (and re-verified against their
    /// checksums), and left in `raw.data`.
    pub fn peek_raw(&self, max_items: usize, max_bytes: usize, raw: &mut RawBatch) -> Result<()> {
        raw.data.clear();
        raw.records.clear();
        let mut chosen = 0usize;
        let mut bytes = 0usize;
        for e in self.entries.iter().take(max_items) {
            if chosen > 0 && bytes + e.len as usize > max_bytes {
                break;
            }
            bytes += e.len as usize;
            chosen += 1;
        }
        let (mut from_memory, mut from_disk) = (0u64, 0u64);
        // The memory run that may hold entry `i` (runs before it hold only deleted records).
        let mut m = 0usize;
        let mut i = 0usize;
        while i < chosen {
            let first = self.entries[i];
            while self.mem.get(m).is_some_and(|r| r.seqs.end <= first.seq) {
                m += 1;
            }
            let run = self.mem.get(m);
            if let Some(run) = run.filter(|r| r.seqs.contains(&first.seq)) {
                // Entries are removed from the front only, so the run's records from `first` on
                // are the next entries, adjacent in the run as they are on disk.
                let mut j = i + 1;
                while j < chosen && run.seqs.contains(&self.entries[j].seq) {
                    j += 1;
                }
                let last = self.entries[j - 1];
                debug_assert_eq!(first.segment, run.segment);
                let from = (first.offset - run.offset) as usize;
                let to = (last.offset + last.disk_bytes() - run.offset) as usize;
                let base = raw.data.len();
                raw.data.extend_from_slice(&run.data[from..to]);
                for e in self.entries.range(i..j) {
                    let start = base + (e.offset - first.offset) as usize + RECORD_HEADER;
                    raw.records.push(RawRecord {
                        sequence: e.seq,
                        recorded_at_ms: e.ts_ms,
                        payload: start..start + e.len as usize,
                        encoded_here: self.is_encoded_here(e.seq),
                        from_memory: true,
                    });
                }
                from_memory += (j - i) as u64;
                i = j;
                continue;
            }
            // From disk: the run of adjacent records of one segment (up to the next record the
            // memory copy holds), one `pread`, every record checked.
            let stop = run.map_or(u64::MAX, |r| r.seqs.start);
            let mut end = first.offset + first.disk_bytes();
            let mut j = i + 1;
            while j < chosen {
                let e = &self.entries[j];
                if e.segment != first.segment || e.offset != end || e.seq >= stop {
                    break;
                }
                end += e.disk_bytes();
                j += 1;
            }
            let path = self.segments.get(&first.segment).map_or_else(
                || self.dir.join(segment_name(first.segment)),
                |s| s.path.clone(),
            );
            let f = File::open(&path).map_err(|err| AgentError::io("open segment", &path, err))?;
            let base = raw.data.len();
            raw.data.resize(base + (end - first.offset) as usize, 0);
            f.read_exact_at(&mut raw.data[base..], first.offset)
                .map_err(|err| AgentError::io("read segment", &path, err))?;
            let mut off = base;
            for e in self.entries.range(i..j) {
                match decode_record(&raw.data[off..], self.config.max_record_bytes) {
                    Some((seq, ts, len)) if seq == e.seq && len == e.len as usize => {
                        let start = off + RECORD_HEADER;
                        raw.records.push(RawRecord {
                            sequence: seq,
                            recorded_at_ms: ts,
                            payload: start..start + len,
                            encoded_here: self.is_encoded_here(seq),
                            from_memory: false,
                        });
                        off = start + len;
                    }
                    _ => {
                        return Err(AgentError::CorruptRecord {
                            path,
                            offset: e.offset,
                        });
                    }
                }
            }
            from_disk += (j - i) as u64;
            i = j;
        }
        self.read_from_memory
            .set(self.read_from_memory.get() + from_memory);
        self.read_from_disk
            .set(self.read_from_disk.get() + from_disk);
        Ok(())
    }

    /// Drops the in-memory entries up to `sequence` (clamped to the last assigned number) and
    /// moves the acknowledgement cursor there; `None` when that acknowledges nothing new.
    /// Returns the cursor and how many entries were dropped. Durability is the caller's.
    fn forget_through(&mut self, sequence: u64) -> Option<(u64, u64)> {
        let target = sequence.min(self.last_assigned);
        if target <= self.state.acked_through {
            return None;
        }
        let mut n = 0;
        while self.entries.front().is_some_and(|e| e.seq <= target) {
            if let Some(e) = self.entries.pop_front() {
                self.live_bytes -= e.disk_bytes();
                n += 1;
            }
        }
        self.state.acked_through = target;
        self.trim_memory();
        Some((target, n))
    }

    /// Deletes every record with a sequence number at or below `sequence` (the backend has
    /// stored them); returns how many were deleted. The cursor is made durable before segments
    /// are removed. Acknowledging numbers never assigned is clamped to the last assigned one.
    pub fn ack_through(&mut self, sequence: u64) -> Result<u64> {
        let Some((_, n)) = self.forget_through(sequence) else {
            return Ok(0);
        };
        self.persist()?;
        self.delete_consumed_segments()?;
        Ok(n)
    }

    /// Like [`TelemetryQueue::ack_through`], but the cursor is made durable lazily: by
    /// [`TelemetryQueue::flush_acks`] (which the caller runs periodically), the next write of
    /// the state file, or at once when [`DEFERRED_SEGMENTS`] whole segments are acknowledged
    /// (which bounds the disk space held by acknowledged records). A crash before then brings
    /// the records back on reopen and they are uploaded again — which costs nothing but
    /// bandwidth, since the backend stores each `(device, sequence)` once. Records are still
    /// deleted from disk only after their acknowledgement is durable. This spares the agent two
    /// fsyncs per acknowledged batch, and batches segment deletions (one state write and one
    /// directory fsync for several segments).
    pub fn ack_through_deferred(&mut self, sequence: u64) -> Result<u64> {
        let Some((target, n)) = self.forget_through(sequence) else {
            return Ok(0);
        };
        self.ack_dirty = true;
        let tail_first = self.tail.as_ref().map(|t| t.first_seq);
        let done = self
            .segments
            .iter()
            .take_while(|(first, seg)| {
                Some(**first) != tail_first && seg.last_seq.is_none_or(|l| l <= target)
            })
            .take(DEFERRED_SEGMENTS)
            .count();
        if done >= DEFERRED_SEGMENTS {
            self.flush_acks()?;
        }
        Ok(n)
    }

    /// Makes the cursor moved by [`TelemetryQueue::ack_through_deferred`] durable and deletes
    /// the segments it covers.
    pub fn flush_acks(&mut self) -> Result<()> {
        if self.ack_dirty {
            self.persist()?;
            self.delete_consumed_segments()?;
        }
        Ok(())
    }

    /// Whether acknowledgements await [`TelemetryQueue::flush_acks`].
    pub fn acks_pending(&self) -> bool {
        self.ack_dirty
    }

    /// Adds records dropped by the frame-path hand-off to the persisted counters.
    pub fn add_handoff_drops(&mut self, n: u64) -> Result<()> {
        if n > 0 {
            self.state.dropped.by_handoff += n;
            self.persist()?;
        }
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            items: self.entries.len() as u64,
            bytes: self.live_bytes,
            next_sequence: self.next_seq,
            acked_through: self.state.acked_through,
            dropped: self.state.dropped,
            corrupt_segments: self.state.corrupt,
            read_from_memory: self.read_from_memory.get(),
            read_from_disk: self.read_from_disk.get(),
        }
    }

    /// Number of segment files currently on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl Drop for TelemetryQueue {
    fn drop(&mut self) {
        // Group sync: leave nothing unsynced behind a clean shutdown.
        if self.sync_pending()
            && let Err(e) = self.sync()
        {
            tracing::warn!(error = %e, "could not fsync the telemetry queue on close");
        }
    }
}

/// `write_all` over an [`AppendFile`], treating a zero-length write as a full disk.
fn write_all(f: &mut dyn AppendFile, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match f.append(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_codec_round_trips_and_rejects_every_bit_flip() {
        let mut b = Vec::new();
        encode_record(&mut b, 42, 7, b"payload");
        assert_eq!(decode_record(&b, 1024), Some((42, 7, 7)));
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert_ne!(decode_record(&c, 1024), Some((42, 7, 7)), "bit {i}");
        }
        for cut in 0..b.len() {
            assert_eq!(decode_record(&b[..cut], 1024), None);
        }
    }

    #[test]
    fn state_codec_round_trips() {
        let s = State {
            device: "dev-1".into(),
            acked_through: 9,
            seq_reserved: 4200,
            dropped: DropCounts {
                by_items: 1,
                by_bytes: 2,
                by_age: 3,
                by_handoff: 4,
            },
            corrupt: 5,
        };
        assert_eq!(State::decode(&s.encode(), Path::new("x")).unwrap(), s);
    }
}
