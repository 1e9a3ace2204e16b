//! Whole sessions: client and server state machines driven against each other by `Pair`.

use proptest::prelude::*;
use sextant_proto::*;

use crate::util::{self, Pair, TestBackend, client_config, server_config};

fn connected_pair() -> Pair {
    let mut p = Pair::new(client_config(), server_config(), TestBackend::with_models());
    p.connect();
    p
}

/// The agent's behaviour on a download: resume from what is on disk.
fn download(p: &mut Pair, v: u64) -> ExchangeId {
    let meta = p.backend.meta(v).clone();
    let have = p.disk.get(&ModelVersion(v)).map_or(0, |f| f.len() as u64);
    let id = p.client.start_download(p.now, &meta, have).unwrap();
    p.drive();
    id
}

#[test]
fn full_session_hello_sync_download_telemetry() {
    let mut p = connected_pair();
    let welcome = p.client.welcome().cloned().unwrap();
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    assert_eq!(welcome.chunk_len, 4096);
    assert_eq!(p.server.device(), Some(&util::device()));

    let (assignment, metadata) = p.sync();
    assert_eq!(assignment.model, ModelVersion(3));
    assert_eq!(assignment.shadow, Some(ModelVersion(4)));
    let versions: Vec<_> = metadata.iter().map(|m| m.metadata.version).collect();
    assert_eq!(versions, vec![ModelVersion(3), ModelVersion(4)]);
    assert_eq!(metadata[0], p.backend.models[&ModelVersion(3)].0);

    for v in [3, 4] {
        let id = download(&mut p, v);
        assert_eq!(
            p.events_of(id),
            vec![&ClientEvent::DownloadComplete {
                exchange: id,
                model: ModelVersion(v),
                end: p.backend.blob(v).len() as u64
            }]
        );
        assert_eq!(
            p.disk[&ModelVersion(v)],
            p.backend.blob(v),
            "model v{v} bytes"
        );
    }

    let id = p
        .client
        .upload_telemetry(p.now, util::batch(0, 0..10))
        .unwrap();
    p.drive();
    assert_eq!(
        p.events_of(id),
        vec![&ClientEvent::TelemetryAcked {
            exchange: id,
            ack: TelemetryAck {
                batch_id: 0,
                acked: vec![SeqRange { first: 0, last: 9 }],
                stored: 10,
                duplicates: 0
            }
        }]
    );
    assert_eq!(p.backend.rows.len(), 10);

    assert!(p.client_errors.is_empty(), "{:?}", p.client_errors);
    assert!(p.server_errors.is_empty(), "{:?}", p.server_errors);
    assert_eq!(
        p.client.open_exchanges(),
        0,
        "every exchange closed on both ends"
    );
    assert!(p.backend.failures.is_empty());
}

#[test]
fn whole_session_works_byte_at_a_time() {
    let mut p = Pair::new(client_config(), server_config(), TestBackend::with_models());
    p.piece = 1;
    p.connect();
    p.sync();
    download(&mut p, 4);
    assert_eq!(p.disk[&ModelVersion(4)], p.backend.blob(4));
    assert!(p.client_errors.is_empty() && p.server_errors.is_empty());
}

#[test]
fn sessions_are_deterministic() {
    let run = || {
        let mut p = connected_pair();
        p.sync();
        download(&mut p, 4);
        p.client
            .upload_telemetry(p.now, util::batch(1, 0..5))
            .unwrap();
        p.drive();
        p.transcript
    };
    let a = run();
    assert!(a.len() > 20);
    assert_eq!(a, run());
}

#[test]
fn version_mismatch_is_refused_with_a_code_and_the_server_range() {
    let mut cfg = client_config();
    cfg.versions = VersionRange::new(2, 3).unwrap();
    let mut p = Pair::new(cfg, server_config(), TestBackend::with_models());
    p.drive();
    let [ClientEvent::Refused(err)] = p.client_events.as_slice() else {
        panic!("expected one Refused event, got {:?}", p.client_events)
    };
    assert_eq!(err.code, ErrorCode::VERSION_UNSUPPORTED);
    assert_eq!(err.supported, Some(SUPPORTED_VERSIONS));
    assert!(p.client.is_closed());
    assert!(p.server.is_closed());
    assert_eq!(
        p.client.start_sync(
            p.now,
            SyncRequest {
                active: None,
                shadowing: None,
                floor: ModelVersion(0),
                rolled_back_from: None
            }
        ),
        Err(ProtoError::InvalidState {
            operation: "start_sync",
            state: "closed"
        })
    );
}

#[test]
fn negotiation_picks_the_highest_common_version_and_envelopes_carry_it() {
    let mut cfg = client_config();
    cfg.versions = VersionRange::new(1, 3).unwrap();
    let scfg = ServerConfig {
        versions: VersionRange::new(2, 5).unwrap(),
        ..server_config()
    };
    let mut p = Pair::new(cfg, scfg, TestBackend::with_models());
    let w = p.connect();
    assert_eq!(w.version, 3);
    p.sync();
    // Every envelope after the hello is at version 3.
    for (_, _, bytes) in p.transcript.iter().skip(1) {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        d.push(bytes).unwrap();
        while let Some(env) = d.next_envelope().unwrap() {
            assert_eq!(env.v, 3, "{}", env.msg.name());
        }
    }
}

#[test]
fn revoked_device_is_refused_unauthenticated() {
    let mut backend = TestBackend::with_models();
    backend.revoked.insert(util::device());
    let mut p = Pair::new(client_config(), server_config(), backend);
    p.drive();
    assert!(matches!(
        p.client_events.as_slice(),
        [ClientEvent::Refused(ErrorMsg {
            code: ErrorCode::UNAUTHENTICATED,
            ..
        })]
    ));
    assert!(p.client.is_closed() && p.server.is_closed());
}

/// Connects, syncs, starts downloading v3 with the connection cut after `cut` more bytes, and
/// resumes on a new connection from what reached the disk. Returns the resumed offset.
fn cut_and_resume(cut: usize) -> u64 {
    let mut p = connected_pair();
    p.sync();
    p.s2c_budget = Some(cut);
    let first = download(&mut p, 3);
    let total = p.backend.blob(3).len() as u64;
    let have = p.disk.get(&ModelVersion(3)).map_or(0, |f| f.len() as u64);
    if have < total {
        assert!(p.cut);
        assert!(p.client.is_closed());
        assert_eq!(
            p.events_of(first),
            vec![&ClientEvent::ExchangeFailed {
                exchange: first,
                kind: ExchangeKind::Download,
                failure: ExchangeFailure::Reset
            }]
        );
    }
    // Only whole chunks reached the disk, and they are a prefix of the model.
    assert_eq!(
        p.disk
            .get(&ModelVersion(3))
            .map_or(&[][..], |f| f.as_slice()),
        &p.backend.blob(3)[..have as usize]
    );

    let mut p = p.reconnect();
    p.connect();
    if have < total {
        download(&mut p, 3);
        let last = p.backend.range_requests.last().copied().unwrap();
        assert_eq!(last.offset, have, "resumed from the bytes on disk");
        assert_eq!(last.len, total - have);
    }
    assert_eq!(p.disk[&ModelVersion(3)], p.backend.blob(3), "cut at {cut}");
    assert!(p.client_errors.is_empty(), "{:?}", p.client_errors);
    have
}

#[test]
fn download_cut_at_edge_bytes_resumes_to_identical_bytes() {
    let chunk_frame = 4 + 4096 + 27; // prefix + data + envelope overhead (about)
    for cut in [
        0,
        1,
        3,
        4,
        5,
        4096,
        chunk_frame,
        2 * chunk_frame + 1,
        99_999,
        1_000_000,
    ] {
        cut_and_resume(cut);
    }
    assert_eq!(cut_and_resume(0), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A cut at any byte of the download resumes from the durable prefix to identical bytes.
    #[test]
    fn download_cut_at_any_byte_resumes_to_identical_bytes(cut in 0usize..101_000) {
        let have = cut_and_resume(cut);
        prop_assert!(have <= cut as u64);
    }
}

#[test]
fn download_survives_repeated_cuts() {
    let mut p = connected_pair();
    p.sync();
    let total = p.backend.blob(3).len();
    let mut connections = 1;
    while p.disk.get(&ModelVersion(3)).map_or(0, Vec::len) < total {
        p.s2c_budget = Some(9_000); // about two chunks per connection
        download(&mut p, 3);
        if p.cut {
            p = p.reconnect();
            p.connect();
            connections += 1;
        }
    }
    assert_eq!(p.disk[&ModelVersion(3)], p.backend.blob(3));
    assert!(connections >= 10, "{connections}");
    let offsets: Vec<u64> = p.backend.range_requests.iter().map(|r| r.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
}

#[test]
fn telemetry_batch_is_acked_and_a_retried_duplicate_is_acked_again_without_double_counting() {
    let mut p = connected_pair();
    let first = p
        .client
        .upload_telemetry(p.now, util::batch(100, 100..120))
        .unwrap();
    p.drive();
    let second = p
        .client
        .upload_telemetry(p.now, util::batch(100, 100..120))
        .unwrap();
    p.drive();
    let acks: Vec<TelemetryAck> = [first, second]
        .iter()
        .map(|id| match p.events_of(*id).as_slice() {
            [ClientEvent::TelemetryAcked { ack, .. }] => ack.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let all = vec![SeqRange {
        first: 100,
        last: 119,
    }];
    assert_eq!(
        (acks[0].acked.clone(), acks[0].stored, acks[0].duplicates),
        (all.clone(), 20, 0)
    );
    assert_eq!(
        (acks[1].acked.clone(), acks[1].stored, acks[1].duplicates),
        (all, 0, 20)
    );
    assert_eq!(p.backend.rows.len(), 20, "stored once");
}

#[test]
fn telemetry_ack_lost_in_a_cut_is_recovered_by_retrying_the_batch() {
    let mut p = connected_pair();
    p.s2c_budget = Some(0); // the backend stores the batch; its ack never arrives
    let id = p
        .client
        .upload_telemetry(p.now, util::batch(7, 0..30))
        .unwrap();
    p.drive();
    assert_eq!(p.backend.rows.len(), 30, "the backend stored the batch");
    assert!(p.cut);
    assert_eq!(
        p.events_of(id),
        vec![&ClientEvent::ExchangeFailed {
            exchange: id,
            kind: ExchangeKind::Telemetry,
            failure: ExchangeFailure::Reset
        }],
        "no ack: the agent keeps the records"
    );

    let mut p = p.reconnect();
    p.connect();
    let id = p
        .client
        .upload_telemetry(p.now, util::batch(7, 0..30))
        .unwrap();
    p.drive();
    let [ClientEvent::TelemetryAcked { ack, .. }] = p.events_of(id).as_slice() else {
        panic!("{:?}", p.client_events)
    };
    assert_eq!(ack.acked, vec![SeqRange { first: 0, last: 29 }]);
    assert_eq!((ack.stored, ack.duplicates), (0, 30));
    assert_eq!(p.backend.rows.len(), 30, "no double count");
    assert_eq!(p.backend.stored.len(), 30);
}

#[test]
fn telemetry_of_another_device_is_refused_by_both_sides() {
    let mut p = connected_pair();
    let mut b = util::batch(1, 0..3);
    b.records[1].device = DeviceId::new("someone-else").unwrap();
    assert!(matches!(
        p.client.upload_telemetry(p.now, b.clone()),
        Err(ProtoError::DeviceMismatch { .. })
    ));
    // A client that skipped its own check gets DEVICE_MISMATCH from the server.
    let env = Envelope {
        v: PROTOCOL_VERSION,
        msg: Message::TelemetryBatch(b),
    };
    let frame = encode_frame(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
    let id = ExchangeId(77);
    assert!(matches!(
        p.server.handle_data(id, &frame),
        Err(ProtoError::DeviceMismatch { .. })
    ));
    let reply = p.server.poll_transmit().unwrap();
    assert_eq!((reply.exchange, reply.fin), (id, true));
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    d.push(&reply.data).unwrap();
    let Some(Envelope {
        msg: Message::Error(e),
        ..
    }) = d.next_envelope().unwrap()
    else {
        panic!("expected an error reply")
    };
    assert_eq!(e.code, ErrorCode::DEVICE_MISMATCH);
    assert!(p.backend.rows.is_empty());
    assert!(
        !p.server.is_closed(),
        "one bad exchange does not end the session"
    );
}

#[test]
fn oversized_batches_are_refused_before_sending() {
    let mut p = connected_pair();
    assert_eq!(
        p.client.upload_telemetry(p.now, util::batch(1, 0..65)),
        Err(ProtoError::BatchTooLarge {
            records: 65,
            max: 64
        })
    );
    assert!(p.client.poll_transmit().is_none());
}

fn frame(msg: Message) -> Vec<u8> {
    encode_frame(
        &Envelope {
            v: PROTOCOL_VERSION,
            msg,
        },
        DEFAULT_MAX_FRAME_LEN,
    )
    .unwrap()
}

fn server_reply_code(server: &mut Server) -> ErrorCode {
    let t = server.poll_transmit().expect("an error reply");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    d.push(&t.data).unwrap();
    match d.next_envelope().unwrap() {
        Some(Envelope {
            msg: Message::Error(e),
            ..
        }) => e.code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_refuses_a_request_before_hello() {
    let mut server = Server::new(server_config());
    let err = server
        .handle_data(
            ExchangeId(0),
            &frame(Message::TelemetryBatch(util::batch(1, 0..2))),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ProtoError::UnexpectedMessage {
            state: "awaiting_hello",
            message: "telemetry_batch"
        }
    );
    assert_eq!(
        server_reply_code(&mut server),
        ErrorCode::UNEXPECTED_MESSAGE
    );
    assert!(server.is_closed());
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::ExchangeFailed {
            failure: ExchangeFailure::Protocol(ProtoError::UnexpectedMessage { .. }),
            ..
        })
    ));
}

#[test]
fn server_refuses_a_second_hello_and_two_requests_on_one_stream() {
    let mut p = connected_pair();
    let hello = Hello {
        versions: SUPPORTED_VERSIONS,
        device: util::device(),
        device_class: Label::new("x").unwrap(),
        app_version: Label::new("x").unwrap(),
        runtime_version: Label::new("x").unwrap(),
        backends: vec![],
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
    };
    assert_eq!(
        p.server
            .handle_data(ExchangeId(50), &frame(Message::Hello(hello))),
        Err(ProtoError::UnexpectedMessage {
            state: "ready",
            message: "hello"
        })
    );
    assert_eq!(
        server_reply_code(&mut p.server),
        ErrorCode::UNEXPECTED_MESSAGE
    );

    let req = ChunkRequest {
        model: ModelVersion(3),
        offset: 0,
        len: 10,
    };
    let mut two = frame(Message::ChunkRequest(req));
    two.extend(frame(Message::ChunkRequest(req)));
    assert_eq!(
        p.server.handle_data(ExchangeId(51), &two),
        Err(ProtoError::UnexpectedMessage {
            state: "download",
            message: "chunk_request"
        })
    );
    assert!(!p.server.is_closed(), "the session survives a bad exchange");
    assert_eq!(
        server_reply_code(&mut p.server),
        ErrorCode::UNEXPECTED_MESSAGE
    );
    // The first request's event is stale now: the exchange is closed, so answering it fails.
    let events: Vec<ServerEvent> = std::iter::from_fn(|| p.server.poll_event()).collect();
    let exchange = events
        .iter()
        .find_map(|e| match e {
            ServerEvent::RangeRequested { exchange, .. } => Some(*exchange),
            _ => None,
        })
        .expect("the first request was reported");
    assert_eq!(exchange, ExchangeId(51));
    assert!(p.server.send_range_data(exchange, &[0; 10]).is_err());
    // The session still works.
    let id = download(&mut p, 4);
    assert!(matches!(
        p.events_of(id).as_slice(),
        [ClientEvent::DownloadComplete { .. }]
    ));
}

#[test]
fn client_refuses_a_message_wrong_for_the_exchange() {
    let mut p = connected_pair();
    let id = p
        .client
        .start_sync(
            p.now,
            SyncRequest {
                active: None,
                shadowing: None,
                floor: ModelVersion(0),
                rolled_back_from: None,
            },
        )
        .unwrap();
    let chunk = ModelChunk {
        model: ModelVersion(3),
        offset: 0,
        data: Bytes(vec![1, 2, 3]),
    };
    assert_eq!(
        p.client
            .handle_data(p.now, id, &frame(Message::ModelChunk(chunk))),
        Err(ProtoError::UnexpectedMessage {
            state: "sync_awaiting_assignment",
            message: "model_chunk"
        })
    );
    assert!(matches!(
        p.client.poll_event(),
        Some(ClientEvent::ExchangeFailed {
            kind: ExchangeKind::Sync,
            failure: ExchangeFailure::Protocol(ProtoError::UnexpectedMessage { .. }),
            ..
        })
    ));
    assert!(!p.client.is_closed());
}

#[test]
fn client_refuses_out_of_order_and_overrunning_chunks_and_wrong_metadata() {
    let mut p = connected_pair();
    let meta = p.backend.meta(4).clone();
    let chunk = |offset: u64, len: usize| {
        frame(Message::ModelChunk(ModelChunk {
            model: ModelVersion(4),
            offset,
            data: Bytes(vec![0; len]),
        }))
    };
    let id = p.client.start_download(p.now, &meta, 100).unwrap();
    assert_eq!(
        p.client.handle_data(p.now, id, &chunk(0, 10)),
        Err(ProtoError::ChunkOutOfOrder {
            expected: 100,
            got: 0
        })
    );
    let id = p
        .client
        .start_download(p.now, &meta, meta.length - 5)
        .unwrap();
    assert_eq!(
        p.client.handle_data(p.now, id, &chunk(meta.length - 5, 6)),
        Err(ProtoError::RangeOverrun {
            end: meta.length + 1,
            limit: meta.length
        })
    );
    let id = p
        .client
        .start_sync(
            p.now,
            SyncRequest {
                active: None,
                shadowing: None,
                floor: ModelVersion(0),
                rolled_back_from: None,
            },
        )
        .unwrap();
    let a = p.backend.assignment.clone().unwrap();
    p.client
        .handle_data(p.now, id, &frame(Message::Assignment(a)))
        .unwrap();
    let wrong = p.backend.models[&ModelVersion(4)].0.clone(); // v3 comes first
    assert_eq!(
        p.client
            .handle_data(p.now, id, &frame(Message::ModelMetadata(wrong))),
        Err(ProtoError::ModelMismatch {
            expected: 3,
            got: 4
        })
    );
    // An ack naming sequence numbers that were never sent would delete unsent records.
    let id = p
        .client
        .upload_telemetry(p.now, util::batch(5, 0..3))
        .unwrap();
    let ack = TelemetryAck {
        batch_id: 5,
        acked: vec![SeqRange { first: 0, last: 3 }],
        stored: 4,
        duplicates: 0,
    };
    assert!(matches!(
        p.client
            .handle_data(p.now, id, &frame(Message::TelemetryAck(ack))),
        Err(ProtoError::BadAck { .. })
    ));
}

#[test]
fn client_refuses_data_after_the_result_and_a_stream_ending_early() {
    let mut p = connected_pair();
    let meta = p.backend.meta(4).clone();
    let id = p
        .client
        .start_download(p.now, &meta, meta.length - 2)
        .unwrap();
    let mut frames = frame(Message::ModelChunk(ModelChunk {
        model: ModelVersion(4),
        offset: meta.length - 2,
        data: Bytes(vec![0; 2]),
    }));
    frames.extend(frame(Message::Error(ErrorMsg::new(
        ErrorCode::INTERNAL,
        "late",
    ))));
    assert_eq!(
        p.client.handle_data(p.now, id, &frames),
        Err(ProtoError::UnexpectedMessage {
            state: "done",
            message: "error"
        })
    );

    let id = p.client.start_download(p.now, &meta, 0).unwrap();
    assert_eq!(
        p.client.handle_stream_end(id),
        Err(ProtoError::StreamEnded { state: "download" })
    );
}

#[test]
fn exchanges_before_connected_are_refused() {
    let mut client = Client::new(client_config(), Time(0)).unwrap();
    let meta = TestBackend::with_models().meta(3).clone();
    assert_eq!(
        client.start_download(Time(0), &meta, 0),
        Err(ProtoError::InvalidState {
            operation: "start_download",
            state: "awaiting_welcome"
        })
    );
}

#[test]
fn unknown_model_is_refused_with_its_code() {
    let mut p = connected_pair();
    let mut meta = p.backend.meta(3).clone();
    meta.version = ModelVersion(99);
    let id = p.client.start_download(p.now, &meta, 0).unwrap();
    p.drive();
    assert!(matches!(
        p.events_of(id).as_slice(),
        [ClientEvent::ExchangeFailed {
            kind: ExchangeKind::Download,
            failure: ExchangeFailure::Remote(ErrorMsg {
                code: ErrorCode::UNKNOWN_MODEL,
                ..
            }),
            ..
        }]
    ));
}

#[test]
fn stalled_download_times_out_on_virtual_time() {
    let mut p = connected_pair();
    p.backend.stall_downloads = true;
    let meta = p.backend.meta(3).clone();
    let start = p.now;
    let id = p.client.start_download(start, &meta, 0).unwrap();
    p.drive();
    let deadline = start.plus_ms(DEFAULT_EXCHANGE_TIMEOUT_MS);
    assert_eq!(p.client.poll_timeout(), Some(deadline));
    p.client.handle_timeout(Time(deadline.0 - 1));
    assert!(p.client.poll_event().is_none());
    p.client.handle_timeout(deadline);
    assert_eq!(
        p.client.poll_event(),
        Some(ClientEvent::ExchangeFailed {
            exchange: id,
            kind: ExchangeKind::Download,
            failure: ExchangeFailure::TimedOut
        })
    );
    assert_eq!(p.client.poll_timeout(), None);
    assert!(
        !p.client.is_closed(),
        "a timed-out exchange does not end the session"
    );
}

#[test]
fn server_refuses_range_data_past_the_requested_end() {
    let mut p = connected_pair();
    p.backend.stall_downloads = true;
    let meta = p.backend.meta(4).clone();
    p.client
        .start_download(p.now, &meta, meta.length - 10)
        .unwrap();
    p.drive();
    let id = ExchangeId(1); // the server's name for the client's first download stream
    assert_eq!(
        p.server.pending_range(id),
        Some(meta.length - 10..meta.length)
    );
    assert_eq!(
        p.server.send_range_data(id, &[0; 11]),
        Err(ProtoError::RangeOverrun {
            end: meta.length + 1,
            limit: meta.length
        })
    );
    p.server.send_range_data(id, &[0; 10]).unwrap();
    assert_eq!(p.server.pending_range(id), None);
}
