//! Shadow runs: the candidate model runs beside the active one on the same frames, its results
//! are never used, and every window of frames is summarised in a
//! [`sextant_proto::ShadowReport`] that travels as a telemetry record.
//!
//! [`ShadowWindow`] accumulates per-frame [`ShadowSample`]s and turns them into a report
//! (medians of latency, counts of frames each model localised). [`describe_pair`] is the part of
//! a frame both models run in the simulated device: the same patches through the baseline and
//! the candidate, timed, and how far their descriptors agree.

use std::time::Instant;

use sextant_proto::{ModelVersion, ShadowReport, SliceKeys};
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, Workspace};

/// What one frame gave with each model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowSample {
    /// The baseline localised the frame.
    pub baseline_localized: bool,
    /// The candidate localised the frame.
    pub candidate_localized: bool,
    /// Translation difference between the two poses, where both localised (m).
    pub translation_diff_m: f32,
    /// Rotation difference, where both localised (rad).
    pub rotation_diff_rad: f32,
    /// Baseline latency (µs).
    pub baseline_us: u32,
    /// Candidate latency (µs).
    pub candidate_us: u32,
}

/// Accumulates the samples of one (baseline, candidate) pair.
#[derive(Debug, Clone)]
pub struct ShadowWindow {
    baseline: u64,
    candidate: u64,
    samples: Vec<ShadowSample>,
}

fn median_u32(mut v: Vec<u32>) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f32(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

impl ShadowWindow {
    /// An empty window for `candidate` shadowing `baseline`.
    pub fn new(baseline: u64, candidate: u64) -> Self {
        ShadowWindow {
            baseline,
            candidate,
            samples: Vec::new(),
        }
    }

    /// The pair this window is for.
    pub fn pair(&self) -> (u64, u64) {
        (self.baseline, self.candidate)
    }

    /// Frames so far.
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// Adds one frame.
    pub fn push(&mut self, s: ShadowSample) {
        self.samples.push(s);
    }

    /// The report of the frames so far (`None` if there were none); empties the window.
    pub fn take_report(&mut self, slice: &SliceKeys) -> Option<ShadowReport> {
        if self.samples.is_empty() {
            return None;
        }
        let s = std::mem::take(&mut self.samples);
        let count = |f: fn(&ShadowSample) -> bool| s.iter().filter(|x| f(x)).count() as u32;
        let both: Vec<&ShadowSample> = s
            .iter()
            .filter(|x| x.baseline_localized && x.candidate_localized)
            .collect();
        Some(ShadowReport {
            baseline: ModelVersion(self.baseline),
            candidate: ModelVersion(self.candidate),
            slice: slice.clone(),
            frames: s.len() as u32,
            baseline_localized: count(|x| x.baseline_localized),
            candidate_localized: count(|x| x.candidate_localized),
            both_localized: both.len() as u32,
            median_translation_diff_m: median_f32(
                both.iter().map(|x| x.translation_diff_m).collect(),
            ),
            median_rotation_diff_rad: median_f32(
                both.iter().map(|x| x.rotation_diff_rad).collect(),
            ),
            baseline_median_us: median_u32(s.iter().map(|x| x.baseline_us).collect()),
            candidate_median_us: median_u32(s.iter().map(|x| x.candidate_us).collect()),
        })
    }
}

/// Both models on the same patches: latencies and agreement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRun {
    /// Baseline time (µs).
    pub baseline_us: u32,
    /// Candidate time (µs).
    pub candidate_us: u32,
    /// Mean cosine similarity of the two models' descriptors of each patch, in `[-1, 1]`.
    pub agreement: f32,
}

/// Reusable buffers of [`describe_pair`].
#[derive(Debug, Default)]
pub struct PairScratch {
    ws_baseline: Workspace,
    ws_candidate: Workspace,
    out_baseline: Vec<i8>,
    out_candidate: Vec<i8>,
}

/// Runs `patches` (`n` patches of 32×32 bytes) through both models and compares the
/// descriptors. An error of either model is returned as its message.
pub fn describe_pair(
    baseline: &DescriptorModel,
    candidate: &DescriptorModel,
    patches: &[u8],
    n: usize,
    scratch: &mut PairScratch,
) -> Result<PairRun, String> {
    scratch.out_baseline.resize(n * DESCRIPTOR_DIM, 0);
    scratch.out_candidate.resize(n * DESCRIPTOR_DIM, 0);
    let t = Instant::now();
    baseline
        .describe_with(
            &mut scratch.ws_baseline,
            patches,
            n,
            &mut scratch.out_baseline,
        )
        .map_err(|e| e.to_string())?;
    let baseline_us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let t = Instant::now();
    candidate
        .describe_with(
            &mut scratch.ws_candidate,
            patches,
            n,
            &mut scratch.out_candidate,
        )
        .map_err(|e| e.to_string())?;
    let candidate_us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let mut sum = 0.0f32;
    for (a, b) in scratch
        .out_baseline
        .chunks_exact(DESCRIPTOR_DIM)
        .zip(scratch.out_candidate.chunks_exact(DESCRIPTOR_DIM))
    {
        let (mut ab, mut aa, mut bb) = (0i64, 0i64, 0i64);
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (i64::from(*x), i64::from(*y));
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        let den = ((aa as f64).sqrt() * (bb as f64).sqrt()).max(1e-9);
        sum += (ab as f64 / den) as f32;
    }
    Ok(PairRun {
        baseline_us,
        candidate_us,
        agreement: sum / n.max(1) as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_proto::{ComputeBackend, Label};

    fn slice() -> SliceKeys {
        SliceKeys {
            device_class: Label::new("t").unwrap(),
            app_version: Label::new("t").unwrap(),
            backend: ComputeBackend::Cpu,
            region: None,
        }
    }

    #[test]
    fn window_report_counts_and_medians() {
        let mut w = ShadowWindow::new(1, 2);
        assert!(w.take_report(&slice()).is_none());
        for i in 0..5u32 {
            w.push(ShadowSample {
                baseline_localized: i != 0,
                candidate_localized: i != 1,
                translation_diff_m: i as f32,
                rotation_diff_rad: 0.0,
                baseline_us: 100 + i,
                candidate_us: 200 + i,
            });
        }
        let r = w.take_report(&slice()).unwrap();
        assert_eq!(
            (r.frames, r.baseline_localized, r.candidate_localized),
            (5, 4, 4)
        );
        assert_eq!(r.both_localized, 3);
        assert_eq!(r.median_translation_diff_m, 3.0);
        assert_eq!((r.baseline_median_us, r.candidate_median_us), (102, 202));
        assert_eq!(w.frames(), 0);
    }

    #[test]
    fn a_model_agrees_with_itself() {
        let m = DescriptorModel::embedded_default().unwrap();
        let patches: Vec<u8> = (0..2 * 1024).map(|i| (i * 37 % 251) as u8).collect();
        let r = describe_pair(&m, &m, &patches, 2, &mut PairScratch::default()).unwrap();
        assert!(r.agreement > 0.999, "{r:?}");
    }
}
