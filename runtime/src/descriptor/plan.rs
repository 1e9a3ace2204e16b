//! Compiling an ONNX graph into a plan of int8 kernels, and running it.
//!
//! The compiler walks the (topologically sorted) nodes once, resolves every weight, scale and
//! zero point from the initializers, precomputes packed weights, weight sums and fixed-point
//! multipliers, and assigns each intermediate tensor a slot with a static per-sample shape (the
//! batch dimension stays free). Anything outside the subset is refused with
//! [`DescriptorError::UnsupportedOp`] naming the op and the reason.
//!
//! Supported (default domain, opset ≥ 10): `QLinearConv` (2-D, any group, stride, padding; int8
//! weights with zero point 0; u8 or i8 activations), `QLinearMatMul` (per-tensor parameters,
//! constant `B`: int8 with zero point 0 or uint8 with zero point 128), `Relu`, `MaxPool`, `Flatten`/`Reshape` (batch kept), `QuantizeLinear`,
//! `DequantizeLinear`, `LpNormalization` (p = 2), `Constant`; and the fused pattern
//! `DequantizeLinear → LpNormalization → QuantizeLinear` to int8 with an integer gain
//! (`1/y_scale`), which runs as the exact integer L2 normalisation of
//! [`super::kernels::l2_normalize_row`].
//!
//! The steps describe the graph (the GPU executor reads them). How the CPU runs each step is a
//! separate choice made at compile time: steps that fit a direct kernel of
//! [`super::kernels::direct`] (small-`Cin` stride-1 convolution, depthwise convolution,
//! row-wise matrix product) run it; every other step runs the generic im2col + GEMM path. Both
//! give the same bytes ([`Plan::set_direct_kernels`] chooses when the direct kernels run).

use std::collections::HashMap;

mod fast;

use super::error::{DescriptorError, Result};
use super::kernels::{self, Isa, Requant, sat_i8, sat_u8};
use super::onnx::{self, Constant, NodeProto, TensorData, data_type};

/// Element type of a runtime tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// u8 (quantised).
    U8,
    /// i8 (quantised).
    I8,
    /// f32.
    F32,
}

impl DType {
    fn from_onnx(t: i32) -> Option<DType> {
        match t {
            data_type::UINT8 => Some(DType::U8),
            data_type::INT8 => Some(DType::I8),
            data_type::FLOAT => Some(DType::F32),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) dtype: DType,
    /// Per-sample shape (without the batch dimension).
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct ConvStep {
    pub(crate) src: usize,
    pub(crate) dst: usize,
    pub(crate) src_i8: bool,
    pub(crate) dst_dtype: DType,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) group: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: [usize; 2],
    /// top, left, bottom, right
    pub(crate) pads: [usize; 4],
    pub(crate) dil: [usize; 2],
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    /// `[cout][cin/group · kh · kw]`
    pub(crate) weights: Vec<i8>,
    pub(crate) wsum: Vec<i32>,
    pub(crate) bias: Vec<i32>,
    /// Input zero point shifted into the u8 domain (`+128` for i8 inputs).
    pub(crate) x_zp: i32,
    pub(crate) requant: Requant,
    pub(crate) y_zp: i32,
}

#[derive(Debug, Clone)]
pub(crate) struct MatMulStep {
    pub(crate) src: usize,
    pub(crate) dst: usize,
    pub(crate) src_i8: bool,
    pub(crate) dst_dtype: DType,
    pub(crate) k: usize,
    pub(crate) ncol: usize,
    /// `B` transposed: `[ncol][k]`
    pub(crate) weights_t: Vec<i8>,
    pub(crate) wsum: Vec<i32>,
    pub(crate) a_zp: i32,
    pub(crate) requant: Requant,
    pub(crate) y_zp: i32,
}

#[derive(Debug, Clone)]
pub(crate) struct PoolStep {
    pub(crate) src: usize,
    pub(crate) dst: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: [usize; 2],
    pub(crate) pads: [usize; 4],
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Conv(Box<ConvStep>),
    MatMul(Box<MatMulStep>),
    Relu {
        src: usize,
        dst: usize,
    },
    View {
        src: usize,
        dst: usize,
    },
    MaxPool(PoolStep),
    Quantize {
        src: usize,
        dst: usize,
        scale: f32,
        zp: i32,
    },
    Dequantize {
        src: usize,
        dst: usize,
        scale: f32,
        zp: i32,
    },
    LpNorm {
        src: usize,
        dst: usize,
        d: usize,
    },
    L2NormQ {
        src: usize,
        dst: usize,
        x_zp: i32,
        gain: u32,
        y_zp: i32,
        d: usize,
    },
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Conv(_) => "qlinear_conv",
            Step::MatMul(_) => "qlinear_matmul",
            Step::Relu { .. } => "relu",
            Step::View { .. } => "view",
            Step::MaxPool(_) => "max_pool",
            Step::Quantize { .. } => "quantize",
            Step::Dequantize { .. } => "dequantize",
            Step::LpNorm { .. } => "lp_norm",
            Step::L2NormQ { .. } => "l2_norm_int8",
        }
    }
}

/// When the CPU executor runs the direct kernels instead of the generic im2col + GEMM path (for
/// the steps they fit; both give the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DirectKernels {
    /// Where the ISA in use has a SIMD variant of them (x86 AVX2, AVX-VNNI); elsewhere (scalar,
    /// NEON) the generic path, whose GEMM is vectorised.
    #[default]
    Auto,
    /// On every ISA (their portable implementation where no SIMD one exists).
    Always,
    /// Never: the generic path everywhere.
    Never,
}

/// A compiled graph: kernels in execution order over statically shaped slots.
#[derive(Debug, Clone)]
pub struct Plan {
    slots: Vec<Slot>,
    steps: Vec<Step>,
    input: usize,
    output: usize,
    input_name: String,
    output_name: String,
    isa: Isa,
    /// CPU-executor choice per step (direct kernel or generic path).
    fast: fast::FastPaths,
}

/// Per-call scratch memory of a [`Plan`]: slot buffers and im2col/accumulator space, sized on
/// first use and reused afterwards (no allocation once warmed up at a given chunk size).
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    u8s: Vec<Vec<u8>>,
    i8s: Vec<Vec<i8>>,
    f32s: Vec<Vec<f32>>,
    col: Vec<u8>,
    acc: Vec<i32>,
    row: Vec<i32>,
    direct: kernels::direct::Scratch,
}

/// Samples per chunk pushed through all steps at once.
const CHUNK: usize = 32;
/// Target GEMM width (columns) for convolutions batched over samples.
const CONV_COLS: usize = 2048;

fn unsupported(node: &NodeProto, reason: impl Into<String>) -> DescriptorError {
    DescriptorError::UnsupportedOp {
        op: node.op_type.clone(),
        node: node_name(node),
        reason: reason.into(),
    }
}

fn node_name(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

fn invalid(node: &NodeProto, reason: impl std::fmt::Display) -> DescriptorError {
    DescriptorError::InvalidGraph(format!("{} `{}`: {reason}", node.op_type, node_name(node)))
}

struct Attrs<'a>(&'a NodeProto);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&onnx::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    fn only(&self, allowed: &[&str]) -> Result<()> {
        for a in &self.0.attribute {
            if !allowed.contains(&a.name.as_str()) {
                return Err(unsupported(self.0, format!("attribute `{}`", a.name)));
            }
        }
        Ok(())
    }
}

fn to_usize(node: &NodeProto, v: i64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| invalid(node, format!("{what} {v} is negative")))
}

struct Compiler<'g> {
    consts: HashMap<String, Constant>,
    slots: Vec<Slot>,
    names: HashMap<String, usize>,
    steps: Vec<Step>,
    consumers: HashMap<&'g str, usize>,
    fused: Vec<bool>,
}

impl<'g> Compiler<'g> {
    fn constant(&self, node: &NodeProto, idx: usize) -> Result<&Constant> {
        let name = node
            .input
            .get(idx)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid(node, format!("input {idx} is missing")))?;
        self.consts.get(name).ok_or_else(|| {
            if self.names.contains_key(name) {
                unsupported(
                    node,
                    format!("input `{name}` must be a constant initializer"),
                )
            } else {
                invalid(node, format!("input `{name}` is not defined before use"))
            }
        })
    }

    fn optional_constant(&self, node: &NodeProto, idx: usize) -> Result<Option<&Constant>> {
        match node.input.get(idx) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(_) => self.constant(node, idx).map(Some),
        }
    }

    fn scale(&self, node: &NodeProto, idx: usize) -> Result<f32> {
        let c = self.constant(node, idx)?;
        let s = c.scalar_f32().ok_or_else(|| {
            unsupported(
                node,
                format!("input {idx}: only per-tensor (scalar) f32 scales"),
            )
        })?;
        if !(s.is_finite() && s > 0.0) {
            return Err(invalid(
                node,
                format!("scale {s} is not positive and finite"),
            ));
        }
        Ok(s)
    }

    /// A zero point and its element type (u8/i8).
    fn zero_point(&self, node: &NodeProto, idx: usize) -> Result<(i32, DType)> {
        let c = self.constant(node, idx)?;
        let v = c.scalar_int().ok_or_else(|| {
            unsupported(
                node,
                format!("input {idx}: only per-tensor (scalar) zero points"),
            )
        })?;
        let dt = match c.data_type {
            data_type::UINT8 => DType::U8,
            data_type::INT8 => DType::I8,
            other => {
                return Err(unsupported(
                    node,
                    format!("zero point of element type {other}"),
                ));
            }
        };
        Ok((v as i32, dt))
    }

    fn dynamic(&self, node: &NodeProto, idx: usize) -> Result<usize> {
        let name = node
            .input
            .get(idx)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid(node, format!("input {idx} is missing")))?;
        if self.consts.contains_key(name) {
            return Err(unsupported(
                node,
                format!("input `{name}` must be a computed tensor, not a constant"),
            ));
        }
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| invalid(node, format!("input `{name}` is not defined before use")))
    }

    fn define(&mut self, node: &NodeProto, dtype: DType, shape: Vec<usize>) -> Result<usize> {
        let name = node
            .output
            .first()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid(node, "has no output"))?;
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(unsupported(node, "optional extra outputs"));
        }
        if self.names.contains_key(name) || self.consts.contains_key(name) {
            return Err(invalid(node, format!("output `{name}` is defined twice")));
        }
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&l| l > 0 && l <= 1 << 24);
        let len = len.ok_or_else(|| {
            invalid(
                node,
                format!("output shape {shape:?} is empty or too large"),
            )
        })?;
        self.slots.push(Slot { dtype, shape, len });
        let id = self.slots.len() - 1;
        self.names.insert(name.clone(), id);
        Ok(id)
    }

    fn alias(&mut self, node: &NodeProto, src: usize, shape: Vec<usize>) -> Result<()> {
        let dtype = self.slots[src].dtype;
        let dst = self.define(node, dtype, shape)?;
        if self.slots[dst].len != self.slots[src].len {
            return Err(invalid(node, "reshape changes the element count"));
        }
        // A reshape is a view: the data is copied unchanged into a slot with the new shape.
        self.steps.push(Step::View { src, dst });
        Ok(())
    }

    fn spatial(&self, node: &NodeProto, src: usize) -> Result<(usize, usize, usize)> {
        match self.slots[src].shape.as_slice() {
            &[c, h, w] => Ok((c, h, w)),
            s => Err(unsupported(
                node,
                format!("input per-sample shape {s:?}: only NCHW 2-D"),
            )),
        }
    }

    fn pads_strides(
        &self,
        node: &NodeProto,
        kh: usize,
        kw: usize,
    ) -> Result<([usize; 4], [usize; 2], [usize; 2])> {
        let a = Attrs(node);
        match a.string("auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => {}
            Some(other) => return Err(unsupported(node, format!("auto_pad={other}"))),
        }
        let pads = match a.ints("pads") {
            None => [0; 4],
            Some(&[t, l, b, r]) => [
                to_usize(node, t, "pad")?,
                to_usize(node, l, "pad")?,
                to_usize(node, b, "pad")?,
                to_usize(node, r, "pad")?,
            ],
            Some(p) => return Err(invalid(node, format!("pads {p:?}"))),
        };
        let two = |name: &str| -> Result<[usize; 2]> {
            match a.ints(name) {
                None => Ok([1, 1]),
                Some(&[y, x]) if y > 0 && x > 0 => Ok([y as usize, x as usize]),
                Some(v) => Err(invalid(node, format!("{name} {v:?}"))),
            }
        };
        let stride = two("strides")?;
        let dil = two("dilations")?;
        if pads[0] >= kh * dil[0]
            || pads[2] >= kh * dil[0]
            || pads[1] >= kw * dil[1]
            || pads[3] >= kw * dil[1]
        {
            return Err(unsupported(node, "padding at least as large as the kernel"));
        }
        Ok((pads, stride, dil))
    }

    fn out_size(
        node: &NodeProto,
        n: usize,
        pad: usize,
        k: usize,
        dil: usize,
        stride: usize,
    ) -> Result<usize> {
        let span = dil * (k - 1) + 1;
        let padded = n + pad;
        if padded < span {
            return Err(invalid(node, "kernel larger than the padded input"));
        }
        Ok((padded - span) / stride + 1)
    }

    fn qlinear_conv(&mut self, node: &NodeProto) -> Result<()> {
        Attrs(node).only(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
        let src = self.dynamic(node, 0)?;
        let x_scale = self.scale(node, 1)?;
        let (x_zp, x_dt) = self.zero_point(node, 2)?;
        let w = self.constant(node, 3)?.clone();
        let w_scale = self.scale(node, 4)?;
        let (w_zp, w_dt) = self.zero_point(node, 5)?;
        let y_scale = self.scale(node, 6)?;
        let (y_zp, y_dt) = self.zero_point(node, 7)?;
        let bias = self.optional_constant(node, 8)?.cloned();
        if self.slots[src].dtype != x_dt {
            return Err(invalid(node, "x and x_zero_point element types differ"));
        }
        if w.data_type != data_type::INT8 || w_dt != DType::I8 || w_zp != 0 {
            return Err(unsupported(node, "only int8 weights with zero point 0"));
        }
        let (cin, h, wd) = self.spatial(node, src)?;
        let [cout, cin_g, kh, kw] = match w.dims.as_slice() {
            &[a, b, c, d] => [a, b, c, d],
            d => {
                return Err(unsupported(
                    node,
                    format!("weight shape {d:?}: only 2-D convolutions"),
                ));
            }
        };
        if let Some(ks) = Attrs(node).ints("kernel_shape")
            && ks != [kh as i64, kw as i64]
        {
            return Err(invalid(node, "kernel_shape disagrees with the weights"));
        }
        let group = to_usize(node, Attrs(node).int("group", 1), "group")?;
        if group == 0
            || cin_g == 0
            || kh == 0
            || kw == 0
            || cin != cin_g * group
            || cout % group != 0
        {
            return Err(invalid(
                node,
                format!("channels: input {cin}, weights {cout}x{cin_g}, group {group}"),
            ));
        }
        let k = cin_g * kh * kw;
        if k > 60_000 {
            return Err(unsupported(node, "reduction too long for i32 accumulation"));
        }
        let (pads, stride, dil) = self.pads_strides(node, kh, kw)?;
        let oh = Self::out_size(node, h, pads[0] + pads[2], kh, dil[0], stride[0])?;
        let ow = Self::out_size(node, wd, pads[1] + pads[3], kw, dil[1], stride[1])?;
        let weights: Vec<i8> = match &w.data {
            TensorData::Int(v) => v.iter().map(|&x| x as i8).collect(),
            TensorData::F32(_) => return Err(invalid(node, "weights are not integers")),
        };
        let wsum = weights
            .chunks_exact(k)
            .map(|r| r.iter().map(|&x| i32::from(x)).sum())
            .collect();
        let bias = match bias {
            None => vec![0; cout],
            Some(b) if b.data_type == data_type::INT32 && b.len() == cout => match b.data {
                TensorData::Int(v) => v.iter().map(|&x| x as i32).collect(),
                TensorData::F32(_) => return Err(invalid(node, "bias is not int32")),
            },
            Some(_) => return Err(invalid(node, format!("bias must be int32 [{cout}]"))),
        };
        let requant =
            Requant::from_real(f64::from(x_scale) * f64::from(w_scale) / f64::from(y_scale))
                .map_err(|e| invalid(node, e))?;
        let dst = self.define(node, y_dt, vec![cout, oh, ow])?;
        let src_i8 = x_dt == DType::I8;
        self.steps.push(Step::Conv(Box::new(ConvStep {
            src,
            dst,
            src_i8,
            dst_dtype: y_dt,
            cin,
            h,
            w: wd,
            cout,
            group,
            kh,
            kw,
            stride,
            pads,
            dil,
            oh,
            ow,
            weights,
            wsum,
            bias,
            x_zp: if src_i8 { x_zp + 128 } else { x_zp },
            requant,
            y_zp,
        })));
        Ok(())
    }

    fn qlinear_matmul(&mut self, node: &NodeProto) -> Result<()> {
        Attrs(node).only(&[])?;
        let src = self.dynamic(node, 0)?;
        let a_scale = self.scale(node, 1)?;
        let (a_zp, a_dt) = self.zero_point(node, 2)?;
        let b = self.constant(node, 3)?.clone();
        let b_scale = self.scale(node, 4)?;
        let (b_zp, b_dt) = self.zero_point(node, 5)?;
        let y_scale = self.scale(node, 6)?;
        let (y_zp, y_dt) = self.zero_point(node, 7)?;
        if self.slots[src].dtype != a_dt {
            return Err(invalid(node, "a and a_zero_point element types differ"));
        }
        // int8 B with zero point 0, or uint8 B with zero point 128 (onnxruntime's CPU kernel
        // wants u8·u8); both become the same int8 weights `b − zp`.
        let b_off = match (b.data_type, b_dt, b_zp) {
            (data_type::INT8, DType::I8, 0) => 0,
            (data_type::UINT8, DType::U8, 128) => 128,
            _ => {
                return Err(unsupported(
                    node,
                    "only constant B as int8 with zero point 0 or uint8 with zero point 128",
                ));
            }
        };
        let k = match self.slots[src].shape.as_slice() {
            &[k] => k,
            s => {
                return Err(unsupported(
                    node,
                    format!("A per-sample shape {s:?}: only [N, K]"),
                ));
            }
        };
        let ncol = match b.dims.as_slice() {
            &[bk, n] if bk == k => n,
            d => return Err(invalid(node, format!("B shape {d:?} does not fit K = {k}"))),
        };
        if k > 60_000 || ncol == 0 {
            return Err(unsupported(node, "reduction too long for i32 accumulation"));
        }
        let bv: Vec<i8> = match &b.data {
            TensorData::Int(v) => v.iter().map(|&x| (x - b_off) as i8).collect(),
            TensorData::F32(_) => return Err(invalid(node, "B is not integer")),
        };
        let mut weights_t = vec![0i8; k * ncol];
        for kk in 0..k {
            for j in 0..ncol {
                weights_t[j * k + kk] = bv[kk * ncol + j];
            }
        }
        let wsum = weights_t
            .chunks_exact(k)
            .map(|r| r.iter().map(|&x| i32::from(x)).sum())
            .collect();
        let requant =
            Requant::from_real(f64::from(a_scale) * f64::from(b_scale) / f64::from(y_scale))
                .map_err(|e| invalid(node, e))?;
        let dst = self.define(node, y_dt, vec![ncol])?;
        let src_i8 = a_dt == DType::I8;
        self.steps.push(Step::MatMul(Box::new(MatMulStep {
            src,
            dst,
            src_i8,
            dst_dtype: y_dt,
            k,
            ncol,
            weights_t,
            wsum,
            a_zp: if src_i8 { a_zp + 128 } else { a_zp },
            requant,
            y_zp,
        })));
        Ok(())
    }

    fn max_pool(&mut self, node: &NodeProto) -> Result<()> {
        Attrs(node).only(&[
            "auto_pad",
            "kernel_shape",
            "pads",
            "strides",
            "ceil_mode",
            "dilations",
            "storage_order",
        ])?;
        if Attrs(node).int("ceil_mode", 0) != 0 || Attrs(node).int("storage_order", 0) != 0 {
            return Err(unsupported(node, "ceil_mode / storage_order"));
        }
        if node.output.len() > 1 {
            return Err(unsupported(node, "the Indices output"));
        }
        let src = self.dynamic(node, 0)?;
        let (c, h, w) = self.spatial(node, src)?;
        let (kh, kw) = match Attrs(node).ints("kernel_shape") {
            Some(&[a, b]) if a > 0 && b > 0 => (a as usize, b as usize),
            other => return Err(unsupported(node, format!("kernel_shape {other:?}"))),
        };
        let (pads, stride, dil) = self.pads_strides(node, kh, kw)?;
        if dil != [1, 1] {
            return Err(unsupported(node, "dilations"));
        }
        let oh = Self::out_size(node, h, pads[0] + pads[2], kh, 1, stride[0])?;
        let ow = Self::out_size(node, w, pads[1] + pads[3], kw, 1, stride[1])?;
        let dtype = self.slots[src].dtype;
        let dst = self.define(node, dtype, vec![c, oh, ow])?;
        self.steps.push(Step::MaxPool(PoolStep {
            src,
            dst,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            pads,
            oh,
            ow,
        }));
        Ok(())
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<()> {
        let src = self.dynamic(node, 0)?;
        let len = self.slots[src].len;
        let shape = if node.op_type == "Flatten" {
            Attrs(node).only(&["axis"])?;
            if Attrs(node).int("axis", 1) != 1 {
                return Err(unsupported(node, "only axis = 1 (batch kept)"));
            }
            vec![len]
        } else {
            Attrs(node).only(&["allowzero"])?;
            let target = match &self.constant(node, 1)?.data {
                TensorData::Int(v) => v.clone(),
                TensorData::F32(_) => return Err(invalid(node, "shape is not int64")),
            };
            let Some((&first, rest)) = target.split_first() else {
                return Err(invalid(node, "empty target shape"));
            };
            if first != 0 && first != -1 {
                return Err(unsupported(
                    node,
                    "first target dimension must keep the batch (0 or -1)",
                ));
            }
            if first == -1 && rest.contains(&-1) {
                return Err(invalid(node, "two -1 dimensions"));
            }
            let cur = &self.slots[src].shape;
            let mut dims = Vec::with_capacity(rest.len());
            let mut free = None;
            for (i, &d) in rest.iter().enumerate() {
                match d {
                    -1 if free.is_none() => {
                        free = Some(i);
                        dims.push(1);
                    }
                    0 => dims.push(
                        *cur.get(i)
                            .ok_or_else(|| invalid(node, "0 beyond input rank"))?,
                    ),
                    d if d > 0 => dims.push(d as usize),
                    _ => return Err(invalid(node, format!("target shape {target:?}"))),
                }
            }
            let known = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(0);
            if let Some(i) = free {
                if known == 0 || !len.is_multiple_of(known) {
                    return Err(invalid(node, "cannot infer -1"));
                }
                dims[i] = len / known;
            }
            dims
        };
        self.alias(node, src, shape)
    }

    fn node(&mut self, idx: usize, node: &'g NodeProto, all: &'g [NodeProto]) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(node, format!("domain `{}`", node.domain)));
        }
        match node.op_type.as_str() {
            "QLinearConv" => self.qlinear_conv(node),
            "QLinearMatMul" => self.qlinear_matmul(node),
            "Flatten" | "Reshape" => self.reshape(node),
            "MaxPool" => self.max_pool(node),
            "Relu" => {
                Attrs(node).only(&[])?;
                let src = self.dynamic(node, 0)?;
                let (dt, shape) = (self.slots[src].dtype, self.slots[src].shape.clone());
                let dst = self.define(node, dt, shape)?;
                self.steps.push(Step::Relu { src, dst });
                Ok(())
            }
            "Constant" => {
                Attrs(node).only(&["value"])?;
                let t = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| unsupported(node, "only a `value` tensor"))?;
                let name = node.output.first().cloned().unwrap_or_default();
                if name.is_empty()
                    || self.consts.contains_key(&name)
                    || self.names.contains_key(&name)
                {
                    return Err(invalid(node, "bad or duplicate output name"));
                }
                let c = onnx::constant(t)?;
                self.consts.insert(name, c);
                Ok(())
            }
            "DequantizeLinear" => {
                Attrs(node).only(&["axis"])?;
                let src = self.dynamic(node, 0)?;
                let scale = self.scale(node, 1)?;
                let zp = match self.optional_constant(node, 2)? {
                    None => 0,
                    Some(_) => {
                        let (zp, dt) = self.zero_point(node, 2)?;
                        if dt != self.slots[src].dtype {
                            return Err(invalid(node, "x and x_zero_point element types differ"));
                        }
                        zp
                    }
                };
                if self.slots[src].dtype == DType::F32 {
                    return Err(invalid(node, "input is not quantised"));
                }
                if let Some(fused) = self.try_fuse_l2(idx, node, all, src, zp)? {
                    self.steps.push(fused);
                    return Ok(());
                }
                let shape = self.slots[src].shape.clone();
                let dst = self.define(node, DType::F32, shape)?;
                self.steps.push(Step::Dequantize {
                    src,
                    dst,
                    scale,
                    zp,
                });
                Ok(())
            }
            "QuantizeLinear" => {
                Attrs(node).only(&["axis", "saturate"])?;
                let src = self.dynamic(node, 0)?;
                let scale = self.scale(node, 1)?;
                let (zp, dt) = match self.optional_constant(node, 2)? {
                    None => (0, DType::U8),
                    Some(_) => self.zero_point(node, 2)?,
                };
                if self.slots[src].dtype != DType::F32 {
                    return Err(invalid(node, "input is not f32"));
                }
                let shape = self.slots[src].shape.clone();
                let dst = self.define(node, dt, shape)?;
                self.steps.push(Step::Quantize {
                    src,
                    dst,
                    scale,
                    zp,
                });
                Ok(())
            }
            "LpNormalization" => {
                Attrs(node).only(&["axis", "p"])?;
                let src = self.dynamic(node, 0)?;
                let d = self.lp_axis(node, src)?;
                if self.slots[src].dtype != DType::F32 {
                    return Err(invalid(node, "input is not f32"));
                }
                let shape = self.slots[src].shape.clone();
                let dst = self.define(node, DType::F32, shape)?;
                self.steps.push(Step::LpNorm { src, dst, d });
                Ok(())
            }
            other => Err(unsupported(node, format!("`{other}` has no int8 kernel"))),
        }
    }

    /// Checks LpNormalization's attributes: p = 2 over the last axis of a per-sample vector.
    fn lp_axis(&self, node: &NodeProto, src: usize) -> Result<usize> {
        if Attrs(node).int("p", 2) != 2 {
            return Err(unsupported(node, "only p = 2"));
        }
        let shape = &self.slots[src].shape;
        let axis = Attrs(node).int("axis", -1);
        if shape.len() != 1 || !(axis == -1 || axis == 1) {
            return Err(unsupported(
                node,
                "only over the feature axis of an [N, D] tensor",
            ));
        }
        Ok(shape[0])
    }

    fn single_consumer(&self, all: &'g [NodeProto], name: &str) -> Option<usize> {
        if self.consumers.get(name).copied() != Some(1) {
            return None;
        }
        all.iter().position(|n| n.input.iter().any(|i| i == name))
    }

    /// `DequantizeLinear → LpNormalization → QuantizeLinear(int8, 1/gain)` as one integer step.
    fn try_fuse_l2(
        &mut self,
        idx: usize,
        dq: &NodeProto,
        all: &'g [NodeProto],
        src: usize,
        x_zp: i32,
    ) -> Result<Option<Step>> {
        let Some(dq_out) = dq.output.first() else {
            return Ok(None);
        };
        let Some(li) = self.single_consumer(all, dq_out) else {
            return Ok(None);
        };
        let lp = &all[li];
        if li <= idx
            || lp.op_type != "LpNormalization"
            || !(lp.domain.is_empty() || lp.domain == "ai.onnx")
        {
            return Ok(None);
        }
        if Attrs(lp).only(&["axis", "p"]).is_err() || Attrs(lp).int("p", 2) != 2 {
            return Ok(None);
        }
        let shape = &self.slots[src].shape;
        let axis = Attrs(lp).int("axis", -1);
        if shape.len() != 1 || !(axis == -1 || axis == 1) {
            return Ok(None);
        }
        let d = shape[0];
        let Some(lp_out) = lp.output.first() else {
            return Ok(None);
        };
        let Some(qi) = self.single_consumer(all, lp_out) else {
            return Ok(None);
        };
        let q = &all[qi];
        if qi <= li || q.op_type != "QuantizeLinear" || q.input.first() != Some(lp_out) {
            return Ok(None);
        }
        if Attrs(q).only(&["axis", "saturate"]).is_err() || q.input.len() < 3 {
            return Ok(None);
        }
        let Ok(y_scale) = self.scale(q, 1) else {
            return Ok(None);
        };
        let Ok((y_zp, DType::I8)) = self.zero_point(q, 2) else {
            return Ok(None);
        };
        let gain = (1.0 / f64::from(y_scale)).round();
        if !(1.0..=65535.0).contains(&gain) || (1.0 / f64::from(y_scale) - gain).abs() > 1e-4 * gain
        {
            return Ok(None);
        }
        let dst = self.define(q, DType::I8, vec![d])?;
        self.fused[li] = true;
        self.fused[qi] = true;
        Ok(Some(Step::L2NormQ {
            src,
            dst,
            x_zp,
            gain: gain as u32,
            y_zp,
            d,
        }))
    }
}

/// Reads a value_info's element type and per-sample shape (dims after the batch dimension).
fn interface(v: &onnx::ValueInfoProto) -> Result<(DType, Vec<usize>)> {
    let bad = |m: &str| DescriptorError::Interface(format!("`{}`: {m}", v.name));
    let tt = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| bad("not a tensor"))?;
    let dtype =
        DType::from_onnx(tt.elem_type).ok_or_else(|| bad("element type is not u8, i8 or f32"))?;
    let dims = &tt.shape.as_ref().ok_or_else(|| bad("no shape"))?.dim;
    if dims.is_empty() {
        return Err(bad("rank 0"));
    }
    let mut shape = Vec::new();
    for d in &dims[1..] {
        if d.dim_value <= 0 || d.dim_value > 1 << 20 {
            return Err(bad("non-batch dimensions must be fixed and positive"));
        }
        shape.push(d.dim_value as usize);
    }
    Ok((dtype, shape))
}

impl Plan {
    /// Compiles a decoded model. Errors name the first unsupported op, or what is malformed.
    pub fn compile(model: &onnx::ModelProto) -> Result<Plan> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| DescriptorError::InvalidGraph("no graph".into()))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0);
        if opset < 10 {
            return Err(DescriptorError::InvalidGraph(format!(
                "default-domain opset {opset} is below 10 (QLinear ops need 10)"
            )));
        }
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            if t.name.is_empty() || consts.contains_key(&t.name) {
                return Err(DescriptorError::InvalidGraph(format!(
                    "bad or duplicate initializer `{}`",
                    t.name
                )));
            }
            consts.insert(t.name.clone(), onnx::constant(t)?);
        }
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !consts.contains_key(&i.name))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(DescriptorError::Interface(format!(
                "{} graph inputs, need exactly 1",
                inputs.len()
            )));
        };
        let [output] = graph.output.as_slice() else {
            return Err(DescriptorError::Interface(format!(
                "{} graph outputs, need exactly 1",
                graph.output.len()
            )));
        };
        let (in_dtype, in_shape) = interface(input)?;
        let mut consumers: HashMap<&str, usize> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                *consumers.entry(i.as_str()).or_default() += 1;
            }
        }
        *consumers.entry(output.name.as_str()).or_default() += 1;
        let mut c = Compiler {
            consts,
            slots: Vec::new(),
            names: HashMap::new(),
            steps: Vec::new(),
            consumers,
            fused: vec![false; graph.node.len()],
        };
        let len = in_shape.iter().product::<usize>();
        if len == 0 || len > 1 << 24 {
            return Err(DescriptorError::Interface(
                "input shape is empty or too large".into(),
            ));
        }
        c.slots.push(Slot {
            dtype: in_dtype,
            shape: in_shape,
            len,
        });
        c.names.insert(input.name.clone(), 0);
        for (i, node) in graph.node.iter().enumerate() {
            if c.fused[i] {
                continue;
            }
            c.node(i, node, &graph.node)?;
        }
        let out = *c.names.get(&output.name).ok_or_else(|| {
            DescriptorError::InvalidGraph(format!(
                "graph output `{}` is never computed",
                output.name
            ))
        })?;
        let (out_dtype, out_shape) = interface(output)?;
        if out_dtype != c.slots[out].dtype || out_shape != c.slots[out].shape {
            return Err(DescriptorError::InvalidGraph(format!(
                "declared output {:?} {:?} disagrees with the computed {:?} {:?}",
                out_dtype, out_shape, c.slots[out].dtype, c.slots[out].shape
            )));
        }
        let fast = fast::FastPaths::select(&c.steps);
        Ok(Plan {
            fast,
            slots: c.slots,
            steps: c.steps,
            input: 0,
            output: out,
            input_name: input.name.clone(),
            output_name: output.name.clone(),
            isa: Isa::detect(),
        })
    }

    /// Selects the GEMM variant (falls back to scalar when the CPU lacks it).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = if isa.available() { isa } else { Isa::Scalar };
    }

    /// The GEMM variant in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// When the direct kernels run (default [`DirectKernels::Auto`]). The output is the same
    /// in every mode (tests and benchmarks compare them).
    pub fn set_direct_kernels(&mut self, mode: DirectKernels) {
        self.fast.mode = mode;
    }

    /// Per step, in execution order, the CPU kernel that runs it with the current ISA and mode:
    /// `direct_conv`, `direct_depthwise`, `row_matmul`, or `generic`.
    pub fn cpu_kernel_names(&self) -> Vec<&'static str> {
        self.fast.names(self.isa)
    }

    /// Element type and per-sample shape of the graph input.
    pub fn input_spec(&self) -> (DType, &[usize]) {
        (self.slots[self.input].dtype, &self.slots[self.input].shape)
    }

    /// Element type and per-sample shape of the graph output.
    pub fn output_spec(&self) -> (DType, &[usize]) {
        (
            self.slots[self.output].dtype,
            &self.slots[self.output].shape,
        )
    }

    /// Graph input and output names.
    pub fn io_names(&self) -> (&str, &str) {
        (&self.input_name, &self.output_name)
    }

    /// Kernel names in execution order (for logs and tests).
    pub fn step_names(&self) -> Vec<&'static str> {
        self.steps.iter().map(Step::name).collect()
    }

    /// The compiled steps, in execution order (read by the GPU executor).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The tensor slots the steps read and write, by index.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Indices of the graph input's and output's slots.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn io_slots(&self) -> (usize, usize) {
        (self.input, self.output)
    }

    /// Runs a u8-input graph on `n` samples. The output's element type decides which of `out`'s
    /// variants must be given; see [`Output`].
    pub fn run(
        &self,
        ws: &mut Workspace,
        input: &[u8],
        n: usize,
        mut out: Output<'_>,
    ) -> Result<()> {
        let in_len = self.slots[self.input].len;
        let out_len = self.slots[self.output].len;
        if self.slots[self.input].dtype != DType::U8 {
            return Err(DescriptorError::Interface("graph input is not u8".into()));
        }
        if Some(input.len()) != n.checked_mul(in_len) {
            return Err(DescriptorError::InvalidInput(format!(
                "input holds {} bytes, {n} samples need {}",
                input.len(),
                n.saturating_mul(in_len)
            )));
        }
        let (have, want_dtype) = match &out {
            Output::U8(o) => (o.len(), DType::U8),
            Output::I8(o) => (o.len(), DType::I8),
            Output::F32(o) => (o.len(), DType::F32),
        };
        if want_dtype != self.slots[self.output].dtype {
            return Err(DescriptorError::InvalidInput(format!(
                "output buffer is {want_dtype:?}, graph output is {:?}",
                self.slots[self.output].dtype
            )));
        }
        if Some(have) != n.checked_mul(out_len) {
            return Err(DescriptorError::InvalidInput(format!(
                "output holds {have} elements, {n} samples need {}",
                n.saturating_mul(out_len)
            )));
        }
        self.prepare(ws);
        let mut start = 0;
        while start < n {
            let nb = (n - start).min(CHUNK);
            ws.u8s[self.input][..nb * in_len]
                .copy_from_slice(&input[start * in_len..(start + nb) * in_len]);
            for (i, step) in self.steps.iter().enumerate() {
                match (self.fast.get(i, self.isa), step) {
                    (Some(k), Step::Conv(c)) => self.direct(k, ws, (c.src, c.dst), nb),
                    (Some(k), Step::MatMul(m)) => self.direct(k, ws, (m.src, m.dst), nb),
                    _ => self.exec(step, ws, nb)?,
                }
            }
            let range = start * out_len..(start + nb) * out_len;
            match &mut out {
                Output::U8(o) => o[range].copy_from_slice(&ws.u8s[self.output][..nb * out_len]),
                Output::I8(o) => o[range].copy_from_slice(&ws.i8s[self.output][..nb * out_len]),
                Output::F32(o) => o[range].copy_from_slice(&ws.f32s[self.output][..nb * out_len]),
            }
            start += nb;
        }
        Ok(())
    }

    fn direct(
        &self,
        k: &fast::FastKernel,
        ws: &mut Workspace,
        (src, dst): (usize, usize),
        nb: usize,
    ) {
        let (s, d) = (&self.slots[src], &self.slots[dst]);
        fast::run(
            k,
            self.isa,
            ws,
            (src, s.dtype),
            (dst, d.dtype),
            (s.len, d.len),
            nb,
        );
    }

    fn prepare(&self, ws: &mut Workspace) {
        let ns = self.slots.len();
        ws.u8s.resize_with(ns, Vec::new);
        ws.i8s.resize_with(ns, Vec::new);
        ws.f32s.resize_with(ns, Vec::new);
        for (i, s) in self.slots.iter().enumerate() {
            let want = s.len * CHUNK;
            match s.dtype {
                DType::U8 if ws.u8s[i].len() < want => ws.u8s[i].resize(want, 0),
                DType::I8 if ws.i8s[i].len() < want => ws.i8s[i].resize(want, 0),
                DType::F32 if ws.f32s[i].len() < want => ws.f32s[i].resize(want, 0.0),
                _ => {}
            }
        }
    }

    fn exec(&self, step: &Step, ws: &mut Workspace, nb: usize) -> Result<()> {
        match step {
            Step::Conv(c) => self.conv(c, ws, nb),
            Step::MatMul(m) => self.matmul(m, ws, nb),
            Step::Relu { src, dst } => {
                let len = self.slots[*src].len * nb;
                match self.slots[*src].dtype {
                    DType::U8 => copy_slot(&mut ws.u8s, *src, *dst, len),
                    DType::I8 => {
                        let (s, d) = two(&mut ws.i8s, *src, *dst);
                        for (o, &v) in d[..len].iter_mut().zip(&s[..len]) {
                            *o = v.max(0);
                        }
                    }
                    DType::F32 => {
                        let (s, d) = two(&mut ws.f32s, *src, *dst);
                        for (o, &v) in d[..len].iter_mut().zip(&s[..len]) {
                            *o = if v > 0.0 { v } else { 0.0 };
                        }
                    }
                }
                Ok(())
            }
            Step::MaxPool(p) => {
                match self.slots[p.src].dtype {
                    DType::U8 => {
                        let (s, d) = two(&mut ws.u8s, p.src, p.dst);
                        max_pool(p, nb, s, d);
                    }
                    DType::I8 => {
                        let (s, d) = two(&mut ws.i8s, p.src, p.dst);
                        max_pool(p, nb, s, d);
                    }
                    DType::F32 => {
                        let (s, d) = two(&mut ws.f32s, p.src, p.dst);
                        max_pool(p, nb, s, d);
                    }
                }
                Ok(())
            }
            Step::View { src, dst } => {
                let len = self.slots[*src].len * nb;
                match self.slots[*src].dtype {
                    DType::U8 => copy_slot(&mut ws.u8s, *src, *dst, len),
                    DType::I8 => copy_slot(&mut ws.i8s, *src, *dst, len),
                    DType::F32 => copy_slot(&mut ws.f32s, *src, *dst, len),
                }
                Ok(())
            }
            Step::Quantize {
                src,
                dst,
                scale,
                zp,
            } => {
                let len = self.slots[*src].len * nb;
                let q = |v: f32| -> i32 {
                    let r = (v / scale).round_ties_even();
                    if r.is_nan() {
                        *zp
                    } else {
                        (r.clamp(-1e9, 1e9) as i32).saturating_add(*zp)
                    }
                };
                let s = &ws.f32s[*src][..len];
                match self.slots[*dst].dtype {
                    DType::U8 => {
                        for (o, &v) in ws.u8s[*dst][..len].iter_mut().zip(s) {
                            *o = sat_u8(q(v));
                        }
                    }
                    _ => {
                        for (o, &v) in ws.i8s[*dst][..len].iter_mut().zip(s) {
                            *o = sat_i8(q(v));
                        }
                    }
                }
                Ok(())
            }
            Step::Dequantize {
                src,
                dst,
                scale,
                zp,
            } => {
                let len = self.slots[*src].len * nb;
                let d = &mut ws.f32s[*dst][..len];
                match self.slots[*src].dtype {
                    DType::U8 => {
                        for (o, &v) in d.iter_mut().zip(&ws.u8s[*src][..len]) {
                            *o = (i32::from(v) - zp) as f32 * scale;
                        }
                    }
                    _ => {
                        for (o, &v) in d.iter_mut().zip(&ws.i8s[*src][..len]) {
                            *o = (i32::from(v) - zp) as f32 * scale;
                        }
                    }
                }
                Ok(())
            }
            Step::LpNorm { src, dst, d } => {
                let (s, o) = two(&mut ws.f32s, *src, *dst);
                for (orow, srow) in o[..nb * d]
                    .chunks_exact_mut(*d)
                    .zip(s[..nb * d].chunks_exact(*d))
                {
                    let norm = srow.iter().map(|&v| v * v).sum::<f32>().sqrt();
                    for (ov, &v) in orow.iter_mut().zip(srow) {
                        *ov = if norm > 0.0 { v / norm } else { 0.0 };
                    }
                }
                Ok(())
            }
            Step::L2NormQ {
                src,
                dst,
                x_zp,
                gain,
                y_zp,
                d,
            } => {
                ws.row.resize(*d, 0);
                for s in 0..nb {
                    let r = s * d..(s + 1) * d;
                    match self.slots[*src].dtype {
                        DType::U8 => {
                            for (o, &v) in ws.row.iter_mut().zip(&ws.u8s[*src][r.clone()]) {
                                *o = i32::from(v);
                            }
                        }
                        _ => {
                            for (o, &v) in ws.row.iter_mut().zip(&ws.i8s[*src][r.clone()]) {
                                *o = i32::from(v);
                            }
                        }
                    }
                    kernels::l2_normalize_row(&ws.row, *x_zp, *gain, *y_zp, &mut ws.i8s[*dst][r]);
                }
                Ok(())
            }
        }
    }

    fn conv(&self, c: &ConvStep, ws: &mut Workspace, nb: usize) -> Result<()> {
        let cin_g = c.cin / c.group;
        let cout_g = c.cout / c.group;
        let k = cin_g * c.kh * c.kw;
        let p = c.oh * c.ow;
        let per = (CONV_COLS / p).clamp(1, nb);
        let in_len = c.cin * c.h * c.w;
        let out_len = c.cout * p;
        let pad_val = c.x_zp.clamp(0, 255) as u8;
        // i8 inputs are moved into u8 by +128 (their zero point was moved likewise).
        let shift: u8 = if c.src_i8 { 128 } else { 0 };
        let mut s0 = 0;
        while s0 < nb {
            let cnt = per.min(nb - s0);
            let ncols = cnt * p;
            ws.col.resize(k * ncols, 0);
            ws.acc.resize(cout_g * ncols, 0);
            for g in 0..c.group {
                // im2col: col[(ci, ky, kx)][(sample, oy, ox)]
                for s in 0..cnt {
                    let base = (s0 + s) * in_len;
                    for ci in 0..cin_g {
                        let plane = base + (g * cin_g + ci) * c.h * c.w;
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                let row = (ci * c.kh + ky) * c.kw + kx;
                                let dst =
                                    &mut ws.col[row * ncols + s * p..row * ncols + (s + 1) * p];
                                // Valid output columns: 0 <= ox·stride + kx·dil − pad < w.
                                let off = (kx * c.dil[1]) as isize - c.pads[1] as isize;
                                let st = c.stride[1] as isize;
                                let lo = if off >= 0 {
                                    0
                                } else {
                                    ((-off + st - 1) / st) as usize
                                }
                                .min(c.ow);
                                let hi = if (c.w as isize) <= off {
                                    0
                                } else {
                                    ((c.w as isize - off + st - 1) / st) as usize
                                }
                                .clamp(lo, c.ow);
                                for oy in 0..c.oh {
                                    let iy = (oy * c.stride[0] + ky * c.dil[0]) as isize
                                        - c.pads[0] as isize;
                                    let out = &mut dst[oy * c.ow..(oy + 1) * c.ow];
                                    if iy < 0 || iy as usize >= c.h {
                                        out.fill(pad_val);
                                        continue;
                                    }
                                    out[..lo].fill(pad_val);
                                    out[hi..].fill(pad_val);
                                    let first = ((plane + iy as usize * c.w) as isize
                                        + off
                                        + lo as isize * st)
                                        as usize;
                                    let sst = c.stride[1];
                                    if c.src_i8 {
                                        let src = &ws.i8s[c.src];
                                        for (j, o) in out[lo..hi].iter_mut().enumerate() {
                                            *o = (src[first + j * sst] as u8) ^ shift;
                                        }
                                    } else {
                                        let src = &ws.u8s[c.src];
                                        if sst == 1 {
                                            out[lo..hi]
                                                .copy_from_slice(&src[first..first + (hi - lo)]);
                                        } else {
                                            for (j, o) in out[lo..hi].iter_mut().enumerate() {
                                                *o = src[first + j * sst];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                let w = &c.weights[g * cout_g * k..(g + 1) * cout_g * k];
                kernels::gemm_i8u8(self.isa, cout_g, ncols, k, w, &ws.col, &mut ws.acc)?;
                for co in 0..cout_g {
                    let oc = g * cout_g + co;
                    let corr = c.bias[oc] - c.x_zp * c.wsum[oc];
                    for s in 0..cnt {
                        let acc = &ws.acc[co * ncols + s * p..co * ncols + (s + 1) * p];
                        let o = (s0 + s) * out_len + oc * p;
                        match c.dst_dtype {
                            DType::U8 => {
                                for (d, &a) in ws.u8s[c.dst][o..o + p].iter_mut().zip(acc) {
                                    *d = sat_u8(
                                        c.requant
                                            .apply(a.wrapping_add(corr))
                                            .saturating_add(c.y_zp),
                                    );
                                }
                            }
                            _ => {
                                for (d, &a) in ws.i8s[c.dst][o..o + p].iter_mut().zip(acc) {
                                    *d = sat_i8(
                                        c.requant
                                            .apply(a.wrapping_add(corr))
                                            .saturating_add(c.y_zp),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            s0 += cnt;
        }
        Ok(())
    }

    fn matmul(&self, m: &MatMulStep, ws: &mut Workspace, nb: usize) -> Result<()> {
        let k = m.k;
        ws.col.resize(k * nb, 0);
        ws.acc.resize(m.ncol * nb, 0);
        // Transpose A into [k][sample] (u8 domain).
        for s in 0..nb {
            for kk in 0..k {
                ws.col[kk * nb + s] = if m.src_i8 {
                    (ws.i8s[m.src][s * k + kk] as u8) ^ 128
                } else {
                    ws.u8s[m.src][s * k + kk]
                };
            }
        }
        kernels::gemm_i8u8(self.isa, m.ncol, nb, k, &m.weights_t, &ws.col, &mut ws.acc)?;
        for j in 0..m.ncol {
            let corr = -m.a_zp * m.wsum[j];
            for s in 0..nb {
                let v = m
                    .requant
                    .apply(ws.acc[j * nb + s].wrapping_add(corr))
                    .saturating_add(m.y_zp);
                match m.dst_dtype {
                    DType::U8 => ws.u8s[m.dst][s * m.ncol + j] = sat_u8(v),
                    _ => ws.i8s[m.dst][s * m.ncol + j] = sat_i8(v),
                }
            }
        }
        Ok(())
    }
}

/// Where [`Plan::run`] writes: one variant per graph output element type.
#[derive(Debug)]
pub enum Output<'a> {
    /// u8 output.
    U8(&'a mut [u8]),
    /// i8 output.
    I8(&'a mut [i8]),
    /// f32 output.
    F32(&'a mut [f32]),
}

fn two<T>(v: &mut [Vec<T>], a: usize, b: usize) -> (&[T], &mut [T]) {
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&r[0], &mut l[b])
    }
}

fn copy_slot<T: Copy>(v: &mut [Vec<T>], src: usize, dst: usize, len: usize) {
    let (s, d) = two(v, src, dst);
    d[..len].copy_from_slice(&s[..len]);
}

fn max_pool<T: Copy + PartialOrd>(p: &PoolStep, nb: usize, src: &[T], dst: &mut [T]) {
    let (il, ol) = (p.c * p.h * p.w, p.c * p.oh * p.ow);
    for s in 0..nb {
        for ch in 0..p.c {
            let plane = &src[s * il + ch * p.h * p.w..s * il + (ch + 1) * p.h * p.w];
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let mut best: Option<T> = None;
                    for ky in 0..p.kh {
                        let iy = (oy * p.stride[0] + ky) as isize - p.pads[0] as isize;
                        if iy < 0 || iy as usize >= p.h {
                            continue;
                        }
                        for kx in 0..p.kw {
                            let ix = (ox * p.stride[1] + kx) as isize - p.pads[1] as isize;
                            if ix < 0 || ix as usize >= p.w {
                                continue;
                            }
                            let v = plane[iy as usize * p.w + ix as usize];
                            if best.is_none_or(|b| v > b) {
                                best = Some(v);
                            }
                        }
                    }
                    if let Some(b) = best {
                        dst[s * ol + ch * p.oh * p.ow + oy * p.ow + ox] = b;
                    }
                }
            }
        }
    }
}
