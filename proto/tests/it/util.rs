//! `Pair`: a client and a server state machine wired back to back in memory, in the manner of
//! quinn-proto's `tests/util.rs`. Streams are modelled as byte deliveries per exchange id (the
//! same id on both sides), time is a counter, and the server→client direction can be cut after
//! any number of bytes. A `TestBackend` answers server events the way the real backend will
//! (registry lookups, dedup by `(device, sequence)`), and the client side keeps a "disk" of
//! downloaded bytes the way the agent will.

use std::collections::{BTreeMap, BTreeSet};

use sextant_proto::*;

/// Deterministic pseudo-random bytes (xorshift64*), for model blobs.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

pub fn device() -> DeviceId {
    DeviceId::new("dev-0001").unwrap()
}

pub fn client_config() -> ClientConfig {
    ClientConfig::new(
        device(),
        Label::new("pixel-8").unwrap(),
        Label::new("1.4.0").unwrap(),
        Label::new("0.1.0").unwrap(),
    )
}

/// Small chunks so that a modest model spans many frames.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        chunk_len: 4096,
        max_batch_records: 64,
        ..ServerConfig::default()
    }
}

pub fn metadata(version: u64, bytes: &[u8]) -> SignedModelMetadata {
    SignedModelMetadata {
        metadata: ModelMetadata {
            family: Label::new("descriptor").unwrap(),
            version: ModelVersion(version),
            length: bytes.len() as u64,
            sha256: Sha256Digest([version as u8; 32]),
            issued_at_s: 1_700_000_000,
            expires_at_s: 1_800_000_000,
            floor: ModelVersion(1),
        },
        key_id: KeyId([7; 8]),
        signature: Signature([9; 64]),
    }
}

pub fn record(seq: u64) -> TelemetryRecord {
    TelemetryRecord {
        device: device(),
        sequence: seq,
        recorded_at_ms: 1_700_000_000_000 + seq,
        body: RecordBody::Localization(LocalizationEvent {
            model: ModelVersion(3),
            slice: SliceKeys {
                device_class: Label::new("pixel-8").unwrap(),
                app_version: Label::new("1.4.0").unwrap(),
                backend: ComputeBackend::Gpu,
                region: Some(CoarseRegion::new("u4pr").unwrap()),
            },
            outcome: if seq.is_multiple_of(3) {
                Outcome::Failed {
                    reason: FailureReason::TooFewMatches,
                }
            } else {
                Outcome::Localized {
                    source: PoseSource::Visual,
                }
            },
            confidence: 0.25 * (seq % 4) as f32,
            inliers: 10 * seq as u32,
            timings: StageTimings {
                preprocess_us: 500,
                detect_us: 1200,
                describe_us: 3000,
                match_us: 800,
                solve_us: 400,
                total_us: 5900,
            },
        }),
    }
}

pub fn batch(batch_id: u64, seqs: std::ops::Range<u64>) -> TelemetryBatch {
    TelemetryBatch {
        batch_id,
        records: seqs.map(record).collect(),
        dropped: DropCounters::default(),
    }
}

/// The backend's side of the tests: a registry, an assignment, and a telemetry store keyed by
/// `(device, sequence)`.
#[derive(Debug, Default)]
pub struct TestBackend {
    pub models: BTreeMap<ModelVersion, (SignedModelMetadata, Vec<u8>)>,
    pub assignment: Option<Assignment>,
    /// Every `(device, sequence)` stored, once.
    pub stored: BTreeSet<(DeviceId, u64)>,
    /// Rows inserted (would double on a broken dedup).
    pub rows: Vec<TelemetryRecord>,
    /// Devices whose certificates are revoked.
    pub revoked: BTreeSet<DeviceId>,
    /// Download requests seen, in order.
    pub range_requests: Vec<ChunkRequest>,
    /// Do not answer downloads (to test timeouts).
    pub stall_downloads: bool,
    /// Failures reported by the server state machine.
    pub failures: Vec<ExchangeFailure>,
}

impl TestBackend {
    /// A registry with model v3 (active) and v4 (candidate in shadow).
    pub fn with_models() -> Self {
        let v3 = blob(100_000, 3);
        let v4 = blob(70_001, 4);
        let mut models = BTreeMap::new();
        models.insert(ModelVersion(3), (metadata(3, &v3), v3));
        models.insert(ModelVersion(4), (metadata(4, &v4), v4));
        TestBackend {
            models,
            assignment: Some(Assignment {
                model: ModelVersion(3),
                shadow: Some(ModelVersion(4)),
                rollout: Some(RolloutInfo {
                    id: 17,
                    stage: RolloutStage::Shadow,
                    cohort: Cohort::Treatment,
                }),
                resync_after_s: 3600,
            }),
            ..TestBackend::default()
        }
    }

    pub fn blob(&self, v: u64) -> &[u8] {
        &self.models[&ModelVersion(v)].1
    }

    pub fn meta(&self, v: u64) -> &ModelMetadata {
        &self.models[&ModelVersion(v)].0.metadata
    }

    pub fn handle(&mut self, server: &mut Server, ev: ServerEvent) {
        match ev {
            ServerEvent::Hello {
                exchange, hello, ..
            } => {
                if self.revoked.contains(&hello.device) {
                    server
                        .refuse(
                            exchange,
                            ErrorMsg::new(ErrorCode::UNAUTHENTICATED, "certificate revoked"),
                        )
                        .unwrap();
                } else {
                    server.accept(exchange).unwrap();
                }
            }
            ServerEvent::VersionRefused { .. } => {}
            ServerEvent::SyncRequested { exchange, .. } => {
                let a = self.assignment.clone().unwrap();
                let meta = a
                    .metadata_versions()
                    .iter()
                    .map(|v| self.models[v].0.clone())
                    .collect();
                server.respond_sync(exchange, a, meta).unwrap();
            }
            ServerEvent::RangeRequested {
                exchange, request, ..
            } => {
                self.range_requests.push(request);
                let Some((_, bytes)) = self.models.get(&request.model) else {
                    let e = ErrorMsg::new(ErrorCode::UNKNOWN_MODEL, "no such model");
                    server.refuse(exchange, e).unwrap();
                    return;
                };
                let end = request.offset + request.len;
                if end > bytes.len() as u64 {
                    let e = ErrorMsg::new(ErrorCode::RANGE_INVALID, "outside the model");
                    server.refuse(exchange, e).unwrap();
                } else if !self.stall_downloads {
                    let data = bytes[request.offset as usize..end as usize].to_vec();
                    // Feed it in uneven pieces, as a file reader would.
                    for piece in data.chunks(10_000) {
                        server.send_range_data(exchange, piece).unwrap();
                    }
                }
            }
            ServerEvent::TelemetryReceived {
                exchange,
                device,
                batch,
            } => {
                let (mut new, mut dup) = (0, 0);
                for r in &batch.records {
                    if self.stored.insert((device.clone(), r.sequence)) {
                        new += 1;
                        self.rows.push(r.clone());
                    } else {
                        dup += 1;
                    }
                }
                let ack = TelemetryAck {
                    batch_id: batch.batch_id,
                    acked: SeqRange::compress(batch.records.iter().map(|r| r.sequence)),
                    stored: new,
                    duplicates: dup,
                };
                server.ack_telemetry(exchange, ack).unwrap();
            }
            ServerEvent::ExchangeFailed { failure, .. } => self.failures.push(failure),
        }
    }
}

/// Client + server + backend, with the wires between them.
pub struct Pair {
    pub client: Client,
    pub server: Server,
    pub backend: TestBackend,
    pub now: Time,
    /// Largest piece a delivery is split into (1 = byte at a time).
    pub piece: usize,
    /// Server→client bytes still deliverable before the connection is cut; `None`: no cut.
    pub s2c_budget: Option<usize>,
    /// Whether the connection has been cut.
    pub cut: bool,
    /// The agent's "disk": downloaded bytes per model, written at the chunks' offsets.
    pub disk: BTreeMap<ModelVersion, Vec<u8>>,
    pub client_events: Vec<ClientEvent>,
    pub client_errors: Vec<ProtoError>,
    pub server_errors: Vec<ProtoError>,
    /// Every byte that crossed the wire, in order: `(to_server, exchange, bytes)`.
    pub transcript: Vec<(bool, u64, Vec<u8>)>,
}

impl Pair {
    pub fn new(client: ClientConfig, server: ServerConfig, backend: TestBackend) -> Pair {
        Pair::with_disk(client, server, backend, BTreeMap::new())
    }

    fn with_disk(
        client: ClientConfig,
        server: ServerConfig,
        backend: TestBackend,
        disk: BTreeMap<ModelVersion, Vec<u8>>,
    ) -> Pair {
        Pair {
            client: Client::new(client, Time(0)).unwrap(),
            server: Server::new(server),
            backend,
            now: Time(0),
            piece: usize::MAX,
            s2c_budget: None,
            cut: false,
            disk,
            client_events: Vec::new(),
            client_errors: Vec::new(),
            server_errors: Vec::new(),
            transcript: Vec::new(),
        }
    }

    /// A new connection (fresh state machines) to the same backend, keeping the agent's disk.
    pub fn reconnect(self) -> Pair {
        let Pair {
            client,
            server: _,
            backend,
            disk,
            ..
        } = self;
        Pair::with_disk(client.config().clone(), server_config(), backend, disk)
    }

    /// Runs both sides until nothing moves. Each loop advances virtual time by 1 ms.
    pub fn drive(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.client.poll_transmit() {
                progress = true;
                if self.cut {
                    continue;
                }
                self.transcript.push((true, t.exchange.0, t.data.clone()));
                for piece in t.data.chunks(self.piece.max(1)) {
                    if let Err(e) = self.server.handle_data(t.exchange, piece) {
                        self.server_errors.push(e);
                        break;
                    }
                }
                if t.fin
                    && let Err(e) = self.server.handle_stream_end(t.exchange)
                {
                    self.server_errors.push(e);
                }
            }
            while let Some(ev) = self.server.poll_event() {
                progress = true;
                self.backend.handle(&mut self.server, ev);
            }
            while let Some(t) = self.server.poll_transmit() {
                progress = true;
                if self.cut {
                    continue;
                }
                let take = self
                    .s2c_budget
                    .map_or(t.data.len(), |b| b.min(t.data.len()));
                if let Some(b) = &mut self.s2c_budget {
                    *b -= take;
                }
                self.transcript
                    .push((false, t.exchange.0, t.data[..take].to_vec()));
                for piece in t.data[..take].chunks(self.piece.max(1)) {
                    if let Err(e) = self.client.handle_data(self.now, t.exchange, piece) {
                        self.client_errors.push(e);
                        break;
                    }
                }
                if self.s2c_budget == Some(0) {
                    // The budget ran out inside (or at the end of) this transmit: cut the
                    // connection before anything else, including this stream's end.
                    self.cut = true;
                    self.client.handle_connection_lost();
                    continue;
                }
                if t.fin
                    && let Err(e) = self.client.handle_stream_end(t.exchange)
                {
                    self.client_errors.push(e);
                }
            }
            while let Some(ev) = self.client.poll_event() {
                progress = true;
                if let ClientEvent::Chunk { chunk, .. } = &ev {
                    let file = self.disk.entry(chunk.model).or_default();
                    assert_eq!(file.len() as u64, chunk.offset, "chunks arrive in order");
                    file.extend_from_slice(&chunk.data.0);
                }
                self.client_events.push(ev);
            }
            self.now = self.now.plus_ms(1);
            if !progress {
                break;
            }
        }
    }

    /// Drives the handshake and asserts it succeeded.
    pub fn connect(&mut self) -> Welcome {
        self.drive();
        match self.client_events.first() {
            Some(ClientEvent::Connected(w)) => w.clone(),
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    /// Runs a sync exchange to completion and returns its result.
    pub fn sync(&mut self) -> (Assignment, Vec<SignedModelMetadata>) {
        let req = SyncRequest {
            active: Some(ModelVersion(2)),
            shadowing: None,
            floor: ModelVersion(1),
            rolled_back_from: None,
        };
        let id = self.client.start_sync(self.now, req).unwrap();
        self.drive();
        self.client_events
            .iter()
            .find_map(|e| match e {
                ClientEvent::Synced {
                    exchange,
                    assignment,
                    metadata,
                } if *exchange == id => Some((assignment.clone(), metadata.clone())),
                _ => None,
            })
            .expect("sync completed")
    }

    /// Events of exchange `id` other than chunks.
    pub fn events_of(&self, id: ExchangeId) -> Vec<&ClientEvent> {
        self.client_events
            .iter()
            .filter(|e| match e {
                ClientEvent::Synced { exchange, .. }
                | ClientEvent::DownloadComplete { exchange, .. }
                | ClientEvent::TelemetryAcked { exchange, .. }
                | ClientEvent::ExchangeFailed { exchange, .. } => *exchange == id,
                _ => false,
            })
            .collect()
    }
}
