// gray.wgsl — camera frame (Gray8, NV12/NV21 luma, RGBA8, BGRA8) to tightly packed 8-bit gray.
//
// Contract (shared with the CPU path, `sextant_runtime::frame::rgb_to_luma`):
//   gray = (77 * r + 150 * g + 29 * b + 128) >> 8      in u32, exact
// Gray8 and the NV12/NV21 Y plane are copied as they are.
//
// Layout:
//   src    the frame's bytes from the first pixel of row 0, rows `src_stride` bytes apart, read as
//          little-endian u32 words (the host pads the last word with zeros). A pixel may start at any
//          byte offset, so any stride works.
//   dst    the gray image, `width * height` bytes with no row padding, 4 gray bytes per u32 word
//          (byte k of the image is byte k % 4 of word k / 4, little-endian). Every word is written by
//          exactly one invocation, so there are no byte-write races.
//
// Loop budget: llvmpipe (lavapipe) silently stops an invocation after 65,535 loop iterations in total.
// Each invocation here writes WORDS_PER_INVOCATION words = 16 pixels, i.e. 4 + 16 loop iterations
// whatever the frame size; the grid, not the loop, grows with the frame.

struct Params {
    width: u32,
    height: u32,
    // Bytes between the starts of two consecutive source rows.
    src_stride: u32,
    // 1 (Gray8, NV12/NV21 luma) or 4 (RGBA8, BGRA8).
    bytes_per_pixel: u32,
    // Bit position of each colour channel inside a 4-byte pixel read as a little-endian u32:
    // RGBA8 = (0, 8, 16), BGRA8 = (16, 8, 0). Unused when bytes_per_pixel == 1.
    r_shift: u32,
    g_shift: u32,
    b_shift: u32,
    // Number of u32 words of `dst` to write: ceil(width * height / 4).
    dst_words: u32,
}

const WORKGROUP_SIZE: u32 = 64u;
const WORDS_PER_INVOCATION: u32 = 4u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// The byte at `offset`, as 0..=255.
fn load_byte(offset: u32) -> u32 {
    return (src[offset >> 2u] >> ((offset & 3u) * 8u)) & 0xffu;
}

// The 4 bytes starting at `offset` as a little-endian u32; `offset` need not be a multiple of 4.
fn load_word(offset: u32) -> u32 {
    let i = offset >> 2u;
    let shift = (offset & 3u) * 8u;
    let lo = src[i];
    if (shift == 0u) {
        return lo;
    }
    return (lo >> shift) | (src[i + 1u] << (32u - shift));
}

fn rgb_to_luma(pixel: u32) -> u32 {
    let r = (pixel >> params.r_shift) & 0xffu;
    let g = (pixel >> params.g_shift) & 0xffu;
    let b = (pixel >> params.b_shift) & 0xffu;
    return (77u * r + 150u * g + 29u * b + 128u) >> 8u;
}

@compute @workgroup_size(64)
fn to_gray(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // The host dispatches a 2D grid when one dimension would exceed the per-dimension limit.
    let invocation = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    let first_word = invocation * WORDS_PER_INVOCATION;
    if (first_word >= params.dst_words) {
        return;
    }
    // Position of this invocation's first pixel; later pixels step along the row and wrap.
    let first_pixel = first_word * 4u;
    var y = first_pixel / params.width;
    var x = first_pixel - y * params.width;
    let last_word = min(first_word + WORDS_PER_INVOCATION, params.dst_words);
    for (var word = first_word; word < last_word; word++) {
        var packed = 0u;
        for (var lane = 0u; lane < 4u; lane++) {
            // Lanes past the last pixel (in the last word only) stay zero.
            if (y < params.height) {
                let row = y * params.src_stride;
                var gray: u32;
                if (params.bytes_per_pixel == 4u) {
                    gray = rgb_to_luma(load_word(row + x * 4u));
                } else {
                    gray = load_byte(row + x);
                }
                packed |= gray << (lane * 8u);
            }
            x += 1u;
            if (x == params.width) {
                x = 0u;
                y += 1u;
            }
        }
        dst[word] = packed;
    }
}
