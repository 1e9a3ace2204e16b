//! `sextant eval …`: quality and speed evaluations with known ground truth.
//!
//! `sextant eval pnp` generates seeded absolute-pose problems (N × outlier ratio, plus
//! near-planar and narrow-FoV scenes), solves each with P3P and with the gravity-aware upright
//! 2-point solver, and prints per regime the median and 90th-percentile solve time and the
//! success rate (rotation < 1°, relative translation < 1%). `--write DIR` also stores every
//! problem as a `pnp-problem/1` file so other solvers can run on the same data
//! (`scripts/compare_pnp.py`). Other evaluations (`eval features`, `eval localize`) slot in as
//! further variants of [`EvalCommand`].

use std::path::PathBuf;

use anyhow::{Context, bail};
use sextant_runtime::geometry::synth::{SceneKind, SynthConfig, SynthProblem, generate};
use sextant_runtime::geometry::{AbsolutePoseWorkspace, RansacOptions, rng::splitmix64};

use crate::pnp::{
    CLI_MIN_INLIERS, CameraJson, GtJson, Prepared, ProblemFile, median, pose_errors, result_file,
};

/// Arguments of `sextant eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// What to evaluate.
    #[command(subcommand)]
    pub what: EvalCommand,
}

/// The evaluations.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Absolute pose (PnP) solvers on synthetic problems with ground truth.
    Pnp(PnpEvalArgs),
    /// Keypoints, descriptors and matching on the homography benchmark of real photos.
    Features(crate::eval_features::FeaturesEvalArgs),
    /// Localisation accuracy and latency per slice on simulated scenes (renders, maps, localises).
    Localize(crate::eval_localize::LocalizeEvalArgs),
}

/// Runs `sextant eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.what {
        EvalCommand::Pnp(a) => run_pnp(a),
        EvalCommand::Features(a) => crate::eval_features::run(a),
        EvalCommand::Localize(a) => crate::eval_localize::run(a),
    }
}

/// Which solvers `eval pnp` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SolverChoice {
    /// P3P only.
    P3p,
    /// Upright 2-point (gravity) only.
    Up2p,
    /// Both.
    Both,
}

/// Arguments of `sextant eval pnp`.
#[derive(Debug, clap::Args)]
pub struct PnpEvalArgs {
    /// Problems per regime.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Seed of the problem generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Correspondence counts.
    #[arg(long, value_delimiter = ',', default_value = "50,200,1000,5000")]
    pub ns: Vec<usize>,
    /// Outlier ratios.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.25,0.5,0.75,0.9,0.95"
    )]
    pub outliers: Vec<f64>,
    /// Skip the near-planar and narrow-FoV regimes.
    #[arg(long)]
    pub no_extra: bool,
    /// Solvers to run.
    #[arg(long, value_enum, default_value_t = SolverChoice::Both)]
    pub solver: SolverChoice,
    /// Timed repetitions per problem (median).
    #[arg(long, default_value_t = 1)]
    pub reps: u32,
    /// Also write every problem as a `pnp-problem/1` file into this folder.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Only write the problems (with `--write`), do not solve them.
    #[arg(long)]
    pub write_only: bool,
    /// Write the per-regime summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One evaluation regime.
#[derive(Debug, Clone)]
pub struct Regime {
    /// Short label, also the file-name prefix (`gen`, `planar`, `narrow`).
    pub kind: &'static str,
    /// Generator configuration.
    pub cfg: SynthConfig,
}

impl Regime {
    /// `kind_nNNNN_oOO`.
    pub fn name(&self) -> String {
        format!(
            "{}_n{:04}_o{:02}",
            self.kind,
            self.cfg.n,
            (self.cfg.outlier_ratio * 100.0).round() as u32
        )
    }

    /// Expected number of inliers.
    pub fn inliers(&self) -> usize {
        self.cfg.n - ((self.cfg.n as f64) * self.cfg.outlier_ratio).round() as usize
    }
}

/// The regimes of `eval pnp`: the grid, then near-planar and narrow-FoV scenes.
pub fn regimes(ns: &[usize], outliers: &[f64], extra: bool) -> Vec<Regime> {
    let mut v = Vec::new();
    for &n in ns {
        for &o in outliers {
            v.push(Regime {
                kind: "gen",
                cfg: SynthConfig {
                    n,
                    outlier_ratio: o,
                    ..Default::default()
                },
            });
        }
    }
    if extra {
        for (n, o) in [(200, 0.5), (1000, 0.9)] {
            v.push(Regime {
                kind: "planar",
                cfg: SynthConfig {
                    n,
                    outlier_ratio: o,
                    scene: SceneKind::NearPlanar,
                    ..Default::default()
                },
            });
        }
        for (n, o) in [(200, 0.5), (1000, 0.9)] {
            v.push(Regime {
                kind: "narrow",
                cfg: SynthConfig {
                    n,
                    outlier_ratio: o,
                    focal_px: 2000.0,
                    depth_range: (10.0, 30.0),
                    ..Default::default()
                },
            });
        }
    }
    v
}

/// The seed of problem `i` of regime `r`.
pub fn problem_seed(seed: u64, r: usize, i: usize) -> u64 {
    let mut s = seed ^ ((r as u64) << 32) ^ (i as u64);
    splitmix64(&mut s)
}

/// A generated problem as a `pnp-problem/1` file.
pub fn to_problem_file(id: String, regime: &Regime, p: &SynthProblem) -> ProblemFile {
    let k = p.intrinsics;
    ProblemFile {
        format: "pnp-problem/1".into(),
        id,
        camera: CameraJson {
            model: "pinhole".into(),
            width: k.width,
            height: k.height,
            fx: k.fx,
            fy: k.fy,
            cx: k.cx,
            cy: k.cy,
            k1: 0.0,
            k2: 0.0,
            p1: 0.0,
            p2: 0.0,
            k3: 0.0,
        },
        inlier_threshold_px: p.threshold_px,
        points2d: p.points2d.iter().map(|q| [q.x, q.y]).collect(),
        points3d: p.points3d.iter().map(|q| [q.x, q.y, q.z]).collect(),
        world_up: Some([p.world_up.x, p.world_up.y, p.world_up.z]),
        gravity: Some([p.gravity.x, p.gravity.y, p.gravity.z]),
        gt: Some(GtJson {
            r: [0, 1, 2].map(|i| [p.gt.r[(i, 0)], p.gt.r[(i, 1)], p.gt.r[(i, 2)]]),
            t: [p.gt.t.x, p.gt.t.y, p.gt.t.z],
            inliers: p.inliers.clone(),
        }),
        meta: Some(serde_json::json!({
            "regime": regime.name(),
            "scene": regime.kind,
            "n": regime.cfg.n,
            "outlier_ratio": regime.cfg.outlier_ratio,
            "noise_px": p.noise_px,
            "gravity_noise_deg": p.gravity_noise_deg,
            "generator": "sextant eval pnp",
        })),
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct SolverStats {
    median_ms: f64,
    p90_ms: f64,
    median_cpu_ms: f64,
    success: usize,
    total: usize,
    median_iterations: f64,
    recall: f64,
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    v[k.min(v.len() - 1)]
}

fn run_solver(
    problems: &[ProblemFile],
    gravity: bool,
    reps: u32,
    ws: &mut AbsolutePoseWorkspace,
) -> anyhow::Result<SolverStats> {
    let mut times = Vec::with_capacity(problems.len());
    let mut cpus = Vec::with_capacity(problems.len());
    let mut iters = Vec::with_capacity(problems.len());
    let mut st = SolverStats::default();
    let mut recall_sum = 0.0;
    for p in problems {
        let prep = Prepared::new(p, gravity, RansacOptions::default(), CLI_MIN_INLIERS)?;
        let (outcome, t, c) = prep.solve_timed(reps, ws);
        let res = result_file(&outcome, ws.inliers(), t, c, reps, gravity);
        times.push(t * 1e3);
        cpus.push(c * 1e3);
        st.total += 1;
        if let Ok(e) = &outcome {
            iters.push(f64::from(e.ransac.iterations));
        }
        if let (Some(r), Some(tt), Some(gt)) = (&res.r, &res.t, &p.gt) {
            let (dr, dt) = pose_errors(r, tt, gt);
            st.success += usize::from(dr < 1.0 && dt < 0.01);
            if !gt.inliers.is_empty() {
                let found = gt
                    .inliers
                    .iter()
                    .filter(|i| res.inliers.binary_search(i).is_ok())
                    .count();
                recall_sum += found as f64 / gt.inliers.len() as f64;
            }
        }
    }
    st.median_ms = median(&mut times);
    st.p90_ms = percentile(&mut times, 0.9);
    st.median_cpu_ms = median(&mut cpus);
    st.median_iterations = median(&mut iters);
    st.recall = recall_sum / st.total.max(1) as f64;
    Ok(st)
}

fn run_pnp(args: PnpEvalArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.write_only && args.write.is_none() {
        bail!("--write-only needs --write DIR");
    }
    if let Some(o) = args.outliers.iter().find(|o| !(0.0..1.0).contains(*o)) {
        bail!("outlier ratio {o} outside [0, 1)");
    }
    if let Some(dir) = &args.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let regs = regimes(&args.ns, &args.outliers, !args.no_extra);
    let bar = indicatif::ProgressBar::new((regs.len() * args.count) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut ws = AbsolutePoseWorkspace::new();
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for (ri, reg) in regs.iter().enumerate() {
        bar.set_message(reg.name());
        let mut problems = Vec::with_capacity(args.count);
        for i in 0..args.count {
            let sp = generate(&reg.cfg, problem_seed(args.seed, ri, i));
            let id = format!("{}_i{:03}", reg.name(), i);
            let pf = to_problem_file(id.clone(), reg, &sp);
            if let Some(dir) = &args.write {
                let path = dir.join(format!("{id}.json"));
                std::fs::write(&path, serde_json::to_string(&pf)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            problems.push(pf);
            bar.inc(1);
        }
        if args.write_only {
            continue;
        }
        let p3p = if args.solver != SolverChoice::Up2p {
            Some(run_solver(&problems, false, args.reps, &mut ws)?)
        } else {
            None
        };
        let up2p = if args.solver != SolverChoice::P3p {
            Some(run_solver(&problems, true, args.reps, &mut ws)?)
        } else {
            None
        };
        summary.push(serde_json::json!({
            "regime": reg.name(), "n": reg.cfg.n, "outlier_ratio": reg.cfg.outlier_ratio,
            "inliers": reg.inliers(), "p3p": p3p, "up2p": up2p,
        }));
        rows.push((reg.clone(), p3p, up2p));
    }
    bar.finish_and_clear();
    if args.write_only {
        eprintln!(
            "wrote {} problems to {}",
            regs.len() * args.count,
            args.write
                .as_ref()
                .map_or(String::new(), |d| d.display().to_string())
        );
        return Ok(());
    }
    print_table(&rows, args.count);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cell(s: &Option<SolverStats>) -> String {
    match s {
        Some(s) => format!(
            "{:>9.3} {:>9.3} {:>7.1}% {:>6.0}",
            s.median_ms,
            s.p90_ms,
            100.0 * s.success as f64 / s.total.max(1) as f64,
            s.median_iterations
        ),
        None => format!("{:>9} {:>9} {:>8} {:>6}", "-", "-", "-", "-"),
    }
}

fn print_table(rows: &[(Regime, Option<SolverStats>, Option<SolverStats>)], count: usize) {
    println!(
        "sextant eval pnp: {count} problems per regime; time = median / p90 ms of estimation (single thread); success = rot < 1° and rel. transl. < 1%"
    );
    println!(
        "{:<18} {:>6} | {:>9} {:>9} {:>8} {:>6} | {:>9} {:>9} {:>8} {:>6} | {:>6}",
        "regime",
        "inl",
        "P3P med",
        "p90",
        "success",
        "iters",
        "UP2P med",
        "p90",
        "success",
        "iters",
        "target"
    );
    for (reg, a, b) in rows {
        let inl = reg.inliers();
        let need = if inl < 15 {
            None
        } else if reg.cfg.outlier_ratio <= 0.75 {
            Some(1.0)
        } else {
            Some(0.995)
        };
        let ok = |s: &Option<SolverStats>| match (s, need) {
            (Some(s), Some(q)) => s.success as f64 >= q * s.total as f64 - 1e-9,
            _ => true,
        };
        let verdict = match need {
            None => "n/a",
            Some(_) if ok(a) && ok(b) => "pass",
            Some(_) => "FAIL",
        };
        println!(
            "{:<18} {:>6} | {} | {} | {:>6}",
            reg.name(),
            inl,
            cell(a),
            cell(b),
            verdict
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regimes_cover_the_grid_and_extras() {
        let r = regimes(
            &[50, 200, 1000, 5000],
            &[0.0, 0.25, 0.5, 0.75, 0.9, 0.95],
            true,
        );
        assert_eq!(r.len(), 24 + 4);
        assert_eq!(r[0].name(), "gen_n0050_o00");
        assert_eq!(r[23].inliers(), 250);
        assert_ne!(problem_seed(1, 0, 1), problem_seed(1, 1, 0));
    }

    #[test]
    fn problem_files_round_trip_and_solve() {
        let reg = &regimes(&[100], &[0.5], false)[0];
        let sp = generate(&reg.cfg, 3);
        let pf = to_problem_file("x".into(), reg, &sp);
        let text = serde_json::to_string(&pf).expect("serialize");
        let back: ProblemFile = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.points2d.len(), 100);
        let mut ws = AbsolutePoseWorkspace::new();
        let st = run_solver(&[back], false, 1, &mut ws).expect("solve");
        assert_eq!(st.success, 1);
        assert!(st.recall > 0.9);
    }
}
