//! tract-onnx as the reference executor and the fallback for graphs outside the kernel subset.

use std::io::Cursor;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::PATCH_SIZE;
use super::error::{DescriptorError, Result};

fn err(e: impl std::fmt::Display) -> DescriptorError {
    DescriptorError::Tract(format!("{e:#}"))
}

/// Takes Intel AMX int8 out of tract's instruction set, unless the deployer set `TRACT_CPU_ISA`.
///
/// tract-linalg 0.23.9's AMX int8 matrix kernel (`avx512amx_mmm_i32_8x8`) crashes now and then:
/// SIGSEGV at a `tileloadd`, in about 7 % of the runs of `runtime_kernels_agree_with_tract_on_real_patches`
/// on this project's Sapphire Rapids dev VM (caught under gdb, 2026-11-26). Without AMX tract
/// picks its AVX-512 VNNI kernels, which give the same integers. The setting must land before
/// tract first probes the machine (it memoises the probe), so it is made before every load
/// here; an app that runs tract elsewhere first should set `TRACT_CPU_ISA=-amx-int8` itself.
fn avoid_tract_amx() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("TRACT_CPU_ISA").is_none() {
                tract_onnx::tract_core::knobs::set_str("TRACT_CPU_ISA", "-amx-int8");
            }
        });
    }
}

/// A descriptor model loaded, type-checked and optimised by tract, with a symbolic batch.
#[derive(Debug, Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    dim: usize,
}

impl TractModel {
    /// Loads an ONNX descriptor model (input `u8 [N,1,32,32]`, output `i8 [N, D]`) from memory.
    /// Never panics: any failure is a [`DescriptorError::Tract`].
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<TractModel> {
        avoid_tract_amx();
        let load = || -> TractResult<(Arc<TypedRunnableModel>, usize)> {
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_read(&mut Cursor::new(bytes))?;
            let n = model.symbols.sym("N");
            let shape: TVec<TDim> = tvec![n.into(), 1.into(), PATCH_SIZE.into(), PATCH_SIZE.into()];
            model.set_input_fact(0, InferenceFact::dt_shape(u8::datum_type(), shape))?;
            let typed = model.into_typed()?;
            let out = typed.output_fact(0)?.clone();
            if out.datum_type != i8::datum_type() {
                return Err(TractError::msg(format!(
                    "output element type is {:?}, not i8",
                    out.datum_type
                )));
            }
            if out.rank() != 2 {
                return Err(TractError::msg(format!(
                    "output rank {} is not 2",
                    out.rank()
                )));
            }
            let dim = out.shape[1]
                .as_i64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| TractError::msg("output dimension is not fixed"))?;
            Ok((typed.into_optimized()?.into_runnable()?, dim))
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .map_err(|_| DescriptorError::Tract("tract panicked while loading the model".into()))?;
        let (plan, dim) = run.map_err(err)?;
        Ok(TractModel { plan, dim })
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Runs `n` patches (`n·32·32` bytes) into `out` (`n·dim` values).
    pub fn describe(&self, patches: &[u8], n: usize, out: &mut [i8]) -> Result<()> {
        let px = PATCH_SIZE * PATCH_SIZE;
        if Some(patches.len()) != n.checked_mul(px) || Some(out.len()) != n.checked_mul(self.dim) {
            return Err(DescriptorError::InvalidInput(format!(
                "{} patch bytes and {} output values do not fit {n} patches of dimension {}",
                patches.len(),
                out.len(),
                self.dim
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let input = Tensor::from_shape(&[n, 1, PATCH_SIZE, PATCH_SIZE], patches).map_err(err)?;
        let result = self.plan.run(tvec!(input.into())).map_err(err)?;
        let first = result
            .first()
            .ok_or_else(|| DescriptorError::Tract("no output".into()))?;
        let plain = first.try_as_plain_ram().map_err(err)?;
        let view = plain.as_slice::<i8>().map_err(err)?;
        if view.len() != out.len() {
            return Err(DescriptorError::Tract(format!(
                "output holds {} values, expected {}",
                view.len(),
                out.len()
            )));
        }
        out.copy_from_slice(view);
        Ok(())
    }
}
