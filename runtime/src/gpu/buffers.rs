//! Buffers that kernels keep across frames: grown on demand, never shrunk, and a staging buffer for
//! reading results back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{GpuContext, GpuError};

/// Buffer sizes are rounded up to this many bytes, so small size changes do not reallocate.
const GRANULE: u64 = 4096;

/// A GPU buffer that keeps its allocation across frames and grows only when asked for more.
#[derive(Debug)]
pub(crate) struct GrowableBuffer {
    buffer: wgpu::Buffer,
    label: &'static str,
    usage: wgpu::BufferUsages,
    allocations: u64,
}

impl GrowableBuffer {
    /// A buffer of at least `size` bytes.
    pub(crate) fn new(
        device: &wgpu::Device,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
    ) -> GrowableBuffer {
        GrowableBuffer {
            buffer: create(device, label, usage, size),
            label,
            usage,
            allocations: 1,
        }
    }

    /// Makes the buffer hold at least `size` bytes; returns whether it was reallocated (bind
    /// groups that refer to it must then be rebuilt). The old contents are not kept.
    pub(crate) fn ensure(&mut self, device: &wgpu::Device, size: u64) -> bool {
        if self.buffer.size() >= size {
            return false;
        }
        self.buffer.destroy();
        self.buffer = create(device, self.label, self.usage, size);
        self.allocations += 1;
        true
    }

    /// The buffer.
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// How many times a buffer was allocated, the first one included.
    pub(crate) fn allocations(&self) -> u64 {
        self.allocations
    }
}

fn create(
    device: &wgpu::Device,
    label: &'static str,
    usage: wgpu::BufferUsages,
    size: u64,
) -> wgpu::Buffer {
    let size = size.max(1).div_ceil(GRANULE) * GRANULE;
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: false,
    })
}

/// Writes `data` at the start of `buffer`, zero-padding the last word: `queue.write_buffer` needs
/// a length that is a multiple of 4 and frames need not have one. Allocates nothing.
pub(crate) fn write_padded(queue: &wgpu::Queue, buffer: &wgpu::Buffer, data: &[u8]) {
    let whole = data.len() & !3;
    if whole > 0 {
        queue.write_buffer(buffer, 0, &data[..whole]);
    }
    let rest = &data[whole..];
    if !rest.is_empty() {
        let mut tail = [0u8; 4];
        tail[..rest.len()].copy_from_slice(rest);
        queue.write_buffer(buffer, whole as u64, &tail);
    }
}

const MAP_PENDING: u8 = 0;
const MAP_OK: u8 = 1;
const MAP_FAILED: u8 = 2;

/// A staging buffer (`MAP_READ | COPY_DST`) that brings a kernel's output back to the CPU.
#[derive(Debug)]
pub(crate) struct Readback {
    staging: GrowableBuffer,
    /// Written by the map callback; an `Arc` so the callback owns a handle without allocating.
    state: Arc<AtomicU8>,
}

impl Readback {
    /// A staging buffer of at least `size` bytes.
    pub(crate) fn new(device: &wgpu::Device, label: &'static str, size: u64) -> Readback {
        Readback {
            staging: GrowableBuffer::new(
                device,
                label,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                size,
            ),
            state: Arc::new(AtomicU8::new(MAP_PENDING)),
        }
    }

    /// Makes room for `size` bytes (see [`GrowableBuffer::ensure`]).
    pub(crate) fn ensure(&mut self, device: &wgpu::Device, size: u64) -> bool {
        self.staging.ensure(device, size)
    }

    /// How many times the staging buffer was allocated, the first one included.
    pub(crate) fn allocations(&self) -> u64 {
        self.staging.allocations()
    }

    /// Records a copy of `size` bytes of `source` into the staging buffer.
    pub(crate) fn encode_copy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        source: &wgpu::Buffer,
        size: u64,
    ) {
        encoder.copy_buffer_to_buffer(source, 0, self.staging.buffer(), 0, size);
    }

    /// After `submission` (which contains [`Readback::encode_copy`] of `size` bytes) is submitted:
    /// waits for it, maps the staging buffer and copies its first `out.len()` bytes into `out`.
    /// `size` must be a multiple of 4 and at least `out.len()`.
    pub(crate) fn read(
        &self,
        ctx: &GpuContext,
        submission: wgpu::SubmissionIndex,
        size: u64,
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        let staging = self.staging.buffer();
        self.state.store(MAP_PENDING, Ordering::Release);
        let state = Arc::clone(&self.state);
        staging.map_async(wgpu::MapMode::Read, 0..size, move |result| {
            let value = if result.is_ok() { MAP_OK } else { MAP_FAILED };
            state.store(value, Ordering::Release);
        });
        ctx.wait(submission)?;
        match self.state.load(Ordering::Acquire) {
            MAP_OK => {}
            MAP_FAILED => {
                ctx.check_alive()?;
                return Err(GpuError::Readback {
                    reason: "mapping the staging buffer failed".into(),
                });
            }
            _ => {
                staging.unmap();
                return Err(GpuError::Readback {
                    reason: "the staging buffer was not mapped after the wait".into(),
                });
            }
        }
        let copied = match staging.get_mapped_range(0..size) {
            Ok(view) => {
                let n = out.len().min(view.len());
                out[..n].copy_from_slice(&view[..n]);
                if n == out.len() {
                    Ok(())
                } else {
                    Err(GpuError::Readback {
                        reason: format!("{} bytes mapped, {} expected", view.len(), out.len()),
                    })
                }
            }
            Err(e) => Err(GpuError::Readback {
                reason: format!("reading the mapped staging buffer: {e}"),
            }),
        };
        staging.unmap();
        copied
    }
}
