//! CPU-executor choices: direct kernels selected from the plan's steps.
//!
//! The step list stays the graph's description (what the GPU executor reads through
//! `Plan::steps`); this module only decides, per step, whether the CPU runs it with a direct
//! kernel of [`crate::descriptor::kernels::direct`] (small-`Cin` stride-1 convolution, depthwise
//! convolution, row-wise matrix product — each with fused correction, requantisation and
//! saturation, one sample at a time, no im2col) or with the generic im2col + GEMM path, which
//! remains the fallback for every shape outside these. Both produce the same bytes.

use super::{ConvStep, DType, DirectKernels, MatMulStep, Step, Workspace, two};
use crate::descriptor::kernels::Isa;
use crate::descriptor::kernels::direct::{
    DirectConv, DirectDepthwise, Requantizer, RowMatMul, Scratch, acc_bound, grow,
};

/// The direct kernel chosen for one step.
#[derive(Clone)]
pub(super) enum FastKernel {
    /// Small-`Cin`, stride-1 convolution with kernels ≤ 4 wide.
    Conv(Box<DirectConv>),
    /// Depthwise convolution with kernels ≤ 16 wide.
    Depthwise(Box<DirectDepthwise>),
    /// Row-wise QLinearMatMul.
    MatMul(Box<RowMatMul>),
}

impl FastKernel {
    fn name(&self) -> &'static str {
        match self {
            FastKernel::Conv(_) => "direct_conv",
            FastKernel::Depthwise(_) => "direct_depthwise",
            FastKernel::MatMul(_) => "row_matmul",
        }
    }
}

/// Per step: the direct kernel the CPU uses, if any.
#[derive(Clone, Default)]
pub(super) struct FastPaths {
    pub(super) mode: DirectKernels,
    pub(super) kernels: Vec<Option<FastKernel>>,
}

impl std::fmt::Debug for FastPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only (as chosen with `Always`): keeps the plan's `Debug` text small.
        f.debug_struct("FastPaths")
            .field("mode", &self.mode)
            .field(
                "kernels",
                &FastPaths {
                    mode: DirectKernels::Always,
                    kernels: self.kernels.clone(),
                }
                .names(Isa::Scalar),
            )
            .finish()
    }
}

impl FastPaths {
    /// Chooses a direct kernel for every step that fits one.
    pub(super) fn select(steps: &[Step]) -> FastPaths {
        FastPaths {
            mode: DirectKernels::Auto,
            kernels: steps
                .iter()
                .map(|s| match s {
                    Step::Conv(c) => conv(c),
                    Step::MatMul(m) => Some(matmul(m)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Whether the direct kernels run on `isa` in the current mode.
    fn on(&self, isa: Isa) -> bool {
        match self.mode {
            DirectKernels::Auto => simd(isa) != Simd::Portable,
            DirectKernels::Always => true,
            DirectKernels::Never => false,
        }
    }

    /// Kernel name per step on `isa` (`"generic"` where the generic path runs).
    pub(super) fn names(&self, isa: Isa) -> Vec<&'static str> {
        self.kernels
            .iter()
            .map(|k| match k {
                Some(k) if self.on(isa) => k.name(),
                _ => "generic",
            })
            .collect()
    }

    /// The direct kernel for step `i` on `isa`, if one runs.
    pub(super) fn get(&self, i: usize, isa: Isa) -> Option<&FastKernel> {
        if self.on(isa) {
            self.kernels.get(i).and_then(Option::as_ref)
        } else {
            None
        }
    }
}

fn conv_corr(c: &ConvStep) -> Vec<i32> {
    c.bias
        .iter()
        .zip(&c.wsum)
        .map(|(&b, &s)| b.wrapping_sub(c.x_zp.wrapping_mul(s)))
        .collect()
}

fn conv_rq(c: &ConvStep, k: usize) -> Requantizer {
    let bound = c
        .weights
        .chunks_exact(k)
        .zip(&c.bias)
        .map(|(w, &b)| acc_bound(w, c.x_zp, b))
        .max()
        .unwrap_or(i64::MAX);
    Requantizer::new(c.requant, c.y_zp, c.dst_dtype == DType::I8, bound)
}

fn conv(c: &ConvStep) -> Option<FastKernel> {
    if c.dil != [1, 1] || c.group == 0 || !(0..=255).contains(&c.x_zp) {
        return None;
    }
    let k = c.cin / c.group * c.kh * c.kw;
    let pw = c.pads[1] + c.w + c.pads[3];
    let ph = c.pads[0] + c.h + c.pads[2];
    let xor = if c.src_i8 { 128 } else { 0 };
    if c.group == 1 && c.stride == [1, 1] && c.kw <= 4 && c.cin * c.kh <= 64 {
        let taps = c.cin * c.kh;
        let mut w4 = vec![[0i8; 4]; c.cout * taps];
        for o in 0..c.cout {
            for t in 0..taps {
                let src = &c.weights[o * k + t * c.kw..o * k + (t + 1) * c.kw];
                w4[o * taps + t][..c.kw].copy_from_slice(src);
            }
        }
        let nblk4 = c.ow.div_ceil(32) * 4;
        let mut d = DirectConv {
            cin: c.cin,
            h: c.h,
            w: c.w,
            cout: c.cout,
            kh: c.kh,
            kw: c.kw,
            pad_tl: [c.pads[0], c.pads[1]],
            oh: c.oh,
            ow: c.ow,
            ph,
            rs: pw.max(8 * nblk4 + 8),
            pad: c.x_zp as u8,
            xor,
            w4,
            corr: conv_corr(c),
            rq: conv_rq(c, k),
            wq: Vec::new(),
            wp: Vec::new(),
        };
        d.pack_simd_weights();
        return Some(FastKernel::Conv(Box::new(d)));
    }
    if c.group == c.cin && c.group == c.cout && c.kw <= 16 {
        let mut w16 = vec![0i8; c.cout * c.kh * 16];
        for ch in 0..c.cout {
            for ky in 0..c.kh {
                for kx in 0..c.kw {
                    w16[(ch * c.kh + ky) * 16 + kx] = c.weights[ch * k + ky * c.kw + kx];
                }
            }
        }
        let w16i = w16.iter().map(|&v| i16::from(v)).collect();
        let mut d = Box::new(DirectDepthwise {
            c: c.cout,
            h: c.h,
            w: c.w,
            kh: c.kh,
            kw: c.kw,
            stride: c.stride,
            pad_tl: [c.pads[0], c.pads[1]],
            oh: c.oh,
            ow: c.ow,
            ph,
            rs: pw.max(c.ow * c.stride[1] + 32),
            pad: c.x_zp as u8,
            xor,
            w16,
            w16i,
            pairs: Vec::new(),
            singles: Vec::new(),
            corr: conv_corr(c),
            rq: conv_rq(c, k),
        });
        d.plan_pairs();
        return Some(FastKernel::Depthwise(d));
    }
    None
}

fn matmul(m: &MatMulStep) -> FastKernel {
    let corr = m
        .wsum
        .iter()
        .map(|&s| 0i32.wrapping_sub(m.a_zp.wrapping_mul(s)))
        .collect();
    let bound = m
        .weights_t
        .chunks_exact(m.k)
        .map(|w| acc_bound(w, m.a_zp, 0))
        .max()
        .unwrap_or(i64::MAX);
    let rq = Requantizer::new(m.requant, m.y_zp, m.dst_dtype == DType::I8, bound);
    FastKernel::MatMul(Box::new(RowMatMul::new(
        m.k,
        m.ncol,
        if m.src_i8 { 128 } else { 0 },
        m.weights_t.clone(),
        corr,
        rq,
    )))
}

/// i8 data viewed as bytes.
fn bytes(v: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid for
    // both; the length is unchanged.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) }
}

/// i8 data viewed as mutable bytes.
fn bytes_mut(v: &mut [i8]) -> &mut [u8] {
    // SAFETY: as in `bytes`; the exclusive borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len()) }
}

/// The variant that runs the direct kernels: a SIMD one only when the CPU has it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
}

fn simd(isa: Isa) -> Simd {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni if isa.available() => Simd::AvxVnni,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.available() => Simd::Avx2,
        _ => Simd::Portable,
    }
}

/// Runs a direct kernel on `nb` samples from slot `src` into slot `dst`.
pub(super) fn run(
    k: &FastKernel,
    isa: Isa,
    ws: &mut Workspace,
    (src, src_dt): (usize, DType),
    (dst, dst_dt): (usize, DType),
    (in_len, out_len): (usize, usize),
    nb: usize,
) {
    let Workspace {
        u8s, i8s, direct, ..
    } = ws;
    let (s, d): (&[u8], &mut [u8]) = match (src_dt, dst_dt) {
        (DType::I8, DType::I8) => {
            let (s, d) = two(i8s, src, dst);
            (bytes(s), bytes_mut(d))
        }
        (DType::I8, _) => (bytes(&i8s[src]), &mut u8s[dst][..]),
        (_, DType::I8) => (&u8s[src][..], bytes_mut(&mut i8s[dst])),
        _ => two(u8s, src, dst),
    };
    let simd = simd(isa);
    for i in 0..nb {
        let x = &s[i * in_len..(i + 1) * in_len];
        let y = &mut d[i * out_len..(i + 1) * out_len];
        sample(k, simd, x, y, direct);
    }
}

fn sample(k: &FastKernel, simd: Simd, x: &[u8], y: &mut [u8], s: &mut Scratch) {
    match (k, simd) {
        #[cfg(target_arch = "x86_64")]
        (FastKernel::Conv(c), Simd::AvxVnni) => {
            // SAFETY: `simd` is AvxVnni only when the CPU supports AVX2 and AVX-VNNI; slot
            // lengths match the step's shapes and `rs` was chosen by `conv` above.
            unsafe { crate::descriptor::kernels::x86::conv_vnni(c, x, y, s) }
        }
        #[cfg(target_arch = "x86_64")]
        (FastKernel::Conv(c), Simd::Avx2) => {
            // SAFETY: as above, AVX2 present.
            unsafe { crate::descriptor::kernels::x86::conv_avx2(c, x, y, s) }
        }
        #[cfg(target_arch = "x86_64")]
        (FastKernel::Depthwise(c), Simd::AvxVnni) => {
            // SAFETY: AVX2 + AVX-VNNI present; lengths and `rs` as chosen by `conv` above.
            unsafe { crate::descriptor::kernels::x86::depthwise_vnni(c, x, y, s) }
        }
        #[cfg(target_arch = "x86_64")]
        (FastKernel::Depthwise(c), Simd::Avx2) => {
            // SAFETY: AVX2 present; lengths and `rs` as chosen by `conv` above.
            unsafe { crate::descriptor::kernels::x86::depthwise_avx2(c, x, y, s) }
        }
        #[cfg(target_arch = "x86_64")]
        (FastKernel::MatMul(m), Simd::AvxVnni) => {
            // SAFETY: AVX2 + AVX-VNNI present; built by `RowMatMul::new`; lengths k and ncol.
            unsafe { crate::descriptor::kernels::x86::matmul_vnni(m, x, y, s) }
        }
        #[cfg(target_arch = "x86_64")]
        (FastKernel::MatMul(m), Simd::Avx2) => {
            // SAFETY: AVX2 present; built by `RowMatMul::new`; lengths k and ncol.
            unsafe { crate::descriptor::kernels::x86::matmul_avx2(m, x, y, s) }
        }
        (FastKernel::Conv(c), _) => {
            // The portable kernels rewrite the whole padded buffer: forget its cached border.
            s.pad_key = None;
            grow(&mut s.pad, c.padded_len());
            grow(&mut s.acc, c.ow);
            c.run(x, y, &mut s.pad, &mut s.acc);
        }
        (FastKernel::Depthwise(c), _) => {
            s.pad_key = None;
            grow(&mut s.pad, c.plane_len());
            grow(&mut s.acc, c.oh * c.ow);
            c.run(x, y, &mut s.pad, &mut s.acc);
        }
        (FastKernel::MatMul(m), _) => m.run(x, y),
    }
}
