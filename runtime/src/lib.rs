//! Sextant's on-device runtime: what a mobile AR app links to learn where its camera is.
//!
//! One frame's trip (see `ARCHITECTURE.md`): a borrowed [`Frame`] in any of the pixel formats
//! phone cameras hand out → a [`GrayImage`] → features → 2D–3D matches against a map → a
//! [`Pose`] through a [`Camera`] model. This crate has no async runtime and no network access;
//! every bad input is an [`Error`] value, never a panic.
//!
//! What exists so far is the foundation every later stage builds on:
//!
//! - [`camera`]: pinhole intrinsics with Brown–Conrady distortion; projection, bearing vectors,
//!   undistortion.
//! - [`pose`]: world-to-camera rigid transforms with composition, interpolation and error metrics.
//! - [`frame`]: validated, borrowed pixel buffers (Gray8, NV12, NV21, RGBA8, BGRA8) and the one
//!   gray conversion the runtime uses on CPU and GPU.
//! - [`image`]: owned gray images.
//!
//! ```
//! use nalgebra::Vector3;
//! use sextant_runtime::{Camera, Frame, PixelFormat};
//!
//! let camera = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0)?;
//! let pixel = camera.project(&Vector3::new(0.1, 0.0, 2.0)).expect("in front of the camera");
//! assert_eq!(pixel.x, 345.0);
//!
//! let pixels = vec![128u8; 640 * 480 * 4];
//! let frame = Frame::new(PixelFormat::Rgba8, 640, 480, 640 * 4, &pixels)?;
//! assert_eq!(frame.to_gray().get(10, 10), 128);
//! # Ok::<(), sextant_runtime::Error>(())
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod camera;
pub mod clock;
pub mod descriptor;
pub mod error;
pub mod features;
pub mod frame;
pub mod geometry;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image;
pub mod localize;
pub mod map;
pub mod pose;
pub(crate) mod simd;

pub use backend::{Backend, BackendKind, StageBackends};
pub use camera::{Camera, Distortion};
pub use error::{Error, Result};
pub use frame::{Frame, PixelFormat, rgb_to_luma};
pub use image::GrayImage;
pub use pose::Pose;
