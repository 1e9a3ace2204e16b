//! The compiled descriptor [`Plan`]'s step list, as the GPU executor reads it.
//!
//! The views are built from the plan's typed steps ([`Plan::steps`], [`Plan::slots`],
//! [`Plan::io_slots`], crate-internal): weights, weight sums, biases, fixed-point multipliers and
//! shapes exactly as the compiler resolved them. Sizes that do not agree with the slots are a
//! [`GpuError::UnsupportedPlan`], never a guess; float steps, which the GPU cannot reproduce bit
//! for bit, become [`StepView::Float`] for the executor to refuse. The GPU parity tests compare
//! every result with [`Plan::run`] bit for bit.

use crate::descriptor::plan::{DType, Step};
use crate::descriptor::{DescriptorModel, Plan};

use super::GpuError;

/// Element type of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    U8,
    I8,
    F32,
}

/// One tensor slot: element type and elements per sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotView {
    pub ty: Ty,
    pub len: usize,
}

/// A QLinearConv, or a QLinearMatMul expressed as a 1×1 convolution over a 1×1 image with
/// `cin = K` channels (the same GEMM, the same `[sample][out]` layout).
#[derive(Debug, Clone)]
pub(crate) struct GemmView {
    pub src: usize,
    pub dst: usize,
    pub src_i8: bool,
    pub dst_i8: bool,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub group: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub dil: [usize; 2],
    pub oh: usize,
    pub ow: usize,
    /// `[cout][cin/group · kh · kw]`
    pub weights: Vec<i8>,
    pub wsum: Vec<i32>,
    pub bias: Vec<i32>,
    /// Input zero point in the u8 domain.
    pub x_zp: i32,
    pub m0: i32,
    pub shift: u32,
    pub y_zp: i32,
}

impl GemmView {
    /// Taps per output value.
    pub fn k(&self) -> usize {
        self.cin / self.group * self.kh * self.kw
    }
}

/// A max-pooling step.
#[derive(Debug, Clone)]
pub(crate) struct PoolView {
    pub src: usize,
    pub dst: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

/// One step of the plan, in execution order.
#[derive(Debug, Clone)]
pub(crate) enum StepView {
    Gemm(Box<GemmView>),
    Relu {
        src: usize,
        dst: usize,
    },
    View {
        src: usize,
        dst: usize,
    },
    MaxPool(PoolView),
    L2NormQ {
        src: usize,
        dst: usize,
        x_zp: i32,
        gain: u32,
        y_zp: i32,
        d: usize,
    },
    /// A float step (`quantize`, `dequantize`, `lp_norm`): not reproducible bit for bit on a GPU.
    Float(&'static str),
}

/// The whole plan.
#[derive(Debug, Clone)]
pub(crate) struct PlanView {
    pub slots: Vec<SlotView>,
    pub steps: Vec<StepView>,
    pub input: usize,
    pub output: usize,
}

fn bad(reason: impl Into<String>) -> GpuError {
    GpuError::UnsupportedPlan {
        reason: reason.into(),
    }
}

impl PlanView {
    /// Reads a compiled plan.
    pub fn of_plan(plan: &Plan) -> Result<PlanView, GpuError> {
        let slots = plan
            .slots()
            .iter()
            .map(|s| SlotView {
                ty: ty(s.dtype),
                len: s.len,
            })
            .collect();
        let steps = plan.steps().iter().map(step).collect();
        let (input, output) = plan.io_slots();
        let view = PlanView {
            slots,
            steps,
            input,
            output,
        };
        view.check()?;
        Ok(view)
    }

    /// Reads the plan of a descriptor model that runs on the int8 kernels.
    pub fn of_model(model: &DescriptorModel) -> Result<PlanView, GpuError> {
        match model.plan() {
            Some(plan) => PlanView::of_plan(plan),
            None => Err(bad("the model does not run on the int8 kernels (tract)")),
        }
    }

    /// Sizes must agree with the slots they read and write.
    fn check(&self) -> Result<(), GpuError> {
        let n = self.slots.len();
        let slot = |i: usize| {
            self.slots
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("slot {i} of {n}")))
        };
        slot(self.input)?;
        slot(self.output)?;
        for s in &self.steps {
            match s {
                StepView::Gemm(g) => {
                    let k = g.k();
                    let ok = g.group > 0
                        && g.cin % g.group == 0
                        && g.cout % g.group == 0
                        && g.weights.len() == g.cout * k
                        && g.wsum.len() == g.cout
                        && g.bias.len() == g.cout
                        && slot(g.src)?.len == g.cin * g.h * g.w
                        && slot(g.dst)?.len == g.cout * g.oh * g.ow
                        && (slot(g.src)?.ty == Ty::I8) == g.src_i8
                        && (slot(g.dst)?.ty == Ty::I8) == g.dst_i8
                        && (1..=62).contains(&g.shift)
                        && g.m0 >= 1 << 30;
                    if !ok {
                        return Err(bad("a GEMM step's sizes do not agree"));
                    }
                }
                StepView::Relu { src, dst } | StepView::View { src, dst } => {
                    if slot(*src)?.len != slot(*dst)?.len || slot(*src)?.ty != slot(*dst)?.ty {
                        return Err(bad("a copy step's slots differ"));
                    }
                }
                StepView::MaxPool(p) => {
                    if slot(p.src)?.len != p.c * p.h * p.w
                        || slot(p.dst)?.len != p.c * p.oh * p.ow
                        || slot(p.src)?.ty != slot(p.dst)?.ty
                    {
                        return Err(bad("a max-pool step's sizes do not agree"));
                    }
                }
                StepView::L2NormQ { src, dst, d, .. } => {
                    if slot(*src)?.len != *d || slot(*dst)?.len != *d {
                        return Err(bad("an L2 step's sizes do not agree"));
                    }
                }
                StepView::Float(_) => {}
            }
        }
        Ok(())
    }
}

fn ty(t: DType) -> Ty {
    match t {
        DType::U8 => Ty::U8,
        DType::I8 => Ty::I8,
        DType::F32 => Ty::F32,
    }
}

fn step(s: &Step) -> StepView {
    match s {
        Step::Conv(c) => StepView::Gemm(Box::new(GemmView {
            src: c.src,
            dst: c.dst,
            src_i8: c.src_i8,
            dst_i8: c.dst_dtype == DType::I8,
            cin: c.cin,
            h: c.h,
            w: c.w,
            cout: c.cout,
            group: c.group,
            kh: c.kh,
            kw: c.kw,
            stride: c.stride,
            pads: c.pads,
            dil: c.dil,
            oh: c.oh,
            ow: c.ow,
            weights: c.weights.clone(),
            wsum: c.wsum.clone(),
            bias: c.bias.clone(),
            x_zp: c.x_zp,
            m0: c.requant.m0,
            shift: c.requant.shift,
            y_zp: c.y_zp,
        })),
        Step::MatMul(m) => StepView::Gemm(Box::new(GemmView {
            src: m.src,
            dst: m.dst,
            src_i8: m.src_i8,
            dst_i8: m.dst_dtype == DType::I8,
            cin: m.k,
            h: 1,
            w: 1,
            cout: m.ncol,
            group: 1,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            pads: [0; 4],
            dil: [1, 1],
            oh: 1,
            ow: 1,
            weights: m.weights_t.clone(),
            wsum: m.wsum.clone(),
            bias: vec![0; m.ncol],
            x_zp: m.a_zp,
            m0: m.requant.m0,
            shift: m.requant.shift,
            y_zp: m.y_zp,
        })),
        &Step::Relu { src, dst } => StepView::Relu { src, dst },
        &Step::View { src, dst } => StepView::View { src, dst },
        Step::MaxPool(p) => StepView::MaxPool(PoolView {
            src: p.src,
            dst: p.dst,
            c: p.c,
            h: p.h,
            w: p.w,
            kh: p.kh,
            kw: p.kw,
            stride: p.stride,
            pads: p.pads,
            oh: p.oh,
            ow: p.ow,
        }),
        &Step::L2NormQ {
            src,
            dst,
            x_zp,
            gain,
            y_zp,
            d,
        } => StepView::L2NormQ {
            src,
            dst,
            x_zp,
            gain,
            y_zp,
            d,
        },
        Step::Quantize { .. } => StepView::Float("quantize"),
        Step::Dequantize { .. } => StepView::Float("dequantize"),
        Step::LpNorm { .. } => StepView::Float("lp_norm"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_embedded_plan_step_for_step() {
        let model = DescriptorModel::embedded_default().unwrap();
        let plan = model.plan().unwrap();
        let view = PlanView::of_model(&model).unwrap();
        let names: Vec<&str> = view
            .steps
            .iter()
            .map(|s| match s {
                StepView::Gemm(g) if g.h == 1 && g.w == 1 && g.kh == 1 && g.kw == 1 => "gemm",
                StepView::Gemm(_) => "qlinear_conv",
                StepView::Relu { .. } => "relu",
                StepView::View { .. } => "view",
                StepView::MaxPool(_) => "max_pool",
                StepView::L2NormQ { .. } => "l2_norm_int8",
                StepView::Float(name) => name,
            })
            .collect();
        let want: Vec<&str> = plan
            .step_names()
            .into_iter()
            .map(|n| match n {
                "qlinear_matmul" => "gemm",
                n => n,
            })
            .collect();
        assert_eq!(names.len(), want.len());
        for (got, want) in names.iter().zip(&want) {
            // A 1×1 convolution over a 1×1 image is the same GEMM as a matrix product.
            assert!(
                got == want || (*got == "gemm" && *want == "qlinear_conv"),
                "{got} vs {want}"
            );
        }
        let (input, output) = plan.io_slots();
        assert_eq!((view.input, view.output), (input, output));
        assert_eq!(view.slots.len(), plan.slots().len());
    }
}
