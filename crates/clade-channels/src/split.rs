//! Cutting a reply into messages a platform accepts.

/// Splits `text` into pieces of at most `limit` UTF-16 code units (how Telegram counts a
/// message's length), cutting after the last line break of a piece, else after its last space,
/// else anywhere between characters. Pieces are never empty, and joined they give back `text`
/// minus the whitespace at their cuts.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // The byte offset where `limit` code units end (on a character boundary).
        let mut units = 0;
        let mut end = rest.len();
        for (at, c) in rest.char_indices() {
            if units + c.len_utf16() > limit {
                end = at;
                break;
            }
            units += c.len_utf16();
        }
        if end == rest.len() {
            pieces.push(rest.to_owned());
            break;
        }
        let window = &rest[..end];
        let cut =
            window.rfind('\n').or_else(|| window.rfind(' ')).filter(|&at| at > 0).unwrap_or(end);
        let (piece, after) = rest.split_at(cut);
        let piece = piece.trim_end();
        if !piece.is_empty() {
            pieces.push(piece.to_owned());
        }
        rest = after.trim_start();
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split("  hello  ", 10), vec!["hello"]);
        assert!(split("   ", 10).is_empty());
    }

    #[test]
    fn pieces_are_cut_at_lines_then_words_then_anywhere() {
        assert_eq!(split("one two\nthree four", 12), vec!["one two", "three four"]);
        assert_eq!(split("one two three", 9), vec!["one two", "three"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn length_counts_utf16_units_and_never_cuts_a_character() {
        // Each emoji is two UTF-16 units: three fit in 6, and none is halved.
        let text = "😀😀😀😀😀";
        let pieces = split(text, 6);
        assert_eq!(pieces, vec!["😀😀😀", "😀😀"]);
        let long = "é".repeat(5000);
        let pieces = split(&long, 4096);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.encode_utf16().count() <= 4096));
        assert_eq!(pieces.concat(), long);
    }
}
