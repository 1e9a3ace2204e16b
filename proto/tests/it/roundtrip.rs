//! Every message type survives encode → frame → decode unchanged.

use proptest::prelude::*;
use sextant_proto::*;

use crate::strategies::*;

/// Frames `msg`, decodes it back through a `FrameDecoder` fed in `piece`-byte pieces.
fn round_trip(msg: Message, v: u16, piece: usize) -> Envelope {
    let env = Envelope { v, msg };
    let frame = encode_frame(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut out = Vec::new();
    for p in frame.chunks(piece) {
        d.push(p).unwrap();
        while let Some(e) = d.next_envelope().unwrap() {
            out.push(e);
        }
    }
    d.finish().unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

macro_rules! round_trip_test {
    ($name:ident, $strategy:expr, $variant:path) => {
        proptest! {
            #[test]
            fn $name(value in $strategy, v in 1u16.., piece in 1usize..64) {
                let msg = $variant(value);
                let back = round_trip(msg.clone(), v, piece);
                prop_assert_eq!(back, Envelope { v, msg });
            }
        }
    };
}

round_trip_test!(hello_round_trips, hello(), Message::Hello);
round_trip_test!(welcome_round_trips, welcome(), Message::Welcome);
round_trip_test!(
    sync_request_round_trips,
    sync_request(),
    Message::SyncRequest
);
round_trip_test!(assignment_round_trips, assignment(), Message::Assignment);
round_trip_test!(
    model_metadata_round_trips,
    signed_metadata(),
    Message::ModelMetadata
);
round_trip_test!(
    chunk_request_round_trips,
    chunk_request(),
    Message::ChunkRequest
);
round_trip_test!(model_chunk_round_trips, model_chunk(), Message::ModelChunk);
round_trip_test!(
    telemetry_batch_round_trips,
    telemetry_batch(),
    Message::TelemetryBatch
);
round_trip_test!(
    telemetry_ack_round_trips,
    telemetry_ack(),
    Message::TelemetryAck
);
round_trip_test!(error_round_trips, error_msg(), Message::Error);

proptest! {
    /// The canonical (signed) metadata bytes parse back to the same metadata, and encoding is
    /// a function of the value (re-encoding the parsed value gives the same bytes).
    #[test]
    fn canonical_metadata_round_trips(m in model_metadata()) {
        let bytes = m.canonical_bytes();
        let back = ModelMetadata::from_canonical_bytes(&bytes).unwrap();
        prop_assert_eq!(back.canonical_bytes(), bytes);
        prop_assert_eq!(back, m);
    }

    /// Many frames of any kinds, concatenated and split at arbitrary points, come back in order.
    #[test]
    fn frame_sequences_survive_arbitrary_splits(
        msgs in proptest::collection::vec(message(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            let env = Envelope { v: PROTOCOL_VERSION, msg: m.clone() };
            stream.extend(encode_frame(&env, DEFAULT_MAX_FRAME_LEN).unwrap());
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut out = Vec::new();
        for w in points.windows(2) {
            d.push(&stream[w[0]..w[1]]).unwrap();
            while let Some(e) = d.next_envelope().unwrap() {
                out.push(e.msg);
            }
        }
        prop_assert_eq!(d.finish(), Ok(()));
        prop_assert_eq!(out, msgs);
    }
}
