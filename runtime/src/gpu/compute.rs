//! What the descriptor and matching kernels share: one bind-group layout (a uniform parameter
//! record, a read-only source, a read-write destination, a read-only constant buffer), pipeline
//! creation with the `dot4I8Packed` / portable choice, parameter records and dispatch grids.

use super::{GpuContext, GpuError};

/// Invocations per workgroup of every kernel (`WORKGROUP_SIZE` in the shaders).
pub(crate) const WORKGROUP_SIZE: u32 = 64;
/// Bytes of one parameter record (32 × u32, the `Params` structs of the shaders).
pub(crate) const PARAMS_SIZE: u64 = 128;
/// The line of a shader that calls the built-in packed dot product.
const DOT4_BUILTIN: &str = "return dot4I8Packed(a, b);";
/// Its exact replacement without the language feature.
const DOT4_PORTABLE: &str = "return dot4_portable(a, b);";

/// How the kernels compute the dot product of 4 packed signed bytes. Both give the same integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dot4 {
    /// `dot4I8Packed` when the adapter compiles it, else the portable form.
    #[default]
    Auto,
    /// WGSL's `dot4I8Packed` (the `packed_4x8_integer_dot_product` language feature).
    Builtin,
    /// Sign-extended bytes multiplied and added one by one (`dot4_portable` in the shaders).
    Portable,
}

/// A shader source with the dot product chosen: `builtin = false` swaps `dot4I8Packed` for the
/// portable form.
pub fn with_dot4(source: &str, builtin: bool) -> String {
    if builtin {
        source.to_owned()
    } else {
        source.replace(DOT4_BUILTIN, DOT4_PORTABLE)
    }
}

/// A shader module with pipelines for its entry points, all on one bind-group layout.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub layout: wgpu::BindGroupLayout,
    pub pipelines: Vec<wgpu::ComputePipeline>,
    /// Whether the module uses `dot4I8Packed`.
    pub builtin_dot4: bool,
}

impl Kernels {
    /// Compiles `source` (label `name`) with one pipeline per entry point of `entries`.
    pub fn new(
        ctx: &GpuContext,
        name: &'static str,
        source: &str,
        entries: &[&'static str],
        dot4: Dot4,
    ) -> Result<Kernels, GpuError> {
        match dot4 {
            Dot4::Builtin => Kernels::build(ctx, name, source, entries, true),
            Dot4::Portable => Kernels::build(ctx, name, source, entries, false),
            Dot4::Auto => Kernels::build(ctx, name, source, entries, true).or_else(|e| match e {
                GpuError::Validation { .. } => Kernels::build(ctx, name, source, entries, false),
                other => Err(other),
            }),
        }
    }

    fn build(
        ctx: &GpuContext,
        name: &'static str,
        source: &str,
        entries: &[&'static str],
        builtin: bool,
    ) -> Result<Kernels, GpuError> {
        let device = ctx.device();
        let source = with_dot4(source, builtin);
        ctx.scoped(|| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(name),
                entries: &[
                    super::uniform_entry(0, PARAMS_SIZE),
                    super::storage_entry(1, true),
                    super::storage_entry(2, false),
                    super::storage_entry(3, true),
                ],
            });
            let pipelines = super::compute_pipelines(device, name, &layout, &module, entries);
            Kernels {
                layout,
                pipelines,
                builtin_dot4: builtin,
            }
        })
    }

    /// A bind group: parameter record at `params_offset` of `params`, then source, destination
    /// and constant buffers.
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        params: &wgpu::Buffer,
        params_offset: u64,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        aux: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: params,
                        offset: params_offset,
                        size: wgpu::BufferSize::new(PARAMS_SIZE),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: src.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: dst.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: aux.as_entire_binding(),
                },
            ],
        })
    }
}

/// Byte distance between parameter records in one uniform buffer (a multiple of the device's
/// uniform offset alignment).
pub(crate) fn params_stride(device: &wgpu::Device) -> u64 {
    let align = u64::from(device.limits().min_uniform_buffer_offset_alignment).max(1);
    PARAMS_SIZE.div_ceil(align) * align
}

/// The workgroup grid for `total` invocations: 1-D, or 2-D when one dimension would exceed the
/// device's per-dimension limit (the shaders fold `gid.y` back in).
pub(crate) fn grid(device: &wgpu::Device, total: u32) -> (u32, u32) {
    let groups = total.div_ceil(WORKGROUP_SIZE);
    let max = device.limits().max_compute_workgroups_per_dimension.max(1);
    if groups <= max {
        (groups, 1)
    } else {
        (max, groups.div_ceil(max))
    }
}

/// Writes `words` (at most 32) as a little-endian parameter record at `offset` of `bytes`.
pub(crate) fn put_params(bytes: &mut [u8], offset: usize, words: &[u32]) {
    for (i, w) in words.iter().enumerate().take(32) {
        let at = offset + i * 4;
        if let Some(dst) = bytes.get_mut(at..at + 4) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// The largest storage binding the device allows, in bytes.
pub(crate) fn binding_limit(device: &wgpu::Device) -> u64 {
    let limits = device.limits();
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
}
