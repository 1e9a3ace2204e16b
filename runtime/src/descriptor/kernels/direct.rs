//! Direct (im2col-free) kernels for the shapes descriptor models use, one sample at a time:
//! a small-`Cin` stride-1 convolution ([`DirectConv`]), a depthwise convolution with any stride
//! ([`DirectDepthwise`]) and a row-by-row matrix product ([`RowMatMul`]), each with fused
//! bias/zero-point correction, requantisation and saturation.
//!
//! This file holds their parameters and the portable implementations, which are the oracle of
//! the SIMD variants (`x86.rs`). All of them compute exactly the integers of
//! `docs/int8-arithmetic.md`: the correction `bias − x_zp·Σw` is folded into the accumulator's
//! start value (i32 arithmetic is modular and the true sum is bounded, so the order of additions
//! does not change the result), padding holds `x_zp`, and the requantisation is
//! [`Requant::apply`] or a variant proven equal to it for the layer's accumulator range
//! ([`RequantPath`]).

use super::{Requant, sat_i8, sat_u8};

/// How a layer's requantisation is computed in SIMD lanes; chosen once per layer from a bound
/// on its accumulators so that every path gives the integers of [`Requant::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequantPath {
    /// `m0 = mul · 2^t`: `(p + 2^(s−1) − 1 + bit_s(p)) >> s` with `p = acc · mul` in i32, exact
    /// because `|acc · mul| + 2^s < 2^31` for every accumulator the layer can produce.
    I32 {
        /// Odd part of `m0` (or `m0` with fewer trailing zeros removed so that `shift ≥ 1`).
        mul: i32,
        /// Remaining shift, in `[1, 31]`.
        shift: u32,
    },
    /// `round_half_even(acc · m0 · 2^−shift)` in f64, exact because `|acc| · m0 < 2^53`.
    F64,
    /// Per-element [`Requant::apply`] (64-bit integers).
    Exact,
}

/// Requantisation of one layer: multiplier, output zero point and type, and the lane path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requantizer {
    /// The fixed-point multiplier.
    pub requant: Requant,
    /// Output zero point.
    pub y_zp: i32,
    /// Output saturates to i8 (else u8).
    pub out_i8: bool,
    /// The lane arithmetic proven exact for this layer.
    pub path: RequantPath,
    /// `m0 · 2^−shift` as an f64 (exact).
    pub scale: f64,
}

impl Requantizer {
    /// Picks the cheapest exact path for accumulators (after the bias/zero-point correction)
    /// bounded by `|acc| ≤ bound`. Also requires `|requant(acc)| + |y_zp| < 2^31`, so adding
    /// the zero point never saturates in i32.
    pub fn new(requant: Requant, y_zp: i32, out_i8: bool, bound: i64) -> Requantizer {
        let scale = requant.real();
        let bound = bound.max(0);
        let max_out = (bound as f64) * scale + 2.0 + f64::from(y_zp.unsigned_abs());
        let lim = (1i64 << 31) as f64;
        let path = if max_out >= lim {
            RequantPath::Exact
        } else {
            let tz = (requant.m0 as u32)
                .trailing_zeros()
                .min(requant.shift.saturating_sub(1));
            let mul = requant.m0 >> tz;
            let shift = requant.shift - tz;
            let p = i128::from(bound) * i128::from(mul);
            if shift <= 31 && p + (1i128 << shift) < 1i128 << 31 {
                RequantPath::I32 { mul, shift }
            } else if i128::from(bound) * i128::from(requant.m0) < 1i128 << 53 {
                RequantPath::F64
            } else {
                RequantPath::Exact
            }
        };
        Requantizer {
            requant,
            y_zp,
            out_i8,
            path,
            scale,
        }
    }

    /// The output byte for a corrected accumulator (bit pattern of the i8 for i8 outputs):
    /// `sat(requant(acc) + y_zp)` exactly as the generic path.
    #[inline]
    pub fn byte(&self, acc: i32) -> u8 {
        let v = self.requant.apply(acc).saturating_add(self.y_zp);
        if self.out_i8 {
            sat_i8(v) as u8
        } else {
            sat_u8(v)
        }
    }
}

/// Two i8 values as the i16 halves of an i32 (`lo` in the low half), sign-extended.
pub fn pair_i16(lo: i8, hi: i8) -> i32 {
    (i32::from(hi as i16 as u16) << 16) | i32::from(lo as i16 as u16)
}

/// Scratch memory of the direct kernels (grown on first use, then reused).
#[derive(Clone, Default)]
pub struct Scratch {
    /// Padded input planes.
    pub pad: Vec<u8>,
    /// Accumulators.
    pub acc: Vec<i32>,
    /// Prepared SIMD operands (32-byte units).
    pub q: Vec<u8>,
    /// One input row in the u8 domain, padded.
    pub row: Vec<u8>,
    /// One input row widened to i16, padded.
    pub row16: Vec<i16>,
    /// Geometry whose padding `pad` currently holds (see [`Scratch::padded`]).
    pub pad_key: Option<[usize; 8]>,
}

impl Scratch {
    /// `planes` padded planes of `ph` rows of `rs` bytes whose border (everything outside the
    /// `h × w` image at `top`, `left`) holds `pad`. The border is only written when the
    /// geometry differs from the previous call's, since image copies never touch it.
    #[allow(clippy::too_many_arguments)]
    pub fn padded(
        &mut self,
        planes: usize,
        ph: usize,
        rs: usize,
        [top, left, h, w]: [usize; 4],
        pad: u8,
    ) -> &mut [u8] {
        let key = [planes, ph, rs, top, left, h, w, usize::from(pad)];
        let len = planes * ph * rs;
        if self.pad_key != Some(key) || self.pad.len() < len {
            grow(&mut self.pad, len);
            self.pad[..len].fill(pad);
            self.pad_key = Some(key);
        }
        &mut self.pad[..len]
    }
}

/// Copies an `h × w` image into the interior of a padded plane (row stride `rs`, image at
/// `top`, `left`), `xor` (0 or 128) moving i8 data into u8; the border is left as it is.
#[allow(clippy::too_many_arguments)]
pub fn copy_image(
    src: &[u8],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    rs: usize,
    xor: u8,
    dst: &mut [u8],
) {
    for (y, row) in src.chunks_exact(w).take(h).enumerate() {
        let d = &mut dst[(top + y) * rs + left..(top + y) * rs + left + w];
        // A plain loop (vectorised inline) rather than a memcpy call per short row.
        for (o, &v) in d.iter_mut().zip(row) {
            *o = v ^ xor;
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("pad", &self.pad.len())
            .field("acc", &self.acc.len())
            .field("q", &self.q.len())
            .finish()
    }
}

/// Grows `v` to at least `n` elements (never shrinks: no allocation once warmed up).
pub fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// A bound on `|Σ w·(x − x_zp) + bias|` over all u8-domain inputs `x` (padding is `x_zp`):
/// `Σ |w| · max(x_zp, 255 − x_zp) + |bias|`.
pub fn acc_bound(weights: &[i8], x_zp: i32, bias: i32) -> i64 {
    let span = i64::from(x_zp.max(255 - x_zp).max(0));
    weights.iter().map(|&w| i64::from(w).abs()).sum::<i64>() * span + i64::from(bias).abs()
}

/// Copies one `h × w` input plane into a padded plane of `ph` rows of `rs` bytes, the image at
/// row `top`, column `left`, everything else `pad`; `xor` (0 or 128) moves i8 data into u8.
#[allow(clippy::too_many_arguments)]
pub fn pad_plane(
    src: &[u8],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    rs: usize,
    pad: u8,
    xor: u8,
    dst: &mut [u8],
) {
    let (body, rest) = dst.split_at_mut((top + h).min(dst.len() / rs.max(1)) * rs);
    rest.fill(pad);
    for (y, row) in body.chunks_exact_mut(rs).enumerate() {
        if y < top {
            row.fill(pad);
            continue;
        }
        let (l, r) = row.split_at_mut(left);
        l.fill(pad);
        let (img, r) = r.split_at_mut(w);
        r.fill(pad);
        // A plain loop (vectorised inline) rather than a memcpy call per short row.
        for (o, &v) in img.iter_mut().zip(&src[(y - top) * w..(y - top + 1) * w]) {
            *o = v ^ xor;
        }
    }
}

/// A stride-1, dilation-1, single-group convolution with kernels at most 4 wide: each output
/// pixel is a sum of `cin · kh` four-tap dot products over a padded input row.
#[derive(Debug, Clone)]
pub struct DirectConv {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width (`≤ 4`).
    pub kw: usize,
    /// Top and left padding.
    pub pad_tl: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Padded rows per input channel.
    pub ph: usize,
    /// Padded row stride in bytes (room for 16-byte loads at every 8-pixel block of 4 blocks).
    pub rs: usize,
    /// Padding byte (input zero point in the u8 domain).
    pub pad: u8,
    /// 128 for i8 inputs (moved into u8), else 0.
    pub xor: u8,
    /// `[cout][cin·kh]` four taps each (taps past `kw` are 0).
    pub w4: Vec<[i8; 4]>,
    /// Per output channel `bias − x_zp · Σw` (wrapping).
    pub corr: Vec<i32>,
    /// Requantisation.
    pub rq: Requantizer,
    /// `w4` as little-endian i32 words (the i8 operand of a u8·i8 four-way dot product).
    pub wq: Vec<i32>,
    /// `w4` as two i16 pairs, `(w0, w2)` and `(w1, w3)` (operands of `vpmaddwd`).
    pub wp: Vec<[i32; 2]>,
}

impl DirectConv {
    /// Fills [`DirectConv::wq`] and [`DirectConv::wp`] from [`DirectConv::w4`].
    pub fn pack_simd_weights(&mut self) {
        self.wq = self
            .w4
            .iter()
            .map(|w| i32::from_le_bytes(w.map(|v| v as u8)))
            .collect();
        self.wp = self
            .w4
            .iter()
            .map(|w| [pair_i16(w[0], w[2]), pair_i16(w[1], w[3])])
            .collect();
    }

    /// Bytes of padded input per sample.
    pub fn padded_len(&self) -> usize {
        self.cin * self.ph * self.rs
    }

    /// Portable implementation for one sample: `src` `[cin][h][w]` (u8 domain after `xor`),
    /// `dst` `[cout][oh][ow]` output bytes, `pad` scratch of [`DirectConv::padded_len`] bytes,
    /// `acc` scratch of `ow` values.
    pub fn run(&self, src: &[u8], dst: &mut [u8], pad: &mut [u8], acc: &mut [i32]) {
        let plane = self.ph * self.rs;
        for ci in 0..self.cin {
            pad_plane(
                &src[ci * self.h * self.w..(ci + 1) * self.h * self.w],
                self.h,
                self.w,
                self.pad_tl[0],
                self.pad_tl[1],
                self.rs,
                self.pad,
                self.xor,
                &mut pad[ci * plane..(ci + 1) * plane],
            );
        }
        let taps = self.cin * self.kh;
        let acc = &mut acc[..self.ow];
        for o in 0..self.cout {
            for oy in 0..self.oh {
                acc.fill(self.corr[o]);
                for ci in 0..self.cin {
                    for ky in 0..self.kh {
                        let w4 = self.w4[o * taps + ci * self.kh + ky];
                        let row = &pad[ci * plane + (oy + ky) * self.rs..];
                        for (kx, &wv) in w4.iter().enumerate().take(self.kw) {
                            let wv = i32::from(wv);
                            for (a, &x) in acc.iter_mut().zip(&row[kx..kx + self.ow]) {
                                *a = a.wrapping_add(wv * i32::from(x));
                            }
                        }
                    }
                }
                let out = &mut dst[(o * self.oh + oy) * self.ow..(o * self.oh + oy + 1) * self.ow];
                for (d, &a) in out.iter_mut().zip(acc.iter()) {
                    *d = self.rq.byte(a);
                }
            }
        }
    }
}

/// A depthwise (one input channel per output channel), dilation-1 convolution with kernels at
/// most 16 wide and any stride: each output is a sum of `kh` sixteen-tap dot products.
#[derive(Debug, Clone)]
pub struct DirectDepthwise {
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width (`≤ 16`).
    pub kw: usize,
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Top and left padding.
    pub pad_tl: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Padded rows per channel.
    pub ph: usize,
    /// Padded row stride (room for a 32-byte load at every output column: `≥ ow·sx + 32`).
    pub rs: usize,
    /// Padding byte (input zero point in the u8 domain).
    pub pad: u8,
    /// 128 for i8 inputs, else 0.
    pub xor: u8,
    /// `[c][kh][16]` taps (past `kw`: 0).
    pub w16: Vec<i8>,
    /// `w16` widened to i16 (operands of `vpmaddwd`).
    pub w16i: Vec<i16>,
    /// When `sx` divides 16: output pairs `(oy, ox)`, `(oy, ox + 16/sx)` whose windows are the
    /// two halves of one 32-byte load, as `[window offset in the plane, output index,
    /// output index of the second]`; see [`DirectDepthwise::plan_pairs`].
    pub pairs: Vec<[usize; 3]>,
    /// Outputs not covered by `pairs`: `[window offset, output index]`.
    pub singles: Vec<[usize; 2]>,
    /// Per channel `bias − x_zp · Σw` (wrapping).
    pub corr: Vec<i32>,
    /// Requantisation.
    pub rq: Requantizer,
}

impl DirectDepthwise {
    /// Fills [`DirectDepthwise::pairs`] and [`DirectDepthwise::singles`] (pairs only when the
    /// stride divides 16).
    pub fn plan_pairs(&mut self) {
        let [sy, sx] = self.stride;
        let off = |oy: usize, ox: usize| oy * sy * self.rs + ox * sx;
        self.pairs.clear();
        self.singles.clear();
        let d = if sx < 16 && 16 % sx == 0 { 16 / sx } else { 0 };
        for oy in 0..self.oh {
            let mut ox = 0;
            while ox < self.ow {
                // Block of 2d columns: (ox + j, ox + d + j) for j < d.
                if d > 0 && ox + 2 * d <= self.ow {
                    for j in 0..d {
                        let i = oy * self.ow + ox + j;
                        self.pairs.push([off(oy, ox + j), i, i + d]);
                    }
                    ox += 2 * d;
                } else {
                    self.singles.push([off(oy, ox), oy * self.ow + ox]);
                    ox += 1;
                }
            }
        }
    }

    /// Bytes of one padded channel plane.
    pub fn plane_len(&self) -> usize {
        self.ph * self.rs
    }

    /// Portable implementation for one sample: `src` `[c][h][w]`, `dst` `[c][oh][ow]` bytes,
    /// `pad` scratch of [`DirectDepthwise::plane_len`] bytes, `acc` scratch of `oh·ow` values.
    pub fn run(&self, src: &[u8], dst: &mut [u8], pad: &mut [u8], acc: &mut [i32]) {
        let (hw, ohw) = (self.h * self.w, self.oh * self.ow);
        let pad = &mut pad[..self.plane_len()];
        let acc = &mut acc[..ohw];
        for c in 0..self.c {
            pad_plane(
                &src[c * hw..(c + 1) * hw],
                self.h,
                self.w,
                self.pad_tl[0],
                self.pad_tl[1],
                self.rs,
                self.pad,
                self.xor,
                pad,
            );
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let mut a = self.corr[c];
                    for ky in 0..self.kh {
                        let row =
                            &pad[(oy * self.stride[0] + ky) * self.rs + ox * self.stride[1]..];
                        let w = &self.w16[(c * self.kh + ky) * 16..(c * self.kh + ky) * 16 + 16];
                        for (&wv, &x) in w[..self.kw].iter().zip(row) {
                            a = a.wrapping_add(i32::from(wv) * i32::from(x));
                        }
                    }
                    acc[oy * self.ow + ox] = a;
                }
            }
            for (d, &a) in dst[c * ohw..(c + 1) * ohw].iter_mut().zip(acc.iter()) {
                *d = self.rq.byte(a);
            }
        }
    }
}

/// `y = A · B` for one row `A` (`k` values, u8 domain) at a time, with `B` int8 `[k][ncol]`.
#[derive(Debug, Clone)]
pub struct RowMatMul {
    /// Reduction length.
    pub k: usize,
    /// Output columns.
    pub ncol: usize,
    /// 128 for i8 inputs, else 0.
    pub xor: u8,
    /// `B` transposed, `[ncol][k]`.
    pub wt: Vec<i8>,
    /// Per column `−a_zp · Σ_k B[k][j]` (wrapping).
    pub corr: Vec<i32>,
    /// Requantisation.
    pub rq: Requantizer,
    /// `k` rounded up to a multiple of 4.
    pub k4: usize,
    /// `ncol` rounded up to a multiple of 64 (eight 8-column blocks).
    pub ncolp: usize,
    /// `corr` padded to `ncolp` with zeros.
    pub corr_pad: Vec<i32>,
    /// `[k4/4][ncolp/8][8]`: four consecutive `B` rows of one column as a little-endian i32
    /// (operand of a u8·i8 four-way dot product); zero past `k` and `ncol`.
    pub wq: Vec<i32>,
    /// `[k4/2][ncolp/8][8]`: two consecutive `B` rows of one column as an i16 pair.
    pub wp: Vec<i32>,
}

impl RowMatMul {
    /// Builds the kernel and its packed SIMD weight layouts from `wt` (`B` transposed).
    pub fn new(
        k: usize,
        ncol: usize,
        xor: u8,
        wt: Vec<i8>,
        corr: Vec<i32>,
        rq: Requantizer,
    ) -> RowMatMul {
        let k4 = k.div_ceil(4) * 4;
        let ncolp = ncol.div_ceil(64) * 64;
        let b = |kk: usize, j: usize| -> i8 {
            if kk < k && j < ncol {
                wt[j * k + kk]
            } else {
                0
            }
        };
        let ncb = ncolp / 8;
        let mut wq = vec![0i32; k4 / 4 * ncolp];
        for kg in 0..k4 / 4 {
            for j in 0..ncolp {
                let w = [
                    b(4 * kg, j),
                    b(4 * kg + 1, j),
                    b(4 * kg + 2, j),
                    b(4 * kg + 3, j),
                ];
                wq[(kg * ncb + j / 8) * 8 + j % 8] = i32::from_le_bytes(w.map(|v| v as u8));
            }
        }
        let mut wp = vec![0i32; k4 / 2 * ncolp];
        for kp in 0..k4 / 2 {
            for j in 0..ncolp {
                wp[(kp * ncb + j / 8) * 8 + j % 8] = pair_i16(b(2 * kp, j), b(2 * kp + 1, j));
            }
        }
        let mut corr_pad = corr.clone();
        corr_pad.resize(ncolp, 0);
        RowMatMul {
            k,
            ncol,
            xor,
            wt,
            corr,
            rq,
            k4,
            ncolp,
            corr_pad,
            wq,
            wp,
        }
    }

    /// Portable implementation for one row: `a` `k` bytes, `dst` `ncol` output bytes.
    pub fn run(&self, a: &[u8], dst: &mut [u8]) {
        for (j, d) in dst[..self.ncol].iter_mut().enumerate() {
            let mut acc = self.corr[j];
            for (&w, &x) in self.wt[j * self.k..(j + 1) * self.k]
                .iter()
                .zip(&a[..self.k])
            {
                acc = acc.wrapping_add(i32::from(w) * i32::from(x ^ self.xor));
            }
            *d = self.rq.byte(acc);
        }
    }
}
