//! The descriptor model's compiled int8 plan on the GPU (`shaders/descriptor.wgsl`),
//! bit-identical with [`Plan::run`](crate::descriptor::Plan::run).

use crate::descriptor::{DescriptorModel, Plan};

use super::buffers::{GrowableBuffer, Readback, write_padded};
use super::compute::{self, Dot4, Kernels, put_params};
use super::plan_view::{GemmView, PlanView, StepView, Ty};
use super::{DESCRIPTOR_WGSL, GpuContext, GpuError};

/// Entry points of `descriptor.wgsl`, in pipeline order.
const ENTRIES: [&str; 8] = [
    "unpack_u8",
    "pack_bytes",
    "im2col",
    "gemm",
    "requantize",
    "relu_i8",
    "max_pool",
    "l2_norm",
];
const UNPACK: usize = 0;
const PACK: usize = 1;
const IM2COL: usize = 2;
const GEMM: usize = 3;
const REQUANT: usize = 4;
const RELU: usize = 5;
const POOL: usize = 6;
const L2: usize = 7;

/// Reduction words per GEMM invocation (1024 taps): the per-invocation loop bound.
const SPLIT_WORDS: usize = 256;
/// Most samples per submission (larger batches run as several submissions).
const MAX_BATCH: usize = 4096;
/// Largest max-pool window and L2 row handled on the GPU (per-invocation loop bounds).
const MAX_WINDOW: usize = 4096;
const MAX_L2_DIM: usize = 4096;
const MAX_L2_GAIN: u32 = 32767;

/// Parameter record fields (`Params` in `descriptor.wgsl`).
mod field {
    pub const TOTAL: usize = 0;
    pub const NB: usize = 1;
    pub const CIN: usize = 2;
    pub const H: usize = 3;
    pub const W: usize = 4;
    pub const COUT: usize = 5;
    pub const GROUP: usize = 6;
    pub const KH: usize = 7;
    pub const KW: usize = 8;
    pub const STRIDE_Y: usize = 9;
    pub const STRIDE_X: usize = 10;
    pub const PAD_T: usize = 11;
    pub const PAD_L: usize = 12;
    pub const DIL_Y: usize = 13;
    pub const DIL_X: usize = 14;
    pub const OH: usize = 15;
    pub const OW: usize = 16;
    pub const K: usize = 17;
    pub const KWORDS: usize = 18;
    pub const NCOLS: usize = 19;
    pub const SPLITS: usize = 20;
    pub const SPLIT_WORDS: usize = 21;
    pub const SRC_I8: usize = 22;
    pub const DST_I8: usize = 23;
    pub const PAD_VAL: usize = 24;
    pub const M0: usize = 25;
    pub const SHIFT: usize = 26;
    pub const Y_ZP: usize = 27;
    pub const X_ZP: usize = 28;
    pub const GAIN: usize = 29;
    pub const D: usize = 30;
    pub const LEN: usize = 31;
}

/// A buffer a dispatch binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buf {
    Input,
    Output,
    Slot(usize),
    Col,
    Acc,
    Static(usize),
    Dummy,
}

/// How a dispatch's invocation count follows the batch size `nb`.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// `nb · per_sample` invocations.
    PerSample(usize),
    /// `ceil(nb · len / 4)` invocations (packing `len` bytes per sample).
    Pack(usize),
    /// `factor · nb · pixels` invocations, with `ncols = nb · pixels`.
    Columns { factor: usize, pixels: usize },
}

#[derive(Debug, Clone)]
struct Dispatch {
    entry: usize,
    src: Buf,
    dst: Buf,
    aux: Buf,
    work: Work,
    params: [u32; 32],
}

/// Runs a compiled descriptor [`Plan`] on the GPU: the same steps, the same integer arithmetic,
/// bit-identical descriptors (see `docs/int8-arithmetic.md` and `shaders/descriptor.wgsl`).
///
/// Built once per plan: the shader module, pipelines, constant buffers (packed weights and the
/// per-channel corrections) and one bind group per dispatch. Scratch buffers grow to the largest
/// batch seen and are reused, so after warm-up a call allocates neither GPU nor host memory
/// ([`GpuDescriptor::buffer_allocations`]). A call of up to 4096 patches is one upload, one
/// submission with every step's dispatches, and one readback; larger calls repeat that per 4096.
///
/// Supported: every step of the int8 plan (QLinearConv with any group, stride, padding and
/// dilation; QLinearMatMul; Relu; MaxPool with windows up to 4096; views; the fused integer L2
/// normalisation with rows up to 4096 and gains up to 32767). Float steps
/// (`QuantizeLinear`/`DequantizeLinear`/`LpNormalization` outside the fused pattern) are refused
/// with [`GpuError::UnsupportedPlan`]: they are not reproducible bit for bit on GPUs.
#[derive(Debug)]
pub struct GpuDescriptor {
    ctx: GpuContext,
    kernels: Kernels,
    in_len: usize,
    out_len: usize,
    out_i8: bool,
    /// Per physical slot buffer: elements (words) per sample.
    slot_words: Vec<usize>,
    slots: Vec<GrowableBuffer>,
    col_words: usize,
    acc_words: usize,
    input: GrowableBuffer,
    output: GrowableBuffer,
    col: GrowableBuffer,
    acc: GrowableBuffer,
    statics: Vec<wgpu::Buffer>,
    dummy: wgpu::Buffer,
    readback: Readback,
    dispatches: Vec<Dispatch>,
    params: wgpu::Buffer,
    params_stride: u64,
    params_bytes: Vec<u8>,
    bind_groups: Vec<wgpu::BindGroup>,
    capacity: usize,
    max_batch: usize,
    params_nb: usize,
    out_bytes: Vec<u8>,
}

impl GpuDescriptor {
    /// Compiles the kernels for `plan` on `ctx`'s device (`dot4I8Packed` when available).
    pub fn new(ctx: &GpuContext, plan: &Plan) -> Result<GpuDescriptor, GpuError> {
        GpuDescriptor::with_dot4(ctx, plan, Dot4::Auto)
    }

    /// Like [`GpuDescriptor::new`] with the packed dot product chosen (tests run both forms).
    pub fn with_dot4(ctx: &GpuContext, plan: &Plan, dot4: Dot4) -> Result<GpuDescriptor, GpuError> {
        GpuDescriptor::build(ctx, PlanView::of_plan(plan)?, dot4)
    }

    /// The GPU executor of a descriptor model's plan; an [`GpuError::UnsupportedPlan`] when the
    /// model runs on tract instead of the int8 kernels.
    pub fn from_model(
        ctx: &GpuContext,
        model: &DescriptorModel,
    ) -> Result<GpuDescriptor, GpuError> {
        GpuDescriptor::build(ctx, PlanView::of_model(model)?, Dot4::Auto)
    }

    /// Whether the kernels use WGSL's `dot4I8Packed` (else the portable exact form).
    pub fn uses_builtin_dot4(&self) -> bool {
        self.kernels.builtin_dot4
    }

    /// The context this executor runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// How many GPU buffers this executor has allocated so far, counting each reallocation of a
    /// growing buffer: constant once the largest batch has been seen.
    pub fn buffer_allocations(&self) -> u64 {
        self.slots
            .iter()
            .map(GrowableBuffer::allocations)
            .sum::<u64>()
            + self.input.allocations()
            + self.output.allocations()
            + self.col.allocations()
            + self.acc.allocations()
            + self.readback.allocations()
    }

    fn build(ctx: &GpuContext, plan: PlanView, dot4: Dot4) -> Result<GpuDescriptor, GpuError> {
        let unsupported = |reason: String| GpuError::UnsupportedPlan { reason };
        if plan.slots[plan.input].ty != Ty::U8 {
            return Err(unsupported("the graph input is not u8".into()));
        }
        let out_i8 = match plan.slots[plan.output].ty {
            Ty::I8 => true,
            Ty::U8 => false,
            Ty::F32 => return Err(unsupported("the graph output is f32".into())),
        };
        // Physical buffers: a view, or a relu on u8 data, shares its source's buffer.
        let mut phys: Vec<Option<usize>> = vec![None; plan.slots.len()];
        let mut slot_words = Vec::new();
        let mut new_buf = |slot: usize, phys: &mut Vec<Option<usize>>| -> usize {
            slot_words.push(plan.slots[slot].len);
            let id = slot_words.len() - 1;
            phys[slot] = Some(id);
            id
        };
        let input_slot = new_buf(plan.input, &mut phys);
        let mut dispatches = Vec::new();
        let mut statics: Vec<Vec<u32>> = Vec::new();
        let (mut col_words, mut acc_words) = (1usize, 1usize);
        let in_len = plan.slots[plan.input].len;
        let mut base = [0u32; 32];
        base[field::LEN] = in_len as u32;
        dispatches.push(Dispatch {
            entry: UNPACK,
            src: Buf::Input,
            dst: Buf::Slot(input_slot),
            aux: Buf::Dummy,
            work: Work::PerSample(in_len),
            params: base,
        });
        let src_of = |phys: &Vec<Option<usize>>, slot: usize| -> Result<usize, GpuError> {
            phys.get(slot)
                .copied()
                .flatten()
                .ok_or_else(|| unsupported(format!("slot {slot} is read before it is written")))
        };
        for step in &plan.steps {
            match step {
                StepView::Gemm(g) => {
                    let src = src_of(&phys, g.src)?;
                    let dst = new_buf(g.dst, &mut phys);
                    let k = g.k();
                    let kwords = k.div_ceil(4);
                    let splits = kwords.div_ceil(SPLIT_WORDS);
                    let pixels = g.oh * g.ow;
                    col_words = col_words.max(g.group * pixels * kwords);
                    acc_words = acc_words.max(splits * g.cout * pixels);
                    statics.push(pack_weights(g, kwords));
                    let weights = statics.len() - 1;
                    statics.push(corrections(g));
                    let corr = statics.len() - 1;
                    let p = gemm_params(g, k, kwords, splits);
                    dispatches.push(Dispatch {
                        entry: IM2COL,
                        src: Buf::Slot(src),
                        dst: Buf::Col,
                        aux: Buf::Dummy,
                        work: Work::Columns {
                            factor: g.group * kwords,
                            pixels,
                        },
                        params: p,
                    });
                    dispatches.push(Dispatch {
                        entry: GEMM,
                        src: Buf::Col,
                        dst: Buf::Acc,
                        aux: Buf::Static(weights),
                        work: Work::Columns {
                            factor: splits * g.cout,
                            pixels,
                        },
                        params: p,
                    });
                    dispatches.push(Dispatch {
                        entry: REQUANT,
                        src: Buf::Acc,
                        dst: Buf::Slot(dst),
                        aux: Buf::Static(corr),
                        work: Work::Columns {
                            factor: g.cout,
                            pixels,
                        },
                        params: p,
                    });
                }
                StepView::View { src, dst } => {
                    phys[*dst] = Some(src_of(&phys, *src)?);
                }
                StepView::Relu { src, dst } => {
                    let s = src_of(&phys, *src)?;
                    match plan.slots[*src].ty {
                        Ty::U8 => phys[*dst] = Some(s),
                        Ty::I8 => {
                            let d = new_buf(*dst, &mut phys);
                            dispatches.push(Dispatch {
                                entry: RELU,
                                src: Buf::Slot(s),
                                dst: Buf::Slot(d),
                                aux: Buf::Dummy,
                                work: Work::PerSample(plan.slots[*src].len),
                                params: [0; 32],
                            });
                        }
                        Ty::F32 => return Err(unsupported("relu on f32 data".into())),
                    }
                }
                StepView::MaxPool(p) => {
                    if p.kh * p.kw > MAX_WINDOW {
                        return Err(unsupported(format!(
                            "max-pool window {}x{} above {MAX_WINDOW} taps",
                            p.kh, p.kw
                        )));
                    }
                    if plan.slots[p.src].ty == Ty::F32 {
                        return Err(unsupported("max-pool on f32 data".into()));
                    }
                    let s = src_of(&phys, p.src)?;
                    let d = new_buf(p.dst, &mut phys);
                    let mut q = [0u32; 32];
                    q[field::CIN] = p.c as u32;
                    q[field::H] = p.h as u32;
                    q[field::W] = p.w as u32;
                    q[field::KH] = p.kh as u32;
                    q[field::KW] = p.kw as u32;
                    q[field::STRIDE_Y] = p.stride[0] as u32;
                    q[field::STRIDE_X] = p.stride[1] as u32;
                    q[field::PAD_T] = p.pads[0] as u32;
                    q[field::PAD_L] = p.pads[1] as u32;
                    q[field::OH] = p.oh as u32;
                    q[field::OW] = p.ow as u32;
                    dispatches.push(Dispatch {
                        entry: POOL,
                        src: Buf::Slot(s),
                        dst: Buf::Slot(d),
                        aux: Buf::Dummy,
                        work: Work::PerSample(p.c * p.oh * p.ow),
                        params: q,
                    });
                }
                StepView::L2NormQ {
                    src,
                    dst,
                    x_zp,
                    gain,
                    y_zp,
                    d,
                } => {
                    if *d > MAX_L2_DIM || *gain > MAX_L2_GAIN || *gain == 0 {
                        return Err(unsupported(format!(
                            "L2 normalisation of {d} values with gain {gain} (GPU: ≤ {MAX_L2_DIM}, 1..={MAX_L2_GAIN})"
                        )));
                    }
                    let s = src_of(&phys, *src)?;
                    let o = new_buf(*dst, &mut phys);
                    let mut q = [0u32; 32];
                    q[field::X_ZP] = *x_zp as u32;
                    q[field::Y_ZP] = *y_zp as u32;
                    q[field::GAIN] = *gain;
                    q[field::D] = *d as u32;
                    dispatches.push(Dispatch {
                        entry: L2,
                        src: Buf::Slot(s),
                        dst: Buf::Slot(o),
                        aux: Buf::Dummy,
                        work: Work::PerSample(*d),
                        params: q,
                    });
                }
                StepView::Float(name) => {
                    return Err(unsupported(format!(
                        "float step `{name}` (not reproducible bit for bit on a GPU)"
                    )));
                }
            }
        }
        let out_slot = src_of(&phys, plan.output)?;
        let out_len = plan.slots[plan.output].len;
        let mut q = [0u32; 32];
        q[field::LEN] = out_len as u32;
        dispatches.push(Dispatch {
            entry: PACK,
            src: Buf::Slot(out_slot),
            dst: Buf::Output,
            aux: Buf::Dummy,
            work: Work::Pack(out_len),
            params: q,
        });

        // Batch size the device's binding limit allows.
        let per_sample = slot_words
            .iter()
            .copied()
            .chain([col_words, acc_words, in_len.div_ceil(4) + 1, out_len])
            .max()
            .unwrap_or(1) as u64
            * 4;
        let limit = compute::binding_limit(ctx.device()).min(1 << 31);
        let max_batch = (limit / per_sample).min(MAX_BATCH as u64) as usize;
        if max_batch == 0 {
            return Err(GpuError::TooLarge {
                needed: per_sample,
                limit,
            });
        }

        let kernels = Kernels::new(ctx, "descriptor.wgsl", DESCRIPTOR_WGSL, &ENTRIES, dot4)?;
        let device = ctx.device();
        let params_stride = compute::params_stride(device);
        let params_len = params_stride * dispatches.len() as u64;
        let built = ctx.scoped(|| {
            let storage = wgpu::BufferUsages::STORAGE;
            let statics: Vec<wgpu::Buffer> = statics
                .iter()
                .map(|words| {
                    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("descriptor constants"),
                        size: (words.len().max(1) * 4) as u64,
                        usage: storage | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    ctx.queue().write_buffer(&buffer, 0, &bytes);
                    buffer
                })
                .collect();
            let dummy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("descriptor unused binding"),
                size: 16,
                usage: storage,
                mapped_at_creation: false,
            });
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("descriptor params"),
                size: params_len,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let grow = |label| GrowableBuffer::new(device, label, storage, 0);
            let slots = slot_words.iter().map(|_| grow("descriptor slot")).collect();
            (
                statics,
                dummy,
                params,
                slots,
                GrowableBuffer::new(
                    device,
                    "descriptor input",
                    storage | wgpu::BufferUsages::COPY_DST,
                    0,
                ),
                GrowableBuffer::new(
                    device,
                    "descriptor output",
                    storage | wgpu::BufferUsages::COPY_SRC,
                    0,
                ),
                grow("descriptor im2col"),
                grow("descriptor accumulators"),
                Readback::new(device, "descriptor readback", 0),
            )
        })?;
        let (statics, dummy, params, slots, input, output, col, acc, readback) = built;
        let mut me = GpuDescriptor {
            ctx: ctx.clone(),
            kernels,
            in_len,
            out_len,
            out_i8,
            slot_words,
            slots,
            col_words,
            acc_words,
            input,
            output,
            col,
            acc,
            statics,
            dummy,
            readback,
            params_bytes: vec![0; params_len as usize],
            dispatches,
            params,
            params_stride,
            bind_groups: Vec::new(),
            capacity: 0,
            max_batch,
            params_nb: 0,
            out_bytes: Vec::new(),
        };
        me.rebuild_bind_groups();
        Ok(me)
    }

    fn buffer(&self, b: Buf) -> &wgpu::Buffer {
        match b {
            Buf::Input => self.input.buffer(),
            Buf::Output => self.output.buffer(),
            Buf::Slot(i) => self.slots[i].buffer(),
            Buf::Col => self.col.buffer(),
            Buf::Acc => self.acc.buffer(),
            Buf::Static(i) => &self.statics[i],
            Buf::Dummy => &self.dummy,
        }
    }

    fn rebuild_bind_groups(&mut self) {
        let device = self.ctx.device();
        let groups = self
            .dispatches
            .iter()
            .enumerate()
            .map(|(i, d)| {
                self.kernels.bind_group(
                    device,
                    &self.params,
                    i as u64 * self.params_stride,
                    self.buffer(d.src),
                    self.buffer(d.dst),
                    self.buffer(d.aux),
                )
            })
            .collect();
        self.bind_groups = groups;
    }

    /// Grows every scratch buffer to hold `nb` samples (inside an error scope).
    fn ensure_capacity(&mut self, nb: usize) {
        if nb <= self.capacity {
            return;
        }
        let device = self.ctx.device().clone();
        let words = |per: usize| (nb * per) as u64 * 4;
        for (buf, &per) in self.slots.iter_mut().zip(&self.slot_words) {
            buf.ensure(&device, words(per));
        }
        self.input
            .ensure(&device, ((nb * self.in_len).div_ceil(4) * 4) as u64);
        let out_size = ((nb * self.out_len).div_ceil(4) * 4) as u64;
        self.output.ensure(&device, out_size);
        self.readback.ensure(&device, out_size);
        self.col.ensure(&device, words(self.col_words));
        self.acc.ensure(&device, words(self.acc_words));
        self.capacity = nb;
        self.rebuild_bind_groups();
    }

    fn write_params(&mut self, nb: usize) {
        let stride = self.params_stride as usize;
        for (i, d) in self.dispatches.iter().enumerate() {
            let mut p = d.params;
            p[field::NB] = nb as u32;
            p[field::TOTAL] = total(d.work, nb);
            match d.work {
                Work::Columns { pixels, .. } => p[field::NCOLS] = (nb * pixels) as u32,
                Work::Pack(len) => p[field::LEN] = (nb * len) as u32,
                Work::PerSample(_) => {}
            }
            put_params(&mut self.params_bytes, i * stride, &p);
        }
        self.params_nb = nb;
    }

    /// Describes `n` patches (`patches`: `n` samples of the plan's input, u8, sample after sample)
    /// into `out` (`n` samples of its int8 output), exactly like the CPU kernels.
    pub fn describe(&mut self, patches: &[u8], n: usize, out: &mut [i8]) -> Result<(), GpuError> {
        if !self.out_i8 {
            return Err(GpuError::InvalidInput {
                reason: "the plan's output is u8, not int8".into(),
            });
        }
        if Some(patches.len()) != n.checked_mul(self.in_len)
            || Some(out.len()) != n.checked_mul(self.out_len)
        {
            return Err(GpuError::InvalidInput {
                reason: format!(
                    "{} input bytes and {} output values do not fit {n} samples of {} → {}",
                    patches.len(),
                    out.len(),
                    self.in_len,
                    self.out_len
                ),
            });
        }
        let mut start = 0;
        while start < n {
            let nb = (n - start).min(self.max_batch);
            self.run_batch(
                Input::Host(&patches[start * self.in_len..(start + nb) * self.in_len]),
                nb,
            )?;
            for (o, &b) in out[start * self.out_len..(start + nb) * self.out_len]
                .iter_mut()
                .zip(&self.out_bytes)
            {
                *o = b as i8;
            }
            start += nb;
        }
        Ok(())
    }

    /// Describes `n` samples that are already on the GPU, in `source` (on this executor's device,
    /// with `COPY_SRC` usage): `n` samples of the plan's input, u8, packed 4 per word, from byte 0.
    /// The GPU keypoint path writes its patches there, so they never travel through the CPU on
    /// their way to the model. The plan's input must be a whole number of words per sample.
    pub(crate) fn describe_buffer(
        &mut self,
        source: &wgpu::Buffer,
        n: usize,
        out: &mut [i8],
    ) -> Result<(), GpuError> {
        if !self.out_i8 || !self.in_len.is_multiple_of(4) {
            return Err(GpuError::InvalidInput {
                reason: "the plan's output is not int8 or its input not whole words".into(),
            });
        }
        if Some(out.len()) != n.checked_mul(self.out_len)
            || ((n * self.in_len) as u64) > source.size()
        {
            return Err(GpuError::InvalidInput {
                reason: format!(
                    "{} output values or a {}-byte source do not fit {n} samples",
                    out.len(),
                    source.size()
                ),
            });
        }
        let mut start = 0;
        while start < n {
            let nb = (n - start).min(self.max_batch);
            self.run_batch(
                Input::Buffer {
                    buffer: source,
                    offset: (start * self.in_len) as u64,
                },
                nb,
            )?;
            for (o, &b) in out[start * self.out_len..(start + nb) * self.out_len]
                .iter_mut()
                .zip(&self.out_bytes)
            {
                *o = b as i8;
            }
            start += nb;
        }
        Ok(())
    }

    /// One submission: upload (or copy from a GPU buffer), every dispatch, readback into
    /// `self.out_bytes`.
    fn run_batch(&mut self, input: Input<'_>, nb: usize) -> Result<(), GpuError> {
        let out_len = nb * self.out_len;
        let out_size = (out_len.div_ceil(4) * 4) as u64;
        let submission = self.ctx.clone().scoped(|| {
            self.ensure_capacity(nb);
            if self.params_nb != nb {
                self.write_params(nb);
                self.ctx
                    .queue()
                    .write_buffer(&self.params, 0, &self.params_bytes);
            }
            let device = self.ctx.device();
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("descriptor"),
            });
            match input {
                Input::Host(bytes) => write_padded(self.ctx.queue(), self.input.buffer(), bytes),
                Input::Buffer { buffer, offset } => encoder.copy_buffer_to_buffer(
                    buffer,
                    offset,
                    self.input.buffer(),
                    0,
                    (nb * self.in_len) as u64,
                ),
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("descriptor"),
                    timestamp_writes: None,
                });
                for (d, group) in self.dispatches.iter().zip(&self.bind_groups) {
                    let t = total(d.work, nb);
                    if t == 0 {
                        continue;
                    }
                    let (x, y) = compute::grid(device, t);
                    pass.set_pipeline(&self.kernels.pipelines[d.entry]);
                    pass.set_bind_group(0, group, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
            self.readback
                .encode_copy(&mut encoder, self.output.buffer(), out_size);
            self.ctx.queue().submit([encoder.finish()])
        })?;
        self.out_bytes.resize(out_len, 0);
        self.readback
            .read(&self.ctx, submission, out_size, &mut self.out_bytes)
    }
}

/// Where a batch's input comes from.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// Host bytes, uploaded.
    Host(&'a [u8]),
    /// A GPU buffer, copied from `offset` bytes on.
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
    },
}

fn total(work: Work, nb: usize) -> u32 {
    let t = match work {
        Work::PerSample(per) => nb * per,
        Work::Pack(len) => (nb * len).div_ceil(4),
        Work::Columns { factor, pixels } => factor * nb * pixels,
    };
    t.min(u32::MAX as usize) as u32
}

fn gemm_params(g: &GemmView, k: usize, kwords: usize, splits: usize) -> [u32; 32] {
    let mut p = [0u32; 32];
    p[field::CIN] = g.cin as u32;
    p[field::H] = g.h as u32;
    p[field::W] = g.w as u32;
    p[field::COUT] = g.cout as u32;
    p[field::GROUP] = g.group as u32;
    p[field::KH] = g.kh as u32;
    p[field::KW] = g.kw as u32;
    p[field::STRIDE_Y] = g.stride[0] as u32;
    p[field::STRIDE_X] = g.stride[1] as u32;
    p[field::PAD_T] = g.pads[0] as u32;
    p[field::PAD_L] = g.pads[1] as u32;
    p[field::DIL_Y] = g.dil[0] as u32;
    p[field::DIL_X] = g.dil[1] as u32;
    p[field::OH] = g.oh as u32;
    p[field::OW] = g.ow as u32;
    p[field::K] = k as u32;
    p[field::KWORDS] = kwords as u32;
    p[field::SPLITS] = splits as u32;
    p[field::SPLIT_WORDS] = SPLIT_WORDS as u32;
    p[field::SRC_I8] = u32::from(g.src_i8);
    p[field::DST_I8] = u32::from(g.dst_i8);
    p[field::PAD_VAL] = g.x_zp.clamp(0, 255) as u32;
    p[field::M0] = g.m0 as u32;
    p[field::SHIFT] = g.shift;
    p[field::Y_ZP] = g.y_zp as u32;
    p[field::X_ZP] = g.x_zp as u32;
    p
}

/// `[cout][kwords]` words of 4 signed weight bytes, zero past `K`.
fn pack_weights(g: &GemmView, kwords: usize) -> Vec<u32> {
    let k = g.k();
    let mut out = vec![0u32; g.cout * kwords];
    for (o, row) in g.weights.chunks_exact(k).enumerate() {
        for (t, &w) in row.iter().enumerate() {
            out[o * kwords + t / 4] |= u32::from(w as u8) << ((t % 4) * 8);
        }
    }
    out
}

/// `corr[o] = bias[o] − z_x·Σw[o] + 128·Σw[o]` (wrapping i32): the CPU's correction plus the
/// `128·Σw` the signed-byte GEMM leaves out.
fn corrections(g: &GemmView) -> Vec<u32> {
    g.bias
        .iter()
        .zip(&g.wsum)
        .map(|(&b, &s)| {
            b.wrapping_sub(g.x_zp.wrapping_mul(s))
                .wrapping_add(s.wrapping_mul(128)) as u32
        })
        .collect()
}
