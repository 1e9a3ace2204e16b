//! The hot-swappable model handle the frame path reads.
//!
//! The frame path calls [`ModelSlot::current`] once per frame: an `arc-swap` load, lock-free and
//! wait-free for readers, so activating a new model never blocks (or is blocked by) a frame in
//! flight. A frame that started on the old model finishes on it (it holds its own `Arc`); the
//! next frame sees the new one. The agent replaces the model only after it loaded and passed its
//! self-check ([`self_check`]); when that fails the slot keeps the old model.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, PATCH_PIXELS, PATCH_SIZE};

/// A model loaded by the runtime, with the release it came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// Release number.
    pub version: u64,
    /// SHA-256 of its file.
    pub sha256: [u8; 32],
    /// The loaded model (clone it, or use `describe_with` with a per-thread workspace).
    pub model: DescriptorModel,
}

/// The active model, swapped atomically.
#[derive(Debug, Default)]
pub struct ModelSlot {
    current: ArcSwapOption<LoadedModel>,
}

impl ModelSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model to run this frame (lock-free).
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// The active version, if any (lock-free).
    pub fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|m| m.version)
    }

    /// Empties the slot (the next frame sees no model); returns the previous one.
    pub fn clear(&self) -> Option<Arc<LoadedModel>> {
        self.current.swap(None)
    }

    /// Makes `model` the one the next frame uses; returns the previous one.
    pub fn swap(&self, model: LoadedModel) -> Option<Arc<LoadedModel>> {
        self.current.swap(Some(Arc::new(model)))
    }
}

/// Loads `bytes` with the runtime and checks it on a fixed reference patch: the load must
/// succeed, the graph must be a descriptor model, and the descriptor of a textured patch must be
/// non-zero. Returns the loaded model, or why it was refused.
pub fn self_check(bytes: &[u8]) -> Result<DescriptorModel, String> {
    let mut model = DescriptorModel::from_onnx_bytes(bytes).map_err(|e| e.to_string())?;
    let mut patch = vec![0u8; PATCH_PIXELS];
    for (i, p) in patch.iter_mut().enumerate() {
        let (x, y) = (i % PATCH_SIZE, i / PATCH_SIZE);
        *p = ((x * 7 + y * 3 + (x * y) % 11) * 5 % 256) as u8;
    }
    let mut out = vec![0i8; DESCRIPTOR_DIM];
    model
        .describe(&patch, 1, &mut out)
        .map_err(|e| e.to_string())?;
    if out.iter().all(|&v| v == 0) {
        return Err("the reference patch's descriptor is all zeros".into());
    }
    Ok(model)
}
