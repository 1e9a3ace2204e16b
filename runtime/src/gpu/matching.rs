//! Brute-force int8 descriptor matching on the GPU (`shaders/matching.wgsl`), bit-identical with
//! [`Matcher`](crate::features::Matcher)'s `knn2` and `match_sets`.

use crate::features::{Best2, DescriptorSet, Match, MatchConfig};

use super::buffers::{GrowableBuffer, Readback};
use super::compute::{self, Dot4, Kernels, put_params};
use super::{GpuContext, GpuError, MATCHING_WGSL};

const ENTRIES: [&str; 3] = ["norms", "knn_tile", "reduce"];
const NORMS: usize = 0;
const TILE: usize = 1;
const REDUCE: usize = 2;

/// Per-invocation loop budget of `knn_tile`: `tile · (words + 1)` stays below this.
const TILE_BUDGET: usize = 8192;
/// Largest train tile (descriptors per invocation).
const MAX_TILE: usize = 256;
/// Partial results merged per `reduce` invocation.
const FAN_IN: usize = 64;
/// Reduce levels prepared (64^5 tiles: far more than 2^32 train descriptors need).
const MAX_LEVELS: usize = 5;
/// Parameter records: norms, knn_tile, then one per reduce level.
const RECORDS: usize = 2 + MAX_LEVELS;

/// Parameter record fields (`Params` in `matching.wgsl`).
mod field {
    pub const TOTAL: usize = 0;
    pub const NQ: usize = 1;
    pub const QUERY_BASE: usize = 2;
    pub const NT: usize = 3;
    pub const WORDS: usize = 4;
    pub const TILE: usize = 5;
    pub const TILES: usize = 6;
    pub const N_IN: usize = 7;
    pub const N_OUT: usize = 8;
    pub const FAN_IN: usize = 9;
    pub const QUERY_OFFSET: usize = 10;
}

/// Nearest and second-nearest train descriptors, ratio test and mutual check on the GPU, with the
/// exact semantics of [`Matcher`](crate::features::Matcher): the same [`Best2`] for every query
/// (ties to the lower index) and the same matches, in the same order.
///
/// The train set is cut into tiles so no shader invocation loops more than ~8,000 times, whatever
/// its size (llvmpipe silently stops an invocation after 65,535 iterations); partial results are
/// merged by a tree of `reduce` dispatches. Pipelines are built once; buffers grow to the largest
/// problem seen and are reused. A `knn2` is one upload (queries and train), one submission and one
/// readback; queries are split across submissions only when their partial results would exceed the
/// device's binding limit.
#[derive(Debug)]
pub struct GpuMatcher {
    ctx: GpuContext,
    kernels: Kernels,
    config: MatchConfig,
    desc: GrowableBuffer,
    norms: GrowableBuffer,
    part_a: GrowableBuffer,
    part_b: GrowableBuffer,
    dummy: wgpu::Buffer,
    params: wgpu::Buffer,
    params_stride: u64,
    params_bytes: Vec<u8>,
    /// Bind groups: norms, knn_tile, reduce level 0 (a → b), 1 (b → a), … — rebuilt on growth.
    bind_groups: Vec<wgpu::BindGroup>,
    readback: Readback,
    raw: Vec<u8>,
    upload: Vec<u8>,
    best: Vec<Best2>,
    reverse: Vec<Best2>,
    gathered: Vec<i8>,
}

impl GpuMatcher {
    /// A matcher on `ctx`'s device (`dot4I8Packed` when available). The configuration is checked
    /// like [`Matcher::new`](crate::features::Matcher::new) does.
    pub fn new(ctx: &GpuContext, config: MatchConfig) -> Result<GpuMatcher, GpuError> {
        GpuMatcher::with_dot4(ctx, config, Dot4::Auto)
    }

    /// Like [`GpuMatcher::new`] with the packed dot product chosen.
    pub fn with_dot4(
        ctx: &GpuContext,
        config: MatchConfig,
        dot4: Dot4,
    ) -> Result<GpuMatcher, GpuError> {
        if !(config.ratio.is_finite() && config.ratio > 0.0) {
            return Err(GpuError::InvalidInput {
                reason: format!("ratio {} must be positive", config.ratio),
            });
        }
        let kernels = Kernels::new(ctx, "matching.wgsl", MATCHING_WGSL, &ENTRIES, dot4)?;
        let device = ctx.device();
        let params_stride = compute::params_stride(device);
        let built = ctx.scoped(|| {
            let storage = wgpu::BufferUsages::STORAGE;
            let grow = |label| GrowableBuffer::new(device, label, storage, 0);
            let desc = GrowableBuffer::new(
                device,
                "matching descriptors",
                storage | wgpu::BufferUsages::COPY_DST,
                0,
            );
            let part_a = GrowableBuffer::new(
                device,
                "matching partials a",
                storage | wgpu::BufferUsages::COPY_SRC,
                0,
            );
            let part_b = GrowableBuffer::new(
                device,
                "matching partials b",
                storage | wgpu::BufferUsages::COPY_SRC,
                0,
            );
            let dummy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matching unused binding"),
                size: 16,
                usage: storage,
                mapped_at_creation: false,
            });
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matching params"),
                size: params_stride * RECORDS as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (
                desc,
                grow("matching norms"),
                part_a,
                part_b,
                dummy,
                params,
                Readback::new(device, "matching readback", 0),
            )
        })?;
        let (desc, norms, part_a, part_b, dummy, params, readback) = built;
        let mut me = GpuMatcher {
            ctx: ctx.clone(),
            kernels,
            config,
            desc,
            norms,
            part_a,
            part_b,
            dummy,
            params,
            params_stride,
            params_bytes: vec![0; (params_stride * RECORDS as u64) as usize],
            bind_groups: Vec::new(),
            readback,
            raw: Vec::new(),
            upload: Vec::new(),
            best: Vec::new(),
            reverse: Vec::new(),
            gathered: Vec::new(),
        };
        me.rebuild_bind_groups();
        Ok(me)
    }

    /// The settings.
    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    /// Whether the kernels use WGSL's `dot4I8Packed` (else the portable exact form).
    pub fn uses_builtin_dot4(&self) -> bool {
        self.kernels.builtin_dot4
    }

    /// The context this matcher runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// GPU buffers allocated so far, reallocations included: constant once the largest problem
    /// has been seen.
    pub fn buffer_allocations(&self) -> u64 {
        self.desc.allocations()
            + self.norms.allocations()
            + self.part_a.allocations()
            + self.part_b.allocations()
            + self.readback.allocations()
    }

    fn rebuild_bind_groups(&mut self) {
        let device = self.ctx.device();
        let k = &self.kernels;
        let at = |i: usize| i as u64 * self.params_stride;
        let (a, b) = (self.part_a.buffer(), self.part_b.buffer());
        let mut groups = vec![
            k.bind_group(
                device,
                &self.params,
                at(0),
                self.desc.buffer(),
                self.norms.buffer(),
                &self.dummy,
            ),
            k.bind_group(
                device,
                &self.params,
                at(1),
                self.desc.buffer(),
                a,
                self.norms.buffer(),
            ),
        ];
        for level in 0..MAX_LEVELS {
            let (s, d) = if level % 2 == 0 { (a, b) } else { (b, a) };
            groups.push(k.bind_group(device, &self.params, at(2 + level), s, d, &self.dummy));
        }
        self.bind_groups = groups;
    }

    /// Nearest and second-nearest train descriptor of every query (brute force), equal to
    /// [`Matcher::knn2`](crate::features::Matcher::knn2) bit for bit.
    pub fn knn2(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
    ) -> Result<&[Best2], GpuError> {
        let mut best = std::mem::take(&mut self.best);
        let r = self.knn2_into(query, train, &mut best);
        self.best = best;
        r?;
        Ok(&self.best)
    }

    fn knn2_into(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
        best: &mut Vec<Best2>,
    ) -> Result<(), GpuError> {
        if query.dim() != train.dim() {
            return Err(GpuError::InvalidInput {
                reason: format!(
                    "descriptor dimensions {} and {} differ",
                    query.dim(),
                    train.dim()
                ),
            });
        }
        best.clear();
        best.resize(query.len(), Best2::default());
        if query.is_empty() || train.is_empty() {
            return Ok(());
        }
        let (nq, nt, dim) = (query.len(), train.len(), query.dim());
        let words = dim / 4;
        let tile = (TILE_BUDGET / (words + 1)).clamp(1, MAX_TILE);
        let tiles = nt.div_ceil(tile);
        let mut levels = Vec::new();
        let mut n = tiles;
        while n > 1 {
            let next = n.div_ceil(FAN_IN);
            levels.push((n, next));
            n = next;
        }
        if levels.len() > MAX_LEVELS {
            return Err(GpuError::TooLarge {
                needed: nt as u64,
                limit: (MAX_TILE * FAN_IN.pow(MAX_LEVELS as u32)) as u64,
            });
        }
        let limit = compute::binding_limit(self.ctx.device()).min(1 << 31);
        let desc_bytes = ((nq + nt) * dim) as u64;
        let part_per_query = (tiles * 16) as u64;
        if desc_bytes > limit || part_per_query > limit {
            return Err(GpuError::TooLarge {
                needed: desc_bytes.max(part_per_query),
                limit,
            });
        }
        let chunk = ((limit / part_per_query) as usize).clamp(1, nq);
        let device = self.ctx.device().clone();
        let queue = self.ctx.queue().clone();
        let ctx = self.ctx.clone();

        // Upload train then queries, and compute every norm.
        ctx.scoped(|| -> Result<(), GpuError> {
            let mut grown = self.desc.ensure(&device, desc_bytes);
            grown |= self.norms.ensure(&device, ((nq + nt) * 4) as u64);
            let part = (chunk * tiles * 16) as u64;
            grown |= self.part_a.ensure(&device, part);
            grown |= self.part_b.ensure(
                &device,
                (chunk * tiles.div_ceil(FAN_IN) * 16).max(16) as u64,
            );
            self.readback.ensure(&device, (chunk * 16) as u64);
            if grown {
                self.rebuild_bind_groups();
            }
            // i8 → u8 bit patterns through a reused host buffer (no allocation after warm-up).
            let mut upload = std::mem::take(&mut self.upload);
            upload.clear();
            upload.extend(train.as_slice().iter().map(|&v| v as u8));
            upload.extend(query.as_slice().iter().map(|&v| v as u8));
            queue.write_buffer(self.desc.buffer(), 0, &upload);
            self.upload = upload;
            Ok(())
        })??;

        let mut q0 = 0;
        while q0 < nq {
            let cq = chunk.min(nq - q0);
            // Parameter records for this chunk.
            let mut common = [0u32; 32];
            common[field::NQ] = cq as u32;
            common[field::QUERY_BASE] = q0 as u32;
            common[field::NT] = nt as u32;
            common[field::WORDS] = words as u32;
            common[field::TILE] = tile as u32;
            common[field::TILES] = tiles as u32;
            common[field::FAN_IN] = FAN_IN as u32;
            common[field::QUERY_OFFSET] = nt as u32;
            let stride = self.params_stride as usize;
            let mut p = common;
            p[field::TOTAL] = (nq + nt) as u32;
            put_params(&mut self.params_bytes, 0, &p);
            let mut p = common;
            p[field::TOTAL] = (cq * tiles) as u32;
            put_params(&mut self.params_bytes, stride, &p);
            for (level, &(n_in, n_out)) in levels.iter().enumerate() {
                let mut p = common;
                p[field::TOTAL] = (cq * n_out) as u32;
                p[field::N_IN] = n_in as u32;
                p[field::N_OUT] = n_out as u32;
                put_params(&mut self.params_bytes, (2 + level) * stride, &p);
            }
            // The final partials sit in `a` after an even number of levels, else in `b`.
            let result_in_a = levels.len() % 2 == 0;
            let out_size = (cq * 16) as u64;
            let submission = ctx.scoped(|| {
                queue.write_buffer(&self.params, 0, &self.params_bytes);
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("matching"),
                });
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("matching"),
                        timestamp_writes: None,
                    });
                    let mut dispatch = |entry: usize, group: usize, total: usize| {
                        let (x, y) = compute::grid(&device, total as u32);
                        pass.set_pipeline(&self.kernels.pipelines[entry]);
                        pass.set_bind_group(0, &self.bind_groups[group], &[]);
                        pass.dispatch_workgroups(x, y, 1);
                    };
                    if q0 == 0 {
                        dispatch(NORMS, 0, nq + nt);
                    }
                    dispatch(TILE, 1, cq * tiles);
                    for (level, &(_, n_out)) in levels.iter().enumerate() {
                        dispatch(REDUCE, 2 + level, cq * n_out);
                    }
                }
                let result = if result_in_a {
                    self.part_a.buffer()
                } else {
                    self.part_b.buffer()
                };
                self.readback.encode_copy(&mut encoder, result, out_size);
                queue.submit([encoder.finish()])
            })?;
            self.raw.resize(cq * 16, 0);
            self.readback
                .read(&ctx, submission, out_size, &mut self.raw)?;
            for (b, chunk) in best[q0..q0 + cq].iter_mut().zip(self.raw.chunks_exact(16)) {
                let w = |i: usize| {
                    u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]])
                };
                *b = Best2 {
                    best: w(0),
                    best_distance: w(4),
                    second: w(8),
                    second_distance: w(12),
                };
            }
            q0 += cq;
        }
        Ok(())
    }

    /// Brute-force matches with the configured ratio test and mutual check into `out` (cleared
    /// first, ordered by query index): the same matches as
    /// [`Matcher::match_sets`](crate::features::Matcher::match_sets).
    pub fn match_sets(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
        out: &mut Vec<Match>,
    ) -> Result<(), GpuError> {
        out.clear();
        let mut best = std::mem::take(&mut self.best);
        let r = self.knn2_into(query, train, &mut best);
        if r.is_ok() {
            for (i, b) in best.iter().enumerate() {
                if passes(&self.config, b) {
                    out.push(Match {
                        query: i as u32,
                        train: b.best,
                        distance: b.best_distance,
                    });
                }
            }
        }
        self.best = best;
        r?;
        if self.config.mutual && !out.is_empty() {
            // Reverse nearest neighbour, only for the train descriptors that were matched.
            let dim = train.dim();
            let mut gathered = std::mem::take(&mut self.gathered);
            gathered.clear();
            for m in out.iter() {
                let j = m.train as usize;
                gathered.extend_from_slice(&train.as_slice()[j * dim..(j + 1) * dim]);
            }
            let mut reverse = std::mem::take(&mut self.reverse);
            let r = match DescriptorSet::new(&gathered, dim) {
                Ok(g) => self.knn2_into(&g, query, &mut reverse),
                Err(e) => Err(GpuError::InvalidInput {
                    reason: e.to_string(),
                }),
            };
            if r.is_ok() {
                let mut k = 0;
                out.retain(|m| {
                    let keep = reverse.get(k).is_some_and(|r| r.best == m.query);
                    k += 1;
                    keep
                });
            }
            self.gathered = gathered;
            self.reverse = reverse;
            r?;
        }
        Ok(())
    }
}

/// `MatchConfig`'s acceptance rule, exactly as the CPU matcher applies it.
fn passes(config: &MatchConfig, b: &Best2) -> bool {
    if b.best == crate::features::matching::NONE {
        return false;
    }
    if config.max_distance.is_some_and(|m| b.best_distance > m) {
        return false;
    }
    if config.ratio >= 1.0 || b.second == crate::features::matching::NONE {
        return true;
    }
    let r2 = f64::from(config.ratio) * f64::from(config.ratio);
    f64::from(b.best_distance) < r2 * f64::from(b.second_distance)
}
