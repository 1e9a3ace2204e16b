//! The keypoint front end on the GPU (`shaders/detect.wgsl`): pyramid, corner response, local
//! maxima, orientation moments and patch sampling, identical to
//! [`FeatureExtractor`](crate::features::FeatureExtractor)'s CPU code.
//!
//! # Round trips per frame
//!
//! 1. **Detect**: upload the frame (or gray image); gray conversion, then for every level the
//!    pyramid (horizontal and vertical pass, taps computed on the host), the gradient tensor, the
//!    response and its local maxima, all in one submission. Read back the candidate records (level,
//!    position, response and the four responses around it) and, for a camera frame, the gray image.
//! 2. The CPU does what is cheap and order-dependent: the per-level budget, the grid selection (a
//!    total order, so the GPU's append order does not matter) and the sub-pixel parabola.
//!    **Moments**: upload the kept keypoints, compute their integer orientation moments, read them
//!    back. The CPU takes `atan2` and the sine and cosine of the patch grid (the only
//!    floating-point steps, kept on the CPU so both paths agree bit for bit).
//! 3. **Patches**: upload each keypoint's fixed-point sampling grid; sample the patches on the GPU
//!    into a buffer that the descriptor plan copies its input from (no trip through the CPU), and
//!    read the patches back for the caller.
//!
//! Pipelines, the bind group, parameter records and buffers are made once and reused; buffers grow
//! when a larger frame (or more candidates) arrives, and [`GpuKeypoints::buffer_allocations`]
//! counts every allocation, so tests can check that a warm frame allocates none.

use crate::features::nms::{self, Candidate};
use crate::features::patch::{self, PatchGeometry};
use crate::features::pyramid::{self, Tap};
use crate::features::{
    FeatureConfig, Keypoint, MIN_LEVEL_SIDE, PATCH_AREA, for_each_level_share, keypoint_at,
    level_grid_cell, level_is_detectable, orientation,
};
use crate::frame::Frame;
use crate::image::GrayImage;

use super::buffers::{GrowableBuffer, Readback, write_padded};
use super::gray::GrayConverter;
use super::{DETECT_WGSL, GpuContext, GpuError, compute};

/// Entry points of `detect.wgsl`.
const ENTRIES: [&str; 7] = [
    "pyr_h", "pyr_v", "tensor_v", "response", "maxima", "moments", "patches",
];
const PYR_H: usize = 0;
const PYR_V: usize = 1;
const TENSOR_V: usize = 2;
const RESPONSE: usize = 3;
const MAXIMA: usize = 4;
const MOMENTS: usize = 5;
const PATCHES: usize = 6;

/// Bytes of one `Params` record of `detect.wgsl` (16 u32 and 4 vec4<u32>).
const PARAMS_SIZE: u64 = 128;
/// Words of one candidate record (`RECORD` in the shader).
const RECORD_WORDS: usize = 8;
/// Most pyramid levels ([`FeatureConfig::validate`] allows 16).
const MAX_LEVELS: usize = 16;
/// Parameter records: five per level (pyramid h/v, tensor, response, maxima), moments, patches.
const RECORDS: usize = 5 * MAX_LEVELS + 2;
const MOMENTS_RECORD: usize = 5 * MAX_LEVELS;
const PATCHES_RECORD: usize = 5 * MAX_LEVELS + 1;
/// Candidate records read back with the first readback before any frame showed how many to expect.
const INITIAL_READ_BUDGET: usize = 8192;

/// Parameter record fields (`Params` in `detect.wgsl`).
mod field {
    pub const TOTAL: usize = 0;
    pub const LEVEL: usize = 1;
    pub const W: usize = 2;
    pub const H: usize = 3;
    pub const SRC_W: usize = 4;
    pub const SRC_H: usize = 5;
    pub const SRC_OFF: usize = 6;
    pub const DST_OFF: usize = 7;
    pub const XTAPS: usize = 8;
    pub const YTAPS: usize = 9;
    pub const RESP_OFF: usize = 10;
    pub const BORDER: usize = 11;
    pub const THRESHOLD: usize = 12;
    pub const CAP: usize = 13;
    pub const LEVELS_OFF: usize = 14;
    pub const UMAX: usize = 16;
}

/// One pyramid level as laid out in the GPU buffers.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    w: u32,
    h: u32,
    /// Byte offset in the pyramid buffer (a multiple of 4).
    off: u32,
    /// Element offset in the response buffer.
    resp_off: u32,
    scale: [f32; 2],
}

#[derive(Debug, Clone, Copy)]
struct Dispatch {
    entry: usize,
    record: usize,
    total: u32,
}

/// The input of a frame: a camera frame (converted to gray on the GPU) or a gray image.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    /// A camera frame in any pixel format.
    Frame(&'a Frame<'a>),
    /// A gray image.
    Gray(&'a GrayImage),
}

/// The GPU keypoint front end: pyramid, corner response, local maxima, orientation moments and
/// patches on the GPU in three round trips per frame (detect; moments; patches, straight into
/// the descriptor plan), identical to the CPU extractor.
///
/// Its crate-internal `extract` is what [`FeaturePipeline`](crate::features::FeaturePipeline)
/// runs on a GPU backend (with the descriptor plan fed from the patch buffer);
/// [`GpuKeypoints::extract_frame`] and [`GpuKeypoints::extract_gray`] give keypoints and patches
/// alone; [`GpuKeypoints::pyramid_and_response`] reads the intermediate images back for
/// the parity tests.
#[derive(Debug)]
pub struct GpuKeypoints {
    ctx: GpuContext,
    config: FeatureConfig,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    stride: u64,
    params_bytes: Vec<u8>,
    pyr: GrowableBuffer,
    tmp: GrowableBuffer,
    tensor: GrowableBuffer,
    resp: GrowableBuffer,
    cands: GrowableBuffer,
    taps: GrowableBuffer,
    items: GrowableBuffer,
    out: GrowableBuffer,
    bind_group: wgpu::BindGroup,
    gray: GrayConverter,
    read_cands: Readback,
    read_gray: Readback,
    read_out: Readback,
    // The plan for the current level-0 size.
    size: (u32, u32),
    levels: Vec<Level>,
    dispatches: Vec<Dispatch>,
    taps_host: Vec<u32>,
    tap_scratch: Vec<Tap>,
    pyr_bytes: u64,
    resp_len: u64,
    cap: usize,
    read_budget: usize,
    // Per-frame host buffers, reused.
    raw: Vec<u8>,
    records: Vec<u32>,
    by_level: Vec<Vec<Candidate>>,
    grid: nms::GridScratch,
    points: Vec<u32>,
    item_words: Vec<u32>,
    item_bytes: Vec<u8>,
    gray_copy: GrayImage,
}

impl GpuKeypoints {
    /// Compiles the kernels for `config` (validated) on `ctx`'s device.
    pub fn new(ctx: &GpuContext, config: &FeatureConfig) -> Result<GpuKeypoints, GpuError> {
        config.validate().map_err(|e| GpuError::InvalidInput {
            reason: e.to_string(),
        })?;
        let gray = GrayConverter::new(ctx)?;
        let device = ctx.device();
        let stride = compute::params_stride(device);
        ctx.scoped(|| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("detect.wgsl"),
                source: wgpu::ShaderSource::Wgsl(DETECT_WGSL.into()),
            });
            let storage = |binding: u32, read_only: bool| super::storage_entry(binding, read_only);
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("detect"),
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: true,
                            min_binding_size: wgpu::BufferSize::new(PARAMS_SIZE),
                        },
                        count: None,
                    },
                    storage(1, false),
                    storage(2, false),
                    storage(3, false),
                    storage(4, false),
                    storage(5, false),
                    storage(6, true),
                    storage(7, true),
                    storage(8, false),
                ],
            });
            let pipelines = super::compute_pipelines(device, "detect", &layout, &module, &ENTRIES);
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("detect params"),
                size: stride * RECORDS as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            use wgpu::BufferUsages as U;
            let buf = |label, usage| GrowableBuffer::new(device, label, usage, 0);
            let pyr = buf("detect pyramid", U::STORAGE | U::COPY_DST | U::COPY_SRC);
            let tmp = buf("detect tmp", U::STORAGE);
            let tensor = buf("detect tensor", U::STORAGE);
            let resp = buf("detect response", U::STORAGE | U::COPY_SRC);
            let cands = buf("detect candidates", U::STORAGE | U::COPY_DST | U::COPY_SRC);
            let taps = buf("detect taps", U::STORAGE | U::COPY_DST);
            let items = buf("detect items", U::STORAGE | U::COPY_DST);
            let out = buf("detect out", U::STORAGE | U::COPY_SRC);
            let bind_group = make_bind_group(
                device,
                &layout,
                &params,
                [&pyr, &tmp, &tensor, &resp, &cands, &taps, &items, &out],
            );
            GpuKeypoints {
                ctx: ctx.clone(),
                config: config.clone(),
                layout,
                pipelines,
                params,
                stride,
                params_bytes: vec![0; (stride * RECORDS as u64) as usize],
                pyr,
                tmp,
                tensor,
                resp,
                cands,
                taps,
                items,
                out,
                bind_group,
                gray,
                read_cands: Readback::new(device, "detect candidates readback", 0),
                read_gray: Readback::new(device, "detect gray readback", 0),
                read_out: Readback::new(device, "detect out readback", 0),
                size: (0, 0),
                levels: Vec::new(),
                dispatches: Vec::new(),
                taps_host: Vec::new(),
                tap_scratch: Vec::new(),
                pyr_bytes: 0,
                resp_len: 0,
                cap: 0,
                read_budget: INITIAL_READ_BUDGET,
                raw: Vec::new(),
                records: Vec::new(),
                by_level: (0..MAX_LEVELS).map(|_| Vec::new()).collect(),
                grid: nms::GridScratch::default(),
                points: Vec::new(),
                item_words: Vec::new(),
                item_bytes: Vec::new(),
                gray_copy: GrayImage::new(0, 0),
            }
        })
    }

    /// The detector settings.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The context this front end runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// How many GPU buffers this front end (its gray converter included) has allocated so far,
    /// counting each reallocation of a growing buffer: constant once the largest frame has been
    /// seen.
    pub fn buffer_allocations(&self) -> u64 {
        self.storage().iter().map(|b| b.allocations()).sum::<u64>()
            + self.read_cands.allocations()
            + self.read_gray.allocations()
            + self.read_out.allocations()
            + self.gray.buffer_allocations()
    }

    /// Lays out the levels, taps and dispatches for a `w x h` level 0 (only when the size changes)
    /// and grows the buffers. Call inside an error scope.
    fn plan(&mut self, w: u32, h: u32) -> Result<(), GpuError> {
        if self.size == (w, h) && !self.levels.is_empty() {
            return Ok(());
        }
        let cfg = &self.config;
        self.levels.clear();
        let mut off = 0u64;
        let mut resp_off = 0u64;
        let mut max_pixels = 0u64;
        let mut max_tmp = 0u64;
        let mut cap = 0u64;
        let mut prev = (w, h);
        let sizes = std::iter::once((w, h)).chain(pyramid::level_sizes(
            w,
            h,
            cfg.scale_factor,
            cfg.levels,
            MIN_LEVEL_SIDE,
        ));
        for (lw, lh) in sizes {
            let pixels = u64::from(lw) * u64::from(lh);
            self.levels.push(Level {
                w: lw,
                h: lh,
                off: u32::try_from(off).map_err(|_| too_large(off))?,
                resp_off: u32::try_from(resp_off).map_err(|_| too_large(resp_off))?,
                scale: pyramid::level_scale(w, h, lw, lh),
            });
            off += pixels.div_ceil(4) * 4;
            resp_off += pixels;
            max_pixels = max_pixels.max(pixels);
            max_tmp = max_tmp.max(u64::from(lw) * u64::from(prev.1));
            // No two local maxima touch, so a level has at most ceil(w/2)·ceil(h/2).
            cap += u64::from(lw.div_ceil(2)) * u64::from(lh.div_ceil(2));
            prev = (lw, lh);
        }
        let limit = compute::binding_limit(self.ctx.device());
        let cands_bytes = 4 + cap * RECORD_WORDS as u64 * 4;
        for need in [off, max_tmp * 4, max_pixels * 12, resp_off * 4, cands_bytes] {
            if need > limit {
                return Err(GpuError::TooLarge {
                    needed: need,
                    limit,
                });
            }
        }
        // Taps of every level after the first, then the level table.
        self.taps_host.clear();
        let mut tap_offsets = vec![(0u32, 0u32); self.levels.len()];
        for (l, pair) in self.levels.windows(2).enumerate() {
            let (src, dst) = (pair[0], pair[1]);
            let xo = self.taps_host.len() as u32;
            pyramid::fill_taps(&mut self.tap_scratch, src.w, dst.w);
            push_taps(&mut self.taps_host, &self.tap_scratch);
            let yo = self.taps_host.len() as u32;
            pyramid::fill_taps(&mut self.tap_scratch, src.h, dst.h);
            push_taps(&mut self.taps_host, &self.tap_scratch);
            tap_offsets[l + 1] = (xo, yo);
        }
        let levels_off = self.taps_host.len() as u32;
        for lv in &self.levels {
            self.taps_host
                .extend_from_slice(&[lv.w, lv.h, lv.off, lv.resp_off]);
        }
        // Parameter records and dispatches.
        self.dispatches.clear();
        let stride = self.stride as usize;
        let umax = orientation::disc_half_widths();
        let threshold = cfg.min_response.to_bits();
        for (l, lv) in self.levels.iter().enumerate() {
            let mut p = [0u32; 32];
            p[field::LEVEL] = l as u32;
            p[field::W] = lv.w;
            p[field::H] = lv.h;
            p[field::DST_OFF] = lv.off;
            p[field::RESP_OFF] = lv.resp_off;
            p[field::BORDER] = crate::features::BORDER as u32;
            p[field::THRESHOLD] = threshold;
            p[field::CAP] = cap as u32;
            p[field::LEVELS_OFF] = levels_off;
            let pixels = lv.w * lv.h;
            let mut steps = Vec::with_capacity(5);
            if l > 0 {
                let src = self.levels[l - 1];
                p[field::SRC_W] = src.w;
                p[field::SRC_H] = src.h;
                p[field::SRC_OFF] = src.off;
                p[field::XTAPS] = tap_offsets[l].0;
                p[field::YTAPS] = tap_offsets[l].1;
                steps.push((PYR_H, lv.w * src.h));
                steps.push((PYR_V, pixels.div_ceil(4)));
            }
            steps.push((TENSOR_V, pixels));
            steps.push((RESPONSE, pixels));
            if level_is_detectable(lv.w, lv.h) {
                steps.push((MAXIMA, pixels));
            }
            for (entry, total) in steps {
                let record = 5 * l + entry.min(MAXIMA);
                p[field::TOTAL] = total;
                compute::put_params(&mut self.params_bytes, record * stride, &p);
                self.dispatches.push(Dispatch {
                    entry,
                    record,
                    total,
                });
            }
        }
        // Moments and patches: their counts are written per frame.
        for record in [MOMENTS_RECORD, PATCHES_RECORD] {
            let mut p = [0u32; 32];
            p[field::LEVELS_OFF] = levels_off;
            for (v, &u) in umax.iter().enumerate() {
                p[field::UMAX + v] = u as u32;
            }
            compute::put_params(&mut self.params_bytes, record * stride, &p);
        }
        let device = self.ctx.device().clone();
        let mut grown = false;
        grown |= self.pyr.ensure(&device, off);
        grown |= self.tmp.ensure(&device, max_tmp * 4);
        grown |= self.tensor.ensure(&device, max_pixels * 12);
        grown |= self.resp.ensure(&device, resp_off * 4);
        grown |= self.cands.ensure(&device, cands_bytes);
        grown |= self.taps.ensure(&device, self.taps_host.len() as u64 * 4);
        if grown {
            self.rebuild_bind_group();
        }
        let queue = self.ctx.queue();
        let taps_bytes: Vec<u8> = self
            .taps_host
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        queue.write_buffer(self.taps.buffer(), 0, &taps_bytes);
        queue.write_buffer(&self.params, 0, &self.params_bytes);
        self.size = (w, h);
        self.pyr_bytes = off;
        self.resp_len = resp_off;
        self.cap = cap as usize;
        self.read_budget = self.read_budget.min(self.cap).max(1);
        Ok(())
    }

    fn rebuild_bind_group(&mut self) {
        self.bind_group = make_bind_group(
            self.ctx.device(),
            &self.layout,
            &self.params,
            self.storage(),
        );
    }

    /// The storage buffers, in their binding order (bindings 1 to 8).
    fn storage(&self) -> [&GrowableBuffer; 8] {
        [
            &self.pyr,
            &self.tmp,
            &self.tensor,
            &self.resp,
            &self.cands,
            &self.taps,
            &self.items,
            &self.out,
        ]
    }

    /// Records `dispatches` (with their parameter records) into one compute pass.
    fn encode(&self, encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
        let device = self.ctx.device();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("detect"),
            timestamp_writes: None,
        });
        for d in dispatches {
            if d.total == 0 {
                continue;
            }
            let (x, y) = compute::grid(device, d.total);
            pass.set_pipeline(&self.pipelines[d.entry]);
            let offset = (d.record as u64 * self.stride) as u32;
            pass.set_bind_group(0, &self.bind_group, &[offset]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// Pass 1: level 0 from the input, then pyramid, response and maxima of every level, and
    /// the candidates' readback (into `self.records`, `RECORD_WORDS` per candidate). A camera
    /// frame's gray image is read back into `gray`; a gray input is copied there.
    fn detect(&mut self, input: Input<'_>, gray: &mut GrayImage) -> Result<(), GpuError> {
        let (w, h) = match input {
            Input::Frame(f) => (f.width(), f.height()),
            Input::Gray(g) => (g.width(), g.height()),
        };
        gray.resize(w, h);
        self.records.clear();
        if w == 0 || h == 0 {
            return Ok(());
        }
        let job = match input {
            Input::Frame(f) => self.gray.prepare(f)?,
            Input::Gray(_) => None,
        };
        let gray_bytes = (u64::from(w) * u64::from(h)).div_ceil(4) * 4;
        let ctx = self.ctx.clone();
        let submission = ctx.scoped(|| -> Result<_, GpuError> {
            self.plan(w, h)?;
            let device = self.ctx.device().clone();
            let budget = self.read_budget;
            let read_bytes = 4 + (budget * RECORD_WORDS * 4) as u64;
            self.read_cands.ensure(&device, read_bytes);
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("detect"),
            });
            match (input, &job) {
                (Input::Frame(_), Some(job)) => {
                    self.gray.record(job, &mut encoder);
                    encoder.copy_buffer_to_buffer(
                        self.gray.output(),
                        0,
                        self.pyr.buffer(),
                        0,
                        gray_bytes,
                    );
                    self.read_gray.ensure(&device, gray_bytes);
                }
                (Input::Gray(g), _) => {
                    write_padded(self.ctx.queue(), self.pyr.buffer(), g.as_slice());
                }
                (Input::Frame(_), None) => {}
            }
            encoder.clear_buffer(self.cands.buffer(), 0, Some(4));
            self.encode(&mut encoder, &self.dispatches);
            self.read_cands
                .encode_copy(&mut encoder, self.cands.buffer(), read_bytes);
            if matches!(input, Input::Frame(_)) {
                self.read_gray
                    .encode_copy(&mut encoder, self.pyr.buffer(), gray_bytes);
            }
            Ok((self.ctx.queue().submit([encoder.finish()]), read_bytes))
        })??;
        let (submission, read_bytes) = submission;
        self.raw.resize(read_bytes as usize, 0);
        self.read_cands
            .read(&self.ctx, submission.clone(), read_bytes, &mut self.raw)?;
        match input {
            Input::Frame(_) => {
                self.read_gray
                    .read(&self.ctx, submission, gray_bytes, gray.as_mut_slice())?
            }
            Input::Gray(g) => gray.as_mut_slice().copy_from_slice(g.as_slice()),
        }
        let count =
            u32::from_le_bytes([self.raw[0], self.raw[1], self.raw[2], self.raw[3]]) as usize;
        if count > self.cap {
            return Err(GpuError::Internal {
                message: format!(
                    "{count} local maxima reported, at most {} possible",
                    self.cap
                ),
            });
        }
        if count > self.read_budget {
            // More candidates than the readback expected: read them all (a second round trip,
            // only until the budget has grown to this scene's count).
            self.read_budget = (count + count / 4).min(self.cap);
            let bytes = 4 + (count * RECORD_WORDS * 4) as u64;
            let submission = ctx.scoped(|| {
                let device = self.ctx.device().clone();
                self.read_cands
                    .ensure(&device, 4 + (self.read_budget * RECORD_WORDS * 4) as u64);
                let mut encoder = device.create_command_encoder(&Default::default());
                self.read_cands
                    .encode_copy(&mut encoder, self.cands.buffer(), bytes);
                self.ctx.queue().submit([encoder.finish()])
            })?;
            self.raw.resize(bytes as usize, 0);
            self.read_cands
                .read(&self.ctx, submission, bytes, &mut self.raw)?;
        }
        self.records.extend(
            self.raw[4..4 + count * RECORD_WORDS * 4]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }

    /// Runs one pass over the items in `self.item_words` (uploaded to `items`) with the entry
    /// point of `record`, and copies the first `out_words` words of `out` to the staging buffer in
    /// the same submission. The caller maps it with `self.read_out.read(…)` on the returned
    /// submission, now or after more GPU work.
    fn run_items(
        &mut self,
        entry: usize,
        record: usize,
        total: u32,
        out_words: usize,
    ) -> Result<wgpu::SubmissionIndex, GpuError> {
        let ctx = self.ctx.clone();
        let out_bytes = (out_words * 4) as u64;
        ctx.scoped(|| {
            let device = self.ctx.device().clone();
            let mut grown = self
                .items
                .ensure(&device, (self.item_words.len() * 4) as u64);
            grown |= self.out.ensure(&device, out_bytes);
            if grown {
                self.rebuild_bind_group();
            }
            self.read_out.ensure(&device, out_bytes);
            let queue = self.ctx.queue();
            self.item_bytes.clear();
            self.item_bytes
                .extend(self.item_words.iter().flat_map(|w| w.to_le_bytes()));
            queue.write_buffer(self.items.buffer(), 0, &self.item_bytes);
            let at = record * self.stride as usize;
            compute::put_params(&mut self.params_bytes, at, &[total]);
            queue.write_buffer(
                &self.params,
                at as u64,
                &self.params_bytes[at..at + PARAMS_SIZE as usize],
            );
            let mut encoder = device.create_command_encoder(&Default::default());
            self.encode(
                &mut encoder,
                &[Dispatch {
                    entry,
                    record,
                    total,
                }],
            );
            self.read_out
                .encode_copy(&mut encoder, self.out.buffer(), out_bytes);
            self.ctx.queue().submit([encoder.finish()])
        })
    }

    /// Keypoints and patches of a frame, exactly as
    /// [`FeatureExtractor`](crate::features::FeatureExtractor) computes them: `gray` gets the
    /// frame's gray image, `keypoints` and `patches` the result (replaced). With `describe`, the
    /// patches also go straight from their GPU buffer into the descriptor plan, whose output
    /// lands in `describe.1` (resized); a descriptor failure is returned as the second value so
    /// the caller can describe on the CPU while keeping the GPU keypoints.
    pub(crate) fn extract(
        &mut self,
        input: Input<'_>,
        gray: &mut GrayImage,
        keypoints: &mut Vec<Keypoint>,
        patches: &mut Vec<u8>,
        describe: Option<(&mut super::GpuDescriptor, &mut Vec<i8>)>,
    ) -> Result<Option<GpuError>, GpuError> {
        keypoints.clear();
        patches.clear();
        self.detect(input, gray)?;
        // Candidates per level, then the CPU's budget, grid selection and sub-pixel step.
        for v in &mut self.by_level {
            v.clear();
        }
        for (i, r) in self.records.chunks_exact(RECORD_WORDS).enumerate() {
            let l = r[0] as usize;
            if let Some(v) = self.by_level.get_mut(l) {
                v.push(Candidate::new(r[1], r[2], f32::from_bits(r[3]), i as u32));
            }
        }
        self.points.clear();
        let cfg = &self.config;
        let levels = &self.levels;
        let by_level = &mut self.by_level;
        let grid = &mut self.grid;
        let records = &self.records;
        let points = &mut self.points;
        for_each_level_share(cfg, levels.len(), |l, share| {
            let lv = levels[l];
            if share == 0 || !level_is_detectable(lv.w, lv.h) {
                return 0;
            }
            let cands = &mut by_level[l];
            let cell = level_grid_cell(cfg, lv.scale, lv.w, lv.h, share);
            let n = nms::grid_select(cands, share, cell, lv.w, grid);
            for c in &cands[..n] {
                let r = &records[c.tag as usize * RECORD_WORDS..][..RECORD_WORDS];
                let around = [r[4], r[5], r[6], r[7]].map(f32::from_bits);
                keypoints.push(keypoint_at(c, around, l, lv.scale, 0.0));
                points.extend_from_slice(&[l as u32, c.x, c.y]);
            }
            n
        });
        let n = keypoints.len();
        if n == 0 {
            if let Some((_, out)) = describe {
                out.clear();
            }
            return Ok(None);
        }
        // Pass 2: orientation moments; atan2 on the CPU.
        self.item_words.clear();
        self.item_words.extend_from_slice(&self.points);
        let submission = self.run_items(MOMENTS, MOMENTS_RECORD, n as u32, 2 * n)?;
        self.raw.resize(8 * n, 0);
        self.read_out
            .read(&self.ctx, submission, (8 * n) as u64, &mut self.raw)?;
        for (kp, m) in keypoints.iter_mut().zip(self.raw.chunks_exact(8)) {
            let m10 = i32::from_le_bytes([m[0], m[1], m[2], m[3]]);
            let m01 = i32::from_le_bytes([m[4], m[5], m[6], m[7]]);
            kp.angle = orientation::angle_of_moments([i64::from(m10), i64::from(m01)]);
        }
        // Pass 3: each patch's fixed-point grid from the CPU, the sampling on the GPU.
        self.item_words.clear();
        for kp in keypoints.iter() {
            let l = usize::from(kp.level);
            let lv = self.levels[l];
            let [sx, sy] = lv.scale;
            let g: PatchGeometry =
                patch::patch_geometry(lv.w, lv.h, kp.x / sx, kp.y / sy, 1.0, kp.angle);
            self.item_words.extend_from_slice(&[
                l as u32,
                g.x00 as u32,
                g.y00 as u32,
                g.ux as u32,
                g.uy as u32,
                g.vx as u32,
                g.vy as u32,
                u32::from(g.inside),
            ]);
        }
        let words = n * PATCH_AREA / 4;
        let total = u32::try_from(words).map_err(|_| too_large(words as u64 * 4))?;
        // Sampling and the patches' readback copy in one submission; the descriptor plan's
        // submission follows it on the queue, and the patches are mapped after that.
        let read = self.run_items(PATCHES, PATCHES_RECORD, total, words)?;
        let patch_bytes = (n * PATCH_AREA) as u64;
        let described = match describe {
            Some((desc, out)) => {
                out.clear();
                out.resize(n * crate::descriptor::DESCRIPTOR_DIM, 0);
                desc.describe_buffer(self.out.buffer(), n, out).err()
            }
            None => None,
        };
        patches.resize(n * PATCH_AREA, 0);
        self.read_out.read(&self.ctx, read, patch_bytes, patches)?;
        Ok(described)
    }

    /// Keypoints and patches of a camera frame (any pixel format), equal to
    /// [`FeatureExtractor::extract`](crate::features::FeatureExtractor::extract)'s; `gray` gets
    /// the frame's gray image. `keypoints` and `patches` are replaced (`PATCH_AREA` bytes per
    /// keypoint).
    pub fn extract_frame(
        &mut self,
        frame: &Frame<'_>,
        gray: &mut GrayImage,
        keypoints: &mut Vec<Keypoint>,
        patches: &mut Vec<u8>,
    ) -> Result<(), GpuError> {
        self.extract(Input::Frame(frame), gray, keypoints, patches, None)
            .map(|_| ())
    }

    /// Keypoints and patches of a gray image, equal to
    /// [`FeatureExtractor::extract_gray`](crate::features::FeatureExtractor::extract_gray)'s.
    pub fn extract_gray(
        &mut self,
        gray: &GrayImage,
        keypoints: &mut Vec<Keypoint>,
        patches: &mut Vec<u8>,
    ) -> Result<(), GpuError> {
        let mut copy = std::mem::replace(&mut self.gray_copy, GrayImage::new(0, 0));
        let r = self.extract(Input::Gray(gray), &mut copy, keypoints, patches, None);
        self.gray_copy = copy;
        r.map(|_| ())
    }

    /// The first pass alone (upload, pyramid, corner response and local maxima of every level,
    /// candidate readback): how many candidates the levels have. For benchmarks of that stage;
    /// compare [`FeatureExtractor::detect_candidates`](crate::features::FeatureExtractor::detect_candidates).
    pub fn detect_candidates(&mut self, gray: &GrayImage) -> Result<usize, GpuError> {
        let mut copy = std::mem::replace(&mut self.gray_copy, GrayImage::new(0, 0));
        let r = self.detect(Input::Gray(gray), &mut copy);
        self.gray_copy = copy;
        r?;
        Ok(self.records.len() / RECORD_WORDS)
    }

    /// Test and debugging aid: the pyramid levels and each level's corner response computed on
    /// the GPU for `gray` (the first pass of the extraction, read back whole).
    /// Allocates; not for the frame loop.
    pub fn pyramid_and_response(
        &mut self,
        gray: &GrayImage,
    ) -> Result<(Vec<GrayImage>, Vec<Vec<f32>>), GpuError> {
        let mut g = GrayImage::new(0, 0);
        self.detect(Input::Gray(gray), &mut g)?;
        if gray.width() == 0 || gray.height() == 0 {
            return Ok((vec![g], vec![Vec::new()]));
        }
        let device = self.ctx.device().clone();
        let pyr_bytes = self.pyr_bytes.div_ceil(4) * 4;
        let resp_bytes = self.resp_len * 4;
        let pyr_read = Readback::new(&device, "detect pyramid readback (test)", pyr_bytes);
        let resp_read = Readback::new(&device, "detect response readback (test)", resp_bytes);
        let submission = self.ctx.scoped(|| {
            let mut encoder = device.create_command_encoder(&Default::default());
            pyr_read.encode_copy(&mut encoder, self.pyr.buffer(), pyr_bytes);
            resp_read.encode_copy(&mut encoder, self.resp.buffer(), resp_bytes);
            self.ctx.queue().submit([encoder.finish()])
        })?;
        let mut pyr = vec![0u8; pyr_bytes as usize];
        let mut resp = vec![0u8; resp_bytes as usize];
        pyr_read.read(&self.ctx, submission.clone(), pyr_bytes, &mut pyr)?;
        resp_read.read(&self.ctx, submission, resp_bytes, &mut resp)?;
        let mut images = Vec::new();
        let mut responses = Vec::new();
        for lv in &self.levels {
            let pixels = lv.w as usize * lv.h as usize;
            let bytes = pyr[lv.off as usize..lv.off as usize + pixels].to_vec();
            images.push(GrayImage::from_vec(lv.w, lv.h, bytes).map_err(|e| {
                GpuError::InvalidInput {
                    reason: e.to_string(),
                }
            })?);
            let r = &resp[lv.resp_off as usize * 4..(lv.resp_off as usize + pixels) * 4];
            responses.push(
                r.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            );
        }
        Ok((images, responses))
    }
}

fn too_large(needed: u64) -> GpuError {
    GpuError::TooLarge {
        needed,
        limit: u64::from(u32::MAX),
    }
}

fn push_taps(out: &mut Vec<u32>, taps: &[Tap]) {
    for t in taps {
        out.extend_from_slice(&[t.index, t.next, t.weight]);
    }
}

fn make_bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    params: &wgpu::Buffer,
    storage: [&GrowableBuffer; 8],
) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: params,
            offset: 0,
            size: wgpu::BufferSize::new(PARAMS_SIZE),
        }),
    }];
    for (i, b) in storage.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.buffer().as_entire_binding(),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("detect"),
        layout,
        entries: &entries,
    })
}
