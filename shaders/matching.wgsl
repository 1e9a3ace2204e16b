// matching.wgsl — int8 descriptor matching: exact squared L2 distances and the best two train
// descriptors per query, bit-identical with `Matcher::knn2` (runtime/src/features/matching.rs).
//
// Contract (shared with the CPU):
//   distance(q, t) = Σ_k (q_k - t_k)² = |q|² + |t|² - 2·Σ_k q_k·t_k        exact in i32 (dim ≤ 4096)
//   best / second: the smallest (distance, index) pairs, ties to the lower index; none = (MAX, MAX)
//
// Layout: `desc` holds the train descriptors then the queries, 4 int8 values per u32 word
// (little-endian), `words` words per descriptor; `norms` holds |d|² of the same descriptors in the
// same order; a Best2 is 4 words (best, best distance, second, second distance).
//
// Loop budget (llvmpipe stops an invocation after 65,535 loop iterations): the train set is cut
// into tiles of `tile` descriptors (the host keeps tile · (words + 1) ≤ 8192); one invocation scans
// one (query, tile) pair and writes that tile's best two. `reduce` then merges `fan_in` (≤ 64)
// partial results per invocation, level after level, until one is left per query. Merging top-2
// lists with the same ordered `offer` gives the top 2 of the union, so the result does not depend
// on the tiling.

struct Params {
    total: u32,
    // Queries in this submission and the index of the first one.
    nq: u32,
    query_base: u32,
    // Train descriptors.
    nt: u32,
    words: u32,
    tile: u32,
    tiles: u32,
    // Partial results per query before and after a reduce level.
    n_in: u32,
    n_out: u32,
    fan_in: u32,
    // Index of the first query in `desc` / `norms` (= nt).
    query_offset: u32,
}

const WORKGROUP_SIZE: u32 = 64u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;

fn invocation(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
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

struct Best2 {
    best: u32,
    best_d: u32,
    second: u32,
    second_d: u32,
}

// `Best2::offer`: candidate j at distance d, ordered by (distance, index).
fn offer(b: ptr<function, Best2>, d: u32, j: u32) {
    if (d < (*b).best_d || (d == (*b).best_d && j < (*b).best)) {
        (*b).second = (*b).best;
        (*b).second_d = (*b).best_d;
        (*b).best = j;
        (*b).best_d = d;
    } else if (d < (*b).second_d || (d == (*b).second_d && j < (*b).second)) {
        (*b).second = j;
        (*b).second_d = d;
    }
}

// norms[i] = |desc_i|² for every descriptor (train and queries).
@compute @workgroup_size(64)
fn norms(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    var s = 0i;
    let base = i * params.words;
    for (var k = 0u; k < params.words; k++) {
        let v = src[base + k];
        s += dot4(v, v);
    }
    dst[i] = bitcast<u32>(s);
}

// One (query, tile) pair: the best two train descriptors of the tile for the query.
// src = desc, aux = norms, dst = partials [query][tile].
@compute @workgroup_size(64)
fn knn_tile(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let tile = i % params.tiles;
    let q = i / params.tiles;
    let qi = params.query_offset + params.query_base + q;
    let qbase = qi * params.words;
    let qn = bitcast<i32>(aux[qi]);
    var b = Best2(NONE, NONE, NONE, NONE);
    let first = tile * params.tile;
    let last = min(first + params.tile, params.nt);
    for (var j = first; j < last; j++) {
        let tbase = j * params.words;
        var dot = 0i;
        for (var k = 0u; k < params.words; k++) {
            dot += dot4(src[qbase + k], src[tbase + k]);
        }
        let d = u32(qn + bitcast<i32>(aux[j]) - 2 * dot);
        offer(&b, d, j);
    }
    let o = i * 4u;
    dst[o] = b.best;
    dst[o + 1u] = b.best_d;
    dst[o + 2u] = b.second;
    dst[o + 3u] = b.second_d;
}

// Merges fan_in consecutive partial results of a query: [query][n_in] → [query][n_out].
@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if (i >= params.total) {
        return;
    }
    let part = i % params.n_out;
    let q = i / params.n_out;
    var b = Best2(NONE, NONE, NONE, NONE);
    let first = part * params.fan_in;
    let last = min(first + params.fan_in, params.n_in);
    for (var p = first; p < last; p++) {
        let at = (q * params.n_in + p) * 4u;
        offer(&b, src[at + 1u], src[at]);
        offer(&b, src[at + 3u], src[at + 2u]);
    }
    let o = i * 4u;
    dst[o] = b.best;
    dst[o + 1u] = b.best_d;
    dst[o + 2u] = b.second;
    dst[o + 3u] = b.second_d;
}
