//! Text that every store can hold. A response body, and the error texts around it (reqwest's, with a
//! redirect's `Location`, and Herald's own), are made storable by [`storable_text`] before they become
//! an attempt: invalid UTF-8 and NUL (U+0000, which PostgreSQL `text` cannot hold; it is the only
//! character a UTF-8 PostgreSQL database refuses) are replaced by U+FFFD, and the text is cut to the
//! body limit (`delivery.max_response_bytes`) at a character boundary. SQLite would take NUL, but both
//! modes store the same text.

/// What replaces every byte or character a store cannot hold.
const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// `bytes` as storable text of at most `limit` bytes: invalid UTF-8 replaced as
/// [`String::from_utf8_lossy`] does (one U+FFFD per invalid sequence), NUL replaced by U+FFFD, then cut
/// before the first character that would pass `limit`.
pub(crate) fn storable_text(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut storable = String::with_capacity(text.len().min(limit));
    for character in text.chars() {
        let character = if character == '\0' { REPLACEMENT } else { character };
        if storable.len() + character.len_utf8() > limit {
            break;
        }
        storable.push(character);
    }
    storable
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64;

    #[test]
    fn nul_is_replaced() {
        assert_eq!(storable_text(b"ok\0done\0", LIMIT), "ok\u{FFFD}done\u{FFFD}");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(storable_text(b"\xff\xfe not UTF-8", LIMIT), "\u{FFFD}\u{FFFD} not UTF-8");
        // A UTF-16 surrogate (U+D800) encoded as if it were a character: no UTF-8 string holds it.
        assert_eq!(storable_text(b"a\xed\xa0\x80b", LIMIT), "a\u{FFFD}\u{FFFD}\u{FFFD}b");
    }

    #[test]
    fn lone_continuation_bytes_are_replaced() {
        assert_eq!(storable_text(b"\x80x\xbf\xbf", LIMIT), "\u{FFFD}x\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn valid_text_is_kept_as_it_is() {
        let text = "caf\u{e9} \u{1F600} \"quoted\"\n\ttabbed";
        assert_eq!(storable_text(text.as_bytes(), LIMIT), text);
    }

    #[test]
    fn a_character_straddling_the_limit_is_left_out() {
        // "ab" then the 4-byte U+1F600: a limit of 4 cannot hold it, 6 can.
        let text = "ab\u{1F600}c";
        assert_eq!(storable_text(text.as_bytes(), 4), "ab");
        assert_eq!(storable_text(text.as_bytes(), 5), "ab");
        assert_eq!(storable_text(text.as_bytes(), 6), "ab\u{1F600}");
        // A replacement takes 3 bytes where the byte it replaces took 1: still within the limit.
        assert_eq!(storable_text(b"\0\0\0", 7), "\u{FFFD}\u{FFFD}");
        // A character cut by an earlier truncation of the bytes is replaced, if it fits.
        assert_eq!(storable_text(&"x\u{1F600}".as_bytes()[..3], LIMIT), "x\u{FFFD}");
    }

    #[test]
    fn the_result_never_passes_the_limit() {
        let hostile: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for limit in [0, 1, 2, 3, 17, 100, 999] {
            let text = storable_text(&hostile, limit);
            assert!(text.len() <= limit, "{} > {limit}", text.len());
            assert!(!text.contains('\0'));
        }
    }

    #[test]
    fn an_empty_body_stays_empty() {
        assert_eq!(storable_text(b"", LIMIT), "");
        assert_eq!(storable_text(b"", 0), "");
    }
}
