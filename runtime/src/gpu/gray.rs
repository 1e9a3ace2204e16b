//! Camera frame to 8-bit gray on the GPU (`shaders/gray.wgsl`).

use crate::frame::{Frame, PixelFormat};
use crate::image::GrayImage;

use super::buffers::{GrowableBuffer, Readback, write_padded};
use super::{GRAY_WGSL, GpuContext, GpuError};

/// Invocations per workgroup; must match `WORKGROUP_SIZE` in `gray.wgsl`.
const WORKGROUP_SIZE: u32 = 64;
/// Output words (4 gray pixels each) per invocation; must match `WORDS_PER_INVOCATION`.
const WORDS_PER_INVOCATION: u32 = 4;
/// Size of the `Params` uniform in `gray.wgsl`: eight `u32`.
const PARAMS_SIZE: u64 = 32;

/// Converts camera frames to gray images on the GPU, bit-identical to
/// [`Frame::to_gray`](crate::frame::Frame::to_gray) for every pixel format.
///
/// The shader module, bind-group layout, pipeline and buffers are created once; buffers grow when a
/// larger frame arrives and are reused otherwise, so after warm-up a frame allocates no GPU memory.
/// A frame costs two small uniform/data uploads (`queue.write_buffer`), one submit (dispatch plus a
/// copy into a staging buffer) and one map of the staging buffer.
#[derive(Debug)]
pub struct GrayConverter {
    ctx: GpuContext,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    params: wgpu::Buffer,
    src: GrowableBuffer,
    dst: GrowableBuffer,
    readback: Readback,
    bind_group: wgpu::BindGroup,
}

impl GrayConverter {
    /// Compiles the kernel and creates its buffers on `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<GrayConverter, GpuError> {
        let device = ctx.device();
        ctx.scoped(|| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("gray.wgsl"),
                source: wgpu::ShaderSource::Wgsl(GRAY_WGSL.into()),
            });
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("gray"),
                entries: &[
                    super::uniform_entry(0, PARAMS_SIZE),
                    super::storage_entry(1, true),
                    super::storage_entry(2, false),
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("gray"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("gray"),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("to_gray"),
                compilation_options: Default::default(),
                cache: None,
            });
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gray params"),
                size: PARAMS_SIZE,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let src = GrowableBuffer::new(
                device,
                "gray src",
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                0,
            );
            let dst = GrowableBuffer::new(
                device,
                "gray dst",
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                0,
            );
            let readback = Readback::new(device, "gray readback", 0);
            let bind_group = bind_group(device, &layout, &params, &src, &dst);
            GrayConverter {
                ctx: ctx.clone(),
                pipeline,
                layout,
                params,
                src,
                dst,
                readback,
                bind_group,
            }
        })
    }

    /// The frame's gray image.
    pub fn convert(&mut self, frame: &Frame<'_>) -> Result<GrayImage, GpuError> {
        let mut out = GrayImage::new(0, 0);
        self.convert_into(frame, &mut out)?;
        Ok(out)
    }

    /// Writes the frame's gray image into `out`, reusing its buffer. On error `out` holds
    /// unspecified pixels of the frame's size.
    pub fn convert_into(&mut self, frame: &Frame<'_>, out: &mut GrayImage) -> Result<(), GpuError> {
        out.resize(frame.width(), frame.height());
        let Some(job) = self.prepare(frame)? else {
            return Ok(());
        };
        let dst_size = job.dst_size;
        let submission = self.ctx.clone().scoped(|| {
            let device = self.ctx.device().clone();
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gray"),
            });
            self.record(&job, &mut encoder);
            self.readback.ensure(&device, dst_size);
            self.readback
                .encode_copy(&mut encoder, self.dst.buffer(), dst_size);
            self.ctx.queue().submit([encoder.finish()])
        })?;
        self.readback
            .read(&self.ctx, submission, dst_size, out.as_mut_slice())
    }

    /// Checks the frame and works out the conversion's parameters; `None` for an empty frame.
    pub(crate) fn prepare<'f>(&self, frame: &Frame<'f>) -> Result<Option<GrayJob<'f>>, GpuError> {
        let (width, height) = (frame.width(), frame.height());
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0 {
            return Ok(None);
        }
        let bpp = frame.format().bytes_per_pixel();
        let stride = frame.stride();
        // The bytes the kernel reads: from the first pixel to the end of the last row's pixels
        // (`Frame` guarantees the plane holds at least that many).
        let used = stride * (height as usize - 1) + width as usize * bpp;
        let src_bytes = frame
            .plane_data()
            .get(..used)
            .ok_or_else(|| GpuError::InvalidInput {
                reason: format!("frame plane shorter than its layout ({used} bytes)"),
            })?;
        let dst_words = pixels.div_ceil(4);
        let dst_size = dst_words * 4;
        // Source rounded up to whole words.
        let src_size = (used as u64).div_ceil(4) * 4;
        let limits = self.ctx.device().limits();
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let needed = src_size.max(dst_size);
        if needed > limit || stride > u32::MAX as usize || used > u32::MAX as usize {
            return Err(GpuError::TooLarge { needed, limit });
        }
        let (r_shift, b_shift) = match frame.format() {
            PixelFormat::Rgba8 => (0u32, 16u32),
            PixelFormat::Bgra8 => (16, 0),
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::Nv21 => (0, 0),
        };
        let params: [u32; 8] = [
            width,
            height,
            stride as u32,
            bpp as u32,
            r_shift,
            8,
            b_shift,
            dst_words as u32,
        ];
        let mut params_bytes = [0u8; PARAMS_SIZE as usize];
        for (chunk, value) in params_bytes.chunks_exact_mut(4).zip(params) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        let groups = (dst_words as u32)
            .div_ceil(WORDS_PER_INVOCATION)
            .div_ceil(WORKGROUP_SIZE);
        let max_per_dim = limits.max_compute_workgroups_per_dimension.max(1);
        let groups = if groups <= max_per_dim {
            (groups, 1)
        } else {
            (max_per_dim, groups.div_ceil(max_per_dim))
        };
        Ok(Some(GrayJob {
            src_bytes,
            src_size,
            dst_size,
            params_bytes,
            groups,
        }))
    }

    /// Uploads the frame and records the conversion into `encoder`: afterwards the gray image is
    /// in [`GrayConverter::output`] (its first `job.dst_size` bytes). Call inside an error scope.
    pub(crate) fn record(&mut self, job: &GrayJob<'_>, encoder: &mut wgpu::CommandEncoder) {
        let device = self.ctx.device();
        let queue = self.ctx.queue();
        let grown_src = self.src.ensure(device, job.src_size);
        let grown_dst = self.dst.ensure(device, job.dst_size);
        if grown_src || grown_dst {
            self.bind_group = bind_group(device, &self.layout, &self.params, &self.src, &self.dst);
        }
        queue.write_buffer(&self.params, 0, &job.params_bytes);
        write_padded(queue, self.src.buffer(), job.src_bytes);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gray"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(job.groups.0, job.groups.1, 1);
    }

    /// The buffer [`GrayConverter::record`] writes the gray image to (packed bytes, no row
    /// padding).
    pub(crate) fn output(&self) -> &wgpu::Buffer {
        self.dst.buffer()
    }

    /// How many GPU buffers this converter has allocated so far, counting each reallocation.
    /// Constant once the largest frame size has been seen: the no-allocation-after-warm-up check.
    pub fn buffer_allocations(&self) -> u64 {
        self.src.allocations() + self.dst.allocations() + self.readback.allocations()
    }

    /// The context this converter runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
}

/// One prepared conversion: the frame bytes to upload and the kernel's parameters.
#[derive(Debug)]
pub(crate) struct GrayJob<'f> {
    src_bytes: &'f [u8],
    src_size: u64,
    /// Bytes of the gray output, rounded up to whole words.
    pub(crate) dst_size: u64,
    params_bytes: [u8; PARAMS_SIZE as usize],
    groups: (u32, u32),
}

fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    params: &wgpu::Buffer,
    src: &GrowableBuffer,
    dst: &GrowableBuffer,
) -> wgpu::BindGroup {
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("gray"),
        layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: src.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: dst.buffer().as_entire_binding(),
            },
        ],
    })
}
