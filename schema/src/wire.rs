//! The text formats of the REST API's request parameters that the server parses from outside
//! bytes: list cursors and `Range` headers. Plain functions without HTTP types, so that the
//! fuzz targets (`fuzz/`) can call them without building the server.

use std::ops::Range;

/// The cursor of the page after `offset` with `limit` items: its decimal offset.
pub fn next_cursor(offset: u64, limit: u64) -> String {
    offset.saturating_add(limit).to_string()
}

/// Parses a cursor `next_cursor` gave: digits only, within the databases' signed 64-bit range
/// (a larger one once panicked in the SQL binder). `None` for anything else.
pub fn parse_cursor(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>()
        .ok()
        .and_then(|offset| u64::try_from(offset).ok())
}

/// Parses one `bytes=` range of RFC 9110 against a body of `size` bytes: `a-b`, `a-`, or `-n`
/// (the last n bytes), clamped to the body. `None` when the header is malformed, asks for
/// several ranges, or cannot be satisfied (answered 416).
pub fn parse_byte_range(spec: &str, size: u64) -> Option<Range<u64>> {
    let spec = spec.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let n: u64 = end.parse().ok()?;
        size.saturating_sub(n)..size
    } else {
        let start: u64 = start.parse().ok()?;
        let end = if end.is_empty() {
            size
        } else {
            end.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        start..end
    };
    (range.start < range.end && range.start < size).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_byte_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_byte_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_byte_range("bytes=-5", 100), Some(95..100));
        assert_eq!(parse_byte_range("bytes=50-1000", 100), Some(50..100));
        assert_eq!(parse_byte_range("bytes=100-", 100), None);
        assert_eq!(parse_byte_range("bytes=5-2", 100), None);
        assert_eq!(parse_byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_byte_range("items=0-1", 100), None);
        assert_eq!(parse_byte_range("bytes=-0", 100), None);
        assert_eq!(parse_byte_range("bytes=0-", 0), None);
        assert_eq!(
            parse_byte_range("bytes=0-18446744073709551615", 10),
            Some(0..10)
        );
    }

    #[test]
    fn cursors_are_decimal_offsets_within_i64() {
        assert_eq!(parse_cursor(&next_cursor(40, 20)), Some(60));
        assert_eq!(parse_cursor("0"), Some(0));
        assert_eq!(parse_cursor(&i64::MAX.to_string()), Some(i64::MAX as u64));
        assert_eq!(parse_cursor("9223372036854775808"), None);
        assert_eq!(parse_cursor(""), None);
        assert_eq!(parse_cursor("+5"), None);
        assert_eq!(parse_cursor("-1"), None);
        assert_eq!(parse_cursor("1e3"), None);
        assert_eq!(next_cursor(u64::MAX, 1), u64::MAX.to_string());
    }
}
