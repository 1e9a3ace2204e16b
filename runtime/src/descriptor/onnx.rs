//! The part of the ONNX protobuf schema the kernel compiler reads, as prost messages.
//!
//! Field numbers follow `onnx.proto3` (ONNX IR version 7+); fields outside this subset are
//! skipped by prost while decoding. Decoding never panics: truncated or corrupt bytes come back
//! as a [`DescriptorError::Decode`]. The same wire format is written by the backend's model
//! builder through `tract_onnx::pb`, so both ends read one schema.

use super::error::{DescriptorError, Result};

/// `onnx.ModelProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// IR version of the file.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Name of the tool that wrote the file.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Model version number.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Free-form key/value metadata (`name`, `version`, ... written by the builder).
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// Operator set domain (`""` is the default ONNX domain).
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Operator set version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.GraphProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Nodes, topologically sorted (an ONNX requirement the compiler checks).
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights, scales, zero points).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Graph inputs (may also list initializers, as older exporters do).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `onnx.NodeProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Input tensor names (`""` marks an omitted optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output tensor names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator type, e.g. `QLinearConv`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator domain (`""` or `ai.onnx` for standard ops).
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `onnx.AttributeProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `AttributeType` discriminant (1 float, 2 int, 3 string, 4 tensor, 6 floats, 7 ints).
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// Float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// Int value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// String value.
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// Tensor value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Float list value.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// Int list value.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

/// `onnx.TensorProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Dimensions.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// `DataType` discriminant (see [`data_type`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Float elements (when not in `raw_data`).
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// int32 / int8 / uint8 elements (when not in `raw_data`).
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// int64 elements (when not in `raw_data`).
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian packed elements.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// 0 = data inside the file, 1 = external data (refused).
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `onnx.ValueInfoProto` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// Tensor name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Tensor type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `onnx.TypeProto` (tensor types only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// The tensor type (other type kinds are skipped and read as `None`).
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `onnx.TypeProto.Tensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    /// Element `DataType`.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape (absent means unknown rank).
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`: a fixed size or a symbolic name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    /// Fixed size (0 when symbolic).
    #[prost(int64, tag = "1")]
    pub dim_value: i64,
    /// Symbolic name, e.g. `N`.
    #[prost(string, tag = "2")]
    pub dim_param: String,
}

/// ONNX `TensorProto.DataType` discriminants used by the subset.
pub mod data_type {
    /// f32.
    pub const FLOAT: i32 = 1;
    /// u8.
    pub const UINT8: i32 = 2;
    /// i8.
    pub const INT8: i32 = 3;
    /// i32.
    pub const INT32: i32 = 6;
    /// i64.
    pub const INT64: i32 = 7;
}

/// Decodes a model from bytes; never panics.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(DescriptorError::Decode("empty model file".into()));
    }
    <ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| DescriptorError::Decode(e.to_string()))
}

/// The elements of a constant tensor, widened to one of three element kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// f32 elements.
    F32(Vec<f32>),
    /// Integer elements (u8, i8, i32, i64 widened to i64).
    Int(Vec<i64>),
}

/// A decoded constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// ONNX element type.
    pub data_type: i32,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Elements.
    pub data: TensorData,
}

impl Constant {
    /// Number of elements the dimensions describe.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::Int(v) => v.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single element of a scalar (or one-element) f32 tensor.
    pub fn scalar_f32(&self) -> Option<f32> {
        match &self.data {
            TensorData::F32(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// The single element of a scalar (or one-element) integer tensor.
    pub fn scalar_int(&self) -> Option<i64> {
        match &self.data {
            TensorData::Int(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }
}

/// Upper bound on constant elements, so a hostile file cannot make us allocate without limit
/// beyond what its own bytes already occupy.
const MAX_ELEMENTS: usize = 1 << 26;

/// Decodes a constant tensor with strict checks: known element type, dims that multiply to the
/// element count without overflow, no external data.
pub fn constant(t: &TensorProto) -> Result<Constant> {
    let bad =
        |msg: String| DescriptorError::InvalidGraph(format!("initializer `{}`: {msg}", t.name));
    if t.data_location != 0 {
        return Err(bad("external data is not supported".into()));
    }
    let mut count: usize = 1;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| bad("too many elements".into()))?;
        dims.push(d);
    }
    let raw = !t.raw_data.is_empty() || count == 0;
    let width = match t.data_type {
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::UINT8 | data_type::INT8 => 1,
        data_type::INT64 => 8,
        other => return Err(bad(format!("unsupported element type {other}"))),
    };
    let data = if raw {
        if t.raw_data.len() != count * width {
            return Err(bad(format!(
                "raw_data holds {} bytes, dims need {}",
                t.raw_data.len(),
                count * width
            )));
        }
        let r = &t.raw_data;
        match t.data_type {
            data_type::FLOAT => TensorData::F32(
                r.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            data_type::INT32 => TensorData::Int(
                r.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            ),
            data_type::UINT8 => TensorData::Int(r.iter().map(|&b| i64::from(b)).collect()),
            data_type::INT8 => TensorData::Int(r.iter().map(|&b| i64::from(b as i8)).collect()),
            _ => TensorData::Int(
                r.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
        }
    } else {
        let data = match t.data_type {
            data_type::FLOAT => TensorData::F32(t.float_data.clone()),
            data_type::INT64 => TensorData::Int(t.int64_data.clone()),
            data_type::UINT8 => TensorData::Int(
                t.int32_data
                    .iter()
                    .map(|&v| {
                        u8::try_from(v)
                            .map(i64::from)
                            .map_err(|_| bad(format!("uint8 element {v} out of range")))
                    })
                    .collect::<Result<_>>()?,
            ),
            data_type::INT8 => TensorData::Int(
                t.int32_data
                    .iter()
                    .map(|&v| {
                        i8::try_from(v)
                            .map(i64::from)
                            .map_err(|_| bad(format!("int8 element {v} out of range")))
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => TensorData::Int(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
        };
        let c = Constant {
            data_type: t.data_type,
            dims: dims.clone(),
            data,
        };
        if c.len() != count {
            return Err(bad(format!("{} elements, dims need {count}", c.len())));
        }
        return Ok(c);
    };
    Ok(Constant {
        data_type: t.data_type,
        dims,
        data,
    })
}
