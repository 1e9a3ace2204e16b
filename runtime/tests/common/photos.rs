//! The repository's real photos (`assets/photos`) for tests: as gray images, and as grids of
//! 32×32 patches. Include it with `mod common { pub mod photos; }`.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use sextant_runtime::GrayImage;
use sextant_runtime::descriptor::PATCH_SIZE;

/// Photo `name` (file name without `.png`) as gray, with the runtime's luma.
pub fn photo(name: &str) -> GrayImage {
    let path = format!("{}/../assets/photos/{name}.png", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let ch = info.color_type.samples();
    let gray = buf[..info.buffer_size()]
        .chunks_exact(ch)
        .map(|p| {
            if ch >= 3 {
                sextant_runtime::rgb_to_luma(p[0], p[1], p[2])
            } else {
                p[0]
            }
        })
        .collect();
    GrayImage::from_vec(info.width, info.height, gray).expect("gray image")
}

/// 32×32 crops of the photos, row-major patch after patch: top-left corners from
/// `(margin[0], margin[1])` every `(step[0], step[1])` pixels (x, y), keeping `margin` clear on
/// the far sides too; at most `max` patches.
pub fn grid_patches(names: &[&str], margin: [usize; 2], step: [usize; 2], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        let g = photo(name);
        let (w, h) = (g.width() as usize, g.height() as usize);
        for y0 in (margin[1]..h - PATCH_SIZE - margin[1]).step_by(step[1]) {
            for x0 in (margin[0]..w - PATCH_SIZE - margin[0]).step_by(step[0]) {
                for y in 0..PATCH_SIZE {
                    out.extend_from_slice(&g.row((y0 + y) as u32)[x0..x0 + PATCH_SIZE]);
                }
            }
        }
    }
    out.truncate(max * PATCH_SIZE * PATCH_SIZE);
    out
}
