//! The whole local-feature pipeline of a frame: keypoints and patches ([`FeatureExtractor`])
//! described by the int8 descriptor model ([`DescriptorModel`]), on the CPU or on the GPU
//! ([`Backend`]).
//!
//! On a GPU backend the whole frame runs on the GPU ([`GpuKeypoints`](crate::gpu::GpuKeypoints)
//! and [`GpuDescriptor`](crate::gpu::GpuDescriptor)): gray conversion, pyramid, corner response,
//! local maxima, orientation moments, patches and descriptors, with the patches going from the
//! sampling kernel straight into the descriptor plan. The CPU keeps the small, order-dependent
//! steps (per-level budget, grid selection, sub-pixel parabola) and the floating-point ones
//! (`atan2`, the patch grid's sine and cosine), so GPU keypoints, patches and descriptors equal
//! the CPU's bit for bit: the backend changes speed, never output. [`DescribedFeatures::backends`]
//! reports what ran where. A GPU failure at run time (device lost, a validation or shader error)
//! makes that frame's failed stages run on the CPU, reported by [`StageBackends::fell_back`] and
//! [`FeaturePipeline::last_fallback`]; after a lost device the pipeline stays on the CPU.

use std::time::Instant;

use super::{FeatureConfig, FeatureExtractor, Keypoint};
use crate::backend::{Backend, BackendKind, Selection, StageBackends};
use crate::descriptor::{DESCRIPTOR_DIM, DescriptorModel};
use crate::error::Result;
use crate::frame::Frame;
use crate::image::GrayImage;

/// Keypoints, patches and descriptors, borrowed from a [`FeaturePipeline`].
#[derive(Clone, Copy, Debug)]
pub struct DescribedFeatures<'a> {
    /// The keypoints.
    pub keypoints: &'a [Keypoint],
    /// Their patches (`PATCH_AREA` bytes each).
    pub patches: &'a [u8],
    /// Their descriptors (`DESCRIPTOR_DIM` values each), row-major.
    pub descriptors: &'a [i8],
    /// Which backend ran each stage for this frame.
    pub backends: StageBackends,
    /// Seconds for gray, keypoints and patches — and the descriptors too when the GPU ran them
    /// in the same submission (`backends.keypoints` and `backends.descriptors` both GPU).
    pub keypoints_s: f64,
    /// Seconds for the descriptors when they ran as a stage of their own (else 0).
    pub describe_s: f64,
}

/// Extractor plus descriptor model, with reusable buffers: one per camera stream.
#[derive(Debug)]
pub struct FeaturePipeline {
    extractor: FeatureExtractor,
    model: DescriptorModel,
    descriptors: Vec<i8>,
    selection: Selection,
    #[cfg(feature = "gpu")]
    gpu: Option<crate::gpu::GpuDescriptor>,
    #[cfg(feature = "gpu")]
    gpu_keypoints: Option<crate::gpu::GpuKeypoints>,
    last_fallback: Option<String>,
}

impl FeaturePipeline {
    /// A CPU pipeline with the given detector settings and descriptor model.
    pub fn new(config: FeatureConfig, model: DescriptorModel) -> Result<FeaturePipeline> {
        FeaturePipeline::with_selection(
            config,
            model,
            Selection::cpu(Backend::Cpu, "CPU requested"),
        )
    }

    /// A pipeline on the requested backend: [`Backend::Cpu`] is [`FeaturePipeline::new`];
    /// [`Backend::Gpu`] opens the GPU, runs the start-up self-test and compiles the model's plan
    /// for it, and is an error when any of that fails; [`Backend::Auto`] does the same but falls
    /// back to the CPU instead of failing ([`FeaturePipeline::selection`] says why).
    pub fn with_backend(
        config: FeatureConfig,
        model: DescriptorModel,
        backend: Backend,
    ) -> Result<FeaturePipeline> {
        let selection = crate::backend::select(backend)?;
        FeaturePipeline::with_selection(config, model, selection)
    }

    /// A pipeline on a backend already chosen ([`crate::backend::select`], or
    /// [`crate::backend::select_on`] with the app's own device). A GPU selection whose device
    /// cannot run the model's plan is an error for [`Backend::Gpu`] and the CPU for
    /// [`Backend::Auto`].
    pub fn with_selection(
        config: FeatureConfig,
        model: DescriptorModel,
        selection: Selection,
    ) -> Result<FeaturePipeline> {
        let extractor = FeatureExtractor::new(config)?;
        #[cfg(feature = "gpu")]
        {
            let mut selection = selection;
            let mut gpu = None;
            let mut gpu_keypoints = None;
            if let Some(ctx) = selection.gpu_context() {
                let built = crate::gpu::GpuDescriptor::from_model(ctx, &model)
                    .and_then(|d| Ok((d, crate::gpu::GpuKeypoints::new(ctx, extractor.config())?)));
                match built {
                    Ok((d, k)) => {
                        gpu = Some(d);
                        gpu_keypoints = Some(k);
                    }
                    Err(e) if selection.requested() == Backend::Gpu => return Err(e.into()),
                    Err(e) => {
                        selection = Selection::cpu(
                            selection.requested(),
                            format!("CPU, because the GPU cannot run this pipeline: {e}"),
                        );
                    }
                }
            }
            Ok(FeaturePipeline {
                extractor,
                model,
                descriptors: Vec::new(),
                selection,
                gpu,
                gpu_keypoints,
                last_fallback: None,
            })
        }
        #[cfg(not(feature = "gpu"))]
        {
            Ok(FeaturePipeline {
                extractor,
                model,
                descriptors: Vec::new(),
                selection,
                last_fallback: None,
            })
        }
    }

    /// The descriptor model.
    pub fn model(&self) -> &DescriptorModel {
        &self.model
    }

    /// The keypoint extractor.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// The backend choice and its reason.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Why the GPU was last bypassed at run time (the error of the failed GPU call), if ever.
    pub fn last_fallback(&self) -> Option<&str> {
        self.last_fallback.as_deref()
    }

    /// How many GPU buffers the pipeline's GPU kernels have allocated so far (each growth of a
    /// buffer counts); `None` on the CPU. Constant once the largest frame has been seen.
    pub fn gpu_buffer_allocations(&self) -> Option<u64> {
        #[cfg(feature = "gpu")]
        {
            match (&self.gpu, &self.gpu_keypoints) {
                (Some(d), Some(k)) => Some(d.buffer_allocations() + k.buffer_allocations()),
                (Some(d), None) => Some(d.buffer_allocations()),
                (None, Some(k)) => Some(k.buffer_allocations()),
                (None, None) => None,
            }
        }
        #[cfg(not(feature = "gpu"))]
        {
            None
        }
    }

    /// Keypoints, patches and descriptors of a camera frame (any pixel format).
    pub fn extract(&mut self, frame: &Frame<'_>) -> Result<DescribedFeatures<'_>> {
        let t = Instant::now();
        #[cfg(feature = "gpu")]
        {
            if let Some(b) = self.gpu_extract(crate::gpu::KeypointInput::Frame(frame)) {
                return self.describe(b, t);
            }
        }
        self.extractor.extract(frame)?;
        self.describe(self.cpu_keypoints(), t)
    }

    /// Keypoints, patches and descriptors of a gray image.
    pub fn extract_gray(&mut self, gray: &GrayImage) -> Result<DescribedFeatures<'_>> {
        let t = Instant::now();
        #[cfg(feature = "gpu")]
        {
            if let Some(b) = self.gpu_extract(crate::gpu::KeypointInput::Gray(gray)) {
                return self.describe(b, t);
            }
        }
        self.extractor.extract_gray(gray)?;
        self.describe(self.cpu_keypoints(), t)
    }

    /// The stage record of a frame whose keypoints came from the CPU: a fallback when the GPU
    /// was selected.
    fn cpu_keypoints(&self) -> StageBackends {
        StageBackends {
            fell_back: self.selection.kind() == BackendKind::Gpu,
            ..StageBackends::CPU
        }
    }

    /// Gray, keypoints, patches (and, when the descriptor plan runs there too, descriptors) on
    /// the GPU, into the extractor's buffers. `None` when the GPU is not used or failed for this
    /// frame (the reason is kept; a lost device is dropped for good).
    #[cfg(feature = "gpu")]
    fn gpu_extract(&mut self, input: crate::gpu::KeypointInput<'_>) -> Option<StageBackends> {
        let kp = self.gpu_keypoints.as_mut()?;
        let ex = &mut self.extractor;
        let describe = self.gpu.as_mut().map(|d| (d, &mut self.descriptors));
        let described = describe.is_some();
        let result = kp.extract(
            input,
            ex.pyramid.base_mut(),
            &mut ex.keypoints,
            &mut ex.patches,
            describe,
        );
        match result {
            Ok(desc_error) => {
                let mut b = StageBackends {
                    gray: BackendKind::Gpu,
                    keypoints: BackendKind::Gpu,
                    patches: BackendKind::Gpu,
                    descriptors: BackendKind::Cpu,
                    fell_back: false,
                };
                match desc_error {
                    None if described => b.descriptors = BackendKind::Gpu,
                    None => {}
                    Some(e) => {
                        self.gpu_failed(e);
                        b.fell_back = true;
                    }
                }
                Some(b)
            }
            Err(e) => {
                self.gpu_failed(e);
                None
            }
        }
    }

    /// Records a GPU failure; after a lost device no GPU stage is tried again.
    #[cfg(feature = "gpu")]
    fn gpu_failed(&mut self, e: crate::gpu::GpuError) {
        if matches!(e, crate::gpu::GpuError::DeviceLost { .. }) {
            self.gpu = None;
            self.gpu_keypoints = None;
        }
        self.last_fallback = Some(e.to_string());
    }

    /// Describes the extractor's patches unless `backends` says the GPU already did; `start`
    /// is when the frame's extraction began.
    fn describe(
        &mut self,
        mut backends: StageBackends,
        start: Instant,
    ) -> Result<DescribedFeatures<'_>> {
        let keypoints_s = start.elapsed().as_secs_f64();
        let t = Instant::now();
        let f = self.extractor.features();
        let n = f.keypoints.len();
        if backends.descriptors != BackendKind::Gpu {
            self.descriptors.clear();
            self.descriptors.resize(n * DESCRIPTOR_DIM, 0);
            #[cfg_attr(not(feature = "gpu"), allow(unused_mut))]
            let mut done = false;
            #[cfg(feature = "gpu")]
            {
                // Keypoints from the CPU: the descriptor plan may still run on the GPU.
                if backends.keypoints == BackendKind::Cpu
                    && let Some(gpu) = &mut self.gpu
                {
                    match gpu.describe(f.patches, n, &mut self.descriptors) {
                        Ok(()) => {
                            backends.descriptors = BackendKind::Gpu;
                            done = true;
                        }
                        Err(e) => {
                            if matches!(e, crate::gpu::GpuError::DeviceLost { .. }) {
                                self.gpu = None;
                                self.gpu_keypoints = None;
                            }
                            self.last_fallback = Some(e.to_string());
                        }
                    }
                }
            }
            if !done {
                backends.fell_back |= self.selection.kind() == BackendKind::Gpu;
                self.model
                    .describe(f.patches, n, &mut self.descriptors)
                    .map_err(super::FeatureError::from)?;
            }
        }
        Ok(DescribedFeatures {
            keypoints: f.keypoints,
            patches: f.patches,
            descriptors: &self.descriptors,
            backends,
            keypoints_s,
            describe_s: if backends.descriptors == BackendKind::Gpu
                && backends.keypoints == BackendKind::Gpu
            {
                0.0
            } else {
                t.elapsed().as_secs_f64()
            },
        })
    }
}
