//! The backend side of a session.
//!
//! A [`Server`] is created per accepted connection. It decodes and checks what the client
//! sends and turns each valid request into a [`ServerEvent`]; the backend answers through
//! [`accept`](Server::accept) / [`refuse`](Server::refuse) (identity),
//! [`respond_sync`](Server::respond_sync), [`send_range_data`](Server::send_range_data) and
//! [`ack_telemetry`](Server::ack_telemetry). The state machine checks those answers too (a
//! metadata list that does not match the assignment, range data past the requested end, an
//! acknowledgement of unsent sequence numbers), so a backend bug cannot put a protocol violation
//! on the wire. Storage, the registry and certificate checks stay in the backend.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::client::check_ack;
use crate::codec::{CHUNK_OVERHEAD, DEFAULT_CHUNK_LEN, DEFAULT_MAX_FRAME_LEN};
use crate::error::{ErrorCode, ProtoError};
use crate::message::{
    Assignment, ChunkRequest, Envelope, ErrorMsg, ExchangeKind, Hello, Message, ModelChunk,
    SyncRequest, Welcome,
};
use crate::metadata::SignedModelMetadata;
use crate::session::{ExchangeFailure, ExchangeId, Inbound, Transmit, check_version, frame};
use crate::telemetry::{TelemetryAck, TelemetryBatch};
use crate::types::{Bytes, DeviceId, ModelVersion};
use crate::version::{SUPPORTED_VERSIONS, VersionRange};

/// Default cap on records per telemetry batch.
pub const DEFAULT_MAX_BATCH_RECORDS: u32 = 1000;

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Protocol versions accepted. Production uses [`SUPPORTED_VERSIONS`]; other ranges only
    /// make sense in negotiation tests (the message schema is that of version 1).
    pub versions: VersionRange,
    /// Largest frame body accepted from a client (and sent, unless the client's is smaller).
    pub max_frame_len: u32,
    /// Model chunk size (reduced to fit the client's frame cap).
    pub chunk_len: u32,
    /// Most records accepted in one telemetry batch.
    pub max_batch_records: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            versions: SUPPORTED_VERSIONS,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            chunk_len: DEFAULT_CHUNK_LEN,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
        }
    }
}

/// What the server asks of, or reports to, the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A client offered a version we speak. Check `hello.device` against the TLS client
    /// certificate, then [`Server::accept`] or [`Server::refuse`] (`UNAUTHENTICATED`).
    Hello {
        /// The handshake exchange.
        exchange: ExchangeId,
        /// What the client said.
        hello: Hello,
        /// The version that will be used.
        version: u16,
    },
    /// A client offered no version we speak; it was refused with `VERSION_UNSUPPORTED` and the
    /// session is closed (close the connection once the transmit queue is flushed).
    VersionRefused {
        /// The handshake exchange.
        exchange: ExchangeId,
        /// The client's range.
        offered: VersionRange,
    },
    /// Answer with [`Server::respond_sync`] (or [`Server::refuse`]).
    SyncRequested {
        /// The exchange.
        exchange: ExchangeId,
        /// The session's device.
        device: DeviceId,
        /// What the device runs.
        request: SyncRequest,
    },
    /// Check the range lies inside the model (else refuse `UNKNOWN_MODEL` / `RANGE_INVALID`),
    /// then stream it with [`Server::send_range_data`].
    RangeRequested {
        /// The exchange.
        exchange: ExchangeId,
        /// The session's device.
        device: DeviceId,
        /// The model and byte range.
        request: ChunkRequest,
    },
    /// Store each record once per `(device, sequence)`, then [`Server::ack_telemetry`] (or
    /// refuse `STORAGE_UNAVAILABLE`). Every record's device is the session's.
    TelemetryReceived {
        /// The exchange.
        exchange: ExchangeId,
        /// The session's device.
        device: DeviceId,
        /// The batch.
        batch: TelemetryBatch,
    },
    /// An exchange failed (the client broke the protocol, sent an error, or reset the stream).
    /// Any error reply has already been queued.
    ExchangeFailed {
        /// The exchange.
        exchange: ExchangeId,
        /// Why.
        failure: ExchangeFailure,
    },
}

#[derive(Debug)]
enum Phase {
    AwaitingHello,
    AwaitingAccept { version: u16, device: DeviceId },
    Ready { version: u16, device: DeviceId },
    Closed,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::AwaitingHello => "awaiting_hello",
            Phase::AwaitingAccept { .. } => "awaiting_accept",
            Phase::Ready { .. } => "ready",
            Phase::Closed => "closed",
        }
    }
}

#[derive(Debug)]
enum Pending {
    /// A new stream; its first message decides the kind.
    AwaitingRequest,
    Handshake,
    Sync,
    Download {
        model: ModelVersion,
        next: u64,
        end: u64,
    },
    Telemetry {
        batch_id: u64,
        seqs: BTreeSet<u64>,
    },
    /// Our side is finished (answered, refused or failed); waiting for the client's end of
    /// stream. Anything still arriving is discarded.
    Done,
}

impl Pending {
    fn name(&self) -> &'static str {
        match self {
            Pending::AwaitingRequest => "awaiting_request",
            Pending::Handshake => "handshake",
            Pending::Sync => "sync",
            Pending::Download { .. } => "download",
            Pending::Telemetry { .. } => "telemetry",
            Pending::Done => "done",
        }
    }

    fn kind(&self) -> Option<ExchangeKind> {
        match self {
            Pending::Handshake => Some(ExchangeKind::Handshake),
            Pending::Sync => Some(ExchangeKind::Sync),
            Pending::Download { .. } => Some(ExchangeKind::Download),
            Pending::Telemetry { .. } => Some(ExchangeKind::Telemetry),
            Pending::AwaitingRequest | Pending::Done => None,
        }
    }
}

#[derive(Debug)]
struct Exchange {
    pending: Pending,
    inbound: Inbound,
}

/// The server (backend) side of one session. Deterministic: no IO, no clock, no randomness.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    phase: Phase,
    /// Frame cap for what we send: ours and the client's, whichever is smaller.
    send_max: u32,
    chunk_len: u32,
    exchanges: BTreeMap<ExchangeId, Exchange>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
}

impl Server {
    /// A session awaiting the client's `Hello`.
    pub fn new(config: ServerConfig) -> Self {
        Server {
            send_max: config.max_frame_len,
            chunk_len: config.chunk_len,
            config,
            phase: Phase::AwaitingHello,
            exchanges: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The negotiated version, once the handshake is accepted.
    pub fn version(&self) -> Option<u16> {
        match self.phase {
            Phase::Ready { version, .. } => Some(version),
            _ => None,
        }
    }

    /// The session's device, once the handshake is accepted.
    pub fn device(&self) -> Option<&DeviceId> {
        match &self.phase {
            Phase::Ready { device, .. } => Some(device),
            _ => None,
        }
    }

    /// Whether the session is over (refused or broken); close the connection after flushing
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The bytes still owed on a download exchange, as `next..end`.
    pub fn pending_range(&self, exchange: ExchangeId) -> Option<std::ops::Range<u64>> {
        match self.exchanges.get(&exchange)?.pending {
            Pending::Download { next, end, .. } => Some(next..end),
            _ => None,
        }
    }

    /// The envelope version for what we send now.
    fn send_version(&self) -> u16 {
        match self.phase {
            Phase::AwaitingAccept { version, .. } | Phase::Ready { version, .. } => version,
            Phase::AwaitingHello | Phase::Closed => self.config.versions.max(),
        }
    }

    fn push(&mut self, exchange: ExchangeId, msg: Message, fin: bool) -> Result<(), ProtoError> {
        let t = frame(exchange, self.send_version(), msg, self.send_max, fin)?;
        self.transmits.push_back(t);
        Ok(())
    }

    /// Feeds bytes received on `exchange`'s stream (a new id is a new stream). On an error the
    /// exchange is answered with an error message and closed (during the handshake, the whole
    /// session), and the error is returned for logging.
    pub fn handle_data(&mut self, exchange: ExchangeId, data: &[u8]) -> Result<(), ProtoError> {
        let max = self.config.max_frame_len;
        let ex = self.exchanges.entry(exchange).or_insert_with(|| Exchange {
            pending: Pending::AwaitingRequest,
            inbound: Inbound::new(max),
        });
        if matches!(ex.pending, Pending::Done) {
            return Ok(());
        }
        if let Err(e) = ex.inbound.decoder.push(data) {
            return Err(self.fail(exchange, e));
        }
        loop {
            let Some(ex) = self.exchanges.get_mut(&exchange) else {
                return Ok(());
            };
            if matches!(ex.pending, Pending::Done) {
                return Ok(());
            }
            match ex.inbound.decoder.next_envelope() {
                Ok(Some(env)) => self.handle_message(exchange, env)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(exchange, e)),
            }
        }
    }

    /// Handles one decoded message on `exchange` (what [`handle_data`](Self::handle_data) does
    /// per frame). Errors as for `handle_data`.
    pub fn handle_message(
        &mut self,
        exchange: ExchangeId,
        env: Envelope,
    ) -> Result<(), ProtoError> {
        let max = self.config.max_frame_len;
        let negotiated = self.version();
        let phase_name = self.phase.name();
        let ex = self.exchanges.entry(exchange).or_insert_with(|| Exchange {
            pending: Pending::AwaitingRequest,
            inbound: Inbound::new(max),
        });
        if matches!(ex.pending, Pending::Done) {
            return Ok(());
        }
        if matches!(self.phase, Phase::Closed) {
            return Err(ProtoError::UnexpectedMessage {
                state: "closed",
                message: env.msg.name(),
            });
        }
        if let Err(e) = check_version(negotiated, &env, phase_name) {
            return Err(self.fail(exchange, e));
        }
        let msg = match env.msg {
            Message::Error(err) => {
                ex.pending = Pending::Done;
                self.remove_if_finished(exchange);
                self.events.push_back(ServerEvent::ExchangeFailed {
                    exchange,
                    failure: ExchangeFailure::Remote(err),
                });
                return Ok(());
            }
            other => other,
        };
        if !matches!(ex.pending, Pending::AwaitingRequest) {
            let e = ProtoError::UnexpectedMessage {
                state: ex.pending.name(),
                message: msg.name(),
            };
            return Err(self.fail(exchange, e));
        }
        let device = match &self.phase {
            Phase::Ready { device, .. } => Some(device.clone()),
            _ => None,
        };
        let result = match (device, msg) {
            (None, Message::Hello(hello)) if matches!(self.phase, Phase::AwaitingHello) => {
                self.on_hello(exchange, hello)
            }
            (Some(device), Message::SyncRequest(request)) => {
                ex.pending = Pending::Sync;
                self.events.push_back(ServerEvent::SyncRequested {
                    exchange,
                    device,
                    request,
                });
                Ok(())
            }
            (Some(device), Message::ChunkRequest(request)) => {
                match request.offset.checked_add(request.len) {
                    Some(end) if request.len > 0 => {
                        ex.pending = Pending::Download {
                            model: request.model,
                            next: request.offset,
                            end,
                        };
                        self.events.push_back(ServerEvent::RangeRequested {
                            exchange,
                            device,
                            request,
                        });
                        Ok(())
                    }
                    _ => Err(ProtoError::InvalidField {
                        field: "len",
                        reason: format!(
                            "range {}+{} is empty or overflows",
                            request.offset, request.len
                        ),
                    }),
                }
            }
            (Some(device), Message::TelemetryBatch(batch)) => {
                let max = self.config.max_batch_records;
                if batch.records.len() as u64 > u64::from(max) {
                    Err(ProtoError::BatchTooLarge {
                        records: batch.records.len() as u64,
                        max,
                    })
                } else if let Some(r) = batch.records.iter().find(|r| r.device != device) {
                    Err(ProtoError::DeviceMismatch {
                        expected: device.to_string(),
                        got: r.device.to_string(),
                    })
                } else {
                    ex.pending = Pending::Telemetry {
                        batch_id: batch.batch_id,
                        seqs: batch.records.iter().map(|r| r.sequence).collect(),
                    };
                    self.events.push_back(ServerEvent::TelemetryReceived {
                        exchange,
                        device,
                        batch,
                    });
                    Ok(())
                }
            }
            (_, msg) => Err(ProtoError::UnexpectedMessage {
                state: phase_name,
                message: msg.name(),
            }),
        };
        result.map_err(|e| self.fail(exchange, e))
    }

    fn on_hello(&mut self, exchange: ExchangeId, hello: Hello) -> Result<(), ProtoError> {
        match self.config.versions.negotiate(hello.versions) {
            Ok(version) => {
                // Send nothing larger than the client accepts; chunks must fit in a frame.
                let client_max = hello.max_frame_len;
                let chunk_room = client_max.saturating_sub(CHUNK_OVERHEAD);
                if chunk_room == 0 {
                    return Err(ProtoError::InvalidField {
                        field: "max_frame_len",
                        reason: format!("{client_max} leaves no room for model chunks"),
                    });
                }
                self.send_max = self.config.max_frame_len.min(client_max);
                self.chunk_len = self.config.chunk_len.min(chunk_room).max(1);
                self.phase = Phase::AwaitingAccept {
                    version,
                    device: hello.device.clone(),
                };
                if let Some(ex) = self.exchanges.get_mut(&exchange) {
                    ex.pending = Pending::Handshake;
                }
                self.events.push_back(ServerEvent::Hello {
                    exchange,
                    hello,
                    version,
                });
                Ok(())
            }
            Err(e) => {
                let mut msg = ErrorMsg::new(ErrorCode::VERSION_UNSUPPORTED, e.to_string());
                msg.supported = Some(self.config.versions);
                self.push(exchange, Message::Error(msg), true)?;
                self.phase = Phase::Closed;
                self.finish_local(exchange);
                self.events.push_back(ServerEvent::VersionRefused {
                    exchange,
                    offered: hello.versions,
                });
                Ok(())
            }
        }
    }

    /// Accepts the handshake on `exchange` (after checking the identity): queues `Welcome`.
    pub fn accept(&mut self, exchange: ExchangeId) -> Result<(), ProtoError> {
        let Phase::AwaitingAccept { version, device } = &self.phase else {
            return Err(ProtoError::InvalidState {
                operation: "accept",
                state: self.phase.name(),
            });
        };
        self.expect_kind(exchange, ExchangeKind::Handshake)?;
        let (version, device) = (*version, device.clone());
        let welcome = Welcome {
            version,
            max_frame_len: self.config.max_frame_len,
            chunk_len: self.chunk_len,
            max_batch_records: self.config.max_batch_records,
        };
        self.phase = Phase::Ready { version, device };
        self.push(exchange, Message::Welcome(welcome), true)?;
        self.finish_local(exchange);
        Ok(())
    }

    /// Answers an open exchange with an error and finishes it. Refusing the handshake closes
    /// the session. Also the way to abort a download midway (e.g. the blob became unreadable).
    pub fn refuse(&mut self, exchange: ExchangeId, error: ErrorMsg) -> Result<(), ProtoError> {
        let kind = self
            .exchanges
            .get(&exchange)
            .and_then(|e| e.pending.kind())
            .ok_or(ProtoError::UnknownExchange(exchange.0))?;
        self.push(exchange, Message::Error(error), true)?;
        if kind == ExchangeKind::Handshake {
            self.phase = Phase::Closed;
        }
        self.finish_local(exchange);
        Ok(())
    }

    /// Answers a sync request: the assignment, then the signed metadata of every version it
    /// names, in the order of [`Assignment::metadata_versions`].
    pub fn respond_sync(
        &mut self,
        exchange: ExchangeId,
        assignment: Assignment,
        metadata: Vec<SignedModelMetadata>,
    ) -> Result<(), ProtoError> {
        self.expect_kind(exchange, ExchangeKind::Sync)?;
        let expected = assignment.metadata_versions();
        let got: Vec<ModelVersion> = metadata.iter().map(|m| m.metadata.version).collect();
        if got != expected {
            let at = expected.iter().zip(&got).position(|(a, b)| a != b);
            let idx = at.unwrap_or(expected.len().min(got.len()));
            return Err(ProtoError::ModelMismatch {
                expected: expected.get(idx).map_or(0, |v| v.0),
                got: got.get(idx).map_or(0, |v| v.0),
            });
        }
        let n = metadata.len();
        self.push(exchange, Message::Assignment(assignment), n == 0)?;
        for (i, m) in metadata.into_iter().enumerate() {
            self.push(exchange, Message::ModelMetadata(m), i + 1 == n)?;
        }
        self.finish_local(exchange);
        Ok(())
    }

    /// Sends the next bytes of a requested range, split into chunks of the session's
    /// `chunk_len`. `data` continues where the previous call ended; the stream is finished when
    /// the range is complete. Feed it as the transport drains (e.g. one chunk per write) rather
    /// than the whole model at once. Refuses data past the end of the range.
    pub fn send_range_data(&mut self, exchange: ExchangeId, data: &[u8]) -> Result<(), ProtoError> {
        self.expect_kind(exchange, ExchangeKind::Download)?;
        let Some(Exchange {
            pending: Pending::Download { model, next, end },
            ..
        }) = self.exchanges.get(&exchange)
        else {
            return Err(ProtoError::UnknownExchange(exchange.0));
        };
        let (model, mut next, end) = (*model, *next, *end);
        let limit = next.checked_add(data.len() as u64);
        if limit.is_none_or(|l| l > end) {
            return Err(ProtoError::RangeOverrun {
                end: limit.unwrap_or(u64::MAX),
                limit: end,
            });
        }
        for piece in data.chunks((self.chunk_len as usize).max(1)) {
            let chunk = ModelChunk {
                model,
                offset: next,
                data: Bytes(piece.to_vec()),
            };
            next += piece.len() as u64;
            self.push(exchange, Message::ModelChunk(chunk), next == end)?;
            if let Some(Exchange {
                pending: Pending::Download { next: n, .. },
                ..
            }) = self.exchanges.get_mut(&exchange)
            {
                *n = next;
            }
        }
        if next == end {
            self.finish_local(exchange);
        }
        Ok(())
    }

    /// Acknowledges a telemetry batch once its records are durably stored. `ack` must name the
    /// batch and only sequence numbers it held.
    pub fn ack_telemetry(
        &mut self,
        exchange: ExchangeId,
        ack: TelemetryAck,
    ) -> Result<(), ProtoError> {
        self.expect_kind(exchange, ExchangeKind::Telemetry)?;
        if let Some(Exchange {
            pending: Pending::Telemetry { batch_id, seqs },
            ..
        }) = self.exchanges.get(&exchange)
        {
            check_ack(*batch_id, seqs, &ack)?;
        }
        self.push(exchange, Message::TelemetryAck(ack), true)?;
        self.finish_local(exchange);
        Ok(())
    }

    /// The client finished its side of `exchange`'s stream.
    pub fn handle_stream_end(&mut self, exchange: ExchangeId) -> Result<(), ProtoError> {
        let Some(ex) = self.exchanges.get_mut(&exchange) else {
            return Ok(());
        };
        ex.inbound.peer_fin = true;
        if matches!(ex.pending, Pending::Done) {
            self.exchanges.remove(&exchange);
            return Ok(());
        }
        if let Err(e) = ex.inbound.decoder.finish() {
            return Err(self.fail(exchange, e));
        }
        if matches!(ex.pending, Pending::AwaitingRequest) {
            return Err(self.fail(
                exchange,
                ProtoError::StreamEnded {
                    state: "awaiting_request",
                },
            ));
        }
        Ok(())
    }

    /// The client reset `exchange`'s stream (or it was lost): forget it. A download being sent
    /// stops (further [`send_range_data`](Self::send_range_data) calls fail).
    pub fn handle_reset(&mut self, exchange: ExchangeId) {
        if let Some(ex) = self.exchanges.remove(&exchange) {
            if matches!(ex.pending, Pending::Handshake | Pending::AwaitingRequest)
                && !matches!(self.phase, Phase::Ready { .. })
            {
                self.phase = Phase::Closed;
            }
            if ex.pending.kind().is_some() {
                self.events.push_back(ServerEvent::ExchangeFailed {
                    exchange,
                    failure: ExchangeFailure::Reset,
                });
            }
        }
    }

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the backend.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn expect_kind(&self, exchange: ExchangeId, wanted: ExchangeKind) -> Result<(), ProtoError> {
        let ex = self
            .exchanges
            .get(&exchange)
            .ok_or(ProtoError::UnknownExchange(exchange.0))?;
        match ex.pending.kind() {
            Some(actual) if actual == wanted => Ok(()),
            Some(actual) => Err(ProtoError::WrongExchangeKind {
                exchange: exchange.0,
                actual,
                wanted,
            }),
            None => Err(ProtoError::InvalidState {
                operation: "respond",
                state: ex.pending.name(),
            }),
        }
    }

    /// Our side of `exchange` is finished; forget it once the client's side is too.
    fn finish_local(&mut self, exchange: ExchangeId) {
        if let Some(ex) = self.exchanges.get_mut(&exchange) {
            ex.pending = Pending::Done;
        }
        self.remove_if_finished(exchange);
    }

    fn remove_if_finished(&mut self, exchange: ExchangeId) {
        if self
            .exchanges
            .get(&exchange)
            .is_some_and(|e| e.inbound.peer_fin && matches!(e.pending, Pending::Done))
        {
            self.exchanges.remove(&exchange);
        }
    }

    /// The client broke the protocol on `exchange`: answer with the error's code (unless our
    /// side already finished), close the exchange, and during the handshake the session.
    fn fail(&mut self, exchange: ExchangeId, e: ProtoError) -> ProtoError {
        let already_done = self
            .exchanges
            .get(&exchange)
            .is_none_or(|x| matches!(x.pending, Pending::Done));
        if !already_done {
            let msg = ErrorMsg::new(e.code(), e.to_string());
            // An error message always fits the frame cap; if it somehow did not, the reset the
            // driver sends carries the same code.
            let _ = self.push(exchange, Message::Error(msg), true);
        }
        if !matches!(self.phase, Phase::Ready { .. }) {
            self.phase = Phase::Closed;
        }
        self.finish_local(exchange);
        self.events.push_back(ServerEvent::ExchangeFailed {
            exchange,
            failure: ExchangeFailure::Protocol(e.clone()),
        });
        e
    }
}
