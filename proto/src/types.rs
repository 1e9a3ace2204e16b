//! Small validated value types shared by the messages.
//!
//! Every type that restricts its values validates them on construction *and* on decoding (serde
//! `try_from`), so a decoded message never holds a value its constructor would refuse.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ProtoError;

/// A point on the caller's monotonic clock, in milliseconds from an arbitrary origin.
///
/// The state machines never read a clock: the driver passes `Time` in (in production
/// `Time(start.elapsed().as_millis() as u64)` for an `Instant` taken at start-up; in tests a
/// counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// `self` plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// A model version: a monotonically increasing release number. Higher is newer; the device's
/// floor is a `ModelVersion` too.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ModelVersion(pub u64);

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Longest [`DeviceId`] in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 128;
/// Longest [`Label`] in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest [`CoarseRegion`] in characters: a 4-character geohash is a cell of about
/// 39 km × 20 km, coarse enough not to locate a person.
pub const MAX_REGION_LEN: usize = 4;

fn check_printable(field: &'static str, s: &str, max: usize) -> Result<(), ProtoError> {
    if s.is_empty() || s.len() > max {
        return Err(ProtoError::InvalidField {
            field,
            reason: format!("length {} not in 1..={max}", s.len()),
        });
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ProtoError::InvalidField {
            field,
            reason: format!("character {c:?} is not printable ASCII"),
        });
    }
    Ok(())
}

/// A device's identity: the subject of its fleet client certificate. 1 to
/// [`MAX_DEVICE_ID_LEN`] bytes of printable ASCII (no spaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, ProtoError> {
        let id = id.into();
        check_printable("device", &id, MAX_DEVICE_ID_LEN)?;
        Ok(DeviceId(id))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = ProtoError;
    fn try_from(s: String) -> Result<Self, ProtoError> {
        DeviceId::new(s)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short descriptive label (device class, app version, runtime version, model family):
/// 1 to [`MAX_LABEL_LEN`] bytes of printable ASCII. Labels are slice keys for monitoring, so they
/// are kept short and free of whitespace.
///
/// The text is shared (`Arc<str>`): every telemetry event carries its slice's labels, and a
/// clone is a reference-count increment rather than an allocation (and its drop no free).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(std::sync::Arc<str>);

impl Label {
    /// Validates and wraps `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, ProtoError> {
        let s = s.into();
        check_printable("label", &s, MAX_LABEL_LEN)?;
        Ok(Label(s.into()))
    }

    fn from_str_checked(s: &str) -> Result<Self, ProtoError> {
        check_printable("label", s, MAX_LABEL_LEN)?;
        Ok(Label(s.into()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = ProtoError;
    fn try_from(s: String) -> Result<Self, ProtoError> {
        Label::new(s)
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0.as_ref().to_owned()
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Label;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Label, E> {
                Label::from_str_checked(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A coarse region: a geohash of 1 to [`MAX_REGION_LEN`] characters (base32 alphabet
/// `0-9b-hjkmnp-z`). Telemetry never carries a finer position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CoarseRegion(String);

/// The geohash alphabet.
const GEOHASH_ALPHABET: &str = "0123456789bcdefghjkmnpqrstuvwxyz";

impl CoarseRegion {
    /// Validates and wraps a geohash prefix.
    pub fn new(geohash: impl Into<String>) -> Result<Self, ProtoError> {
        let s = geohash.into();
        if s.is_empty() || s.len() > MAX_REGION_LEN {
            return Err(ProtoError::InvalidField {
                field: "region",
                reason: format!("geohash length {} not in 1..={MAX_REGION_LEN}", s.len()),
            });
        }
        if let Some(c) = s.chars().find(|c| !GEOHASH_ALPHABET.contains(*c)) {
            return Err(ProtoError::InvalidField {
                field: "region",
                reason: format!("{c:?} is not a geohash character"),
            });
        }
        Ok(CoarseRegion(s))
    }

    /// The geohash prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CoarseRegion {
    type Error = ProtoError;
    fn try_from(s: String) -> Result<Self, ProtoError> {
        CoarseRegion::new(s)
    }
}

impl From<CoarseRegion> for String {
    fn from(r: CoarseRegion) -> String {
        r.0
    }
}

/// An owned byte string that encodes as a CBOR byte string (major type 2), not as an array of
/// integers (which is what serde does with a plain `Vec<u8>`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(Bytes)
    }
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = d.deserialize_byte_buf(BytesVisitor)?;
                let arr: [u8; $len] = v.as_slice().try_into().map_err(|_| {
                    de::Error::invalid_length(v.len(), &concat!(stringify!($len), " bytes"))
                })?;
                Ok($name(arr))
            }
        }
    };
}

fixed_bytes!(
    /// A SHA-256 digest.
    Sha256Digest,
    32
);
fixed_bytes!(
    /// An Ed25519 signature.
    Signature,
    64
);
fixed_bytes!(
    /// Identifies the release key that signed model metadata: the first 8 bytes of the SHA-256 of
    /// the key's 32 public-key bytes.
    KeyId,
    8
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ids_refuse_bad_text() {
        assert!(Label::new("pixel-8").is_ok());
        assert!(Label::new("").is_err());
        assert!(Label::new("has space").is_err());
        assert!(Label::new("x".repeat(MAX_LABEL_LEN + 1)).is_err());
        assert!(DeviceId::new("dev\u{0}").is_err());
        assert!(DeviceId::new("d".repeat(MAX_DEVICE_ID_LEN)).is_ok());
    }

    #[test]
    fn regions_are_coarse_geohashes() {
        assert!(CoarseRegion::new("u4pr").is_ok());
        assert!(
            CoarseRegion::new("u4pru").is_err(),
            "5 characters is too fine"
        );
        assert!(
            CoarseRegion::new("a").is_err(),
            "'a' is not in the geohash alphabet"
        );
        assert!(CoarseRegion::new("").is_err());
    }
}
