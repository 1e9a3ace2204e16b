//! Cross-crate end-to-end tests for Sextant live in `tests/tests/`; this library is empty on purpose.
