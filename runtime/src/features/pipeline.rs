//! The whole local-feature pipeline of a frame: keypoints and patches ([`FeatureExtractor`])
//! described by the int8 descriptor model ([`DescriptorModel`]).

use super::{FeatureConfig, FeatureExtractor, Keypoint};
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
}

/// Extractor plus descriptor model, with reusable buffers: one per camera stream.
#[derive(Debug)]
pub struct FeaturePipeline {
    extractor: FeatureExtractor,
    model: DescriptorModel,
    descriptors: Vec<i8>,
}

impl FeaturePipeline {
    /// A pipeline with the given detector settings and descriptor model.
    pub fn new(config: FeatureConfig, model: DescriptorModel) -> Result<FeaturePipeline> {
        Ok(FeaturePipeline {
            extractor: FeatureExtractor::new(config)?,
            model,
            descriptors: Vec::new(),
        })
    }

    /// The descriptor model.
    pub fn model(&self) -> &DescriptorModel {
        &self.model
    }

    /// The keypoint extractor.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
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
        self.model
            .describe(f.patches, n, &mut self.descriptors)
            .map_err(super::FeatureError::from)?;
        Ok(DescribedFeatures {
            keypoints: f.keypoints,
            patches: f.patches,
            descriptors: &self.descriptors,
        })
    }
}
