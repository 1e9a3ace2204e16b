//! CBOR bodies and length-prefixed frames.
//!
//! A frame is a `u32` big-endian body length followed by that many bytes: one CBOR item, an
//! [`Envelope`]. Frames are capped (default [`DEFAULT_MAX_FRAME_LEN`]); the cap is checked on the
//! prefix, before a byte of the body is buffered, and on encoding.

use crate::error::ProtoError;
use crate::message::Envelope;

/// Default cap on a frame body: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;

/// Default model chunk size: 256 KiB, well below the frame cap.
pub const DEFAULT_CHUNK_LEN: u32 = 256 << 10;

/// Upper bound on what a `ModelChunk` frame body adds to its data (envelope, keys, integers).
/// `chunk_len + CHUNK_OVERHEAD <= max_frame_len` keeps every chunk frame under the cap.
pub const CHUNK_OVERHEAD: u32 = 128;

/// Length of the frame prefix.
pub const PREFIX_LEN: usize = 4;

/// Deepest CBOR nesting the decoder follows (the deepest message nests about 8 levels).
const RECURSION_LIMIT: usize = 64;

/// Encodes an envelope as a CBOR body (no prefix).
pub fn encode_body(envelope: &Envelope) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(envelope, &mut out).map_err(|e| ProtoError::Encode {
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes one CBOR body (no prefix) into an envelope. Refuses truncated, malformed and
/// trailing bytes with typed errors.
pub fn decode_body(body: &[u8]) -> Result<Envelope, ProtoError> {
    let mut rest = body;
    let env: Envelope = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
        .map_err(|e| match e {
            ciborium::de::Error::Io(_) => ProtoError::TruncatedCbor,
            ciborium::de::Error::Syntax(offset) => ProtoError::InvalidCbor {
                offset: offset as u64,
            },
            ciborium::de::Error::Semantic(_, reason) => ProtoError::Schema { reason },
            ciborium::de::Error::RecursionLimitExceeded => ProtoError::TooDeep,
        })?;
    if !rest.is_empty() {
        return Err(ProtoError::TrailingBytes {
            extra: rest.len() as u64,
        });
    }
    Ok(env)
}

/// Encodes an envelope as a complete frame (prefix and body), refusing a body over `max_len`.
pub fn encode_frame(envelope: &Envelope, max_len: u32) -> Result<Vec<u8>, ProtoError> {
    let body = encode_body(envelope)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= max_len)
        .ok_or(ProtoError::FrameTooLarge {
            len: body.len() as u64,
            max: max_len,
        })?;
    let mut frame = Vec::with_capacity(PREFIX_LEN + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Splits a byte stream into frames, whatever pieces it arrives in.
///
/// Feed bytes with [`push`](Self::push) and take frames with [`next_frame`](Self::next_frame)
/// (raw bodies) or [`next_envelope`](Self::next_envelope) (decoded) until they return
/// `Ok(None)`; call [`finish`](Self::finish) when the stream ends. The decoder buffers only bytes
/// it was given, never the announced length: an oversized prefix fails as soon as its four bytes
/// are in. After an oversized prefix the stream cannot be resynchronised and every later call
/// returns the same error; a body that fails to decode is consumed whole, so the next frame is
/// still found.
#[derive(Debug)]
pub struct FrameDecoder {
    max_len: u32,
    buf: Vec<u8>,
    start: usize,
    failed: Option<ProtoError>,
}

impl FrameDecoder {
    /// A decoder refusing bodies longer than `max_len` bytes.
    pub fn new(max_len: u32) -> Self {
        FrameDecoder {
            max_len,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// The body cap.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes. Fails at once if the frame now at the head announces a body over
    /// the cap.
    pub fn push(&mut self, data: &[u8]) -> Result<(), ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Refuse the head frame's prefix before buffering its body.
        let have = self.buffered();
        if have < PREFIX_LEN && have + data.len() >= PREFIX_LEN {
            let mut prefix = [0u8; PREFIX_LEN];
            prefix[..have].copy_from_slice(&self.buf[self.start..]);
            prefix[have..].copy_from_slice(&data[..PREFIX_LEN - have]);
            self.check_len(u32::from_be_bytes(prefix))?;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn check_len(&mut self, len: u32) -> Result<(), ProtoError> {
        if len > self.max_len {
            let e = ProtoError::FrameTooLarge {
                len: u64::from(len),
                max: self.max_len,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(prefix) = self.buf[self.start..].first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        self.check_len(len)?;
        let total = PREFIX_LEN + len as usize;
        let avail = &self.buf[self.start..];
        if avail.len() < total {
            return Ok(None);
        }
        let body = avail[PREFIX_LEN..total].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // The next frame's prefix may already be here: refuse it early too.
        if let Some(next) = self.buf[self.start..].first_chunk::<PREFIX_LEN>() {
            let next_len = u32::from_be_bytes(*next);
            if next_len > self.max_len {
                // Report on the next call; this frame is fine.
                self.failed = Some(ProtoError::FrameTooLarge {
                    len: u64::from(next_len),
                    max: self.max_len,
                });
            }
        }
        Ok(Some(body))
    }

    /// The next complete frame decoded into an envelope, `Ok(None)` if more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, ProtoError> {
        match self.next_frame()? {
            Some(body) => decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Declares the end of the stream: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let have = self.buffered();
        if have == 0 {
            return Ok(());
        }
        let need = match self.buf[self.start..].first_chunk::<PREFIX_LEN>() {
            Some(p) => PREFIX_LEN as u64 + u64::from(u32::from_be_bytes(*p)),
            None => PREFIX_LEN as u64,
        };
        Err(ProtoError::TruncatedFrame {
            have: have as u64,
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ErrorMsg, Message};
    use crate::{ErrorCode, PROTOCOL_VERSION};

    fn env() -> Envelope {
        Envelope {
            v: PROTOCOL_VERSION,
            msg: Message::Error(ErrorMsg::new(ErrorCode::INTERNAL, "x")),
        }
    }

    #[test]
    fn oversized_prefix_fails_before_the_body_is_buffered() {
        let mut d = FrameDecoder::new(16);
        assert_eq!(
            d.push(&[0, 0, 0]).map(|_| d.buffered()),
            Ok(3),
            "three prefix bytes are not yet a length"
        );
        assert_eq!(
            d.push(&[17, 1, 2, 3]),
            Err(ProtoError::FrameTooLarge { len: 17, max: 16 })
        );
        assert_eq!(
            d.buffered(),
            3,
            "nothing of the oversized frame was buffered"
        );
        assert!(d.next_frame().is_err(), "the decoder stays failed");
    }

    #[test]
    fn frame_at_exactly_the_cap_passes() {
        let body_len = encode_body(&env()).unwrap().len() as u32;
        let frame = encode_frame(&env(), body_len).unwrap();
        assert!(encode_frame(&env(), body_len - 1).is_err());
        let mut d = FrameDecoder::new(body_len);
        d.push(&frame).unwrap();
        assert_eq!(d.next_envelope(), Ok(Some(env())));
        assert_eq!(d.next_envelope(), Ok(None));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn trailing_bytes_in_a_body_are_refused() {
        let mut body = encode_body(&env()).unwrap();
        body.push(0);
        assert_eq!(
            decode_body(&body),
            Err(ProtoError::TrailingBytes { extra: 1 })
        );
    }
}
