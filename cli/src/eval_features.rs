//! `sextant eval features`: the homography benchmark on the real photos in `assets/photos`.
//!
//! Every photo `A` (gray) is paired with `B = photometric(warp(A, H))` for each slice
//! (viewpoint, scale, rotation, blur, noise, illumination) at three strengths
//! (`sextant_runtime::features::homography`). Per slice the table reports, averaged over pairs:
//! keypoints per image; repeatability at 3 px (SuperPoint's definition); the number of matches
//! of the runtime's default matching (ratio test + mutual check); and the mean matching
//! accuracy at 1/3/5 px (HPatches MMA as in D2-Net: per pair, the fraction of matches whose
//! `H·a` lies within the threshold of `b`; a pair with no match counts as 0). Timings are the
//! median per image of detection + patches and of descriptors.
//!
//! `--write DIR` stores each pair (`*_a.png`, `*_b.png`) and `pairs.json` with the homographies,
//! so `scripts/compare_features.py` runs OpenCV ORB and SIFT on exactly the same pairs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::json;
use sextant_runtime::GrayImage;
use sextant_runtime::backend::BackendKind;
use sextant_runtime::features::homography::{Slice, make_pair, matching_accuracy, repeatability};

use crate::features::{BackendChoice, DetectorOptions, ExtractOptions, Pipeline, load_gray};

/// Arguments of `sextant eval features`.
#[derive(Debug, clap::Args)]
pub struct FeaturesEvalArgs {
    /// Folder of PNG photos.
    #[arg(long, default_value = "assets/photos")]
    pub photos: PathBuf,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most keypoints per image.
    #[arg(long, default_value_t = 1000)]
    pub max_keypoints: usize,
    #[command(flatten)]
    pub detector: DetectorOptions,
    /// Write the pairs and homographies to this folder.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Also write the table as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to compute descriptors and matches (results are identical on every backend; only
    /// the timings change).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

#[derive(Default)]
struct Acc {
    pairs: usize,
    keypoints: f64,
    rep_sum: f64,
    matches: f64,
    mma: [f64; 3],
}

/// Runs `sextant eval features`.
pub fn run(args: FeaturesEvalArgs) -> anyhow::Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(&args.photos)
        .with_context(|| format!("listing {}", args.photos.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "no PNG photos in {}",
        args.photos.display()
    );
    let options = ExtractOptions {
        max_keypoints: args.max_keypoints,
        detector: args.detector.clone(),
        backend: args.backend,
    };
    let mut pipeline = Pipeline::new_optional(&options)?;
    let describe = pipeline.model_info().is_some();
    if let Some(dir) = &args.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut pair_files = Vec::new();
    let mut acc: Vec<Acc> = Slice::ALL.iter().map(|_| Acc::default()).collect();
    let mut t_extract = Vec::new();
    // Images / pairs whose descriptors / matches ran on [CPU, GPU].
    let mut desc_backends = [0usize; 2];
    let mut match_backends = [0usize; 2];
    let bar = indicatif::ProgressBar::new((names.len() * Slice::ALL.len() * 3) as u64);
    for (pi, path) in names.iter().enumerate() {
        let a = load_gray(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let da = pipeline.run(&a)?;
        desc_backends[usize::from(da.backends.descriptors == BackendKind::Gpu)] += 1;
        let sign = if pi % 2 == 0 { 1.0 } else { -1.0 };
        if let Some(dir) = &args.write {
            write_png(&dir.join(format!("{stem}_a.png")), &a)?;
        }
        for (si, slice) in Slice::ALL.iter().enumerate() {
            for level in 0..slice.levels() {
                let seed = args.seed ^ ((pi as u64) << 32) ^ ((si as u64) << 16) ^ level as u64;
                let pair = make_pair(&a, *slice, level, sign, seed);
                let t0 = Instant::now();
                let db = pipeline.run(&pair.image)?;
                t_extract.push(t0.elapsed().as_secs_f64() * 1e3);
                let xy = |d: &crate::features::Described| -> Vec<[f32; 2]> {
                    d.keypoints.iter().map(|k| [k.x, k.y]).collect()
                };
                let size = (a.width(), a.height());
                let rep = repeatability(&xy(&da), &xy(&db), &pair.h, size, size, 3.0);
                let matches = if describe {
                    let (m, kind) = pipeline.match_pair(&da, &db)?;
                    match_backends[usize::from(kind == BackendKind::Gpu)] += 1;
                    m
                } else {
                    Vec::new()
                };
                desc_backends[usize::from(db.backends.descriptors == BackendKind::Gpu)] += 1;
                let pts: Vec<([f32; 2], [f32; 2])> = matches
                    .iter()
                    .map(|m| {
                        let (p, q) = (
                            &da.keypoints[m.query as usize],
                            &db.keypoints[m.train as usize],
                        );
                        ([p.x, p.y], [q.x, q.y])
                    })
                    .collect();
                let mma = matching_accuracy(&pts, &pair.h, [1.0, 3.0, 5.0]).unwrap_or([0.0; 3]);
                let s = &mut acc[si];
                s.pairs += 1;
                s.keypoints += (da.keypoints.len() + db.keypoints.len()) as f64 / 2.0;
                s.rep_sum += rep.ratio();
                s.matches += matches.len() as f64;
                for (acc_k, m) in s.mma.iter_mut().zip(mma) {
                    *acc_k += m;
                }
                if let Some(dir) = &args.write {
                    let b_name = format!("{stem}_{}_{level}_b.png", slice.name());
                    write_png(&dir.join(&b_name), &pair.image)?;
                    pair_files.push(json!({
                        "a": format!("{stem}_a.png"),
                        "b": b_name,
                        "slice": slice.name(),
                        "level": level,
                        "change": slice.describe(level),
                        "h": pair.h.transpose().as_slice().to_vec(),
                    }));
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let model = match (pipeline.model_info(), pipeline.model_error()) {
        (Some(info), _) => format!("descriptor model {} {}", info.name, info.version),
        (None, e) => format!(
            "NO descriptor model ({}): matches and MMA not measured",
            e.unwrap_or("unknown")
        ),
    };
    println!(
        "homography benchmark: {} photos x {} slices x 3 levels, max {} keypoints, {model}",
        names.len(),
        Slice::ALL.len(),
        args.max_keypoints,
    );
    println!(
        "{:<13} {:>5} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7}",
        "slice", "pairs", "kp", "rep@3", "matches", "MMA@1", "MMA@3", "MMA@5"
    );
    let mut rows = Vec::new();
    let mut all = Acc::default();
    for (slice, s) in Slice::ALL.iter().zip(&acc) {
        print_row(slice.name(), s);
        rows.push(row_json(slice.name(), s));
        all.pairs += s.pairs;
        all.keypoints += s.keypoints;
        all.rep_sum += s.rep_sum;
        all.matches += s.matches;
        for (a, m) in all.mma.iter_mut().zip(s.mma) {
            *a += m;
        }
    }
    print_row("all", &all);
    rows.push(row_json("all", &all));
    t_extract.sort_by(f64::total_cmp);
    let median = t_extract.get(t_extract.len() / 2).copied().unwrap_or(0.0);
    println!(
        "median extract{} time per image: {median:.2} ms (this build, one thread)",
        if describe { "+describe" } else { "" }
    );
    println!(
        "backend: {} requested, {} selected ({}); descriptors of {} images on the GPU, {} on \
         the CPU; matches of {} pairs on the GPU, {} on the CPU",
        args.backend
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        pipeline.selection().kind(),
        pipeline.selection().reason(),
        desc_backends[1],
        desc_backends[0],
        match_backends[1],
        match_backends[0]
    );
    if let Some(dir) = &args.write {
        let v =
            json!({"format": "sextant-homography-pairs/1", "seed": args.seed, "pairs": pair_files});
        std::fs::write(
            dir.join("pairs.json"),
            serde_json::to_string_pretty(&v)? + "\n",
        )?;
        println!("pairs written to {}", dir.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"rows": rows}))? + "\n",
        )?;
    }
    Ok(())
}

fn print_row(name: &str, s: &Acc) {
    let n = s.pairs.max(1) as f64;
    println!(
        "{:<13} {:>5} {:>7.0} {:>7.3} {:>8.1} {:>7.3} {:>7.3} {:>7.3}",
        name,
        s.pairs,
        s.keypoints / n,
        s.rep_sum / n,
        s.matches / n,
        s.mma[0] / n,
        s.mma[1] / n,
        s.mma[2] / n
    );
}

fn row_json(name: &str, s: &Acc) -> serde_json::Value {
    let n = s.pairs.max(1) as f64;
    json!({"slice": name, "pairs": s.pairs, "keypoints": s.keypoints / n, "repeatability_3px": s.rep_sum / n,
           "matches": s.matches / n, "mma_1px": s.mma[0] / n, "mma_3px": s.mma[1] / n, "mma_5px": s.mma[2] / n})
}

fn write_png(path: &std::path::Path, img: &GrayImage) -> anyhow::Result<()> {
    let bytes = sextant_sim::png_io::encode_gray(img).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
