//! The descriptor module's error type.

/// Why a descriptor model could not be loaded or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The bytes are not a decodable ONNX protobuf (corrupt, truncated, not ONNX at all).
    #[error("model is not a valid ONNX protobuf: {0}")]
    Decode(String),
    /// The protobuf decoded but the graph inside it is inconsistent (missing tensors, wrong
    /// shapes, bad attribute values, external data).
    #[error("malformed model graph: {0}")]
    InvalidGraph(String),
    /// An operator (or an operator configuration) outside the runtime's int8 kernel subset.
    #[error("operator `{op}` (node `{node}`) is outside the runtime's kernel subset: {reason}")]
    UnsupportedOp {
        /// The ONNX op type, e.g. `Softmax`.
        op: String,
        /// The node's name (or its first output when unnamed).
        node: String,
        /// What exactly is unsupported.
        reason: String,
    },
    /// The graph is valid but is not a descriptor model: its input is not `u8 [N,1,32,32]` or
    /// its output is not `i8 [N, DESCRIPTOR_DIM]`.
    #[error("model interface does not fit a descriptor model: {0}")]
    Interface(String),
    /// A call's arguments do not fit together (buffer lengths, batch size).
    #[error("invalid descriptor input: {0}")]
    InvalidInput(String),
    /// tract-onnx refused or failed to run the model.
    #[error("tract: {0}")]
    Tract(String),
}

/// The descriptor module's result type.
pub type Result<T, E = DescriptorError> = std::result::Result<T, E>;
