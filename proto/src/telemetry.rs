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

use crate::encoded::{head, text, uint_field};
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

impl RecordBody {
    /// Appends the CBOR encoding of `self` to `out`: byte for byte what
    /// `ciborium::into_writer(self, out)` writes (tested against it over arbitrary values), but
    /// written directly — no serde walk, no `String` clone per label, no allocation. This is
    /// what the agent's drain thread runs once per telemetry event.
    pub fn encode_cbor(&self, out: &mut Vec<u8>) {
        if self.has_nan() {
            // ciborium's NaN encoding depends on the payload bits; not worth duplicating.
            let _ = ciborium::into_writer(self, out);
            return;
        }
        head(out, 5, 1);
        match self {
            RecordBody::Localization(ev) => {
                text(out, "localization");
                head(out, 5, 6);
                uint_field(out, "model", ev.model.0);
                text(out, "slice");
                ev.slice.encode_cbor(out);
                text(out, "outcome");
                head(out, 5, 1);
                match ev.outcome {
                    Outcome::Localized { source } => {
                        text(out, "localized");
                        head(out, 5, 1);
                        text(out, "source");
                        text(
                            out,
                            match source {
                                PoseSource::Visual => "visual",
                                PoseSource::Prior => "prior",
                            },
                        );
                    }
                    Outcome::Failed { reason } => {
                        text(out, "failed");
                        head(out, 5, 1);
                        text(out, "reason");
                        text(out, reason.snake_name());
                    }
                }
                text(out, "confidence");
                float(out, ev.confidence);
                uint_field(out, "inliers", u64::from(ev.inliers));
                text(out, "timings");
                let t = &ev.timings;
                head(out, 5, 6);
                uint_field(out, "preprocess_us", u64::from(t.preprocess_us));
                uint_field(out, "detect_us", u64::from(t.detect_us));
                uint_field(out, "describe_us", u64::from(t.describe_us));
                uint_field(out, "match_us", u64::from(t.match_us));
                uint_field(out, "solve_us", u64::from(t.solve_us));
                uint_field(out, "total_us", u64::from(t.total_us));
            }
            RecordBody::Shadow(r) => {
                text(out, "shadow");
                head(out, 5, 11);
                uint_field(out, "baseline", r.baseline.0);
                uint_field(out, "candidate", r.candidate.0);
                text(out, "slice");
                r.slice.encode_cbor(out);
                uint_field(out, "frames", u64::from(r.frames));
                uint_field(out, "baseline_localized", u64::from(r.baseline_localized));
                uint_field(out, "candidate_localized", u64::from(r.candidate_localized));
                uint_field(out, "both_localized", u64::from(r.both_localized));
                text(out, "median_translation_diff_m");
                float(out, r.median_translation_diff_m);
                text(out, "median_rotation_diff_rad");
                float(out, r.median_rotation_diff_rad);
                uint_field(out, "baseline_median_us", u64::from(r.baseline_median_us));
                uint_field(out, "candidate_median_us", u64::from(r.candidate_median_us));
            }
        }
    }

    fn has_nan(&self) -> bool {
        match self {
            RecordBody::Localization(ev) => ev.confidence.is_nan(),
            RecordBody::Shadow(r) => {
                r.median_translation_diff_m.is_nan() || r.median_rotation_diff_rad.is_nan()
            }
        }
    }
}

impl SliceKeys {
    fn encode_cbor(&self, out: &mut Vec<u8>) {
        head(out, 5, if self.region.is_some() { 4 } else { 3 });
        text(out, "device_class");
        text(out, self.device_class.as_str());
        text(out, "app_version");
        text(out, self.app_version.as_str());
        text(out, "backend");
        text(
            out,
            match self.backend {
                ComputeBackend::Cpu => "cpu",
                ComputeBackend::Gpu => "gpu",
            },
        );
        if let Some(r) = &self.region {
            text(out, "region");
            text(out, r.as_str());
        }
    }
}

impl FailureReason {
    fn snake_name(self) -> &'static str {
        match self {
            FailureReason::TooDark => "too_dark",
            FailureReason::TooBlurred => "too_blurred",
            FailureReason::TooFewFeatures => "too_few_features",
            FailureReason::TooFewMatches => "too_few_matches",
            FailureReason::NoConsensus => "no_consensus",
            FailureReason::Ambiguous => "ambiguous",
            FailureReason::OutsideMap => "outside_map",
            FailureReason::InvalidInput => "invalid_input",
            FailureReason::ModelError => "model_error",
        }
    }
}

/// A non-NaN `f32` as ciborium writes it: as a half float when that is exact, else as a single.
fn float(out: &mut Vec<u8>, v: f32) {
    match f16_bits(v) {
        Some(h) => {
            out.push(0xf9);
            out.extend_from_slice(&h.to_be_bytes());
        }
        None => {
            out.push(0xfa);
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }
}

/// The IEEE half-precision bits of `v` if `v` (not NaN) is exactly representable as one.
fn f16_bits(v: f32) -> Option<u16> {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let biased = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if biased == 0xff {
        // Infinity (NaN is handled by the caller).
        return Some(sign | 0x7c00);
    }
    if biased == 0 {
        // Zero; an f32 subnormal is far below the smallest half.
        return (man == 0).then_some(sign);
    }
    let e = biased - 127;
    if !(-24..=15).contains(&e) {
        return None;
    }
    if e >= -14 {
        // Normal half: 10 mantissa bits.
        return (man & 0x1fff == 0).then(|| sign | (((e + 15) as u16) << 10) | (man >> 13) as u16);
    }
    // Subnormal half: the value is k * 2^-24 with k < 1024.
    let shift = (-1 - e) as u32;
    let full = (1u32 << 23) | man;
    (full & ((1u32 << shift) - 1) == 0).then(|| sign | (full >> shift) as u16)
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

    /// The hand-written half-float test agrees with ciborium's (via `half`) on a sweep of f32
    /// bit patterns, including every exponent around the half range.
    #[test]
    fn float_encoding_matches_ciborium() {
        let check = |v: f32| {
            let mut a = Vec::new();
            ciborium::into_writer(&v, &mut a).unwrap();
            if v.is_nan() {
                return;
            }
            let mut b = Vec::new();
            float(&mut b, v);
            assert_eq!(a, b, "{v:e} ({:#010x})", v.to_bits());
        };
        for bits in (0..=u32::MAX).step_by(65_521) {
            check(f32::from_bits(bits));
        }
        for biased in 90u32..=150 {
            for low in [
                0u32, 1, 0x1000, 0x2000, 0x4000, 0x40_0000, 0x7f_e000, 0x7f_ffff,
            ] {
                for sign in [0u32, 1 << 31] {
                    check(f32::from_bits(sign | (biased << 23) | low));
                }
            }
            for k in 0..2048u32 {
                check(f32::from_bits((biased << 23) | (k << 12)));
            }
        }
        for v in [
            0.0,
            -0.0,
            0.8,
            0.5,
            1.0,
            65504.0,
            65520.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            check(v);
        }
    }
}
