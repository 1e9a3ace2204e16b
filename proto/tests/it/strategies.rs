//! proptest strategies for every message type.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sextant_proto::*;

pub fn label() -> impl Strategy<Value = Label> {
    "[a-zA-Z0-9._+-]{1,64}".prop_map(|s| Label::new(s).unwrap())
}

pub fn device_id() -> impl Strategy<Value = DeviceId> {
    "[!-~]{1,128}".prop_map(|s| DeviceId::new(s).unwrap())
}

pub fn region() -> impl Strategy<Value = CoarseRegion> {
    "[0-9b-hjkmnp-z]{1,4}".prop_map(|s| CoarseRegion::new(s).unwrap())
}

pub fn version_range() -> impl Strategy<Value = VersionRange> {
    (1u16..=u16::MAX, any::<u16>())
        .prop_map(|(min, d)| VersionRange::new(min, min.saturating_add(d)).unwrap())
}

pub fn model_version() -> impl Strategy<Value = ModelVersion> {
    any::<u64>().prop_map(ModelVersion)
}

/// Finite floats (NaN is never equal to itself, so it cannot round-trip under `PartialEq`).
pub fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1.0e30f32..1.0e30f32,
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE),
        Just(f32::INFINITY),
    ]
}

pub fn backend() -> impl Strategy<Value = ComputeBackend> {
    prop_oneof![Just(ComputeBackend::Cpu), Just(ComputeBackend::Gpu)]
}

pub fn failure_reason() -> impl Strategy<Value = FailureReason> {
    prop_oneof![
        Just(FailureReason::TooDark),
        Just(FailureReason::TooBlurred),
        Just(FailureReason::TooFewFeatures),
        Just(FailureReason::TooFewMatches),
        Just(FailureReason::NoConsensus),
        Just(FailureReason::Ambiguous),
        Just(FailureReason::OutsideMap),
        Just(FailureReason::InvalidInput),
        Just(FailureReason::ModelError),
    ]
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        prop_oneof![Just(PoseSource::Visual), Just(PoseSource::Prior)]
            .prop_map(|source| Outcome::Localized { source }),
        failure_reason().prop_map(|reason| Outcome::Failed { reason }),
    ]
}

pub fn timings() -> impl Strategy<Value = StageTimings> {
    any::<[u32; 6]>().prop_map(|t| StageTimings {
        preprocess_us: t[0],
        detect_us: t[1],
        describe_us: t[2],
        match_us: t[3],
        solve_us: t[4],
        total_us: t[5],
    })
}

pub fn slice() -> impl Strategy<Value = SliceKeys> {
    (label(), label(), backend(), option::of(region())).prop_map(
        |(device_class, app_version, backend, region)| SliceKeys {
            device_class,
            app_version,
            backend,
            region,
        },
    )
}

pub fn localization() -> impl Strategy<Value = LocalizationEvent> {
    (
        model_version(),
        slice(),
        outcome(),
        finite(),
        any::<u32>(),
        timings(),
    )
        .prop_map(
            |(model, slice, outcome, confidence, inliers, timings)| LocalizationEvent {
                model,
                slice,
                outcome,
                confidence,
                inliers,
                timings,
            },
        )
}

pub fn shadow_report() -> impl Strategy<Value = ShadowReport> {
    (
        (model_version(), model_version(), slice()),
        any::<[u32; 4]>(),
        (finite(), finite()),
        any::<[u32; 2]>(),
    )
        .prop_map(
            |((baseline, candidate, slice), n, (dt, dr), lat)| ShadowReport {
                baseline,
                candidate,
                slice,
                frames: n[0],
                baseline_localized: n[1],
                candidate_localized: n[2],
                both_localized: n[3],
                median_translation_diff_m: dt,
                median_rotation_diff_rad: dr,
                baseline_median_us: lat[0],
                candidate_median_us: lat[1],
            },
        )
}

pub fn record() -> impl Strategy<Value = TelemetryRecord> {
    (
        device_id(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![
            localization().prop_map(RecordBody::Localization),
            shadow_report().prop_map(RecordBody::Shadow),
        ],
    )
        .prop_map(|(device, sequence, recorded_at_ms, body)| TelemetryRecord {
            device,
            sequence,
            recorded_at_ms,
            body,
        })
}

pub fn telemetry_batch() -> impl Strategy<Value = TelemetryBatch> {
    (any::<u64>(), vec(record(), 0..6), any::<[u64; 4]>()).prop_map(|(batch_id, records, d)| {
        TelemetryBatch {
            batch_id,
            records,
            dropped: DropCounters {
                by_items: d[0],
                by_bytes: d[1],
                by_age: d[2],
                by_handoff: d[3],
            },
        }
    })
}

pub fn telemetry_ack() -> impl Strategy<Value = TelemetryAck> {
    (
        any::<u64>(),
        vec(any::<u64>(), 0..40),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(batch_id, seqs, stored, duplicates)| TelemetryAck {
            batch_id,
            acked: SeqRange::compress(seqs),
            stored,
            duplicates,
        })
}

pub fn model_metadata() -> impl Strategy<Value = ModelMetadata> {
    (
        label(),
        model_version(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
        model_version(),
    )
        .prop_map(
            |(family, version, length, sha, issued_at_s, expires_at_s, floor)| ModelMetadata {
                family,
                version,
                length,
                sha256: Sha256Digest(sha),
                issued_at_s,
                expires_at_s,
                floor,
            },
        )
}

pub fn signed_metadata() -> impl Strategy<Value = SignedModelMetadata> {
    (model_metadata(), any::<[u8; 8]>(), vec(any::<u8>(), 64)).prop_map(|(metadata, k, s)| {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&s);
        SignedModelMetadata {
            metadata,
            key_id: KeyId(k),
            signature: Signature(sig),
        }
    })
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (
        version_range(),
        device_id(),
        (label(), label(), label()),
        vec(backend(), 0..3),
        any::<u32>(),
    )
        .prop_map(
            |(versions, device, (device_class, app_version, runtime_version), backends, max)| {
                Hello {
                    versions,
                    device,
                    device_class,
                    app_version,
                    runtime_version,
                    backends,
                    max_frame_len: max,
                }
            },
        )
}

pub fn welcome() -> impl Strategy<Value = Welcome> {
    any::<(u16, u32, u32, u32)>().prop_map(|(version, max_frame_len, chunk_len, mbr)| Welcome {
        version,
        max_frame_len,
        chunk_len,
        max_batch_records: mbr,
    })
}

pub fn sync_request() -> impl Strategy<Value = SyncRequest> {
    (
        option::of(model_version()),
        option::of(model_version()),
        model_version(),
        option::of(model_version()),
    )
        .prop_map(|(active, shadowing, floor, rolled_back_from)| SyncRequest {
            active,
            shadowing,
            floor,
            rolled_back_from,
        })
}

pub fn rollout() -> impl Strategy<Value = RolloutInfo> {
    (
        any::<u64>(),
        prop_oneof![
            Just(RolloutStage::Shadow),
            any::<u16>().prop_map(|permille| RolloutStage::Canary { permille }),
            Just(RolloutStage::Full),
        ],
        prop_oneof![
            Just(Cohort::Treatment),
            Just(Cohort::Control),
            Just(Cohort::Holdback)
        ],
    )
        .prop_map(|(id, stage, cohort)| RolloutInfo { id, stage, cohort })
}

pub fn assignment() -> impl Strategy<Value = Assignment> {
    (
        model_version(),
        option::of(model_version()),
        option::of(rollout()),
        any::<u32>(),
    )
        .prop_map(|(model, shadow, rollout, resync_after_s)| Assignment {
            model,
            shadow,
            rollout,
            resync_after_s,
        })
}

pub fn chunk_request() -> impl Strategy<Value = ChunkRequest> {
    (model_version(), any::<u64>(), any::<u64>()).prop_map(|(model, offset, len)| ChunkRequest {
        model,
        offset,
        len,
    })
}

pub fn model_chunk() -> impl Strategy<Value = ModelChunk> {
    (model_version(), any::<u64>(), vec(any::<u8>(), 0..3000)).prop_map(|(model, offset, data)| {
        ModelChunk {
            model,
            offset,
            data: Bytes(data),
        }
    })
}

pub fn error_msg() -> impl Strategy<Value = ErrorMsg> {
    (
        any::<u16>(),
        any::<String>(),
        option::of(version_range()),
        option::of(any::<u32>()),
    )
        .prop_map(|(code, message, supported, retry_after_s)| ErrorMsg {
            code: ErrorCode(code),
            message,
            supported,
            retry_after_s,
        })
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        welcome().prop_map(Message::Welcome),
        sync_request().prop_map(Message::SyncRequest),
        assignment().prop_map(Message::Assignment),
        signed_metadata().prop_map(Message::ModelMetadata),
        chunk_request().prop_map(Message::ChunkRequest),
        model_chunk().prop_map(Message::ModelChunk),
        telemetry_batch().prop_map(Message::TelemetryBatch),
        telemetry_ack().prop_map(Message::TelemetryAck),
        error_msg().prop_map(Message::Error),
    ]
}
