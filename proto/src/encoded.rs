//! Telemetry batches whose record bodies are already CBOR.
//!
//! The agent keeps every record in its disk queue as the CBOR encoding of its
//! [`RecordBody`](crate::RecordBody). Decoding each record only to encode it again into the
//! batch costs more CPU than everything else on the upload path, so
//! [`encode_batch_frame`] writes the `TelemetryBatch` frame directly, splicing the stored bodies
//! in. The result is byte for byte the frame [`encode_frame`](crate::codec::encode_frame) gives
//! for the equivalent typed [`TelemetryBatch`](crate::TelemetryBatch) (tested), so the wire
//! format is unchanged and the server cannot tell the difference.
//!
//! The bodies must each be one well-formed CBOR item encoding a `RecordBody`; [`check_item`]
//! checks the first (cheaply: structure only, not the schema). A body that is well-formed CBOR
//! but not a `RecordBody` makes the server refuse the batch as malformed.

use crate::codec::PREFIX_LEN;
use crate::error::ProtoError;
use crate::telemetry::DropCounters;
use crate::types::DeviceId;

/// One record of a batch with its body already encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedRecord<'a> {
    /// Per-device sequence number.
    pub sequence: u64,
    /// When it was recorded (Unix ms, device clock).
    pub recorded_at_ms: u64,
    /// The CBOR encoding of the record's `RecordBody`.
    pub body: &'a [u8],
}

#[inline(always)]
pub(crate) fn head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.push(m | 24);
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
pub(crate) fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline(always)]
pub(crate) fn uint_field(out: &mut Vec<u8>, key: &str, v: u64) {
    text(out, key);
    head(out, 0, v);
}

/// Writes the complete frame (length prefix and body) of an envelope of protocol version `v`
/// carrying `TelemetryBatch { batch_id, records, dropped }`, every record from `device`.
/// Refuses a body over `max_len` ([`ProtoError::FrameTooLarge`]).
pub fn encode_batch_frame(
    v: u16,
    device: &DeviceId,
    batch_id: u64,
    records: &[EncodedRecord<'_>],
    dropped: &DropCounters,
    max_len: u32,
) -> Result<Vec<u8>, ProtoError> {
    let per_record = 64 + device.as_str().len();
    let bodies: usize = records.iter().map(|r| r.body.len()).sum();
    let mut out = Vec::with_capacity(PREFIX_LEN + 160 + bodies + records.len() * per_record);
    out.extend_from_slice(&[0; PREFIX_LEN]);
    head(&mut out, 5, 2);
    uint_field(&mut out, "v", u64::from(v));
    text(&mut out, "msg");
    head(&mut out, 5, 1);
    text(&mut out, "telemetry_batch");
    head(&mut out, 5, 3);
    uint_field(&mut out, "batch_id", batch_id);
    text(&mut out, "records");
    head(&mut out, 4, records.len() as u64);
    // What every record starts with (its map, the device and the next key) is the same bytes:
    // encoded once, copied per record.
    let mut start = Vec::with_capacity(32 + device.as_str().len());
    head(&mut start, 5, 4);
    text(&mut start, "device");
    text(&mut start, device.as_str());
    text(&mut start, "sequence");
    let mut recorded_at = Vec::with_capacity(16);
    text(&mut recorded_at, "recorded_at_ms");
    let mut body = Vec::with_capacity(8);
    text(&mut body, "body");
    for r in records {
        out.extend_from_slice(&start);
        head(&mut out, 0, r.sequence);
        out.extend_from_slice(&recorded_at);
        head(&mut out, 0, r.recorded_at_ms);
        out.extend_from_slice(&body);
        out.extend_from_slice(r.body);
    }
    text(&mut out, "dropped");
    head(&mut out, 5, 4);
    uint_field(&mut out, "by_items", dropped.by_items);
    uint_field(&mut out, "by_bytes", dropped.by_bytes);
    uint_field(&mut out, "by_age", dropped.by_age);
    uint_field(&mut out, "by_handoff", dropped.by_handoff);
    let body_len = out.len() - PREFIX_LEN;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= max_len)
        .ok_or(ProtoError::FrameTooLarge {
            len: body_len as u64,
            max: max_len,
        })?;
    out[..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Deepest nesting [`check_item`] follows.
const MAX_DEPTH: usize = 32;

/// Checks that `b` is exactly one well-formed CBOR data item (definite or indefinite lengths,
/// nesting at most 32 deep), without decoding it into a type.
pub fn check_item(b: &[u8]) -> Result<(), ProtoError> {
    let end = skip(b, 0, 0).map_err(ProtoError::from)?;
    if end != b.len() {
        return Err(ProtoError::TrailingBytes {
            extra: (b.len() - end) as u64,
        });
    }
    Ok(())
}

/// Why [`skip`] stopped: small and `Copy`, so the walk returns in registers (the agent checks
/// every queued body with it before upload); turned into a [`ProtoError`] once, at the end.
#[derive(Debug, Clone, Copy)]
enum SkipError {
    Truncated,
    Invalid(usize),
    TooDeep,
}

impl From<SkipError> for ProtoError {
    fn from(e: SkipError) -> Self {
        match e {
            SkipError::Truncated => ProtoError::TruncatedCbor,
            SkipError::Invalid(at) => ProtoError::InvalidCbor { offset: at as u64 },
            SkipError::TooDeep => ProtoError::TooDeep,
        }
    }
}

#[inline]
fn arg(b: &[u8], at: usize) -> Result<(u8, u8, u64, usize), SkipError> {
    let Some(&first) = b.get(at) else {
        return Err(SkipError::Truncated);
    };
    let (major, info) = (first >> 5, first & 0x1f);
    let n = match info {
        0..=23 => return Ok((major, info, u64::from(info), at + 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Ok((major, info, u64::MAX, at + 1)),
        _ => return Err(SkipError::Invalid(at)),
    };
    let Some(s) = b.get(at + 1..at + 1 + n) else {
        return Err(SkipError::Truncated);
    };
    let v = s.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x));
    Ok((major, info, v, at + 1 + n))
}

fn skip(b: &[u8], at: usize, depth: usize) -> Result<usize, SkipError> {
    if depth > MAX_DEPTH {
        return Err(SkipError::TooDeep);
    }
    let (major, info, v, mut at) = arg(b, at)?;
    let indefinite = info == 31;
    match major {
        0 | 1 if !indefinite => Ok(at),
        2 | 3 if !indefinite => {
            let end = usize::try_from(v)
                .ok()
                .and_then(|n| at.checked_add(n))
                .filter(|e| *e <= b.len())
                .ok_or(SkipError::Truncated)?;
            Ok(end)
        }
        2 | 3 => loop {
            if *b.get(at).ok_or(SkipError::Truncated)? == 0xff {
                return Ok(at + 1);
            }
            let (m, i, _, _) = arg(b, at)?;
            if m != major || i == 31 {
                return Err(SkipError::Invalid(at));
            }
            at = skip(b, at, depth + 1)?;
        },
        4 | 5 => {
            let per = if major == 5 { 2 } else { 1 };
            if indefinite {
                loop {
                    if *b.get(at).ok_or(SkipError::Truncated)? == 0xff {
                        return Ok(at + 1);
                    }
                    for _ in 0..per {
                        at = skip(b, at, depth + 1)?;
                    }
                }
            }
            // Every item takes at least one byte: a count beyond the bytes left is truncation.
            if v > (b.len() - at) as u64 {
                return Err(SkipError::Truncated);
            }
            let scalars_ok = depth < MAX_DEPTH;
            for _ in 0..v * per {
                at = match skip_scalar(b, at).filter(|_| scalars_ok) {
                    Some(end) => end,
                    None => skip(b, at, depth + 1)?,
                };
            }
            Ok(at)
        }
        6 if !indefinite => skip(b, at, depth + 1),
        7 if !indefinite => Ok(at),
        _ => Err(SkipError::Invalid(at.saturating_sub(1))),
    }
}

/// The end of the item at `at` when it is a short scalar that is certainly whole and valid
/// (an integer, text or bytes of definite length under 24, or a simple value or float), else
/// `None` (then [`skip`] decides, errors included). Most items of a telemetry body are these.
#[inline]
fn skip_scalar(b: &[u8], at: usize) -> Option<usize> {
    let first = *b.get(at)?;
    let (major, info) = (first >> 5, first & 0x1f);
    let end = match (major, info) {
        (0 | 1, 0..=23) => at + 1,
        (0 | 1, 24) => at + 2,
        (0 | 1, 25) => at + 3,
        (0 | 1, 26) => at + 5,
        (0 | 1, 27) => at + 9,
        (2 | 3, 0..=23) => at + 1 + info as usize,
        (7, 0..=23) => at + 1,
        (7, 25) => at + 3,
        (7, 26) => at + 5,
        (7, 27) => at + 9,
        _ => return None,
    };
    (end <= b.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_body, encode_frame};
    use crate::message::{Envelope, Message};
    use crate::telemetry::{
        ComputeBackend, LocalizationEvent, Outcome, PoseSource, RecordBody, SliceKeys,
        StageTimings, TelemetryBatch, TelemetryRecord,
    };
    use crate::types::{Label, ModelVersion};

    fn body(i: u64) -> RecordBody {
        RecordBody::Localization(LocalizationEvent {
            model: ModelVersion(i),
            slice: SliceKeys {
                device_class: Label::new("pixel-8").unwrap(),
                app_version: Label::new("1.2.3").unwrap(),
                backend: ComputeBackend::Gpu,
                region: None,
            },
            outcome: Outcome::Localized {
                source: PoseSource::Visual,
            },
            confidence: 0.25 * i as f32,
            inliers: i as u32 * 1000,
            timings: StageTimings::default(),
        })
    }

    #[test]
    fn same_bytes_as_the_typed_encoding() {
        let device = DeviceId::new("dev-7").unwrap();
        for n in [0usize, 1, 23, 24, 300] {
            let bodies: Vec<Vec<u8>> = (0..n as u64)
                .map(|i| {
                    let mut v = Vec::new();
                    ciborium::into_writer(&body(i), &mut v).unwrap();
                    v
                })
                .collect();
            let seq = |i: usize| (i as u64) * 70_000 + 3;
            let encoded: Vec<EncodedRecord<'_>> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| EncodedRecord {
                    sequence: seq(i),
                    recorded_at_ms: 1_700_000_000_000 + i as u64,
                    body: b,
                })
                .collect();
            let dropped = DropCounters {
                by_items: 1,
                by_bytes: 300,
                by_age: 70_000,
                by_handoff: 5_000_000_000,
            };
            let typed = Envelope {
                v: 1,
                msg: Message::TelemetryBatch(TelemetryBatch {
                    batch_id: 42 + n as u64,
                    records: (0..n)
                        .map(|i| TelemetryRecord {
                            device: device.clone(),
                            sequence: seq(i),
                            recorded_at_ms: 1_700_000_000_000 + i as u64,
                            body: body(i as u64),
                        })
                        .collect(),
                    dropped,
                }),
            };
            let want = encode_frame(&typed, 1 << 20).unwrap();
            let got =
                encode_batch_frame(1, &device, 42 + n as u64, &encoded, &dropped, 1 << 20).unwrap();
            assert_eq!(got, want, "{n} records");
            assert_eq!(decode_body(&got[PREFIX_LEN..]).unwrap(), typed);
            assert!(matches!(
                encode_batch_frame(1, &device, 1, &encoded, &dropped, 10),
                Err(ProtoError::FrameTooLarge { .. })
            ));
        }
    }

    #[test]
    fn check_item_accepts_one_item_and_refuses_the_rest() {
        let mut b = Vec::new();
        ciborium::into_writer(&body(3), &mut b).unwrap();
        check_item(&b).unwrap();
        for cut in 0..b.len() {
            assert!(check_item(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(check_item(&extra).is_err());
        // Indefinite-length map and text, nested arrays, tags, floats, simple values.
        check_item(&[0xbf, 0x7f, 0x61, b'a', 0xff, 0x82, 0x01, 0xf6, 0xff]).unwrap();
        check_item(&[0xc1, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        // Reserved additional info, a lone break, a huge count.
        assert!(check_item(&[0x1c]).is_err());
        assert!(check_item(&[0xff]).is_err());
        assert!(check_item(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        let deep = vec![0x81u8; 100];
        assert!(check_item(&deep).is_err());
        // The depth limit holds for scalars too: 33 arrays around an integer is too deep, 32 not.
        let mut at_limit = vec![0x81u8; 32];
        at_limit.push(0x01);
        check_item(&at_limit).unwrap();
        let mut over = vec![0x81u8; 33];
        over.push(0x01);
        assert!(matches!(check_item(&over), Err(ProtoError::TooDeep)));
    }
}
