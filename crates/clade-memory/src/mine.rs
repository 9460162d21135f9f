//! Memories mined from a conversation without a model: the sentences a person states about
//! themselves, their plans and decisions, numbers and dates, kept whole and typed by the
//! words that mark them. It is recall-oriented and crude (a model route does better), and it
//! never invents: every item is a sentence someone wrote.

use clade_core::MemoryKind;

/// A sentence worth remembering, with its kind and importance.
#[derive(Debug, Clone, PartialEq)]
pub struct Mined {
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f64,
}

/// Confidence of a mined item, by whichever miner (the heuristic or a model): it was read out
/// of a conversation, not stated to the operator.
pub const CONFIDENCE: f64 = 0.6;

/// Shortest and longest sentence kept, in bytes.
const MIN_BYTES: usize = 12;
const MAX_BYTES: usize = 600;

/// Markers of each kind, matched as whole words on the lowercased sentence; the first kind that
/// matches wins.
const MARKERS: &[(MemoryKind, f64, &[&str])] = &[
    (
        MemoryKind::Todo,
        0.7,
        &[
            "todo",
            "remind me to",
            "i need to",
            "we need to",
            "i have to",
            "we have to",
            "don't forget",
            "do not forget",
            "i must",
            "we must",
        ],
    ),
    (
        MemoryKind::Decision,
        0.7,
        &["decided", "we decide", "decision", "we chose", "i chose", "we agreed", "go with"],
    ),
    (
        MemoryKind::Preference,
        0.6,
        &[
            "i prefer",
            "i like",
            "i love",
            "i hate",
            "i don't like",
            "i dislike",
            "my favourite",
            "my favorite",
            "i'd rather",
        ],
    ),
    (
        MemoryKind::Goal,
        0.6,
        &["my goal", "our goal", "i want to", "i plan to", "we plan to", "i'm trying to"],
    ),
    (
        MemoryKind::Identity,
        0.7,
        &["my name is", "call me", "i am a", "i'm a", "i work as", "i live in", "i was born"],
    ),
    (MemoryKind::Fact, 0.5, &["my", "our", "remember that", "note that", "is called", "is named"]),
];

/// The sentences of `text` worth remembering, in order, each once. Lines that are commands
/// (`/tool …`) and questions are skipped.
pub fn mine(text: &str) -> Vec<Mined> {
    let mut out: Vec<Mined> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('/')) {
        for sentence in sentences(line) {
            if let Some(mined) = classify(sentence)
                && !out.iter().any(|m| m.content == mined.content)
            {
                out.push(mined);
            }
        }
    }
    out
}

/// A line's sentences, each with its end mark.
fn sentences(line: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut parts = Vec::new();
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        let ends = matches!(c, '.' | '!' | '?')
            // A full stop inside a number ("4.5") does not end a sentence.
            && bytes.get(i + 1).is_none_or(|next| next.is_ascii_whitespace());
        if ends {
            parts.push(&line[start..=i]);
            start = i + 1;
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

fn classify(sentence: &str) -> Option<Mined> {
    if sentence.ends_with('?') || !(MIN_BYTES..=MAX_BYTES).contains(&sentence.len()) {
        return None;
    }
    if sentence.split_whitespace().count() < 3 {
        return None;
    }
    // Whole words only: " my " is a marker, "myth" is not.
    let words: Vec<String> = sentence
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let spaced = format!(" {} ", words.join(" "));
    let marked = MARKERS
        .iter()
        .find(|(_, _, markers)| markers.iter().any(|m| spaced.contains(&format!(" {m} "))));
    let (kind, importance) = match marked {
        Some((kind, importance, _)) => (*kind, *importance),
        // Numbers (amounts, dates, times) are facts worth keeping.
        None if sentence.chars().any(|c| c.is_ascii_digit()) => (MemoryKind::Fact, 0.5),
        None => return None,
    };
    Some(Mined { kind, content: sentence.to_owned(), importance })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_statements_and_types_them() {
        let mined = mine(
            "Hello there. My sister's name is Ingrid. The budget is 4.5 million euros!\n\
             We decided to fly to Lisbon on Friday. TODO: renew the passport.\n\
             What is the weather like? /tool time.now\nI prefer window seats. Nice.",
        );
        let kinds: Vec<(MemoryKind, &str)> =
            mined.iter().map(|m| (m.kind, m.content.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (MemoryKind::Fact, "My sister's name is Ingrid."),
                (MemoryKind::Fact, "The budget is 4.5 million euros!"),
                (MemoryKind::Decision, "We decided to fly to Lisbon on Friday."),
                (MemoryKind::Todo, "TODO: renew the passport."),
                (MemoryKind::Preference, "I prefer window seats."),
            ]
        );
    }

    #[test]
    fn skips_questions_commands_small_talk_and_repeats() {
        assert!(mine("How are you? /tool memory.save {}\nTell me a story please.").is_empty());
        assert_eq!(mine("My cat is called Miso. My cat is called Miso.").len(), 1);
    }
}
