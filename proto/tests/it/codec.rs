//! The frame decoder against hostile and awkward input.

use proptest::prelude::*;
use sextant_proto::*;

use crate::util;

fn sample_envelopes() -> Vec<Envelope> {
    vec![
        Envelope {
            v: PROTOCOL_VERSION,
            msg: Message::TelemetryBatch(util::batch(9, 0..5)),
        },
        Envelope {
            v: PROTOCOL_VERSION,
            msg: Message::ModelChunk(ModelChunk {
                model: ModelVersion(3),
                offset: 4096,
                data: Bytes(util::blob(5000, 1)),
            }),
        },
        Envelope {
            v: PROTOCOL_VERSION,
            msg: Message::Error(ErrorMsg::new(ErrorCode::OVERLOADED, "busy")),
        },
    ]
}

fn frame_with_body(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn decode_one(frame: &[u8]) -> Result<Option<Envelope>, ProtoError> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    d.push(frame)?;
    d.next_envelope()
}

#[test]
fn byte_at_a_time_input_yields_every_frame_exactly_once() {
    let envs = sample_envelopes();
    let mut stream = Vec::new();
    for e in &envs {
        stream.extend(encode_frame(e, DEFAULT_MAX_FRAME_LEN).unwrap());
    }
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut out = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b)).unwrap();
        while let Some(e) = d.next_envelope().unwrap() {
            out.push(e);
        }
    }
    assert_eq!(out, envs);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn oversized_length_prefix_is_refused_before_allocating() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    // u32::MAX announced; only the prefix and a few body bytes ever arrive.
    let err = d.push(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap_err();
    assert_eq!(
        err,
        ProtoError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME_LEN
        }
    );
    assert_eq!(err.code(), ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(d.buffered(), 0, "none of the oversized frame was buffered");
    // The stream cannot be resynchronised: the decoder stays failed.
    assert_eq!(d.push(&[0]), Err(err.clone()));
    assert_eq!(d.next_frame(), Err(err));

    // One byte over the cap, arriving byte by byte, fails on the fourth prefix byte.
    let mut d = FrameDecoder::new(100);
    for b in &101u32.to_be_bytes()[..3] {
        d.push(std::slice::from_ref(b)).unwrap();
    }
    assert!(matches!(
        d.push(&[101u32.to_be_bytes()[3]]),
        Err(ProtoError::FrameTooLarge { len: 101, max: 100 })
    ));
}

#[test]
fn oversized_frame_after_a_good_one_is_refused_after_the_good_one() {
    let good = encode_frame(&sample_envelopes()[2], DEFAULT_MAX_FRAME_LEN).unwrap();
    let mut d = FrameDecoder::new(64);
    let mut stream = good.clone();
    stream.extend_from_slice(&1000u32.to_be_bytes());
    d.push(&stream).unwrap();
    assert_eq!(d.next_envelope(), Ok(Some(sample_envelopes()[2].clone())));
    assert!(matches!(
        d.next_frame(),
        Err(ProtoError::FrameTooLarge { len: 1000, max: 64 })
    ));
}

#[test]
fn truncated_cbor_at_every_length_is_a_typed_error() {
    for env in sample_envelopes() {
        let body = encode_body(&env).unwrap();
        for cut in 0..body.len() {
            let frame = frame_with_body(&body[..cut]);
            assert_eq!(
                decode_one(&frame),
                Err(ProtoError::TruncatedCbor),
                "{} body cut at {cut} of {}",
                env.msg.name(),
                body.len()
            );
        }
    }
}

#[test]
fn garbage_cbor_is_a_typed_error_and_the_next_frame_still_decodes() {
    let good = encode_frame(&sample_envelopes()[2], DEFAULT_MAX_FRAME_LEN).unwrap();
    // Additional information 28..=30 is reserved in every major type: not CBOR.
    for garbage in [&[0x1cu8][..], &[0xa1, 0x1c], &[0x5d]] {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        d.push(&frame_with_body(garbage)).unwrap();
        d.push(&good).unwrap();
        let r = d.next_envelope();
        assert!(
            matches!(r, Err(ProtoError::InvalidCbor { .. })),
            "{garbage:x?}: {r:?}"
        );
        assert_eq!(d.next_envelope(), Ok(Some(sample_envelopes()[2].clone())));
    }
    // A lone "break" (0xff) where a map should start: ciborium reports it as a type error.
    assert!(matches!(
        decode_one(&frame_with_body(&[0xff])),
        Err(ProtoError::Schema { .. })
    ));
    // Well-formed CBOR of the wrong shape: the integer 5, an unknown message, a bad label.
    assert!(matches!(
        decode_one(&frame_with_body(&[0x05])),
        Err(ProtoError::Schema { .. })
    ));
    let mut unknown = Vec::new();
    ciborium::ser::into_writer(
        &ciborium::Value::Map(vec![
            ("v".into(), 1.into()),
            (
                "msg".into(),
                ciborium::Value::Map(vec![("launch".into(), ciborium::Value::Null)]),
            ),
        ]),
        &mut unknown,
    )
    .unwrap();
    assert!(matches!(
        decode_one(&frame_with_body(&unknown)),
        Err(ProtoError::Schema { .. })
    ));
    let mut bad_region = ciborium::Value::serialized(&sample_envelopes()[0]).unwrap();
    replace_text(&mut bad_region, "u4pr", "zzzzzzz");
    let mut body = Vec::new();
    ciborium::ser::into_writer(&bad_region, &mut body).unwrap();
    let err = decode_one(&frame_with_body(&body)).unwrap_err();
    assert!(
        matches!(&err, ProtoError::Schema { reason } if reason.contains("region")),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::MALFORMED);
}

fn replace_text(v: &mut ciborium::Value, from: &str, to: &str) {
    match v {
        ciborium::Value::Text(t) if t == from => *t = to.to_string(),
        ciborium::Value::Array(a) => a.iter_mut().for_each(|x| replace_text(x, from, to)),
        ciborium::Value::Map(m) => m.iter_mut().for_each(|(_, x)| replace_text(x, from, to)),
        _ => {}
    }
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let env = sample_envelopes()[0].clone();
    let mut value = ciborium::Value::serialized(&env).unwrap();
    if let ciborium::Value::Map(m) = &mut value {
        m.push(("added_in_a_later_minor".into(), ciborium::Value::from(42)));
    }
    let mut body = Vec::new();
    ciborium::ser::into_writer(&value, &mut body).unwrap();
    assert_eq!(decode_one(&frame_with_body(&body)), Ok(Some(env)));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // {"v": 1, "x": [[[[ ... 100 000 levels ... ]]]]}: "x" is an unknown key, so the decoder
    // skips its value, which must not recurse without bound.
    let depth = 100_000;
    let mut body = vec![0xa2, 0x61, b'v', 0x01, 0x61, b'x'];
    body.extend(std::iter::repeat_n(0x81u8, depth));
    body.push(0x00);
    assert_eq!(
        decode_one(&frame_with_body(&body)),
        Err(ProtoError::TooDeep)
    );
}

#[test]
fn stream_ending_inside_a_frame_is_reported() {
    let frame = encode_frame(&sample_envelopes()[1], DEFAULT_MAX_FRAME_LEN).unwrap();
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    d.push(&frame[..2]).unwrap();
    assert_eq!(
        d.finish(),
        Err(ProtoError::TruncatedFrame { have: 2, need: 4 })
    );
    d.push(&frame[2..100]).unwrap();
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(
        d.finish(),
        Err(ProtoError::TruncatedFrame {
            have: 100,
            need: frame.len() as u64
        })
    );
}

#[test]
fn a_full_chunk_frame_fits_the_cap_with_the_documented_overhead() {
    let env = Envelope {
        v: u16::MAX,
        msg: Message::ModelChunk(ModelChunk {
            model: ModelVersion(u64::MAX),
            offset: u64::MAX,
            data: Bytes(vec![0xaa; DEFAULT_CHUNK_LEN as usize]),
        }),
    };
    let body = encode_body(&env).unwrap();
    assert!(body.len() as u64 <= u64::from(DEFAULT_CHUNK_LEN + CHUNK_OVERHEAD));
    // Byte strings are CBOR byte strings, not arrays of integers.
    assert!(
        body.len() < DEFAULT_CHUNK_LEN as usize + 100,
        "{}",
        body.len()
    );
    assert!(encode_frame(&env, DEFAULT_MAX_FRAME_LEN).is_ok());
}

proptest! {
    /// Random bytes in random pieces never panic; whatever comes out is a typed error or an
    /// envelope, and the decoder never buffers more than it was given.
    #[test]
    fn random_bytes_in_random_pieces_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        piece in 1usize..300,
        cap in 0u32..2048,
    ) {
        let mut d = FrameDecoder::new(cap);
        let mut given = 0usize;
        'outer: for p in bytes.chunks(piece) {
            if d.push(p).is_err() {
                break;
            }
            given += p.len();
            prop_assert!(d.buffered() <= given);
            loop {
                match d.next_envelope() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(ProtoError::FrameTooLarge { len, max }) => {
                        prop_assert!(len > u64::from(max));
                        break 'outer;
                    }
                    Err(e) => prop_assert_ne!(e.code(), ErrorCode::INTERNAL),
                }
            }
        }
        let _ = d.finish();
    }

    /// Random bodies behind a correct prefix decode or fail with a body error, never a framing
    /// error.
    #[test]
    fn random_bodies_fail_as_body_errors(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        match decode_one(&frame_with_body(&body)) {
            Ok(Some(_)) => {}
            Ok(None) => prop_assert!(false, "a complete frame must decode or fail"),
            Err(e) => prop_assert!(matches!(
                e,
                ProtoError::TruncatedCbor
                    | ProtoError::InvalidCbor { .. }
                    | ProtoError::Schema { .. }
                    | ProtoError::TrailingBytes { .. }
                    | ProtoError::TooDeep
            ), "{e:?}"),
        }
    }
}

/// Floats of every kind: arbitrary bit patterns (NaNs included), values exact as half floats,
/// and the usual specials.
fn any_float() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        (-4096i32..4096, 0u32..30).prop_map(|(k, s)| k as f32 / (1u32 << s) as f32),
        crate::strategies::finite(),
        Just(f32::NAN),
    ]
}

proptest! {
    /// The hand-written body encoder writes exactly what ciborium writes, for either kind of
    /// body and floats of every kind; so what it writes is one well-formed CBOR item that
    /// decodes as a `RecordBody` — which is why the agent does not check the records it encoded
    /// itself before upload.
    #[test]
    fn record_body_encoder_matches_ciborium(
        rec in crate::strategies::record(),
        f1 in any_float(),
        f2 in any_float(),
    ) {
        let mut body = rec.body;
        match &mut body {
            RecordBody::Localization(ev) => ev.confidence = f1,
            RecordBody::Shadow(r) => {
                r.median_translation_diff_m = f1;
                r.median_rotation_diff_rad = f2;
            }
        }
        let mut want = Vec::new();
        ciborium::into_writer(&body, &mut want).unwrap();
        let mut got = vec![0xaa];
        body.encode_cbor(&mut got);
        prop_assert_eq!(&got[1..], &want[..]);
        prop_assert!(sextant_proto::check_item(&got[1..]).is_ok());
        prop_assert!(ciborium::from_reader::<RecordBody, _>(&got[1..]).is_ok());
    }
}
