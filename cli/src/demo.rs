//! `sextant demo`: the whole loop on embedded defaults, runnable from any folder with no input
//! files. Renders a sample site (mapping passes and query walks in several conditions), builds
//! its map, localises the queries by cold start and by tracking, prints a per-slice accuracy
//! and latency table, and writes a report (`report.html`: the table and a top-down plot of the
//! ground-truth and estimated trajectories) next to the sessions and the map.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::eval_localize::{EvalReport, LocalizeEvalArgs, run_benchmark, table};

/// Arguments of `sextant demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder (sessions, map, report).
    #[arg(long, default_value = "./sextant-demo")]
    pub out: PathBuf,
    /// Sample scene (room, facade, plaza) or a scene file.
    #[arg(long, default_value = "room")]
    pub scene: String,
    /// Frames of each of the two mapping passes.
    #[arg(long, default_value_t = 30)]
    pub map_frames: usize,
    /// Query frames per slice.
    #[arg(long, default_value_t = 16)]
    pub query_frames: usize,
    /// Slices (comma-separated; default: all of `eval localize`'s).
    #[arg(long, value_delimiter = ',')]
    pub slices: Vec<String>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where features and descriptors run (the answers are identical on every backend).
    #[arg(long, value_enum, default_value_t = crate::features::BackendChoice::Auto)]
    pub backend: crate::features::BackendChoice,
}

/// Runs the demo and returns its report.
pub fn run_demo(args: &DemoArgs) -> Result<EvalReport> {
    let eval = LocalizeEvalArgs {
        scene: args.scene.clone(),
        map_frames: args.map_frames,
        query_frames: args.query_frames,
        slices: args.slices.clone(),
        out: args.out.clone(),
        seed: args.seed,
        backend: args.backend,
    };
    run_benchmark(&eval, false)
}

/// Runs `sextant demo` and prints its report.
pub fn run(args: DemoArgs) -> Result<()> {
    let t = Instant::now();
    println!("Sextant demo: map a simulated site, then localise camera frames in it");
    println!(
        "  rendering the {:?} scene (embedded photos as textures): two mapping passes of {} frames,",
        args.scene, args.map_frames
    );
    println!(
        "  then {} query frames per slice on other paths and in other conditions …",
        args.query_frames
    );
    let report = run_demo(&args)?;
    println!();
    print!("{}", table(&report));
    let html = crate::report::html(&report, "Sextant demo");
    let path = args.out.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    println!();
    println!(
        "cold: each frame alone, with a GPS-like prior (10 m); track: frames in order, prior = last fix moved by simulated VIO"
    );
    println!("open {} for the trajectories", path.display());
    println!(
        "files: {0}/map.sxmap (the map), {0}/map-*/ and {0}/query-*/ (sessions: frames, depth, poses; results-*.json)",
        args.out.display()
    );
    println!("done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
