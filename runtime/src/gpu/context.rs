//! The device and queue every kernel runs on, plus the error-scope and wait helpers they share.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{GpuError, GpuUnavailable};

/// How long [`GpuContext::wait`] waits for one submission before giving up. Generous, because
/// software adapters on a loaded CI machine are slow; a real GPU finishes a frame in milliseconds.
const WAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A wgpu device and its queue, with what is known about the adapter behind them.
///
/// Cheap to clone (wgpu handles are reference counted); every kernel object keeps a clone.
#[derive(Clone, Debug)]
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Set by the device-lost callback of a device this context opened itself.
    lost: Arc<Mutex<Option<String>>>,
    /// The last error that escaped every error scope (only for devices this context opened).
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the best adapter among `backends` and a device on it, with the adapter's full limits.
    ///
    /// Blocks until the adapter and device are ready. Fails with [`GpuUnavailable`] (never a panic)
    /// when no adapter matches or the device request is refused. Tests should ask for
    /// `Backends::VULKAN` only: with more backends enabled wgpu may silently fall back to a GL
    /// adapter.
    ///
    /// The context installs a device-lost callback and an uncaptured-error handler that record
    /// instead of panicking (wgpu's default handler panics).
    pub fn new(backends: wgpu::Backends) -> Result<GpuContext, GpuUnavailable> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        };
        let adapter =
            pollster::block_on(instance.request_adapter(&options)).map_err(|e| GpuUnavailable {
                reason: format!("no adapter for backends {backends:?}: {e}"),
            })?;
        let info = adapter.get_info();
        let device_desc = wgpu::DeviceDescriptor {
            label: Some("sextant"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&device_desc)).map_err(|e| {
                GpuUnavailable {
                    reason: format!("adapter {:?} refused a device: {e}", info.name),
                }
            })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_slot = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lost_slot.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_slot = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            *uncaptured_slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        }));

        Ok(GpuContext {
            device,
            queue,
            info,
            lost,
            uncaptured,
        })
    }

    /// Wraps a device and queue the caller already has (an app that renders with wgpu, a test
    /// with its own device).
    ///
    /// The caller keeps ownership of the device's callbacks: this context installs neither a
    /// device-lost callback nor an uncaptured-error handler. A lost device is then detected when
    /// a submission is rejected, and reported as [`GpuError::DeviceLost`] like for a context from
    /// [`GpuContext::new`]. Install an uncaptured-error handler on the device if wgpu's default
    /// (which panics) is not wanted; this crate's own work never reaches it.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue) -> GpuContext {
        GpuContext {
            device: device.clone(),
            queue: queue.clone(),
            info: device.adapter_info(),
            lost: Arc::new(Mutex::new(None)),
            uncaptured: Arc::new(Mutex::new(None)),
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter the device runs on (name, backend, driver, device type).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Whether the adapter is a software rasteriser (lavapipe, WARP, SwiftShader): fine for
    /// correctness, never for speed claims.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Why the device was lost, if it was (only known for devices opened by [`GpuContext::new`]).
    pub fn lost_reason(&self) -> Option<String> {
        self.lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the last error that escaped all error scopes, if any (only recorded for devices
    /// opened by [`GpuContext::new`]). This crate's own work always runs inside error scopes, so
    /// this is normally `None`.
    pub fn take_uncaptured_error(&self) -> Option<String> {
        self.uncaptured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Fails with [`GpuError::DeviceLost`] if the device is known to be lost.
    pub(crate) fn check_alive(&self) -> Result<(), GpuError> {
        match self.lost_reason() {
            Some(reason) => Err(GpuError::DeviceLost { reason }),
            None => Ok(()),
        }
    }

    /// Runs `work` inside out-of-memory, internal and validation error scopes and turns whatever
    /// they caught into a [`GpuError`].
    ///
    /// Error scopes are per thread: `work` must issue its wgpu calls on the calling thread.
    pub(crate) fn scoped<T>(&self, work: impl FnOnce() -> T) -> Result<T, GpuError> {
        // wgpu reports a lost device only through the device-lost callback, which runs during a
        // poll; operations on a lost device fail silently (no error scope sees them). A
        // non-blocking poll first lets a pending loss surface here as an error value.
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = work();
        // Pop in reverse order of pushing.
        let validation = pollster::block_on(validation.pop());
        let internal = pollster::block_on(internal.pop());
        let oom = pollster::block_on(oom.pop());
        self.check_alive()?;
        match validation.or(internal).or(oom) {
            Some(e) => Err(GpuError::from(e)),
            None => Ok(out),
        }
    }

    /// Blocks until `submission` has finished on the GPU and its map callbacks have run.
    pub(crate) fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(WAIT_TIMEOUT),
            })
            .map(|_| ())
            .map_err(|e| {
                let _ = self.device.poll(wgpu::PollType::Poll);
                match (self.lost_reason(), &e) {
                    (Some(reason), _) => GpuError::DeviceLost { reason },
                    // The submission never happened, yet no error scope reported a validation,
                    // internal or out-of-memory error: wgpu drops only device-lost errors that
                    // way (a caller-provided device's loss callback is not ours to see).
                    (None, wgpu::PollError::WrongSubmissionIndex(..)) => GpuError::DeviceLost {
                        reason: format!("the submission was rejected ({e}); the device is lost"),
                    },
                    (None, _) => GpuError::Readback {
                        reason: format!("waiting for the GPU: {e}"),
                    },
                }
            })
    }
}
