//! Parses arbitrary bytes as canonical model metadata; whatever parses must re-encode to the
//! exact same bytes (the signed form has one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_proto::ModelMetadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ModelMetadata::from_canonical_bytes(data) {
        assert_eq!(m.canonical_bytes(), data);
    }
});
