//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the simulator: bad scene files, bad trajectory specs, unreadable
/// images, malformed sessions, and camera/pose values the runtime rejects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// A PNG could not be decoded or encoded (truncated, corrupt, unsupported layout).
    #[error("PNG {what}: {message}")]
    Png {
        /// Which image (a path or a name).
        what: String,
        /// What was wrong.
        message: String,
    },
    /// A scene file is not valid TOML or does not follow the scene schema.
    #[error("scene {scene}: {message}")]
    SceneParse {
        /// The scene file (or sample name).
        scene: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A scene parsed but is not usable (degenerate quad, NaN, bad tiling, …).
    #[error("scene {scene}, {item}: {message}")]
    SceneInvalid {
        /// The scene file (or sample name).
        scene: String,
        /// Which surface or setting (e.g. `quad 3 "north wall"`).
        item: String,
        /// What is wrong with it.
        message: String,
    },
    /// A texture referenced by a scene does not exist.
    #[error("scene {scene}: texture {texture:?} not found (looked for {looked_for})")]
    MissingTexture {
        /// The scene file (or sample name).
        scene: String,
        /// The texture path as written in the scene.
        texture: String,
        /// Where it was looked for.
        looked_for: String,
    },
    /// No sample scene has this name.
    #[error("no sample scene named {0:?} (available: room, facade, plaza)")]
    UnknownSample(String),
    /// A trajectory specification (`orbit:frames=24,…`) is malformed or out of range.
    #[error("trajectory {spec:?}: {message}")]
    Trajectory {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// Photometric settings are out of range.
    #[error("photometric settings: {0}")]
    Photometric(String),
    /// An image cannot be encoded in the requested pixel format (e.g. odd size for NV12).
    #[error("pixel encoding: {0}")]
    Encode(String),
    /// A session folder or `session.json` is malformed.
    #[error("session {path}: {message}")]
    Session {
        /// The session folder or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A command-line style argument is out of range or unknown.
    #[error("{0}")]
    InvalidArgument(String),
    /// The runtime rejected a camera, pose or frame.
    #[error(transparent)]
    Runtime(#[from] sextant_runtime::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, SimError>;

impl SimError {
    /// An [`SimError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SimError {
        SimError::Io {
            path: path.into(),
            error: source,
        }
    }
}
