//! Pieces shared by the client and server state machines.

use crate::codec::{FrameDecoder, encode_frame};
use crate::error::ProtoError;
use crate::message::{Envelope, ErrorMsg, Message};

/// Names one exchange (one bidirectional stream) within a session.
///
/// The client numbers the exchanges it opens (0 is the handshake); the server's driver names
/// each incoming stream (e.g. by its QUIC stream index). The numbers are local to each side:
/// drivers map them to their transport's streams and never reuse one within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExchangeId(pub u64);

impl std::fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Bytes for the driver to write on an exchange's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The exchange (stream) to write on; the client driver opens a new bidirectional stream the
    /// first time it sees an id.
    pub exchange: ExchangeId,
    /// Whole frames, ready to write.
    pub data: Vec<u8>,
    /// After writing `data`, finish (half-close) the send side of the stream.
    pub fin: bool,
}

/// Why an exchange ended without its normal result.
#[derive(Debug, Clone, PartialEq)]
pub enum ExchangeFailure {
    /// The peer answered with an error message.
    Remote(ErrorMsg),
    /// The peer broke the protocol (this side detected it; the error says how).
    Protocol(ProtoError),
    /// No progress before the exchange's deadline.
    TimedOut,
    /// The peer reset the stream, or the driver reported the stream or connection lost.
    Reset,
}

/// Per-exchange byte handling common to both sides: a frame decoder plus the negotiated
/// version check.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) decoder: FrameDecoder,
    pub(crate) peer_fin: bool,
}

impl Inbound {
    pub(crate) fn new(max_len: u32) -> Self {
        Inbound {
            decoder: FrameDecoder::new(max_len),
            peer_fin: false,
        }
    }
}

/// Checks an envelope's version against the negotiated one (`None` before negotiation, when
/// any version is accepted on the frozen handshake messages only).
pub(crate) fn check_version(
    negotiated: Option<u16>,
    env: &Envelope,
    state: &'static str,
) -> Result<(), ProtoError> {
    match negotiated {
        Some(v) if env.v != v => Err(ProtoError::WrongVersion {
            expected: v,
            got: env.v,
        }),
        Some(_) => Ok(()),
        None => match env.msg {
            Message::Hello(_) | Message::Welcome(_) | Message::Error(_) => Ok(()),
            _ => Err(ProtoError::UnexpectedMessage {
                state,
                message: env.msg.name(),
            }),
        },
    }
}

/// Frames `msg` at version `v` for `exchange`.
pub(crate) fn frame(
    exchange: ExchangeId,
    v: u16,
    msg: Message,
    max_len: u32,
    fin: bool,
) -> Result<Transmit, ProtoError> {
    let data = encode_frame(&Envelope { v, msg }, max_len)?;
    Ok(Transmit {
        exchange,
        data,
        fin,
    })
}
