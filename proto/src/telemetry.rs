//! Telemetry records: what a device reports about how its models work.
//!
//! Every record carries `(device, sequence)`. The agent assigns sequence numbers from one
//! increasing counter per device (with gaps after restarts: nobody may assume contiguity), persists records in its disk queue, uploads them in
//! [`TelemetryBatch`]es and deletes them only when a [`TelemetryAck`] names their sequence
//! numbers. The backend stores each `(device, sequence)` once, so a batch retried after a lost
//! acknowledgement is acknowledged again without being counted twice.
//!
//! Records never carry image data, keypoints, descriptors or a position finer than a
//! [`CoarseRegion`]: only outcomes, timings and slice keys.

use serde::{Deserialize, Serialize};

use crate::types::{CoarseRegion, DeviceId, Label, ModelVersion};

/// Which compute backend ran the descriptor model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeBackend {
    /// The CPU int8 kernels.
    Cpu,
    /// The WGSL kernels on a GPU.
    Gpu,
}

/// Why a frame did not localise (mirrors the runtime's failure reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The frame was too dark.
    TooDark,
    /// The frame was too blurred.
    TooBlurred,
    /// Too few keypoints were detected.
    TooFewFeatures,
    /// Too few 2D–3D matches survived the ratio and mutual tests.
    TooFewMatches,
    /// RANSAC found no pose with enough inliers.
    NoConsensus,
    /// Several poses were about equally supported.
    Ambiguous,
    /// The camera is outside the mapped area.
    OutsideMap,
    /// The frame or its intrinsics were invalid.
    InvalidInput,
    /// The descriptor model failed to run.
    ModelError,
}

/// Where a reported pose came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoseSource {
    /// A visual fix from this frame.
    Visual,
    /// The prior pose (the visual solve was not trusted).
    Prior,
}

/// What one localisation attempt produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A pose was returned.
    Localized {
        /// Where the pose came from.
        source: PoseSource,
    },
    /// No pose, for this reason.
    Failed {
        /// Why.
        reason: FailureReason,
    },
}

/// Per-stage latency of one frame, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StageTimings {
    /// Pixel conversion and image pyramid.
    pub preprocess_us: u32,
    /// Keypoint detection and orientation.
    pub detect_us: u32,
    /// Patch extraction and the descriptor model.
    pub describe_us: u32,
    /// 2D–3D matching.
    pub match_us: u32,
    /// Pose solving and refinement.
    pub solve_us: u32,
    /// The whole frame, end to end.
    pub total_us: u32,
}

/// The context every record is sliced by in monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceKeys {
    /// Device class, e.g. `pixel-8`.
    pub device_class: Label,
    /// Version of the app that linked the runtime.
    pub app_version: Label,
    /// Compute backend that ran the model.
    pub backend: ComputeBackend,
    /// Coarse region (a short geohash), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<CoarseRegion>,
}

/// One localisation attempt as the runtime reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizationEvent {
    /// Model version that produced the descriptors.
    pub model: ModelVersion,
    /// Slice keys.
    pub slice: SliceKeys,
    /// Localised or why not.
    pub outcome: Outcome,
    /// Pose confidence in `[0, 1]` (0 when no pose).
    pub confidence: f32,
    /// RANSAC inliers of the best hypothesis (also reported on failure).
    pub inliers: u32,
    /// Per-stage latency.
    pub timings: StageTimings,
}

/// A summary of a shadow run: the candidate model ran beside the active one on the same frames
/// (its poses were never used) over a window of frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// The active model, whose poses were used.
    pub baseline: ModelVersion,
    /// The candidate being shadowed.
    pub candidate: ModelVersion,
    /// Slice keys.
    pub slice: SliceKeys,
    /// Frames both models saw.
    pub frames: u32,
    /// Frames the baseline localised.
    pub baseline_localized: u32,
    /// Frames the candidate localised.
    pub candidate_localized: u32,
    /// Frames both localised.
    pub both_localized: u32,
    /// Median translation difference between the two poses where both localised (metres).
    pub median_translation_diff_m: f32,
    /// Median rotation difference where both localised (radians).
    pub median_rotation_diff_rad: f32,
    /// Median end-to-end latency of the baseline (microseconds).
    pub baseline_median_us: u32,
    /// Median end-to-end latency of the candidate (microseconds).
    pub candidate_median_us: u32,
}

/// What a record reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordBody {
    /// One localisation attempt.
    Localization(LocalizationEvent),
    /// A shadow-run summary.
    Shadow(ShadowReport),
}

/// One telemetry record, identified by `(device, sequence)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    /// The reporting device; must be the session's device.
    pub device: DeviceId,
    /// Per-device sequence number, assigned when the record entered the disk queue.
    pub sequence: u64,
    /// When it was recorded, Unix milliseconds from the device's clock (informational).
    pub recorded_at_ms: u64,
    /// What it reports.
    pub body: RecordBody,
}

/// What the agent's queue dropped because of its caps, counted since the queue was created.
/// Cumulative, so the backend can take differences and a lost batch loses no count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct DropCounters {
    /// Records dropped because the queue held its maximum number of items.
    pub by_items: u64,
    /// Records dropped because the queue held its maximum number of bytes.
    pub by_bytes: u64,
    /// Records dropped because they were older than the age cap.
    pub by_age: u64,
    /// Records dropped in the frame path's hand-off ring before reaching the queue.
    #[serde(default)]
    pub by_handoff: u64,
}

/// A batch of records uploaded in one telemetry exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    /// Chosen by the agent (e.g. the first sequence number); echoed in the acknowledgement.
    pub batch_id: u64,
    /// The records, at most the session's `max_batch_records`.
    pub records: Vec<TelemetryRecord>,
    /// The queue's drop counters at the time of upload.
    pub dropped: DropCounters,
}

/// An inclusive range of sequence numbers, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqRange {
    /// First sequence number in the range.
    pub first: u64,
    /// Last sequence number in the range (`>= first`).
    pub last: u64,
}

impl SeqRange {
    /// Whether `seq` lies in the range.
    pub fn contains(&self, seq: u64) -> bool {
        (self.first..=self.last).contains(&seq)
    }

    /// Compresses sequence numbers into the fewest sorted, disjoint ranges.
    pub fn compress(seqs: impl IntoIterator<Item = u64>) -> Vec<SeqRange> {
        let mut v: Vec<u64> = seqs.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut out: Vec<SeqRange> = Vec::new();
        for s in v {
            match out.last_mut() {
                Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
                _ => out.push(SeqRange { first: s, last: s }),
            }
        }
        out
    }
}

/// The backend's acknowledgement of a batch: every sequence number in `acked` is durably stored
/// (now or by an earlier upload) and may be deleted from the device's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryAck {
    /// The batch acknowledged.
    pub batch_id: u64,
    /// Sequence numbers stored, as sorted disjoint ranges.
    pub acked: Vec<SeqRange>,
    /// How many records were new.
    pub stored: u32,
    /// How many records were already stored (a retried batch).
    pub duplicates: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_merges_runs_and_dedups() {
        assert_eq!(
            SeqRange::compress([5, 1, 2, 3, 3, 7, 8, u64::MAX]),
            vec![
                SeqRange { first: 1, last: 3 },
                SeqRange { first: 5, last: 5 },
                SeqRange { first: 7, last: 8 },
                SeqRange {
                    first: u64::MAX,
                    last: u64::MAX
                },
            ]
        );
        assert!(SeqRange::compress([]).is_empty());
    }
}
