//! The small text parsers of request parameters: list cursors, `Range` headers (against a size
//! taken from the input's first eight bytes) and digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::Sha256;
use schema::wire::{next_cursor, parse_byte_range, parse_cursor};

fuzz_target!(|data: &[u8]| {
    let (size, text) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (0, data),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };

    if let Some(offset) = parse_cursor(text) {
        assert!(i64::try_from(offset).is_ok(), "cursor {offset} beyond i64");
        assert_eq!(parse_cursor(&next_cursor(offset, 0)), Some(offset));
    }
    if let Some(range) = parse_byte_range(text, size) {
        assert!(
            range.start < range.end,
            "empty range {range:?} for {text:?}"
        );
        assert!(range.end <= size, "range {range:?} beyond {size} bytes");
    }
    if let Ok(digest) = text.parse::<Sha256>() {
        assert_eq!(digest.to_string().parse::<Sha256>().ok(), Some(digest));
    }
});
