//! The device side of a session.
//!
//! A [`Client`] is created per connection. It queues the `Hello` at once (exchange 0); after the
//! [`ClientEvent::Connected`] event the agent opens exchanges with
//! [`start_sync`](Client::start_sync), [`start_download`](Client::start_download) and
//! [`upload_telemetry`](Client::upload_telemetry), each returning the [`ExchangeId`] whose
//! results later arrive as events. Received bytes go in through
//! [`handle_data`](Client::handle_data); bytes to send come out of
//! [`poll_transmit`](Client::poll_transmit). See the crate doc for the driver loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::codec::{CHUNK_OVERHEAD, DEFAULT_MAX_FRAME_LEN};
use crate::error::ProtoError;
use crate::message::{
    Assignment, ChunkRequest, Envelope, ErrorMsg, ExchangeKind, Hello, Message, ModelChunk,
    SyncRequest, Welcome,
};
use crate::metadata::{ModelMetadata, SignedModelMetadata};
use crate::session::{ExchangeFailure, ExchangeId, Inbound, Transmit, check_version, frame};
use crate::telemetry::{ComputeBackend, TelemetryAck, TelemetryBatch};
use crate::types::{DeviceId, Label, ModelVersion, Time};
use crate::version::{SUPPORTED_VERSIONS, VersionRange};

/// Default time an exchange may go without receiving anything: 30 s.
pub const DEFAULT_EXCHANGE_TIMEOUT_MS: u64 = 30_000;

/// What the client says about itself and the limits it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Protocol versions offered. Production uses [`SUPPORTED_VERSIONS`]; other ranges only
    /// make sense in negotiation tests (the message schema is that of version 1).
    pub versions: VersionRange,
    /// The device identity (must match the TLS client certificate).
    pub device: DeviceId,
    /// Device class.
    pub device_class: Label,
    /// App version.
    pub app_version: Label,
    /// Runtime version.
    pub runtime_version: Label,
    /// Compute backends available.
    pub backends: Vec<ComputeBackend>,
    /// Largest frame body accepted from the server.
    pub max_frame_len: u32,
    /// How long an exchange may go without receiving anything before it fails.
    pub exchange_timeout_ms: u64,
}

impl ClientConfig {
    /// A configuration with the default versions, frame cap, timeout and a CPU backend.
    pub fn new(
        device: DeviceId,
        device_class: Label,
        app_version: Label,
        runtime_version: Label,
    ) -> Self {
        ClientConfig {
            versions: SUPPORTED_VERSIONS,
            device,
            device_class,
            app_version,
            runtime_version,
            backends: vec![ComputeBackend::Cpu],
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            exchange_timeout_ms: DEFAULT_EXCHANGE_TIMEOUT_MS,
        }
    }
}

/// What the client reports to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The handshake succeeded; exchanges may be started.
    Connected(Welcome),
    /// The server refused the handshake (e.g. `VERSION_UNSUPPORTED`, `UNAUTHENTICATED`); the
    /// session is closed.
    Refused(ErrorMsg),
    /// A sync exchange finished: the assignment and the metadata of every model it names, in
    /// the order of [`Assignment::metadata_versions`]. Signatures are not checked here.
    Synced {
        /// The exchange.
        exchange: ExchangeId,
        /// What to run and shadow.
        assignment: Assignment,
        /// Signed metadata, one per version the assignment names.
        metadata: Vec<SignedModelMetadata>,
    },
    /// Model bytes arrived, in order: write them at `chunk.offset`.
    Chunk {
        /// The exchange.
        exchange: ExchangeId,
        /// The bytes and where they go.
        chunk: ModelChunk,
    },
    /// The whole requested range arrived.
    DownloadComplete {
        /// The exchange.
        exchange: ExchangeId,
        /// The model.
        model: ModelVersion,
        /// End of the range (the file length when the request ran to the end).
        end: u64,
    },
    /// The backend stored the acknowledged records; delete them from the queue.
    TelemetryAcked {
        /// The exchange.
        exchange: ExchangeId,
        /// The acknowledgement (checked against the batch that was sent).
        ack: TelemetryAck,
    },
    /// An exchange ended without its result. The driver resets the stream if it is still open.
    ExchangeFailed {
        /// The exchange.
        exchange: ExchangeId,
        /// Its kind.
        kind: ExchangeKind,
        /// Why.
        failure: ExchangeFailure,
    },
}

#[derive(Debug)]
enum Phase {
    AwaitingWelcome,
    Ready(Welcome),
    Closed,
}

#[derive(Debug)]
enum Pending {
    Handshake,
    Sync {
        assignment: Option<Assignment>,
        expected: Vec<ModelVersion>,
        metadata: Vec<SignedModelMetadata>,
    },
    Download {
        model: ModelVersion,
        next: u64,
        end: u64,
    },
    Telemetry {
        batch_id: u64,
        seqs: BTreeSet<u64>,
    },
    /// The result was delivered; waiting for the server to finish the stream.
    Done,
}

impl Pending {
    fn name(&self) -> &'static str {
        match self {
            Pending::Handshake => "handshake",
            Pending::Sync {
                assignment: None, ..
            } => "sync_awaiting_assignment",
            Pending::Sync { .. } => "sync_awaiting_metadata",
            Pending::Download { .. } => "download",
            Pending::Telemetry { .. } => "telemetry",
            Pending::Done => "done",
        }
    }
}

#[derive(Debug)]
struct Exchange {
    kind: ExchangeKind,
    pending: Pending,
    inbound: Inbound,
    deadline: Time,
}

/// The client (device) side of one session. Deterministic: no IO, no clock, no randomness.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    phase: Phase,
    next_id: u64,
    exchanges: BTreeMap<ExchangeId, Exchange>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// Starts a session: queues the `Hello` on exchange 0.
    pub fn new(config: ClientConfig, now: Time) -> Result<Self, ProtoError> {
        let hello = Hello {
            versions: config.versions,
            device: config.device.clone(),
            device_class: config.device_class.clone(),
            app_version: config.app_version.clone(),
            runtime_version: config.runtime_version.clone(),
            backends: config.backends.clone(),
            max_frame_len: config.max_frame_len,
        };
        let id = ExchangeId(0);
        let t = frame(
            id,
            config.versions.max(),
            Message::Hello(hello),
            config.max_frame_len,
            true,
        )?;
        let mut client = Client {
            phase: Phase::AwaitingWelcome,
            next_id: 1,
            exchanges: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        client.transmits.push_back(t);
        client.insert(id, ExchangeKind::Handshake, Pending::Handshake, now);
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The negotiated version and session limits, once connected.
    pub fn welcome(&self) -> Option<&Welcome> {
        match &self.phase {
            Phase::Ready(w) => Some(w),
            _ => None,
        }
    }

    /// Whether the session was refused or failed; nothing more will happen on it.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Number of exchanges still open (awaiting results or the server's end of stream).
    pub fn open_exchanges(&self) -> usize {
        self.exchanges.len()
    }

    fn insert(&mut self, id: ExchangeId, kind: ExchangeKind, pending: Pending, now: Time) {
        self.exchanges.insert(
            id,
            Exchange {
                kind,
                pending,
                inbound: Inbound::new(self.config.max_frame_len),
                deadline: now.plus_ms(self.config.exchange_timeout_ms),
            },
        );
    }

    fn ready(&self, operation: &'static str) -> Result<(u16, u32), ProtoError> {
        match &self.phase {
            Phase::Ready(w) => Ok((w.version, w.max_frame_len.min(self.config.max_frame_len))),
            Phase::AwaitingWelcome => Err(ProtoError::InvalidState {
                operation,
                state: "awaiting_welcome",
            }),
            Phase::Closed => Err(ProtoError::InvalidState {
                operation,
                state: "closed",
            }),
        }
    }

    fn open(
        &mut self,
        now: Time,
        kind: ExchangeKind,
        pending: Pending,
        msg: Message,
        operation: &'static str,
    ) -> Result<ExchangeId, ProtoError> {
        let (v, max) = self.ready(operation)?;
        let id = ExchangeId(self.next_id);
        let t = frame(id, v, msg, max, true)?;
        self.next_id += 1;
        self.transmits.push_back(t);
        self.insert(id, kind, pending, now);
        Ok(id)
    }

    /// Opens a sync exchange: asks which model to run and shadow.
    pub fn start_sync(
        &mut self,
        now: Time,
        request: SyncRequest,
    ) -> Result<ExchangeId, ProtoError> {
        let pending = Pending::Sync {
            assignment: None,
            expected: Vec::new(),
            metadata: Vec::new(),
        };
        self.open(
            now,
            ExchangeKind::Sync,
            pending,
            Message::SyncRequest(request),
            "start_sync",
        )
    }

    /// Opens a download exchange for `metadata`'s model from byte `offset` to its end: the
    /// resume point after a cut is the number of bytes already stored.
    pub fn start_download(
        &mut self,
        now: Time,
        metadata: &ModelMetadata,
        offset: u64,
    ) -> Result<ExchangeId, ProtoError> {
        if offset >= metadata.length {
            return Err(ProtoError::InvalidField {
                field: "offset",
                reason: format!("{offset} is not below the model length {}", metadata.length),
            });
        }
        let request = ChunkRequest {
            model: metadata.version,
            offset,
            len: metadata.length - offset,
        };
        let pending = Pending::Download {
            model: request.model,
            next: offset,
            end: metadata.length,
        };
        self.open(
            now,
            ExchangeKind::Download,
            pending,
            Message::ChunkRequest(request),
            "start_download",
        )
    }

    /// Opens a telemetry exchange uploading `batch`. Fails without sending if the batch holds
    /// records of another device, more records than the session allows, or encodes to more
    /// than the frame cap (split it and retry).
    pub fn upload_telemetry(
        &mut self,
        now: Time,
        batch: TelemetryBatch,
    ) -> Result<ExchangeId, ProtoError> {
        let max_records = match &self.phase {
            Phase::Ready(w) => w.max_batch_records,
            _ => 0,
        };
        self.ready("upload_telemetry")?;
        if batch.records.len() as u64 > u64::from(max_records) {
            return Err(ProtoError::BatchTooLarge {
                records: batch.records.len() as u64,
                max: max_records,
            });
        }
        if let Some(r) = batch
            .records
            .iter()
            .find(|r| r.device != self.config.device)
        {
            return Err(ProtoError::DeviceMismatch {
                expected: self.config.device.to_string(),
                got: r.device.to_string(),
            });
        }
        let pending = Pending::Telemetry {
            batch_id: batch.batch_id,
            seqs: batch.records.iter().map(|r| r.sequence).collect(),
        };
        self.open(
            now,
            ExchangeKind::Telemetry,
            pending,
            Message::TelemetryBatch(batch),
            "upload_telemetry",
        )
    }

    /// [`Client::upload_telemetry`] for records whose bodies are already CBOR (as the agent's
    /// disk queue keeps them): the frame is written directly, bodies spliced in
    /// ([`crate::encoded::encode_batch_frame`]), with the same bytes on the wire as the typed
    /// batch. Each body must be the encoding of a `RecordBody`; the caller vouches for that
    /// (a server refuses a batch with a body that is not).
    pub fn upload_telemetry_encoded(
        &mut self,
        now: Time,
        batch_id: u64,
        records: &[crate::encoded::EncodedRecord<'_>],
        dropped: &crate::telemetry::DropCounters,
    ) -> Result<ExchangeId, ProtoError> {
        let max_records = match &self.phase {
            Phase::Ready(w) => w.max_batch_records,
            _ => 0,
        };
        let (v, max) = self.ready("upload_telemetry")?;
        if records.len() as u64 > u64::from(max_records) {
            return Err(ProtoError::BatchTooLarge {
                records: records.len() as u64,
                max: max_records,
            });
        }
        let data = crate::encoded::encode_batch_frame(
            v,
            &self.config.device,
            batch_id,
            records,
            dropped,
            max,
        )?;
        let id = ExchangeId(self.next_id);
        self.next_id += 1;
        self.transmits.push_back(Transmit {
            exchange: id,
            data,
            fin: true,
        });
        let pending = Pending::Telemetry {
            batch_id,
            seqs: records.iter().map(|r| r.sequence).collect(),
        };
        self.insert(id, ExchangeKind::Telemetry, pending, now);
        Ok(id)
    }

    /// Feeds bytes received on `exchange`'s stream. On an error the exchange (or, during the
    /// handshake, the session) is closed, an [`ClientEvent::ExchangeFailed`] is queued, and
    /// the driver should reset the stream with [`ProtoError::code`].
    pub fn handle_data(
        &mut self,
        now: Time,
        exchange: ExchangeId,
        data: &[u8],
    ) -> Result<(), ProtoError> {
        let ex = self
            .exchanges
            .get_mut(&exchange)
            .ok_or(ProtoError::UnknownExchange(exchange.0))?;
        if let Err(e) = ex.inbound.decoder.push(data) {
            return Err(self.fail(exchange, e));
        }
        loop {
            let Some(ex) = self.exchanges.get_mut(&exchange) else {
                return Ok(());
            };
            match ex.inbound.decoder.next_envelope() {
                Ok(Some(env)) => self.handle_message(now, exchange, env)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(exchange, e)),
            }
        }
    }

    /// Handles one decoded message received on `exchange` (what [`handle_data`](Self::handle_data)
    /// does per frame). Errors as for `handle_data`.
    pub fn handle_message(
        &mut self,
        now: Time,
        exchange: ExchangeId,
        env: Envelope,
    ) -> Result<(), ProtoError> {
        let negotiated = self.welcome().map(|w| w.version);
        let timeout = self.config.exchange_timeout_ms;
        let ex = self
            .exchanges
            .get_mut(&exchange)
            .ok_or(ProtoError::UnknownExchange(exchange.0))?;
        if let Err(e) = check_version(negotiated, &env, ex.pending.name()) {
            return Err(self.fail(exchange, e));
        }
        ex.deadline = now.plus_ms(timeout);
        let kind = ex.kind;
        let msg = match env.msg {
            Message::Error(err) if !matches!(ex.pending, Pending::Done) => {
                self.exchanges.remove(&exchange);
                if kind == ExchangeKind::Handshake {
                    self.phase = Phase::Closed;
                    self.events.push_back(ClientEvent::Refused(err));
                } else {
                    self.events.push_back(ClientEvent::ExchangeFailed {
                        exchange,
                        kind,
                        failure: ExchangeFailure::Remote(err),
                    });
                }
                return Ok(());
            }
            other => other,
        };
        let result = match (&mut ex.pending, msg) {
            (Pending::Done, msg) => Err(ProtoError::UnexpectedMessage {
                state: "done",
                message: msg.name(),
            }),
            (Pending::Handshake, Message::Welcome(w)) => {
                let chunk_ok = w.chunk_len >= 1
                    && u64::from(w.chunk_len) + u64::from(CHUNK_OVERHEAD)
                        <= u64::from(self.config.max_frame_len);
                if !self.config.versions.contains(w.version) {
                    Err(ProtoError::NoCommonVersion {
                        ours: self.config.versions,
                        theirs: VersionRange::new(w.version.max(1), w.version.max(1))
                            .unwrap_or(self.config.versions),
                    })
                } else if env.v != w.version {
                    Err(ProtoError::WrongVersion {
                        expected: w.version,
                        got: env.v,
                    })
                } else if !chunk_ok {
                    Err(ProtoError::InvalidField {
                        field: "chunk_len",
                        reason: format!(
                            "{} does not fit the frame cap {}",
                            w.chunk_len, self.config.max_frame_len
                        ),
                    })
                } else {
                    ex.pending = Pending::Done;
                    self.phase = Phase::Ready(w.clone());
                    self.events.push_back(ClientEvent::Connected(w));
                    Ok(())
                }
            }
            (
                Pending::Sync {
                    assignment: assignment @ None,
                    expected,
                    ..
                },
                Message::Assignment(a),
            ) => {
                *expected = a.metadata_versions();
                *assignment = Some(a);
                Ok(())
            }
            (
                Pending::Sync {
                    assignment: Some(a),
                    expected,
                    metadata,
                },
                Message::ModelMetadata(m),
            ) => match expected.get(metadata.len()) {
                Some(want) if *want == m.metadata.version => {
                    metadata.push(m);
                    if metadata.len() == expected.len() {
                        let assignment = a.clone();
                        let metadata = std::mem::take(metadata);
                        ex.pending = Pending::Done;
                        self.events.push_back(ClientEvent::Synced {
                            exchange,
                            assignment,
                            metadata,
                        });
                    }
                    Ok(())
                }
                Some(want) => Err(ProtoError::ModelMismatch {
                    expected: want.0,
                    got: m.metadata.version.0,
                }),
                None => Err(ProtoError::UnexpectedMessage {
                    state: "sync_complete",
                    message: "model_metadata",
                }),
            },
            (Pending::Download { model, next, end }, Message::ModelChunk(c)) => {
                let chunk_end = c.offset.checked_add(c.data.0.len() as u64);
                if c.model != *model {
                    Err(ProtoError::ModelMismatch {
                        expected: model.0,
                        got: c.model.0,
                    })
                } else if c.offset != *next {
                    Err(ProtoError::ChunkOutOfOrder {
                        expected: *next,
                        got: c.offset,
                    })
                } else if c.data.0.is_empty() {
                    Err(ProtoError::InvalidField {
                        field: "data",
                        reason: "empty chunk".into(),
                    })
                } else {
                    match chunk_end {
                        Some(e) if e <= *end => {
                            *next = e;
                            let (model, end) = (*model, *end);
                            if e == end {
                                ex.pending = Pending::Done;
                            }
                            self.events
                                .push_back(ClientEvent::Chunk { exchange, chunk: c });
                            if e == end {
                                self.events.push_back(ClientEvent::DownloadComplete {
                                    exchange,
                                    model,
                                    end,
                                });
                            }
                            Ok(())
                        }
                        _ => Err(ProtoError::RangeOverrun {
                            end: chunk_end.unwrap_or(u64::MAX),
                            limit: *end,
                        }),
                    }
                }
            }
            (Pending::Telemetry { batch_id, seqs }, Message::TelemetryAck(ack)) => {
                match check_ack(*batch_id, seqs, &ack) {
                    Ok(()) => {
                        ex.pending = Pending::Done;
                        self.events
                            .push_back(ClientEvent::TelemetryAcked { exchange, ack });
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            (pending, msg) => Err(ProtoError::UnexpectedMessage {
                state: pending.name(),
                message: msg.name(),
            }),
        };
        result.map_err(|e| self.fail(exchange, e))
    }

    /// The server finished its side of `exchange`'s stream. Fails the exchange if its result
    /// had not fully arrived.
    pub fn handle_stream_end(&mut self, exchange: ExchangeId) -> Result<(), ProtoError> {
        let Some(ex) = self.exchanges.get_mut(&exchange) else {
            return Ok(());
        };
        ex.inbound.peer_fin = true;
        if let Err(e) = ex.inbound.decoder.finish() {
            return Err(self.fail(exchange, e));
        }
        match ex.pending {
            Pending::Done => {
                self.exchanges.remove(&exchange);
                Ok(())
            }
            ref p => {
                let e = ProtoError::StreamEnded { state: p.name() };
                Err(self.fail(exchange, e))
            }
        }
    }

    /// The stream of `exchange` was reset by the server or lost. Resumable work (a download)
    /// restarts on a new exchange from the bytes already stored.
    pub fn handle_reset(&mut self, exchange: ExchangeId) {
        if let Some(ex) = self.exchanges.remove(&exchange) {
            self.report_lost(exchange, ex, ExchangeFailure::Reset);
        }
    }

    /// The connection is gone: every open exchange fails with `Reset` and the session closes.
    pub fn handle_connection_lost(&mut self) {
        for (id, ex) in std::mem::take(&mut self.exchanges) {
            self.report_lost(id, ex, ExchangeFailure::Reset);
        }
        self.phase = Phase::Closed;
    }

    fn report_lost(&mut self, id: ExchangeId, ex: Exchange, failure: ExchangeFailure) {
        if ex.kind == ExchangeKind::Handshake && matches!(ex.pending, Pending::Handshake) {
            self.phase = Phase::Closed;
        }
        if !matches!(ex.pending, Pending::Done) {
            self.events.push_back(ClientEvent::ExchangeFailed {
                exchange: id,
                kind: ex.kind,
                failure,
            });
        }
    }

    /// The earliest deadline of an open exchange: call [`handle_timeout`](Self::handle_timeout)
    /// then.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.exchanges.values().map(|e| e.deadline).min()
    }

    /// Fails every exchange whose deadline is at or before `now` (with `TimedOut`).
    pub fn handle_timeout(&mut self, now: Time) {
        let expired: Vec<ExchangeId> = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(ex) = self.exchanges.remove(&id) {
                self.report_lost(id, ex, ExchangeFailure::TimedOut);
            }
        }
    }

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the agent.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn fail(&mut self, id: ExchangeId, e: ProtoError) -> ProtoError {
        if let Some(ex) = self.exchanges.remove(&id) {
            if ex.kind == ExchangeKind::Handshake {
                self.phase = Phase::Closed;
            }
            self.events.push_back(ClientEvent::ExchangeFailed {
                exchange: id,
                kind: ex.kind,
                failure: ExchangeFailure::Protocol(e.clone()),
            });
        }
        e
    }
}

/// An acknowledgement must name the batch and only sequence numbers that were in it.
pub(crate) fn check_ack(
    batch_id: u64,
    seqs: &BTreeSet<u64>,
    ack: &TelemetryAck,
) -> Result<(), ProtoError> {
    if ack.batch_id != batch_id {
        return Err(ProtoError::BadAck {
            reason: format!("batch {} acknowledged, {batch_id} sent", ack.batch_id),
        });
    }
    for r in &ack.acked {
        if r.first > r.last {
            return Err(ProtoError::BadAck {
                reason: format!("empty range {}..={}", r.first, r.last),
            });
        }
        let present = seqs.range(r.first..=r.last).count() as u64;
        if present == 0 || present - 1 != r.last - r.first {
            return Err(ProtoError::BadAck {
                reason: format!(
                    "range {}..={} holds unsent sequence numbers",
                    r.first, r.last
                ),
            });
        }
    }
    Ok(())
}
