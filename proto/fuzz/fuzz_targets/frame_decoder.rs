//! Feeds arbitrary bytes to the frame decoder in arbitrary pieces.
//!
//! Input layout: byte 0 picks the frame cap (small caps reach the oversized-prefix path),
//! byte 1 the piece size; the rest is the stream. Properties checked: no panic, the decoder
//! never buffers more than it was given, an oversized prefix is always over the cap, and every
//! decoded envelope re-encodes to a frame that decodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_proto::{FrameDecoder, ProtoError, decode_body, encode_frame};

fuzz_target!(|data: &[u8]| {
    let [cap_sel, piece_sel, stream @ ..] = data else {
        return;
    };
    let cap = match cap_sel % 4 {
        0 => 16,
        1 => 256,
        2 => 4096,
        _ => 1 << 20,
    };
    let piece = usize::from(*piece_sel).max(1);
    let mut d = FrameDecoder::new(cap);
    let mut given = 0usize;
    for p in stream.chunks(piece) {
        if d.push(p).is_err() {
            return;
        }
        given += p.len();
        assert!(d.buffered() <= given);
        loop {
            match d.next_envelope() {
                Ok(Some(env)) => {
                    let again = encode_frame(&env, u32::MAX).expect("a decoded envelope encodes");
                    let back = decode_body(&again[4..]).expect("and decodes again");
                    // NaN floats are the only values not equal to themselves.
                    if format!("{back:?}") != format!("{env:?}") {
                        panic!("re-encoding changed the envelope");
                    }
                }
                Ok(None) => break,
                Err(ProtoError::FrameTooLarge { len, max }) => {
                    assert!(len > u64::from(max));
                    return;
                }
                Err(_) => {}
            }
        }
    }
    let _ = d.finish();
});
