// descriptor.wgsl — the int8 kernels of a compiled descriptor plan (`runtime/src/descriptor/plan.rs`),
// bit-identical with the CPU kernels. The arithmetic is `docs/int8-arithmetic.md`:
//
//   QLinearConv / QLinearMatMul   im2col (u8 domain, padding = z_x) → int8 GEMM with exact i32
//                                  accumulation → acc' = acc + corr[o] (wrapping i32) →
//                                  requant(acc') = round_half_even(acc' · m0 / 2^shift) →
//                                  sat(requant + z_y) to u8 [0, 255] or i8 [-128, 127]
//   Relu (i8)                      max(q, 0)
//   MaxPool                        integer max over the window, padding ignored
//   L2 normalisation (fused)       q_i = largest q in [0, G] with q = 0 or (2q-1)²·S ≤ 4·G²·d_i²,
//                                  y_i = sat_i8(sign(d_i)·q_i + z_o); y_i = sat_i8(z_o) if S = 0 or d_i = 0
//
// The GEMM multiplies signed bytes: a u8 activation x is stored as the i8 byte x - 128, so
// Σ w·x = Σ w·(x - 128) + 128·Σ w; the host folds 128·Σ w into corr[o] together with the bias and
// -z_x·Σ w (all wrapping i32, like the CPU's `wrapping_add`). Taps past K are 0 in both operands.
// `dot4` is `dot4I8Packed` where the adapter has it; the host swaps in `dot4_portable` (the same
// integer, from sign-extended bytes) otherwise.
//
// No 64-bit integers in WGSL: requantisation multiplies magnitudes as 32×32→64 bits from 16-bit
// limbs and rounds the (hi, lo) pair; round-half-to-even is odd-symmetric, so the sign is applied
// after rounding. Results of magnitude ≥ 2^24 are clamped there: after + z_y and saturation to
// 8 bits they give the same byte as the CPU's exact value.
//
// Layout: every tensor ("slot") holds one element per u32 word, the value as i32 (u8 as 0..=255,
// i8 as -128..=127), samples one after another. The packed input (`unpack_u8`) and output
// (`pack_bytes`) hold 4 bytes per word, little-endian. im2col words hold 4 taps (signed bytes).
// Every output word is written by exactly one invocation.
//
// Loop budget (llvmpipe stops an invocation after 65,535 loop iterations): every entry point does
// O(1) work per invocation except gemm (≤ split_words iterations, the host keeps it ≤ 256),
// max_pool (kh·kw ≤ 4096, checked by the host) and l2_norm (d ≤ 4096 plus a 16-step binary search).

struct Params {
    // Invocations that do work; the grid is rounded up to whole workgroups.
    total: u32,
    nb: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    group: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_t: u32,
    pad_l: u32,
    dil_y: u32,
    dil_x: u32,
    oh: u32,
    ow: u32,
    // Taps per output (cin/group · kh · kw) and their words (ceil(k / 4)).
    k: u32,
    kwords: u32,
    // GEMM columns: nb · oh · ow.
    ncols: u32,
    // The reduction is split into `splits` ranges of `split_words` words.
    splits: u32,
    split_words: u32,
    src_i8: u32,
    dst_i8: u32,
    // Padding value in the u8 domain (z_x).
    pad_val: u32,
    m0: u32,
    shift: u32,
    y_zp: i32,
    x_zp: i32,
    gain: u32,
    // Row length of l2_norm; element count per sample of relu/unpack/pack.
    d: u32,
    len: u32,
}

const WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
// Constant data: packed weights (gemm) or corr[o] as i32 (requant).
@group(0) @binding(3) var<storage, read> aux: array<u32>;

fn invocation(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    // The host dispatches a 2D grid when one dimension would exceed the per-dimension limit.
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

// Exact dot product of 4 signed bytes, without the packed-dot-product language feature.
fn dot4_portable(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
        + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
        + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
        + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}

fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b); // DOT4-BUILTIN (the host may replace this line)
}

// a · b as (lo, hi) 32-bit halves of the exact 64-bit product.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// x ≤ y for 64-bit (lo, hi) pairs.
fn le_wide(x: vec2<u32>, y: vec2<u32>) -> bool {
    return x.y < y.y || (x.y == y.y && x.x <= y.x);
}

const BIG: u32 = 16777216u; // 2^24: any larger magnitude saturates like it

// round_half_even(a · m0 / 2^shift), m0 in [2^30, 2^31), shift in [1, 62]; magnitudes ≥ 2^24 clamped.
fn requant(a: i32, m0: u32, shift: u32) -> i32 {
    let neg = a < 0;
    let bits = bitcast<u32>(a);
    let mag = select(bits, 0u - bits, neg);
    let p = mul_wide(mag, m0);
    var f: u32;
    var half: bool;
    var lower: bool;
    var big = false;
    if (shift < 32u) {
        big = (p.y >> shift) != 0u;
        f = (p.x >> shift) | (p.y << (32u - shift));
        half = ((p.x >> (shift - 1u)) & 1u) == 1u;
        lower = (p.x & ((1u << (shift - 1u)) - 1u)) != 0u;
    } else if (shift == 32u) {
        f = p.y;
        half = (p.x >> 31u) == 1u;
        lower = (p.x & 0x7fffffffu) != 0u;
    } else {
        let s = shift - 32u;
        f = p.y >> s;
        half = ((p.y >> (s - 1u)) & 1u) == 1u;
        lower = p.x != 0u || (p.y & ((1u << (s - 1u)) - 1u)) != 0u;
    }
    if (big || f >= BIG) {
        f = BIG;
    } else if (half && (lower || (f & 1u) == 1u)) {
        f = f + 1u;
    }
    let q = i32(f);
    return select(q, -q, neg);
}

fn saturate(v: i32, is_i8: bool) -> i32 {
    if (is_i8) {
        return clamp(v, -128, 127);
    }
    return clamp(v, 0, 255);
}

// Packed input bytes → one element per word (u8).
@compute @workgroup_size(64)
fn unpack_u8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    dst[i] = (src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

// One element per word → packed bytes (low 8 bits of each element), `params.len` elements in all.
@compute @workgroup_size(64)
fn pack_bytes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = i * 4u + j;
        if (e < params.len) {
            word |= (src[e] & 0xffu) << (j * 8u);
        }
    }
    dst[i] = word;
}

// col[(g · ncols + c) · kwords + kw]: taps 4·kw .. 4·kw + 3 of column c (sample s, pixel (oy, ox))
// in group g, each as the signed byte u - 128 of its u8-domain value u (z_x in the padding).
@compute @workgroup_size(64)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let kw_i = i % params.kwords;
    let gc = i / params.kwords;
    let c = gc % params.ncols;
    let g = gc / params.ncols;
    let pix = params.oh * params.ow;
    let s = c / pix;
    let p = c - s * pix;
    let oy = p / params.ow;
    let ox = p - oy * params.ow;
    let cin_g = params.cin / params.group;
    let kk = params.kh * params.kw;
    let plane = params.h * params.w;
    let sample_base = s * params.cin * plane;
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let t = kw_i * 4u + j;
        if (t >= params.k) {
            break;
        }
        let ci = t / kk;
        let r = t - ci * kk;
        let ky = r / params.kw;
        let kx = r - ky * params.kw;
        let iy = i32(oy * params.stride_y + ky * params.dil_y) - i32(params.pad_t);
        let ix = i32(ox * params.stride_x + kx * params.dil_x) - i32(params.pad_l);
        var u = params.pad_val;
        if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
            let v = src[sample_base + (g * cin_g + ci) * plane + u32(iy) * params.w + u32(ix)];
            u = select(v, v + 128u, params.src_i8 != 0u) & 0xffu;
        }
        word |= ((u - 128u) & 0xffu) << (j * 8u);
    }
    dst[i] = word;
}

// acc[(split · cout + o) · ncols + c] = Σ over the split's words of dot4(weights[o], col[g][c]).
@compute @workgroup_size(64)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let c = i % params.ncols;
    let so = i / params.ncols;
    let o = so % params.cout;
    let split = so / params.cout;
    let g = o / (params.cout / params.group);
    let first = split * params.split_words;
    let last = min(first + params.split_words, params.kwords);
    let wrow = o * params.kwords;
    let crow = (g * params.ncols + c) * params.kwords;
    var acc = 0i;
    for (var k = first; k < last; k++) {
        acc += dot4(aux[wrow + k], src[crow + k]);
    }
    dst[i] = bitcast<u32>(acc);
}

// dst[s][o][p] = sat(requant(Σ_split acc + corr[o]) + z_y), c = s · (oh · ow) + p.
@compute @workgroup_size(64)
fn requantize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let c = i % params.ncols;
    let o = i / params.ncols;
    var acc = bitcast<i32>(aux[o]);
    for (var split = 0u; split < params.splits; split++) {
        acc += bitcast<i32>(src[(split * params.cout + o) * params.ncols + c]);
    }
    let pix = params.oh * params.ow;
    let s = c / pix;
    let p = c - s * pix;
    let y = saturate(requant(acc, params.m0, params.shift) + params.y_zp, params.dst_i8 != 0u);
    dst[(s * params.cout + o) * pix + p] = bitcast<u32>(y);
}

// Relu on i8 data: max(q, 0).
@compute @workgroup_size(64)
fn relu_i8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    dst[i] = bitcast<u32>(max(bitcast<i32>(src[i]), 0));
}

// MaxPool over (kh, kw) windows, padded positions ignored. Channels in `cin`.
@compute @workgroup_size(64)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let ox = i % params.ow;
    let r0 = i / params.ow;
    let oy = r0 % params.oh;
    let r1 = r0 / params.oh;
    let ch = r1 % params.cin;
    let s = r1 / params.cin;
    let plane = (s * params.cin + ch) * params.h * params.w;
    var best = -2147483647 - 1;
    for (var ky = 0u; ky < params.kh; ky++) {
        let iy = i32(oy * params.stride_y + ky) - i32(params.pad_t);
        if (iy < 0 || iy >= i32(params.h)) {
            continue;
        }
        for (var kx = 0u; kx < params.kw; kx++) {
            let ix = i32(ox * params.stride_x + kx) - i32(params.pad_l);
            if (ix < 0 || ix >= i32(params.w)) {
                continue;
            }
            best = max(best, bitcast<i32>(src[plane + u32(iy) * params.w + u32(ix)]));
        }
    }
    dst[i] = bitcast<u32>(best);
}

// Fused DequantizeLinear → LpNormalization(2) → QuantizeLinear(int8, 1/gain), exact.
// Host limits: d ≤ 4096 (S < 2^28), gain ≤ 32767 ((2q-1)² < 2^32, 4·gain² < 2^32).
@compute @workgroup_size(64)
fn l2_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let s = i / params.d;
    let row = s * params.d;
    var ss = 0u;
    for (var j = 0u; j < params.d; j++) {
        let e = bitcast<i32>(src[row + j]) - params.x_zp;
        ss += u32(e * e);
    }
    let di = bitcast<i32>(src[i]) - params.x_zp;
    if (ss == 0u || di == 0) {
        dst[i] = bitcast<u32>(clamp(params.y_zp, -128, 127));
        return;
    }
    let d2 = u32(di * di);
    let rhs = mul_wide(4u * params.gain * params.gain, d2);
    // Largest q in [0, gain] with q = 0 or (2q - 1)² · S ≤ rhs (monotone in q).
    var lo = 0u;
    var hi = params.gain;
    for (var step = 0u; step < 32u && lo < hi; step++) {
        let mid = (lo + hi + 1u) / 2u;
        let t = 2u * mid - 1u;
        if (le_wide(mul_wide(t * t, ss), rhs)) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    let q = select(i32(lo), -i32(lo), di < 0);
    dst[i] = bitcast<u32>(clamp(q + params.y_zp, -128, 127));
}
