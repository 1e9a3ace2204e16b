//! The one rule every GPU test follows: run on a GPU adapter if there is one; otherwise skip
//! loudly, unless `SEXTANT_REQUIRE_GPU=1` says a GPU must be there (CI), in which case fail.
//!
//! ```no_run
//! use sextant_runtime::gpu::test_support;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let Some(ctx) = test_support::context_or_skip("my_gpu_test")? else {
//!     return Ok(());
//! };
//! // … use ctx …
//! # let _ = ctx;
//! # Ok(())
//! # }
//! ```

use std::io::Write;

use super::{GpuContext, GpuUnavailable};

/// The environment variable that turns a missing adapter from a skip into a failure.
pub const REQUIRE_GPU_ENV: &str = "SEXTANT_REQUIRE_GPU";

/// The backends tests use: Vulkan only (lavapipe in CI). With more backends enabled wgpu may
/// silently fall back to a GL adapter, which is not what the tests mean to check.
pub const TEST_BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN;

/// Whether `SEXTANT_REQUIRE_GPU` is set to `1`.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v.trim() == "1")
}

/// A fresh [`GpuContext`] on [`TEST_BACKENDS`] for the test named `test`.
///
/// - `Ok(Some(ctx))`: an adapter is there; run the test.
/// - `Ok(None)`: no adapter and the GPU is not required; a `SKIPPED: no GPU adapter (…)` line has
///   been written to stderr (past the test harness's output capture); the test should return
///   successfully.
/// - `Err(_)`: no adapter but `SEXTANT_REQUIRE_GPU=1`; the test should fail with this error.
///
/// Every call opens its own device, so tests running in parallel do not share one.
pub fn context_or_skip(test: &str) -> Result<Option<GpuContext>, GpuUnavailable> {
    match GpuContext::new(TEST_BACKENDS) {
        Ok(ctx) => Ok(Some(ctx)),
        Err(e) if gpu_required() => Err(GpuUnavailable {
            reason: format!("{REQUIRE_GPU_ENV}=1 but {test} found none: {}", e.reason),
        }),
        Err(e) => {
            // Straight to the stderr handle, not `eprintln!`: the test harness captures the print
            // macros of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n==================================================================\n\
                 SKIPPED: no GPU adapter ({}) — {test} did not run.\n\
                 Install Mesa's lavapipe (Debian: mesa-vulkan-drivers) to run it,\n\
                 or set {REQUIRE_GPU_ENV}=1 to make this a failure.\n\
                 ==================================================================",
                e.reason
            );
            Ok(None)
        }
    }
}
