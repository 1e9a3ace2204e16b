//! `sextant map build|info|cut`: maps from mapping sessions, what a map file holds, and the
//! part of a map around a point (what a device downloads).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sextant_runtime::descriptor::DescriptorModel;
use sextant_runtime::features::FeatureConfig;
use sextant_runtime::map::{
    GeoAnchor, Map, MapBuildConfig, MapBuildStats, MapBuilder, MapContents, MapFrame, cut_map,
    encode_map,
};
use sextant_sim::session::{Session, read_session};

use crate::features::BackendChoice;

/// Arguments of `sextant map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: MapCommand,
}

/// The map subcommands.
#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// Build a map from one or more mapping sessions (frames with poses; depth used when present).
    Build(BuildArgs),
    /// Print what a map file holds (after validating it).
    Info(InfoArgs),
    /// Write the part of a map within a radius of a ground point (tiles and keyframes).
    Cut(CutArgs),
}

/// Arguments of `sextant map build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Session folders (each holding session.json).
    #[arg(required = true)]
    pub sessions: Vec<PathBuf>,
    /// Output map file.
    #[arg(long)]
    pub out: PathBuf,
    /// Keypoints per mapping frame.
    #[arg(long, default_value_t = 1000)]
    pub keypoints: usize,
    /// Side of a map tile, metres.
    #[arg(long, default_value_t = 16.0)]
    pub tile_size: f32,
    /// Covisible frames each frame is matched with.
    #[arg(long, default_value_t = 6)]
    pub neighbours: usize,
    /// Ignore the sessions' depth images (triangulate only).
    #[arg(long)]
    pub no_depth: bool,
    /// Seed of the vocabulary training.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where features and descriptors run (the map is identical on every backend).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// Arguments of `sextant map info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The map file.
    pub map: PathBuf,
}

/// Arguments of `sextant map cut`.
#[derive(Debug, Args)]
pub struct CutArgs {
    /// The map file.
    pub map: PathBuf,
    /// Ground point `x,y` (metres, map frame).
    #[arg(long, value_parser = parse_xy)]
    pub center: (f64, f64),
    /// Radius, metres.
    #[arg(long)]
    pub radius: f64,
    /// Output map file.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_xy(s: &str) -> Result<(f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok((*x, *y)),
        _ => Err(format!("expected x,y, got {s:?}")),
    }
}

/// Runs `sextant map`.
pub fn run(args: MapArgs) -> Result<()> {
    match args.what {
        MapCommand::Build(a) => run_build(a),
        MapCommand::Info(a) => run_info(a),
        MapCommand::Cut(a) => run_cut(a),
    }
}

/// Settings of a map build from the CLI's knobs.
pub fn build_config(
    keypoints: usize,
    tile_size: f32,
    neighbours: usize,
    seed: u64,
    backend: BackendChoice,
) -> MapBuildConfig {
    let mut c = MapBuildConfig {
        features: FeatureConfig {
            max_keypoints: keypoints,
            ..FeatureConfig::localization()
        },
        tile_size_m: tile_size,
        neighbours,
        backend: backend.into(),
        ..MapBuildConfig::default()
    };
    c.vocabulary.seed = seed;
    c
}

/// Builds a map from sessions (every frame must carry a pose). Progress on stderr.
pub fn build_from_sessions(
    sessions: &[Session],
    config: MapBuildConfig,
    use_depth: bool,
    quiet: bool,
) -> Result<(MapContents, MapBuildStats)> {
    let model = DescriptorModel::embedded_default().context("loading the descriptor model")?;
    let mut builder = MapBuilder::new(config, model)?;
    let total: usize = sessions.iter().map(|s| s.frames.len()).sum();
    let bar = crate::scene::progress_bar(total as u64, "features", quiet);
    for s in sessions {
        for (i, f) in s.frames.iter().enumerate() {
            let Some(pose) = f.pose else {
                bail!(
                    "{}: frame {} ({}) has no pose; mapping frames need poses",
                    s.dir.display(),
                    i,
                    f.image_rel
                );
            };
            let gray = f
                .load_gray()
                .with_context(|| format!("reading {}", f.image.display()))?;
            let depth = if use_depth {
                f.load_depth()
                    .with_context(|| format!("reading the depth of frame {i}"))?
            } else {
                None
            };
            let camera = s.camera_for(i);
            builder
                .add_frame(&MapFrame {
                    gray: &gray,
                    camera,
                    pose: &pose,
                    depth: depth.as_ref().map(|d| d.metres.as_slice()),
                })
                .with_context(|| format!("{}: frame {i}", s.dir.display()))?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let (mut map, stats) = builder.build()?;
    map.geo_anchor = sessions
        .iter()
        .find_map(|s| s.geo_anchor)
        .map(|g| GeoAnchor {
            lat: g.lat,
            lon: g.lon,
            alt: g.alt,
        });
    Ok((map, stats))
}

/// Writes a map atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn run_build(a: BuildArgs) -> Result<()> {
    let t = Instant::now();
    let sessions: Vec<Session> = a
        .sessions
        .iter()
        .map(|p| read_session(p).with_context(|| format!("reading session {}", p.display())))
        .collect::<Result<_>>()?;
    let config = build_config(a.keypoints, a.tile_size, a.neighbours, a.seed, a.backend);
    let (map, stats) = build_from_sessions(&sessions, config, !a.no_depth, false)?;
    let bytes = encode_map(&map)?;
    write_atomic(&a.out, &bytes)?;
    print_build(&stats, &map, bytes.len());
    println!(
        "wrote {} in {:.1} s",
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints what a build did.
pub fn print_build(stats: &MapBuildStats, map: &MapContents, bytes: usize) {
    let n = map.landmarks.len();
    println!(
        "{} frames, {} keypoints, {} covisible pairs, {} verified matches",
        stats.frames, stats.keypoints, stats.pairs, stats.matches
    );
    println!(
        "{} tracks → {} landmarks ({} triangulated, {} from depth; {} rejected, {} inconsistent)",
        stats.tracks,
        n,
        stats.triangulated,
        stats.from_depth,
        stats.rejected,
        stats.inconsistent_tracks
    );
    println!(
        "{} keyframes, {} words, {} tiles; {} bytes ({:.1} bytes per landmark)",
        map.keyframes.len(),
        map.vocabulary.len(),
        map.tiles().len(),
        bytes,
        bytes as f64 / n.max(1) as f64
    );
}

fn run_info(a: InfoArgs) -> Result<()> {
    let map = Map::open(&a.map).with_context(|| format!("reading map {}", a.map.display()))?;
    println!("{}: valid Sextant map", a.map.display());
    println!(
        "  {} landmarks ({}-d int8 descriptors), {} keyframes, {} cameras, {} words",
        map.len(),
        map.descriptor_dim(),
        map.keyframes().len(),
        map.cameras().len(),
        map.vocabulary().len()
    );
    println!(
        "  {} tiles of {} m, visibility range {:.1} m, {} bytes ({:.1} per landmark)",
        map.tiles().len(),
        map.tile_size_m(),
        map.max_range_m(),
        map.bytes().len(),
        map.bytes().len() as f64 / map.len().max(1) as f64
    );
    let id: String = map.model_id().iter().map(|b| format!("{b:02x}")).collect();
    println!("  descriptor model sha256 prefix {id}");
    match map.geo_anchor() {
        Some(g) => println!("  geo-anchor {:.6}, {:.6}, {:.1} m", g.lat, g.lon, g.alt),
        None => println!("  no geo-anchor"),
    }
    if let Some((lo, hi)) = bounds(map.positions()) {
        println!(
            "  landmarks span x {:.1}..{:.1}, y {:.1}..{:.1}, z {:.1}..{:.1} m",
            lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]
        );
    }
    Ok(())
}

fn bounds(p: &[[f32; 3]]) -> Option<([f32; 3], [f32; 3])> {
    let first = *p.first()?;
    Some(p.iter().fold((first, first), |(mut lo, mut hi), q| {
        for k in 0..3 {
            lo[k] = lo[k].min(q[k]);
            hi[k] = hi[k].max(q[k]);
        }
        (lo, hi)
    }))
}

fn run_cut(a: CutArgs) -> Result<()> {
    let map = Map::open(&a.map).with_context(|| format!("reading map {}", a.map.display()))?;
    let part = cut_map(&map, a.center.0, a.center.1, a.radius)?;
    let bytes = encode_map(&part)?;
    write_atomic(&a.out, &bytes)?;
    println!(
        "{} of {} landmarks, {} of {} keyframes within {} m of ({}, {}): {} bytes → {}",
        part.landmarks.len(),
        map.len(),
        part.keyframes.len(),
        map.keyframes().len(),
        a.radius,
        a.center.0,
        a.center.1,
        bytes.len(),
        a.out.display()
    );
    Ok(())
}
