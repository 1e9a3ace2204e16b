//! The whole local-feature pipeline of a frame: keypoints and patches ([`FeatureExtractor`])
//! described by the int8 descriptor model ([`DescriptorModel`]), on the CPU or — for the
//! descriptor stage — on the GPU ([`Backend`]).
//!
//! GPU descriptors equal CPU descriptors bit for bit, so the backend changes speed, never output.
//! Gray conversion, keypoints and patches run on the CPU in this version (their GPU kernels are
//! not written yet); [`DescribedFeatures::backends`] reports what ran where. A GPU failure at run
//! time (device lost, a validation or shader error) makes that frame's descriptors come from the
//! CPU, reported by [`StageBackends::fell_back`] and [`FeaturePipeline::last_fallback`]; after a
//! lost device the pipeline stays on the CPU.

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
            if let Some(ctx) = selection.gpu_context() {
                match crate::gpu::GpuDescriptor::from_model(ctx, &model) {
                    Ok(g) => gpu = Some(g),
                    Err(e) if selection.requested() == Backend::Gpu => return Err(e.into()),
                    Err(e) => {
                        selection = Selection::cpu(
                            selection.requested(),
                            format!("CPU, because the GPU cannot run this model: {e}"),
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

    /// Keypoints, patches and descriptors of a camera frame (any pixel format).
    pub fn extract(&mut self, frame: &Frame<'_>) -> Result<DescribedFeatures<'_>> {
        self.extractor.extract(frame)?;
        self.describe()
    }

    /// Keypoints, patches and descriptors of a gray image.
    pub fn extract_gray(&mut self, gray: &GrayImage) -> Result<DescribedFeatures<'_>> {
        self.extractor.extract_gray(gray)?;
        self.describe()
    }

    fn describe(&mut self) -> Result<DescribedFeatures<'_>> {
        let f = self.extractor.features();
        let n = f.keypoints.len();
        self.descriptors.clear();
        self.descriptors.resize(n * DESCRIPTOR_DIM, 0);
        let mut backends = StageBackends::CPU;
        #[cfg_attr(not(feature = "gpu"), allow(unused_mut))]
        let mut done = false;
        #[cfg(feature = "gpu")]
        {
            if let Some(gpu) = &mut self.gpu {
                match gpu.describe(f.patches, n, &mut self.descriptors) {
                    Ok(()) => {
                        backends.descriptors = BackendKind::Gpu;
                        done = true;
                    }
                    Err(e) => {
                        if matches!(e, crate::gpu::GpuError::DeviceLost { .. }) {
                            self.gpu = None;
                        }
                        self.last_fallback = Some(e.to_string());
                    }
                }
            }
        }
        if !done {
            backends.fell_back = self.selection.kind() == BackendKind::Gpu;
            self.model
                .describe(f.patches, n, &mut self.descriptors)
                .map_err(super::FeatureError::from)?;
        }
        Ok(DescribedFeatures {
            keypoints: f.keypoints,
            patches: f.patches,
            descriptors: &self.descriptors,
            backends,
        })
    }
}
