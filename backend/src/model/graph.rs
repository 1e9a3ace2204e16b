//! Writing the descriptor model as ONNX (QOperator form, per-tensor scales).
//!
//! The graph, for patches `x: u8 [N,1,32,32]`:
//!
//! ```text
//! QLinearConv  grad   3×3, 8 out   fixed oriented-gradient filters; u8 out, zero point 0
//!                                  (negative responses saturate to 0: the ReLU is fused)
//! QLinearConv  pool   16×16 depthwise (group 8), stride 8, pad 4, tent weights: soft 4×4
//!                                  spatial binning; int32 bias centres each channel; u8 out, zp 128
//! Flatten             [N,128]
//! QLinearMatMul proj  [128,D] learned projection (int8 values stored as u8, zp 128); u8 out, zp 128
//! DequantizeLinear → LpNormalization(p=2) → QuantizeLinear(1/127, int8)   L2 normalisation
//! ```
//!
//! It is written with the runtime's own prost schema (`sextant_runtime::descriptor::onnx`), the
//! one the kernel compiler reads; prost encodes fields in tag order, so the bytes are a pure
//! function of the parameters.

use sextant_runtime::descriptor::PATCH_SIZE;
use sextant_runtime::descriptor::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto, data_type,
};

/// Orientation channels of the gradient front end.
pub const ORIENTATIONS: usize = 8;
/// Spatial cells per side after pooling.
pub const CELLS: usize = 4;
/// Length of the pooled feature vector (`ORIENTATIONS · CELLS²`).
pub const FEATURES: usize = ORIENTATIONS * CELLS * CELLS;
/// Pooling kernel side, stride and padding.
pub const POOL_K: usize = 16;
/// Pooling stride.
pub const POOL_STRIDE: usize = 8;
/// Pooling padding (each side).
pub const POOL_PAD: usize = 4;
/// Input scale: pixel value / 255.
pub const INPUT_SCALE: f32 = 1.0 / 255.0;
/// Gradient output scale (requantisation multiplier 0.5 on Sobel sums).
pub const GRAD_SCALE: f32 = 2.0 / 255.0;
/// Pooling weight scale (tent weights in 1/127).
pub const POOL_W_SCALE: f32 = 1.0 / 127.0;
/// Zero point of the pooled features.
pub const POOL_ZP: u8 = 128;

/// The fixed oriented-gradient filters, `[8][3][3]`: Sobel x, y and the two diagonals, each with
/// both signs (`+`, `−`), in the order 0°, 180°, 90°, 270°, 45°, 225°, 135°, 315°.
pub fn gradient_filters() -> Vec<i8> {
    let dx: [i8; 9] = [-1, 0, 1, -2, 0, 2, -1, 0, 1];
    let dy: [i8; 9] = [-1, -2, -1, 0, 0, 0, 1, 2, 1];
    let d1: [i8; 9] = [-2, -1, 0, -1, 0, 1, 0, 1, 2];
    let d2: [i8; 9] = [0, -1, -2, 1, 0, -1, 2, 1, 0];
    let mut w = Vec::with_capacity(72);
    for f in [dx, dy, d1, d2] {
        w.extend_from_slice(&f);
        w.extend(f.iter().map(|v| -v));
    }
    w
}

/// Tent (bilinear binning) weights of the pooling kernel, `[16][16]`, in units of 1/127.
pub fn pool_weights() -> Vec<i8> {
    let t: Vec<f64> = (0..POOL_K)
        .map(|u| 1.0 - (u as f64 + 0.5 - POOL_K as f64 / 2.0).abs() / (POOL_K as f64 / 2.0))
        .collect();
    let mut w = Vec::with_capacity(POOL_K * POOL_K);
    for ty in &t {
        for tx in &t {
            w.push((127.0 * ty * tx).round() as i8);
        }
    }
    w
}

/// Every learned or calibrated number of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    /// Descriptor dimension.
    pub dim: usize,
    /// Per-channel int32 bias of the pooling conv (centres each orientation channel).
    pub pool_bias: Vec<i32>,
    /// Output scale of the pooling conv.
    pub pool_scale: f32,
    /// Projection, int8 `[FEATURES][dim]` row-major.
    pub proj: Vec<i8>,
    /// Projection weight scale.
    pub proj_scale: f32,
    /// Projection output scale.
    pub proj_out_scale: f32,
}

fn scalar_f32(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::FLOAT,
        raw_data: v.to_le_bytes().to_vec(),
        ..Default::default()
    }
}

fn scalar_u8(name: &str, v: u8) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::UINT8,
        raw_data: vec![v],
        ..Default::default()
    }
}

fn scalar_i8(name: &str, v: i8) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::INT8,
        raw_data: vec![v as u8],
        ..Default::default()
    }
}

fn tensor_i8(name: &str, dims: &[usize], v: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::INT8,
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: v.iter().map(|&x| x as u8).collect(),
        ..Default::default()
    }
}

fn tensor_i32(name: &str, v: &[i32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type::INT32,
        dims: vec![v.len() as i64],
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, dims: &[Option<usize>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Some(v) => Dimension {
                                dim_value: *v as i64,
                                ..Default::default()
                            },
                            None => Dimension {
                                dim_param: "N".into(),
                                ..Default::default()
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

/// How much of the graph to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Gradient conv only: output `u8 [N,8,32,32]` (calibration of the pooling).
    Gradients,
    /// Gradients, pooling and flatten: output `u8 [N,128]` (the projection's input).
    Features,
    /// The whole descriptor model: output `i8 [N,dim]`.
    Full,
}

/// Writes the model (or a prefix of it) with name/version metadata.
pub fn model_proto(p: &ModelParams, stage: Stage, name: &str, version: &str) -> ModelProto {
    let mut init = vec![
        scalar_f32("x_scale", INPUT_SCALE),
        scalar_u8("x_zp", 0),
        tensor_i8("grad_w", &[ORIENTATIONS, 1, 3, 3], &gradient_filters()),
        scalar_f32("grad_w_scale", 1.0),
        scalar_i8("w_zp", 0),
        scalar_f32("grad_scale", GRAD_SCALE),
        scalar_u8("grad_zp", 0),
    ];
    let mut nodes = vec![node(
        "grad",
        "QLinearConv",
        &[
            "patch",
            "x_scale",
            "x_zp",
            "grad_w",
            "grad_w_scale",
            "w_zp",
            "grad_scale",
            "grad_zp",
        ],
        "grad_out",
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[1, 1]),
        ],
    )];
    let output = match stage {
        Stage::Gradients => value_info(
            "grad_out",
            data_type::UINT8,
            &[None, Some(ORIENTATIONS), Some(PATCH_SIZE), Some(PATCH_SIZE)],
        ),
        Stage::Features | Stage::Full => {
            let pw: Vec<i8> = (0..ORIENTATIONS).flat_map(|_| pool_weights()).collect();
            init.extend([
                tensor_i8("pool_w", &[ORIENTATIONS, 1, POOL_K, POOL_K], &pw),
                scalar_f32("pool_w_scale", POOL_W_SCALE),
                scalar_f32("pool_scale", p.pool_scale),
                scalar_u8("pool_zp", POOL_ZP),
                tensor_i32("pool_bias", &p.pool_bias),
            ]);
            let k = POOL_K as i64;
            let (s, pad) = (POOL_STRIDE as i64, POOL_PAD as i64);
            nodes.push(node(
                "pool",
                "QLinearConv",
                &[
                    "grad_out",
                    "grad_scale",
                    "grad_zp",
                    "pool_w",
                    "pool_w_scale",
                    "w_zp",
                    "pool_scale",
                    "pool_zp",
                    "pool_bias",
                ],
                "pool_out",
                vec![
                    int("group", ORIENTATIONS as i64),
                    ints("kernel_shape", &[k, k]),
                    ints("pads", &[pad, pad, pad, pad]),
                    ints("strides", &[s, s]),
                ],
            ));
            nodes.push(node(
                "flatten",
                "Flatten",
                &["pool_out"],
                "features",
                vec![int("axis", 1)],
            ));
            if stage == Stage::Features {
                value_info("features", data_type::UINT8, &[None, Some(FEATURES)])
            } else {
                init.extend([
                    // Stored as uint8 with zero point 128 (exactly the int8 weights + 128):
                    // onnxruntime's CPU QLinearMatMul has no u8 × i8 kernel.
                    TensorProto {
                        name: "proj_w".into(),
                        data_type: data_type::UINT8,
                        dims: vec![FEATURES as i64, p.dim as i64],
                        raw_data: p.proj.iter().map(|&x| (i16::from(x) + 128) as u8).collect(),
                        ..Default::default()
                    },
                    scalar_u8("proj_w_zp", 128),
                    scalar_f32("proj_w_scale", p.proj_scale),
                    scalar_f32("proj_scale", p.proj_out_scale),
                    scalar_u8("proj_zp", 128),
                    scalar_f32("desc_scale", 1.0 / 127.0),
                    scalar_i8("desc_zp", 0),
                ]);
                nodes.push(node(
                    "proj",
                    "QLinearMatMul",
                    &[
                        "features",
                        "pool_scale",
                        "pool_zp",
                        "proj_w",
                        "proj_w_scale",
                        "proj_w_zp",
                        "proj_scale",
                        "proj_zp",
                    ],
                    "proj_out",
                    vec![],
                ));
                nodes.push(node(
                    "dequant",
                    "DequantizeLinear",
                    &["proj_out", "proj_scale", "proj_zp"],
                    "proj_real",
                    vec![],
                ));
                nodes.push(node(
                    "l2norm",
                    "LpNormalization",
                    &["proj_real"],
                    "unit",
                    vec![int("axis", 1), int("p", 2)],
                ));
                nodes.push(node(
                    "quant",
                    "QuantizeLinear",
                    &["unit", "desc_scale", "desc_zp"],
                    "descriptor",
                    vec![],
                ));
                value_info("descriptor", data_type::INT8, &[None, Some(p.dim)])
            }
        }
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "sextant model build".into(),
        model_version: 1,
        graph: Some(GraphProto {
            node: nodes,
            name: name.into(),
            initializer: init,
            input: vec![value_info(
                "patch",
                data_type::UINT8,
                &[None, Some(1), Some(PATCH_SIZE), Some(PATCH_SIZE)],
            )],
            output: vec![output],
        }),
        metadata_props: vec![
            StringStringEntryProto {
                key: "name".into(),
                value: name.into(),
            },
            StringStringEntryProto {
                key: "version".into(),
                value: version.into(),
            },
        ],
    }
}

/// Encodes a model to bytes.
pub fn encode(m: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}
