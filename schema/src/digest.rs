//! `Sha256`: a SHA-256 value with one canonical text form, `sha256:<64 lowercase hex>`.
//!
//! Used for dataset digests and for artifact tensor hashes. Parsing also accepts bare hex, as
//! REST paths do, so `Sha256::parse` is the single place that decides what a digest looks like.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PREFIX: &str = "sha256:";

/// A SHA-256 digest. Displayed and serialised as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

/// Why a text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("digest {0:?} has an unknown algorithm prefix; expected `sha256:<64 hex digits>`")]
    UnknownAlgorithm(String),
    #[error("digest {text:?} has {len} hex digits; a sha256 digest has 64")]
    WrongLength { text: String, len: usize },
    #[error("digest {0:?} contains characters that are not hex digits")]
    NotHex(String),
}

impl Sha256 {
    /// Hashes a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<hex>` or bare `<hex>` (64 digits, either case).
    pub fn parse(text: &str) -> Result<Self, DigestParseError> {
        let hex_part = match text.split_once(':') {
            Some(("sha256", rest)) => rest,
            Some(_) => return Err(DigestParseError::UnknownAlgorithm(text.to_owned())),
            None => text,
        };
        if hex_part.len() != 64 {
            return Err(DigestParseError::WrongLength {
                text: text.to_owned(),
                len: hex_part.len(),
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| DigestParseError::NotHex(text.to_owned()))?;
        Ok(Self(bytes))
    }

    /// The 64 lowercase hex digits, without the prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits: enough to tell digests apart on a page or in a log.
    pub fn short(&self) -> String {
        self.hex()[..12].to_owned()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha256 {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Sha256 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^sha256:[0-9a-f]{64}$"))
            .description(Some(
                "A SHA-256 digest in its canonical form `sha256:<64 hex>`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Sha256 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_bare_forms_parse_to_the_same_value() {
        let canonical = Sha256::of(b"abc");
        let text = canonical.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256::parse(&text), Ok(canonical));
        assert_eq!(Sha256::parse(&canonical.hex()), Ok(canonical));
        assert_eq!(
            Sha256::parse(&canonical.hex().to_uppercase()),
            Ok(canonical)
        );
    }

    #[test]
    fn malformed_digests_are_rejected_with_the_reason() {
        assert!(matches!(
            Sha256::parse("md5:abc"),
            Err(DigestParseError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            Sha256::parse("sha256:abc"),
            Err(DigestParseError::WrongLength { len: 3, .. })
        ));
        assert!(matches!(
            Sha256::parse(&"z".repeat(64)),
            Err(DigestParseError::NotHex(_))
        ));
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let digest = Sha256([7; 32]);
        let json = serde_json::to_string(&digest).expect("serialise");
        assert_eq!(json, format!("\"{digest}\""));
        let back: Sha256 = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, digest);
        assert!(serde_json::from_str::<Sha256>("\"sha256:00\"").is_err());
    }
}
