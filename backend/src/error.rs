//! The error type of the backend's registry and QUIC server.

use crate::pki::PkiError;
use crate::store::StoreError;

/// Errors of the registry and the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Certificates, keys or signatures.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A protocol value could not be built or parsed.
    #[error(transparent)]
    Proto(#[from] sextant_proto::ProtoError),
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The QUIC/TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A caller-supplied value is out of range (version, expiry, manifest mismatch, …).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Result alias for the registry and server.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
