//! Protocol versions and their negotiation.

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The versions this crate speaks (and what a default client offers and a default server
/// accepts).
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange {
    min: PROTOCOL_VERSION,
    max: PROTOCOL_VERSION,
};

/// An inclusive range of protocol versions, `min..=max`.
///
/// On the wire a CBOR map `{"min": u16, "max": u16}`; decoding refuses `min > max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange")]
pub struct VersionRange {
    min: u16,
    max: u16,
}

#[derive(Deserialize)]
struct RawRange {
    min: u16,
    max: u16,
}

impl TryFrom<RawRange> for VersionRange {
    type Error = ProtoError;
    fn try_from(raw: RawRange) -> Result<Self, ProtoError> {
        VersionRange::new(raw.min, raw.max)
    }
}

impl VersionRange {
    /// The range `min..=max`; refuses an empty range (`min > max`) and version 0 (reserved).
    pub fn new(min: u16, max: u16) -> Result<Self, ProtoError> {
        if min == 0 || min > max {
            return Err(ProtoError::InvalidField {
                field: "versions",
                reason: format!("{min}..={max} is not a valid version range"),
            });
        }
        Ok(VersionRange { min, max })
    }

    /// Lowest version in the range.
    pub fn min(self) -> u16 {
        self.min
    }

    /// Highest version in the range.
    pub fn max(self) -> u16 {
        self.max
    }

    /// Whether `version` lies in the range.
    pub fn contains(self, version: u16) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// The version a server with range `self` picks for a client offering `offered`: the highest
    /// version both speak, or [`ProtoError::NoCommonVersion`].
    pub fn negotiate(self, offered: VersionRange) -> Result<u16, ProtoError> {
        let lo = self.min.max(offered.min);
        let hi = self.max.min(offered.max);
        if lo <= hi {
            Ok(hi)
        } else {
            Err(ProtoError::NoCommonVersion {
                ours: self,
                theirs: offered,
            })
        }
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_picks_highest_common_version() {
        let server = VersionRange::new(2, 5).unwrap();
        assert_eq!(server.negotiate(VersionRange::new(1, 3).unwrap()), Ok(3));
        assert_eq!(server.negotiate(VersionRange::new(4, 9).unwrap()), Ok(5));
        assert_eq!(server.negotiate(VersionRange::new(5, 5).unwrap()), Ok(5));
    }

    #[test]
    fn negotiate_refuses_disjoint_ranges() {
        let server = VersionRange::new(2, 5).unwrap();
        let client = VersionRange::new(6, 7).unwrap();
        assert_eq!(
            server.negotiate(client),
            Err(ProtoError::NoCommonVersion {
                ours: server,
                theirs: client
            })
        );
        assert!(server.negotiate(VersionRange::new(1, 1).unwrap()).is_err());
    }

    #[test]
    fn empty_and_zero_ranges_are_refused() {
        assert!(VersionRange::new(3, 2).is_err());
        assert!(VersionRange::new(0, 2).is_err());
    }
}
