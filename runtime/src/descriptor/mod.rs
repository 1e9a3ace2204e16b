//! Learned int8 patch descriptors: ONNX models parsed into a plan of the runtime's own int8
//! kernels, with tract-onnx as reference executor and fallback.
//!
//! A descriptor model maps oriented, scale-normalised 32×32 u8 patches (`[N,1,32,32]`) to int8
//! descriptors (`[N, DESCRIPTOR_DIM]`, L2-normalised to a gain of 127, so the dot product of two
//! descriptors is ≈ 127² · cosine). The file is ONNX in the QOperator form with per-tensor
//! scales. Loading works in three layers:
//!
//! 1. [`onnx`] decodes the protobuf with prost into the schema subset the compiler reads
//!    (bounds-checked; corrupt or truncated bytes are a [`DescriptorError::Decode`]).
//! 2. [`plan`] compiles the graph into kernel steps (im2col + int8 GEMM with i32 accumulation,
//!    fixed-point requantisation, exact integer L2 normalisation — see `docs/int8-arithmetic.md`).
//!    An op outside the subset is a [`DescriptorError::UnsupportedOp`] naming it.
//! 3. With the `tract` feature, [`reference::TractModel`] loads the same bytes in tract; it is
//!    the reference for parity tests and the fallback engine when the plan refuses the graph.
//!
//! [`kernels`] holds the scalar GEMM (the oracle) and its AVX2 / NEON variants, and the direct
//! kernels (3×3-style small-`Cin` convolution, depthwise convolution, row-wise matrix product
//! with fused requantisation; portable, AVX2 and AVX-VNNI) that the CPU executor picks for the
//! steps they fit, chosen at run time; all are bit-identical, so descriptors do not depend on
//! the CPU, the kernel choice, the batch size or how a batch is split across threads.
//!
//! ```
//! use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, PATCH_PIXELS};
//!
//! let mut model = DescriptorModel::embedded_default()?;
//! let patches = vec![128u8; 2 * PATCH_PIXELS];
//! let mut out = vec![0i8; 2 * DESCRIPTOR_DIM];
//! model.describe(&patches, 2, &mut out)?;
//! assert_eq!(out[..DESCRIPTOR_DIM], out[DESCRIPTOR_DIM..]);
//! # Ok::<(), sextant_runtime::descriptor::DescriptorError>(())
//! ```

pub mod error;
pub mod kernels;
pub mod onnx;
pub mod plan;
#[cfg(feature = "tract")]
pub mod reference;

pub use error::{DescriptorError, Result};
pub use kernels::Isa;
pub use plan::{DirectKernels, Plan, Workspace};

use sha2::{Digest, Sha256};

/// Length of a descriptor (int8 values).
pub const DESCRIPTOR_DIM: usize = 64;
/// Side of a descriptor patch in pixels.
pub const PATCH_SIZE: usize = 32;
/// Pixels in one patch (`PATCH_SIZE²`), the stride between patches in a batch.
pub const PATCH_PIXELS: usize = PATCH_SIZE * PATCH_SIZE;
/// The L2 norm the int8 descriptors are scaled to (their quantisation gain).
pub const DESCRIPTOR_GAIN: i32 = 127;

/// The model shipped with the runtime (`models/descriptor-v1/model.onnx`).
pub static EMBEDDED_MODEL: &[u8] = include_bytes!("../../../models/descriptor-v1/model.onnx");

/// Identity of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model name (ONNX metadata `name`, else the graph name).
    pub name: String,
    /// Model version (ONNX metadata `version`, else `model_version`).
    pub version: String,
    /// Lowercase hex sha256 of the ONNX bytes.
    pub sha256: String,
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// The runtime's int8 kernels, with the GEMM variant in use.
    Kernels(Isa),
    /// tract-onnx (the graph is outside the kernel subset).
    Tract,
}

#[derive(Debug, Clone)]
enum Backend {
    Kernels(Box<Plan>),
    #[cfg(feature = "tract")]
    Tract(reference::TractModel),
}

/// A loaded descriptor model with its own scratch workspace.
#[derive(Debug, Clone)]
pub struct DescriptorModel {
    info: ModelInfo,
    backend: Backend,
    ws: Workspace,
}

impl DescriptorModel {
    /// The model embedded in the runtime at compile time.
    pub fn embedded_default() -> Result<DescriptorModel> {
        DescriptorModel::from_onnx_bytes(EMBEDDED_MODEL)
    }

    /// Loads a model from ONNX bytes: compiled for the int8 kernels when its graph is inside the
    /// subset; otherwise, with the `tract` feature, run by tract (logged), and without it an
    /// [`DescriptorError::UnsupportedOp`] naming the op. Corrupt bytes and graphs that are not
    /// descriptor models (`u8 [N,1,32,32]` → `i8 [N, DESCRIPTOR_DIM]`) are errors, never panics.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<DescriptorModel> {
        let proto = onnx::decode_model(bytes)?;
        let info = info_of(&proto, bytes);
        match Plan::compile(&proto) {
            Ok(plan) => {
                check_interface(&plan)?;
                Ok(DescriptorModel {
                    info,
                    backend: Backend::Kernels(Box::new(plan)),
                    ws: Workspace::default(),
                })
            }
            #[cfg(feature = "tract")]
            Err(e @ DescriptorError::UnsupportedOp { .. }) => {
                // The runtime has no logger; callers see the fallback through `engine()`.
                let _ = e;
                let t = reference::TractModel::from_onnx_bytes(bytes)?;
                if t.dim() != DESCRIPTOR_DIM {
                    return Err(DescriptorError::Interface(format!(
                        "output dimension {} is not {DESCRIPTOR_DIM}",
                        t.dim()
                    )));
                }
                Ok(DescriptorModel {
                    info,
                    backend: Backend::Tract(t),
                    ws: Workspace::default(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Name, version and sha256 of the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The engine that runs this model.
    pub fn engine(&self) -> Engine {
        match &self.backend {
            Backend::Kernels(p) => Engine::Kernels(p.isa()),
            #[cfg(feature = "tract")]
            Backend::Tract(_) => Engine::Tract,
        }
    }

    /// Forces a GEMM variant (tests and benchmarks); unavailable variants fall back to scalar.
    /// No effect on a tract-run model.
    #[allow(irrefutable_let_patterns)] // without `tract`, Kernels is the only backend
    pub fn set_isa(&mut self, isa: Isa) {
        if let Backend::Kernels(p) = &mut self.backend {
            p.set_isa(isa);
        }
    }

    /// When the CPU runs its direct kernels rather than the generic im2col + GEMM path (tests
    /// and benchmarks; the output is the same in every mode). No effect on a tract-run model.
    #[allow(irrefutable_let_patterns)] // without `tract`, Kernels is the only backend
    pub fn set_direct_kernels(&mut self, mode: DirectKernels) {
        if let Backend::Kernels(p) = &mut self.backend {
            p.set_direct_kernels(mode);
        }
    }

    /// The compiled plan, when the int8 kernels run this model.
    pub fn plan(&self) -> Option<&Plan> {
        match &self.backend {
            Backend::Kernels(p) => Some(p),
            #[cfg(feature = "tract")]
            Backend::Tract(_) => None,
        }
    }

    /// Describes `n` patches (`patches`: `n·32·32` bytes, row-major, patch after patch) into
    /// `out` (`n·DESCRIPTOR_DIM` values), using the model's own workspace.
    pub fn describe(&mut self, patches: &[u8], n: usize, out: &mut [i8]) -> Result<()> {
        let mut ws = std::mem::take(&mut self.ws);
        let r = self.describe_with(&mut ws, patches, n, out);
        self.ws = ws;
        r
    }

    /// Like [`DescriptorModel::describe`] with a caller-owned workspace, so several threads can
    /// share one model (`&self`). Results do not depend on how a batch is split.
    pub fn describe_with(
        &self,
        ws: &mut Workspace,
        patches: &[u8],
        n: usize,
        out: &mut [i8],
    ) -> Result<()> {
        if Some(patches.len()) != n.checked_mul(PATCH_PIXELS)
            || Some(out.len()) != n.checked_mul(DESCRIPTOR_DIM)
        {
            return Err(DescriptorError::InvalidInput(format!(
                "{} patch bytes and {} output values do not fit {n} patches",
                patches.len(),
                out.len()
            )));
        }
        match &self.backend {
            Backend::Kernels(p) => p.run(ws, patches, n, plan::Output::I8(out)),
            #[cfg(feature = "tract")]
            Backend::Tract(t) => t.describe(patches, n, out),
        }
    }
}

fn check_interface(plan: &Plan) -> Result<()> {
    let (idt, ishape) = plan.input_spec();
    if idt != plan::DType::U8 || ishape != [1, PATCH_SIZE, PATCH_SIZE] {
        return Err(DescriptorError::Interface(format!(
            "input is {idt:?} {ishape:?} per patch, need U8 [1, {PATCH_SIZE}, {PATCH_SIZE}]"
        )));
    }
    let (odt, oshape) = plan.output_spec();
    if odt != plan::DType::I8 || oshape != [DESCRIPTOR_DIM] {
        return Err(DescriptorError::Interface(format!(
            "output is {odt:?} {oshape:?} per patch, need I8 [{DESCRIPTOR_DIM}]"
        )));
    }
    Ok(())
}

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn info_of(proto: &onnx::ModelProto, bytes: &[u8]) -> ModelInfo {
    let meta = |k: &str| {
        proto
            .metadata_props
            .iter()
            .find(|p| p.key == k)
            .map(|p| p.value.clone())
    };
    ModelInfo {
        name: meta("name")
            .or_else(|| proto.graph.as_ref().map(|g| g.name.clone()))
            .unwrap_or_default(),
        version: meta("version").unwrap_or_else(|| proto.model_version.to_string()),
        sha256: sha256_hex(bytes),
    }
}
