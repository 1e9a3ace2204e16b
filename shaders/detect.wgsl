// detect.wgsl — the keypoint front end on the GPU: image pyramid, Shi–Tomasi corner response, 3×3
// local maxima, orientation moments and oriented patch sampling. Every entry point computes exactly
// what the CPU code in `sextant_runtime::features` computes, in integers (the response's last step
// converts an integer below 2^24 to f32 and scales it by a power of two, which is exact).
//
// Contract (shared with the CPU path):
//
// pyramid (features/pyramid.rs), level l from level l-1, with taps computed on the host:
//   tmp[y][x]   = src[y][xi]·(256 − wx) + src[y][xn]·wx                        u32 (< 2^16)
//   dst[y][x]   = (tmp[yi][x]·(256 − wy) + tmp[yn][x]·wy + 32768) >> 16           u32 → u8
//
// corner response (features/detect.rs), for 3 <= x < w-3, 3 <= y < h-3 (0.0 elsewhere):
//   gx, gy      raw 3×3 Sobel, i32;  xx = gx², yy = gy², xy = gx·gy               i32
//   A, B, C     Σ k(i)·k(j)·{xx, xy, yy}, k = (1, 4, 6, 4, 1), i, j in -2..=2      i32 (< 2^28)
//   a, b, c     A >> 6, B >> 6, C >> 6                                           arithmetic shifts
//   D           (a − c)² + 4·b²                        u64, emulated with (lo, hi) u32 pairs (< 2^47)
//   s           isqrt(D): a guess from the f32 square root, then corrected by exact 64-bit
//               comparisons r² <= D < (r+1)² (the guess is off by a few units at most)
//   response    f32(max(0, (a + c) − s)) * (1 / 512)                            exact
//
// local maxima (features/nms.rs): inside `border`, above `threshold`, strictly above the earlier
//   neighbours in raster order (up-left, up, up-right, left) and not below the later ones; each is
//   appended (atomic counter, any order) with its level, position and the four responses around it.
//
// orientation moments (features/orientation.rs): m10 = Σ u·I, m01 = Σ v·I over the disc of radius
//   15 (row half-widths `umax` from the host), i32 (|m| < 2^22).
//
// patches (features/patch.rs): sample (i, j) at (x00 + i·ux + j·vx, y00 + i·uy + j·vy), 11
//   fractional bits, geometry from the host; bilinear
//   top = p00·(2048 − fx) + p10·fx,  bottom = p01·(2048 − fx) + p11·fx             u32
//   out = (top·(2048 − fy) + bottom·fy + 2^21) >> 22                                u32 → u8
//   with coordinates clamped to the level when the geometry is not `inside`.
//
// Layout: `pyr` holds every level's bytes, row-major with no padding, level l starting at byte
// `src_off`/`dst_off` (a multiple of 4), 4 bytes per u32 word little-endian. `resp` holds every
// level's response (f32), level l from element `resp_off`. The host dispatches one entry point per
// level and step, in order; every word of an output is written by exactly one invocation.
//
// Loop budget: llvmpipe (lavapipe) silently stops an invocation after 65,535 loop iterations in
// total. Per invocation: pyr_h none; pyr_v 4; tensor_v 5·3 (unrolled taps); response 5 + at most
// 2·ISQRT_STEPS = 69; maxima none; moments 16 rows · at most 31 columns = 496; patches 4. The grid,
// not the loops, grows with the image.

struct Params {
    // Invocations that do work (the grid is rounded up to whole workgroups).
    total: u32,
    level: u32,
    // The level this dispatch computes.
    w: u32,
    h: u32,
    // The level it reads (pyramid passes).
    src_w: u32,
    src_h: u32,
    // Byte offsets in `pyr` of the source and destination levels.
    src_off: u32,
    dst_off: u32,
    // Word offsets in `taps` of this level's x and y taps (3 words each: index, next, weight).
    xtaps: u32,
    ytaps: u32,
    // Element offset in `resp` of this level's response.
    resp_off: u32,
    // Local maxima: distance from the border, threshold (f32), record capacity.
    border: u32,
    threshold: f32,
    cap: u32,
    // Word offset in `taps` of the level table (4 words per level: w, h, byte offset, response offset).
    levels_off: u32,
    _pad: u32,
    // Half-widths of the orientation disc's rows 0..=15.
    umax: array<vec4<u32>, 4>,
}

// Candidate records: the count, then RECORD words per candidate.
struct Candidates {
    count: atomic<u32>,
    data: array<u32>,
}

const WORKGROUP_SIZE: u32 = 64u;
const RECORD: u32 = 8u;
const RADIUS: i32 = 15;
const ISQRT_STEPS: u32 = 32u;
const FRAC_BITS: u32 = 11u;
const ONE: i32 = 2048;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> pyr: array<u32>;
@group(0) @binding(2) var<storage, read_write> tmp: array<u32>;
@group(0) @binding(3) var<storage, read_write> tensor: array<i32>;
@group(0) @binding(4) var<storage, read_write> resp: array<f32>;
@group(0) @binding(5) var<storage, read_write> cands: Candidates;
@group(0) @binding(6) var<storage, read> taps: array<u32>;
@group(0) @binding(7) var<storage, read> items: array<u32>;
@group(0) @binding(8) var<storage, read_write> out: array<u32>;

fn invocation(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    // The host dispatches a 2D grid when one dimension would exceed the per-dimension limit.
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

// The byte at `offset` of the pyramid.
fn byte_at(offset: u32) -> u32 {
    return (pyr[offset >> 2u] >> ((offset & 3u) * 8u)) & 0xffu;
}

// ---------------------------------------------------------------------------------------------
// Pyramid.

@compute @workgroup_size(64)
fn pyr_h(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    // One tmp element: column x of the destination width, row y of the source.
    let y = i / params.w;
    let x = i - y * params.w;
    let t = params.xtaps + 3u * x;
    let row = params.src_off + y * params.src_w;
    let a = byte_at(row + taps[t]);
    let b = byte_at(row + taps[t + 1u]);
    let wt = taps[t + 2u];
    tmp[i] = a * (256u - wt) + b * wt;
}

@compute @workgroup_size(64)
fn pyr_v(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let word = invocation(gid, groups);
    if (word >= params.total) {
        return;
    }
    let pixels = params.w * params.h;
    var packed = 0u;
    for (var lane = 0u; lane < 4u; lane++) {
        let p = word * 4u + lane;
        if (p < pixels) {
            let y = p / params.w;
            let x = p - y * params.w;
            let t = params.ytaps + 3u * y;
            let wt = taps[t + 2u];
            let a = tmp[taps[t] * params.w + x];
            let b = tmp[taps[t + 1u] * params.w + x];
            packed |= ((a * (256u - wt) + b * wt + 32768u) >> 16u) << (lane * 8u);
        }
    }
    pyr[(params.dst_off >> 2u) + word] = packed;
}

// ---------------------------------------------------------------------------------------------
// Corner response.

fn pixel(x: u32, y: u32) -> i32 {
    return i32(byte_at(params.dst_off + y * params.w + x));
}

// Vertical 5-tap sums of the gradient products at (x, y), 1 <= x < w-1, 3 <= y < h-3, written as
// 3 i32 per pixel (xx, yy, xy) at 3·(y·w + x).
@compute @workgroup_size(64)
fn tensor_v(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let w = params.w;
    let h = params.h;
    let y = i / w;
    let x = i - y * w;
    if (x < 1u || x + 1u >= w || y < 3u || y + 3u >= h) {
        return;
    }
    var k = array<i32, 5>(1, 4, 6, 4, 1);
    var sxx = 0;
    var syy = 0;
    var sxy = 0;
    for (var d = 0u; d < 5u; d++) {
        let yy = y + d - 2u;
        let l0 = pixel(x - 1u, yy - 1u);
        let c0 = pixel(x, yy - 1u);
        let r0 = pixel(x + 1u, yy - 1u);
        let l1 = pixel(x - 1u, yy);
        let r1 = pixel(x + 1u, yy);
        let l2 = pixel(x - 1u, yy + 1u);
        let c2 = pixel(x, yy + 1u);
        let r2 = pixel(x + 1u, yy + 1u);
        let gx = (r0 - l0) + 2 * (r1 - l1) + (r2 - l2);
        let gy = (l2 - l0) + 2 * (c2 - c0) + (r2 - r0);
        sxx += k[d] * (gx * gx);
        syy += k[d] * (gy * gy);
        sxy += k[d] * (gx * gy);
    }
    let o = 3u * i;
    tensor[o] = sxx;
    tensor[o + 1u] = syy;
    tensor[o + 2u] = sxy;
}

// (lo, hi) of a·b for u32 a, b.
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

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    let carry = select(0u, 1u, lo < a.x);
    return vec2<u32>(lo, a.y + b.y + carry);
}

// a > b for (lo, hi) pairs.
fn gt64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x > b.x);
}

// floor(sqrt(d)) for d < 2^47, exactly.
fn isqrt64(d: vec2<u32>) -> u32 {
    let approx = f32(d.y) * 4294967296.0 + f32(d.x);
    var r = min(u32(sqrt(approx)), 0xffffffu);
    for (var i = 0u; i < ISQRT_STEPS; i++) {
        if (!gt64(mul_wide(r, r), d)) {
            break;
        }
        r -= 1u;
    }
    for (var i = 0u; i < ISQRT_STEPS; i++) {
        let n = r + 1u;
        if (gt64(mul_wide(n, n), d)) {
            break;
        }
        r = n;
    }
    return r;
}

fn eigen_response(a: i32, b: i32, c: i32) -> f32 {
    let p = u32(abs(a - c));
    let q = 2u * u32(abs(b));
    let d = add64(mul_wide(p, p), mul_wide(q, q));
    let s = i32(isqrt64(d));
    let l2 = max(0, (a + c) - s);
    return f32(l2) * (1.0 / 512.0);
}

@compute @workgroup_size(64)
fn response(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let w = params.w;
    let h = params.h;
    let y = i / w;
    let x = i - y * w;
    var value = 0.0;
    if (x >= 3u && x + 3u < w && y >= 3u && y + 3u < h) {
        var k = array<i32, 5>(1, 4, 6, 4, 1);
        var sa = 0;
        var sc = 0;
        var sb = 0;
        for (var d = 0u; d < 5u; d++) {
            let o = 3u * (i + d - 2u);
            sa += k[d] * tensor[o];
            sc += k[d] * tensor[o + 1u];
            sb += k[d] * tensor[o + 2u];
        }
        value = eigen_response(sa >> 6u, sb >> 6u, sc >> 6u);
    }
    resp[params.resp_off + i] = value;
}

// ---------------------------------------------------------------------------------------------
// Local maxima.

@compute @workgroup_size(64)
fn maxima(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let w = params.w;
    let h = params.h;
    let b = max(params.border, 1u);
    let y = i / w;
    let x = i - y * w;
    if (x < b || x + b >= w || y < b || y + b >= h) {
        return;
    }
    let o = params.resp_off + i;
    let v = resp[o];
    if (v <= params.threshold) {
        return;
    }
    let up = o - w;
    let down = o + w;
    // Earlier neighbours (raster order) must be strictly lower, later ones not higher.
    if (v > resp[up - 1u] && v > resp[up] && v > resp[up + 1u] && v > resp[o - 1u]
        && v >= resp[o + 1u] && v >= resp[down - 1u] && v >= resp[down] && v >= resp[down + 1u]) {
        let slot = atomicAdd(&cands.count, 1u);
        if (slot < params.cap) {
            let r = slot * RECORD;
            cands.data[r] = params.level;
            cands.data[r + 1u] = x;
            cands.data[r + 2u] = y;
            cands.data[r + 3u] = bitcast<u32>(v);
            cands.data[r + 4u] = bitcast<u32>(resp[o - 1u]);
            cands.data[r + 5u] = bitcast<u32>(resp[o + 1u]);
            cands.data[r + 6u] = bitcast<u32>(resp[up]);
            cands.data[r + 7u] = bitcast<u32>(resp[down]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Orientation moments: items are (level, x, y) per keypoint; out gets (m10, m01) as i32 bits.

fn umax(v: i32) -> i32 {
    return i32(params.umax[v / 4][v % 4]);
}

@compute @workgroup_size(64)
fn moments(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = invocation(gid, groups);
    if (k >= params.total) {
        return;
    }
    let level = items[3u * k];
    let x = i32(items[3u * k + 1u]);
    let y = i32(items[3u * k + 2u]);
    let info = params.levels_off + 4u * level;
    let w = i32(taps[info]);
    let base = i32(taps[info + 2u]);
    let centre = base + y * w + x;
    var m10 = 0;
    var m01 = 0;
    let r0 = umax(0);
    for (var u = -r0; u <= r0; u++) {
        m10 += u * i32(byte_at(u32(centre + u)));
    }
    for (var v = 1; v <= RADIUS; v++) {
        let r = umax(v);
        var sum = 0;
        for (var u = -r; u <= r; u++) {
            let below = i32(byte_at(u32(centre + v * w + u)));
            let above = i32(byte_at(u32(centre - v * w + u)));
            m10 += u * (below + above);
            sum += below - above;
        }
        m01 += v * sum;
    }
    out[2u * k] = bitcast<u32>(m10);
    out[2u * k + 1u] = bitcast<u32>(m01);
}

// ---------------------------------------------------------------------------------------------
// Patches: items are (level, x00, y00, ux, uy, vx, vy, inside) per patch; out gets the patches,
// 32×32 bytes each, patch after patch (256 words each). One invocation per output word.

fn sample(base: u32, w: i32, h: i32, x: i32, y: i32, inside: bool) -> u32 {
    var xi = x >> FRAC_BITS;
    var yi = y >> FRAC_BITS;
    let fx = u32(x & (ONE - 1));
    let fy = u32(y & (ONE - 1));
    var x1 = xi + 1;
    var y1 = yi + 1;
    if (!inside) {
        xi = clamp(xi, 0, w - 1);
        x1 = clamp(x1, 0, w - 1);
        yi = clamp(yi, 0, h - 1);
        y1 = clamp(y1, 0, h - 1);
    }
    let r0 = base + u32(yi * w);
    let r1 = base + u32(y1 * w);
    let top = byte_at(r0 + u32(xi)) * (2048u - fx) + byte_at(r0 + u32(x1)) * fx;
    let bot = byte_at(r1 + u32(xi)) * (2048u - fx) + byte_at(r1 + u32(x1)) * fx;
    return (top * (2048u - fy) + bot * fy + (1u << 21u)) >> 22u;
}

@compute @workgroup_size(64)
fn patches(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let word = invocation(gid, groups);
    if (word >= params.total) {
        return;
    }
    let k = word / 256u;
    let t = word - k * 256u;
    let g = 8u * k;
    let level = items[g];
    let x00 = bitcast<i32>(items[g + 1u]);
    let y00 = bitcast<i32>(items[g + 2u]);
    let ux = bitcast<i32>(items[g + 3u]);
    let uy = bitcast<i32>(items[g + 4u]);
    let vx = bitcast<i32>(items[g + 5u]);
    let vy = bitcast<i32>(items[g + 6u]);
    let inside = items[g + 7u] != 0u;
    let info = params.levels_off + 4u * level;
    let w = i32(taps[info]);
    let h = i32(taps[info + 1u]);
    let base = taps[info + 2u];
    let j = i32(t / 8u);
    let i0 = i32(t % 8u) * 4;
    var packed = 0u;
    for (var lane = 0; lane < 4; lane++) {
        let i = i0 + lane;
        let x = x00 + i * ux + j * vx;
        let y = y00 + i * uy + j * vy;
        packed |= sample(base, w, h, x, y, inside) << (u32(lane) * 8u);
    }
    out[word] = packed;
}
