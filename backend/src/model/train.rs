//! Fitting the model in closed form: calibration of the pooling, a discriminative linear
//! projection (Mikolajczyk & Matas, "Improving descriptors for fast tree matching by optimal
//! linear projection", ICCV 2007), and int8 quantisation of it.
//!
//! With `x` the centred pooled features of a patch, `Cs` the covariance of `x_a − x_b` over
//! matching pairs and `Cn` over non-matching pairs, the projection whitens by `Cs` (regularised)
//! and keeps the `D` leading principal directions of the whitened `Cn`: directions along which
//! different points differ most relative to how much views of the same point differ.

use nalgebra::{DMatrix, SymmetricEigen};
use sextant_runtime::descriptor::plan::{Output, Plan, Workspace};
use sextant_runtime::descriptor::{PATCH_PIXELS, onnx};

use super::graph::{self, FEATURES, ModelParams, ORIENTATIONS, Stage};
use super::rng::Rng;
use super::{ModelError, Result};

fn run_stage(
    params: &ModelParams,
    stage: Stage,
    patches: &[u8],
    out_len: usize,
) -> Result<Vec<u8>> {
    let proto = graph::model_proto(params, stage, "calibration", "0");
    let plan = Plan::compile(&proto).map_err(|e| ModelError::Internal(e.to_string()))?;
    let n = patches.len() / PATCH_PIXELS;
    let mut out = vec![0u8; n * out_len];
    plan.run(&mut Workspace::default(), patches, n, Output::U8(&mut out))
        .map_err(|e| ModelError::Internal(e.to_string()))?;
    Ok(out)
}

/// Percentile (0–1) of absolute values, by sorting (deterministic).
fn abs_percentile(v: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut a: Vec<f64> = v.map(f64::abs).collect();
    if a.is_empty() {
        return 1.0;
    }
    a.sort_by(f64::total_cmp);
    a[((a.len() - 1) as f64 * q).round() as usize].max(1e-9)
}

/// Calibrates the pooling conv on training patches: per-channel bias (minus the mean
/// accumulator) and output scale (99.9th percentile of |centred accumulator| → 127).
pub fn calibrate_pool(params: &mut ModelParams, patches: &[u8]) -> Result<()> {
    let side = sextant_runtime::descriptor::PATCH_SIZE;
    let grads = run_stage(
        params,
        Stage::Gradients,
        patches,
        ORIENTATIONS * side * side,
    )?;
    let w = graph::pool_weights();
    let n = patches.len() / PATCH_PIXELS;
    let cells = graph::CELLS;
    let mut accs: Vec<Vec<f64>> = (0..ORIENTATIONS)
        .map(|_| Vec::with_capacity(n * cells * cells))
        .collect();
    for s in 0..n {
        for (c, acc_c) in accs.iter_mut().enumerate() {
            let plane = &grads
                [(s * ORIENTATIONS + c) * side * side..(s * ORIENTATIONS + c + 1) * side * side];
            for cy in 0..cells {
                for cx in 0..cells {
                    let mut acc = 0i64;
                    for ky in 0..graph::POOL_K {
                        let iy = (cy * graph::POOL_STRIDE + ky) as isize - graph::POOL_PAD as isize;
                        if iy < 0 || iy as usize >= side {
                            continue;
                        }
                        for kx in 0..graph::POOL_K {
                            let ix =
                                (cx * graph::POOL_STRIDE + kx) as isize - graph::POOL_PAD as isize;
                            if ix < 0 || ix as usize >= side {
                                continue;
                            }
                            acc += i64::from(w[ky * graph::POOL_K + kx])
                                * i64::from(plane[iy as usize * side + ix as usize]);
                        }
                    }
                    acc_c.push(acc as f64);
                }
            }
        }
    }
    let means: Vec<f64> = accs
        .iter()
        .map(|a| a.iter().sum::<f64>() / a.len().max(1) as f64)
        .collect();
    params.pool_bias = means.iter().map(|m| -(m.round() as i32)).collect();
    let spread = abs_percentile(
        accs.iter()
            .zip(&means)
            .flat_map(|(a, m)| a.iter().map(move |v| v - m.round())),
        0.999,
    );
    params.pool_scale =
        (spread * f64::from(graph::GRAD_SCALE) * f64::from(graph::POOL_W_SCALE) / 127.0) as f32;
    Ok(())
}

/// Pooled features (`u8 [n][128]`, zero point 128) computed by the runtime's kernels.
pub fn features(params: &ModelParams, patches: &[u8]) -> Result<Vec<u8>> {
    run_stage(params, Stage::Features, patches, FEATURES)
}

fn centred(f: &[u8]) -> impl Iterator<Item = f64> + '_ {
    f.iter().map(|&v| f64::from(v) - f64::from(graph::POOL_ZP))
}

/// The real-valued projection `[dim][FEATURES]` and the generalised eigenvalues it keeps.
pub fn fit_projection(
    fa: &[u8],
    fb: &[u8],
    dim: usize,
    reg: f64,
    seed: u64,
) -> Result<(DMatrix<f64>, Vec<f64>)> {
    let n = fa.len() / FEATURES;
    if n < 2 * FEATURES || dim == 0 || dim > FEATURES {
        return Err(ModelError::Data(format!(
            "{n} training pairs are too few to fit a {dim}-d projection"
        )));
    }
    let mut cs = DMatrix::<f64>::zeros(FEATURES, FEATURES);
    let mut cn = DMatrix::<f64>::zeros(FEATURES, FEATURES);
    let mut rng = Rng::new(seed ^ 0x6e65_6761_7469_7665);
    let mut d = vec![0.0; FEATURES];
    let add = |m: &mut DMatrix<f64>, d: &[f64]| {
        for i in 0..FEATURES {
            for j in 0..FEATURES {
                m[(i, j)] += d[i] * d[j];
            }
        }
    };
    for i in 0..n {
        for (k, (x, y)) in centred(&fa[i * FEATURES..(i + 1) * FEATURES])
            .zip(centred(&fb[i * FEATURES..(i + 1) * FEATURES]))
            .enumerate()
        {
            d[k] = x - y;
        }
        add(&mut cs, &d);
        // A non-matching partner: a different pair's view B.
        let j = (i + 1 + rng.below(n - 1)) % n;
        for (k, (x, y)) in centred(&fa[i * FEATURES..(i + 1) * FEATURES])
            .zip(centred(&fb[j * FEATURES..(j + 1) * FEATURES]))
            .enumerate()
        {
            d[k] = x - y;
        }
        add(&mut cn, &d);
    }
    cs /= n as f64;
    cn /= n as f64;
    // Whitening by the regularised Cs: W = Λ^-1/2 Uᵀ.
    let es = SymmetricEigen::new(cs);
    let mean_ev = es.eigenvalues.iter().sum::<f64>() / FEATURES as f64;
    let mut w = es.eigenvectors.transpose();
    for (r, &ev) in es.eigenvalues.iter().enumerate() {
        let s = 1.0 / (ev.max(0.0) + reg * mean_ev).sqrt();
        for c in 0..FEATURES {
            w[(r, c)] *= s;
        }
    }
    let cnw = &w * cn * w.transpose();
    let cnw = (&cnw + cnw.transpose()) * 0.5;
    let en = SymmetricEigen::new(cnw);
    let mut order: Vec<usize> = (0..FEATURES).collect();
    order.sort_by(|&a, &b| {
        en.eigenvalues[b]
            .total_cmp(&en.eigenvalues[a])
            .then(a.cmp(&b))
    });
    let mut p = DMatrix::<f64>::zeros(dim, FEATURES);
    let mut kept = Vec::with_capacity(dim);
    for (r, &idx) in order.iter().take(dim).enumerate() {
        let v = en.eigenvectors.column(idx);
        let row = v.transpose() * &w;
        // Fix the sign: largest-magnitude component positive.
        let mut best = 0;
        for c in 0..FEATURES {
            if row[c].abs() > row[best].abs() {
                best = c;
            }
        }
        let sign = if row[best] < 0.0 { -1.0 } else { 1.0 };
        for c in 0..FEATURES {
            p[(r, c)] = row[c] * sign;
        }
        kept.push(en.eigenvalues[idx]);
    }
    Ok((p, kept))
}

/// Quantises the projection into `params` (weights, weight scale) and calibrates its output
/// scale on training features (99.9th percentile of |output| → 127).
pub fn quantise_projection(params: &mut ModelParams, p: &DMatrix<f64>, fa: &[u8]) {
    let dim = p.nrows();
    let maxabs = p.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let ws = maxabs / 127.0;
    params.dim = dim;
    params.proj_scale = ws as f32;
    let ws = f64::from(params.proj_scale);
    params.proj = vec![0; FEATURES * dim];
    for k in 0..FEATURES {
        for j in 0..dim {
            params.proj[k * dim + j] = (p[(j, k)] / ws).round().clamp(-127.0, 127.0) as i8;
        }
    }
    let n = fa.len() / FEATURES;
    let mut outs = Vec::with_capacity(n * dim);
    for i in 0..n {
        let a: Vec<f64> = centred(&fa[i * FEATURES..(i + 1) * FEATURES]).collect();
        for j in 0..dim {
            let acc: f64 = (0..FEATURES)
                .map(|k| a[k] * f64::from(params.proj[k * dim + j]))
                .sum();
            outs.push(acc);
        }
    }
    let spread = abs_percentile(outs.into_iter(), 0.999);
    params.proj_out_scale = (spread * f64::from(params.pool_scale) * ws / 127.0) as f32;
    // (Output is u8 with zero point 128: the same ±127 range.)
}

/// Decodes an ONNX model from bytes with the runtime's schema (used to check written models).
pub fn decode(bytes: &[u8]) -> Result<onnx::ModelProto> {
    onnx::decode_model(bytes).map_err(|e| ModelError::Internal(e.to_string()))
}
