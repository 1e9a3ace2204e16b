//! Integration tests of the sans-IO protocol: codec, round trips, and whole sessions driven
//! through the in-memory [`util::Pair`] harness.

mod codec;
mod roundtrip;
mod session;
mod strategies;
mod util;
