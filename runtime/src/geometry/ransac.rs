//! LO-RANSAC, generic over an [`Estimator`]: MSAC scoring, SPRT verification, adaptive stopping,
//! PROSAC sampling and local optimisation.
//!
//! **Contract.** [`ransac`] draws minimal samples, turns each into models with the estimator,
//! and keeps the model with the lowest MSAC cost `Σ min(r², τ²)`. It stops once the probability of
//! having missed an all-inlier sample drops below `1 − confidence`. It never allocates after the
//! workspace has grown to the data size; it is deterministic for a given seed.
//!
//! **Verification.** A hypothesis is checked point by point. Two exits end the check early:
//! - exact bound: the partial MSAC cost already exceeds the best model's total cost;
//! - Wald's sequential probability ratio test (SPRT): with `ε` the inlier ratio of the best model
//!   and `δ` the (running) inlier ratio of bad models, the likelihood ratio
//!   `λ = Π (inlier ? δ/ε : (1−δ)/(1−ε))` is updated per point and the model is rejected when
//!   `λ > A`, where `A = K + 1 + ln A` and `K = t_M · C / m_S`, `C = (1−δ) ln((1−δ)/(1−ε)) +
//!   δ ln(δ/ε)` (t_M: model cost in point checks, m_S: models per sample). At 90–95% outliers a
//!   wrong pose is rejected after a few dozen points instead of all N.
//!   The stopping rule accounts for SPRT's false rejections:
//!   `k = ln(1−η) / ln(1 − ε^m (1 − 1/A))`.
//!
//! **Sampling.** Uniform, or PROSAC when the data are ordered best-first: samples are drawn from
//! a growing prefix of the ordering, so good matches are tried first; it degrades to uniform
//! sampling after `T_N` draws.
//!
//! **Local optimisation.** Whenever a new best model is found, its inliers are collected and the
//! estimator's `local_optimize` (robust Levenberg–Marquardt for poses) refits it; the refit is
//! kept while it lowers the cost (up to three rounds).
//!
//! **Papers.** M. Fischler, R. Bolles, "Random sample consensus", CACM 1981; P. Torr,
//! A. Zisserman, "MLESAC", CVIU 2000 (MSAC cost); O. Chum, J. Matas, J. Kittler, "Locally
//! optimized RANSAC", DAGM 2003; O. Chum, J. Matas, "Matching with PROSAC", CVPR 2005; J. Matas,
//! O. Chum, "Randomized RANSAC with sequential probability ratio test", ICCV 2005 and O. Chum,
//! J. Matas, "Optimal randomized RANSAC", PAMI 2008. Structure after PoseLib's `ransac_impl.h`.

use super::Solutions;
pub use super::estimator::Estimator;
use super::rng::Pcg32;

/// How minimal samples are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// Uniformly at random.
    #[default]
    Uniform,
    /// PROSAC: the data (or the given order) are sorted best-first by match quality.
    Prosac,
}

/// Options of [`ransac`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RansacOptions {
    /// Inlier threshold, in the units of the estimator's residual (pixels for poses).
    pub threshold: f64,
    /// Stop when an all-inlier sample has been drawn with this probability.
    pub confidence: f64,
    /// Never stop before this many iterations.
    pub min_iterations: u32,
    /// Never run more than this many iterations.
    pub max_iterations: u32,
    /// Seed of the sampling RNG.
    pub seed: u64,
    /// Sampling scheme.
    pub sampling: Sampling,
    /// Verify hypotheses with SPRT.
    pub sprt: bool,
    /// Run local optimisation on every new best model.
    pub local_optimization: bool,
}

impl Default for RansacOptions {
    fn default() -> Self {
        RansacOptions {
            threshold: 4.0,
            confidence: 0.9999,
            min_iterations: 5,
            max_iterations: 100_000,
            seed: 0x5EC7_A171,
            sampling: Sampling::Uniform,
            sprt: true,
            local_optimization: true,
        }
    }
}

/// What [`ransac`] did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RansacStats {
    /// Samples drawn.
    pub iterations: u32,
    /// Models generated and verified.
    pub models: u64,
    /// Models rejected by SPRT before all points were checked.
    pub sprt_rejections: u64,
    /// Total point checks (residual evaluations) during verification.
    pub points_checked: u64,
    /// Local optimisations run.
    pub lo_runs: u32,
    /// Inliers of the returned model.
    pub inliers: usize,
    /// MSAC cost of the returned model.
    pub score: f64,
}

/// Scratch buffers of [`ransac`], reusable across calls.
#[derive(Debug, Clone, Default)]
pub struct RansacWorkspace {
    inliers: Vec<usize>,
}

impl RansacWorkspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inlier indices of the last returned model (estimator index space, ascending).
    pub fn inliers(&self) -> &[usize] {
        &self.inliers
    }
}

/// Maximum minimal-sample size supported.
const MAX_SAMPLE: usize = 8;

/// PROSAC's progressive sampler over ranks `0..n` (Chum & Matas 2005, Sec. 2.2).
#[derive(Debug, Clone)]
struct Prosac {
    n_total: usize,
    m: usize,
    n: usize,
    t: u64,
    tn: f64,
    tn_prime: u64,
}

impl Prosac {
    fn new(n_total: usize, m: usize, t_max: u32) -> Self {
        let mut tn = f64::from(t_max.max(1));
        for i in 0..m {
            tn *= (m - i) as f64 / (n_total - i) as f64;
        }
        Prosac {
            n_total,
            m,
            n: m,
            t: 0,
            tn,
            tn_prime: 1,
        }
    }

    fn sample(&mut self, rng: &mut Pcg32, out: &mut [usize]) {
        self.t += 1;
        if self.t == self.tn_prime && self.n < self.n_total {
            let tn1 = self.tn * (self.n + 1) as f64 / (self.n + 1 - self.m) as f64;
            self.tn_prime += ((tn1 - self.tn).ceil() as u64).max(1);
            self.tn = tn1;
            self.n += 1;
        }
        if self.tn_prime < self.t || self.n == self.m {
            sample_distinct(rng, self.n, out);
        } else {
            let k = out.len() - 1;
            sample_distinct(rng, self.n - 1, &mut out[..k]);
            out[k] = self.n - 1;
        }
    }
}

/// `out.len()` distinct uniform indices in `0..n` (`n >= out.len()`).
#[inline]
fn sample_distinct(rng: &mut Pcg32, n: usize, out: &mut [usize]) {
    let bound = u32::try_from(n).unwrap_or(u32::MAX);
    for k in 0..out.len() {
        loop {
            let v = rng.below(bound) as usize;
            if !out[..k].contains(&v) {
                out[k] = v;
                break;
            }
        }
    }
}

/// SPRT state (Chum & Matas 2008).
#[derive(Debug, Clone, Copy)]
struct Sprt {
    enabled: bool,
    active: bool,
    t_m: f64,
    m_s: f64,
    eps: f64,
    delta: f64,
    delta_sum: f64,
    delta_count: f64,
    models_seen: u64,
    a: f64,
    f_in: f64,
    f_out: f64,
}

const DELTA_PRIOR: f64 = 0.05;
/// Weight of the prior, in points.
const DELTA_PRIOR_WEIGHT: f64 = 200.0;

impl Sprt {
    fn new(enabled: bool, t_m: f64, m_s: f64) -> Self {
        Sprt {
            enabled,
            active: false,
            t_m,
            m_s,
            eps: 0.0,
            delta: DELTA_PRIOR,
            delta_sum: 0.0,
            delta_count: 0.0,
            models_seen: 0,
            a: f64::INFINITY,
            f_in: 1.0,
            f_out: 1.0,
        }
    }

    fn recompute(&mut self) {
        let (e, d) = (self.eps.min(0.999), self.delta.clamp(1e-4, 0.5));
        self.active = self.enabled && e > 1.1 * d;
        if !self.active {
            self.a = f64::INFINITY;
            return;
        }
        let c = (1.0 - d) * ((1.0 - d) / (1.0 - e)).ln() + d * (d / e).ln();
        let a0 = self.t_m * c / self.m_s + 1.0;
        let mut a = a0;
        for _ in 0..10 {
            a = a0 + a.ln();
        }
        self.a = a.max(1.5);
        self.f_in = d / e;
        self.f_out = (1.0 - d) / (1.0 - e);
    }

    fn set_eps(&mut self, eps: f64) {
        self.eps = eps;
        self.recompute();
    }

    /// Records the inliers among the points checked of a model that was not a new best; `δ` is
    /// the pooled ratio (with a weak prior), re-derived every 64 models.
    fn observe_bad(&mut self, inliers: usize, tested: usize) {
        self.delta_sum += inliers as f64;
        self.delta_count += tested as f64;
        self.models_seen += 1;
        if self.models_seen.is_multiple_of(64) {
            let d = (DELTA_PRIOR * DELTA_PRIOR_WEIGHT + self.delta_sum)
                / (DELTA_PRIOR_WEIGHT + self.delta_count);
            if (d - self.delta).abs() > 0.05 * self.delta {
                self.delta = d;
                self.recompute();
            }
        }
    }

    /// Probability that a good model survives the test.
    fn survival(&self) -> f64 {
        if self.active { 1.0 - 1.0 / self.a } else { 1.0 }
    }
}

enum Verdict {
    Complete { score: f64, inliers: usize },
    Rejected { tested: usize, inliers: usize },
}

/// Verifies `model` point by point, starting at `start` and wrapping around: every model sees
/// the data in a different (cyclically shifted) order, so an unlucky run of outliers at the front
/// of the data cannot make SPRT reject every good model.
#[inline]
fn verify<E: Estimator>(
    est: &E,
    model: &E::Model,
    th2: f64,
    best_score: f64,
    sprt: &Sprt,
    start: usize,
) -> Verdict {
    let n = est.num_data();
    let mut score = 0.0;
    let mut inliers = 0usize;
    let mut tested = 0usize;
    let mut lambda = 1.0;
    for (lo, hi) in [(start, n), (0, start)] {
        for i in lo..hi {
            let r2 = est.residual2(model, i);
            tested += 1;
            if r2 < th2 {
                inliers += 1;
                score += r2;
                lambda *= sprt.f_in;
            } else {
                score += th2;
                lambda *= sprt.f_out;
                if (sprt.active && lambda > sprt.a) || score > best_score {
                    return Verdict::Rejected { tested, inliers };
                }
            }
        }
    }
    Verdict::Complete { score, inliers }
}

/// Full MSAC cost and inlier count of `model`.
fn score_full<E: Estimator>(est: &E, model: &E::Model, th2: f64) -> (f64, usize) {
    let mut score = 0.0;
    let mut inl = 0;
    for i in 0..est.num_data() {
        let r2 = est.residual2(model, i);
        if r2 < th2 {
            score += r2;
            inl += 1;
        } else {
            score += th2;
        }
    }
    (score, inl)
}

fn collect_inliers<E: Estimator>(est: &E, model: &E::Model, th2: f64, out: &mut Vec<usize>) {
    out.clear();
    for i in 0..est.num_data() {
        if est.residual2(model, i) < th2 {
            out.push(i);
        }
    }
}

/// Iterations needed so that an uncontaminated, SPRT-surviving sample has been drawn with
/// probability `confidence`.
fn required_iterations(
    inlier_ratio: f64,
    m: usize,
    confidence: f64,
    survival: f64,
    max: u32,
) -> u32 {
    let p = inlier_ratio.powi(m as i32) * survival;
    if p >= 1.0 - 1e-12 {
        return 1;
    }
    if p <= 0.0 {
        return max;
    }
    let k = (1.0 - confidence).ln() / (1.0 - p).ln();
    if k.is_finite() && k < f64::from(max) {
        k.ceil().max(1.0) as u32
    } else {
        max
    }
}

/// Runs LO-RANSAC. `order` (PROSAC only) lists data indices best-first; `None` means the data are
/// already in quality order. Returns the best model (if any model was found) and statistics;
/// its inliers are left in `ws.inliers()`.
pub fn ransac<E: Estimator>(
    est: &E,
    opts: &RansacOptions,
    order: Option<&[u32]>,
    ws: &mut RansacWorkspace,
) -> (Option<E::Model>, RansacStats) {
    let m = E::SAMPLE_SIZE;
    let n = est.num_data();
    let mut stats = RansacStats::default();
    ws.inliers.clear();
    if m == 0 || m > MAX_SAMPLE || n < m || !(opts.threshold > 0.0) || !opts.threshold.is_finite() {
        return (None, stats);
    }
    let order = order.filter(|o| o.len() == n);
    let th2 = opts.threshold * opts.threshold;
    let confidence = opts.confidence.clamp(0.0, 1.0 - 1e-12);
    let mut rng = Pcg32::new(opts.seed);
    let n_u32 = u32::try_from(n).unwrap_or(u32::MAX);
    let mut prosac = (opts.sampling == Sampling::Prosac).then(|| Prosac::new(n, m, 200_000));
    let mut sprt = Sprt::new(opts.sprt, est.model_cost(), est.models_per_sample());

    let mut best: Option<E::Model> = None;
    let mut best_score = f64::INFINITY;
    let mut best_inliers = 0usize;
    let mut needed = opts.max_iterations;
    let mut models = Solutions::<E::Model>::new();
    let mut sample = [0usize; MAX_SAMPLE];

    while stats.iterations < opts.max_iterations
        && (stats.iterations < opts.min_iterations || stats.iterations < needed)
    {
        stats.iterations += 1;
        let s = &mut sample[..m];
        match prosac.as_mut() {
            Some(p) => {
                p.sample(&mut rng, s);
                if let Some(o) = order {
                    for v in s.iter_mut() {
                        *v = o[*v] as usize;
                    }
                }
            }
            None => sample_distinct(&mut rng, n, s),
        }
        if est.sample_is_degenerate(s) {
            continue;
        }
        est.generate(s, &mut models);
        for k in 0..models.len() {
            let model = models.as_slice()[k];
            stats.models += 1;
            let start = rng.below(n_u32) as usize;
            let (score, inliers) = match verify(est, &model, th2, best_score, &sprt, start) {
                Verdict::Complete { score, inliers } => {
                    stats.points_checked += n as u64;
                    (score, inliers)
                }
                Verdict::Rejected { tested, inliers } => {
                    stats.points_checked += tested as u64;
                    stats.sprt_rejections += u64::from(sprt.active);
                    sprt.observe_bad(inliers, tested);
                    continue;
                }
            };
            if score >= best_score {
                sprt.observe_bad(inliers, n);
                continue;
            }
            best = Some(model);
            best_score = score;
            best_inliers = inliers;
            if opts.local_optimization && inliers > m {
                let mut current = model;
                for _ in 0..3 {
                    collect_inliers(est, &current, th2, &mut ws.inliers);
                    stats.lo_runs += 1;
                    let Some(refit) = est.local_optimize(&current, &ws.inliers, opts.threshold)
                    else {
                        break;
                    };
                    let (s2, i2) = score_full(est, &refit, th2);
                    stats.points_checked += n as u64;
                    if s2 < best_score {
                        let grew = i2 > best_inliers;
                        best = Some(refit);
                        best_score = s2;
                        best_inliers = i2;
                        current = refit;
                        if !grew {
                            break;
                        }
                    } else {
                        break;
                    }
                }
            }
            sprt.set_eps(best_inliers as f64 / n as f64);
            needed = required_iterations(
                best_inliers as f64 / n as f64,
                m,
                confidence,
                sprt.survival(),
                opts.max_iterations,
            );
        }
    }

    if let Some(b) = &best {
        collect_inliers(est, b, th2, &mut ws.inliers);
    }
    stats.inliers = best_inliers;
    stats.score = best_score;
    (best, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-D line-fitting estimator y = a x + b, to test the RANSAC machinery on its own.
    struct Line<'a> {
        pts: &'a [(f64, f64)],
    }

    impl Estimator for Line<'_> {
        type Model = (f64, f64);
        const SAMPLE_SIZE: usize = 2;
        fn num_data(&self) -> usize {
            self.pts.len()
        }
        fn generate(&self, s: &[usize], models: &mut Solutions<(f64, f64)>) {
            models.clear();
            let (p, q) = (self.pts[s[0]], self.pts[s[1]]);
            if (q.0 - p.0).abs() > 1e-12 {
                let a = (q.1 - p.1) / (q.0 - p.0);
                models.push((a, p.1 - a * p.0));
            }
        }
        fn residual2(&self, m: &(f64, f64), i: usize) -> f64 {
            let (x, y) = self.pts[i];
            let r = y - (m.0 * x + m.1);
            r * r
        }
        fn local_optimize(&self, _m: &(f64, f64), inl: &[usize], _t: f64) -> Option<(f64, f64)> {
            // Least-squares line through the inliers.
            let n = inl.len() as f64;
            let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
            for &i in inl {
                let (x, y) = self.pts[i];
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
            }
            let den = n * sxx - sx * sx;
            (den.abs() > 1e-12).then(|| {
                let a = (n * sxy - sx * sy) / den;
                (a, (sy - a * sx) / n)
            })
        }
    }

    fn line_data(n: usize, outliers: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut rng = Pcg32::new(seed);
        (0..n)
            .map(|_| {
                let x = rng.uniform(-10.0, 10.0);
                if rng.next_f64() < outliers {
                    (x, rng.uniform(-50.0, 50.0))
                } else {
                    (x, 2.0 * x - 1.0 + 0.01 * rng.normal())
                }
            })
            .collect()
    }

    #[test]
    fn finds_line_at_90_percent_outliers_and_sprt_saves_work() {
        let pts = line_data(2000, 0.9, 3);
        let est = Line { pts: &pts };
        let mut ws = RansacWorkspace::new();
        let opts = RansacOptions {
            threshold: 0.05,
            ..Default::default()
        };
        let (m, stats) = ransac(&est, &opts, None, &mut ws);
        let (a, b) = m.expect("model");
        assert!((a - 2.0).abs() < 1e-2 && (b + 1.0).abs() < 1e-2, "{a} {b}");
        assert!(stats.inliers > 150, "{stats:?}");
        assert!(stats.sprt_rejections > 0);
        // SPRT: far fewer point checks than models × N.
        assert!(stats.points_checked < stats.models * 2000 / 4, "{stats:?}");

        let no_sprt = RansacOptions {
            sprt: false,
            ..opts
        };
        let (m2, stats2) = ransac(&est, &no_sprt, None, &mut ws);
        assert!(m2.is_some());
        assert!(stats2.points_checked > stats.points_checked);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let pts = line_data(500, 0.5, 4);
        let est = Line { pts: &pts };
        let mut ws = RansacWorkspace::new();
        let opts = RansacOptions {
            threshold: 0.05,
            ..Default::default()
        };
        let r1 = ransac(&est, &opts, None, &mut ws);
        let r2 = ransac(&est, &opts, None, &mut ws);
        assert_eq!(r1.0, r2.0);
        assert_eq!(r1.1, r2.1);
    }

    #[test]
    fn prosac_uses_quality_order() {
        // Inliers first, outliers after: PROSAC needs far fewer iterations than uniform sampling.
        let mut pts = line_data(1000, 0.0, 5);
        let mut rng = Pcg32::new(6);
        for p in pts.iter_mut().skip(100) {
            p.1 = rng.uniform(-50.0, 50.0);
        }
        let est = Line { pts: &pts };
        let mut ws = RansacWorkspace::new();
        let base = RansacOptions {
            threshold: 0.05,
            local_optimization: false,
            ..Default::default()
        };
        let (mp, sp) = ransac(
            &est,
            &RansacOptions {
                sampling: Sampling::Prosac,
                ..base
            },
            None,
            &mut ws,
        );
        assert!(mp.is_some());
        let order: Vec<u32> = (0..1000).collect();
        let (_, sp2) = ransac(
            &est,
            &RansacOptions {
                sampling: Sampling::Prosac,
                ..base
            },
            Some(&order),
            &mut ws,
        );
        assert_eq!(sp, sp2);
        // Only the first draws matter here: PROSAC's first sample is all-inlier.
        let mut rng = Pcg32::new(1);
        let mut p = Prosac::new(1000, 2, 200_000);
        let mut s = [0usize; 2];
        for _ in 0..50 {
            p.sample(&mut rng, &mut s);
            assert!(s[0] < 100 && s[1] < 100 && s[0] != s[1], "{s:?}");
        }
    }

    #[test]
    fn too_few_data_or_bad_threshold_give_no_model() {
        let pts = [(0.0, 0.0)];
        let est = Line { pts: &pts };
        let mut ws = RansacWorkspace::new();
        assert!(
            ransac(&est, &RansacOptions::default(), None, &mut ws)
                .0
                .is_none()
        );
        let pts = line_data(50, 0.0, 1);
        let est = Line { pts: &pts };
        let bad = RansacOptions {
            threshold: f64::NAN,
            ..Default::default()
        };
        assert!(ransac(&est, &bad, None, &mut ws).0.is_none());
    }

    #[test]
    fn required_iterations_matches_formula() {
        // w = 0.5, m = 3, η = 0.99: ln(0.01)/ln(1 − 1/8) = 34.5 → 35.
        assert_eq!(required_iterations(0.5, 3, 0.99, 1.0, 100_000), 35);
        assert_eq!(required_iterations(1.0, 3, 0.99, 1.0, 100_000), 1);
        assert_eq!(required_iterations(0.0, 3, 0.99, 1.0, 1000), 1000);
    }
}
