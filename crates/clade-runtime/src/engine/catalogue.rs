//! The tool catalogue a model call offers: not every tool the agent has, but those the turn's
//! own messages make relevant, within the model's budget for tool schemas
//! (`models.<name>.tool_tokens`), and `tools.find`, with which the model looks up any other.
//!
//! A tool's schema costs tokens on every call whether or not it is used: 37 built-in tools
//! take about 5,000, more than a small model's whole context. Ranking is by words: a tool
//! named in the turn (asked for, called, or listed by `tools.find`) comes first, then tools
//! whose name and description share words with the turn. A tool nothing in the turn points at
//! is not offered, so what a turn sends for "hi" stays small and byte-stable from one turn to
//! the next. The choice depends only on the messages, so a resumed turn offers the same tools.

use std::collections::BTreeSet;
use std::sync::Arc;

use clade_model::{Message, ToolSpec};
use clade_tools::{CallContext, EffectClass, TypedTool};
use futures::future::BoxFuture;

/// The name of the tool that looks up the agent's other tools.
pub(crate) const FIND: &str = "tools.find";

const FIND_DESCRIPTION: &str = "Find the tools you have for a task: give a few words of what you want to do; get back matching tools with their parameters, which you can then call.";

/// At most this many tools a `tools.find` answer lists.
const FIND_LIMIT: usize = 5;

/// About how many tokens a spec costs in a request: JSON is denser than prose, so a third of
/// its bytes rather than a quarter.
pub(crate) fn spec_tokens(spec: &ToolSpec) -> u32 {
    let bytes = spec.name.len() + spec.description.len() + spec.input_schema.to_string().len();
    u32::try_from(bytes.div_ceil(3)).unwrap_or(u32::MAX)
}

/// The tools a call offers, from `all` (the agent's, in a fixed order), given the turn's texts
/// `said` and the model's budget for schemas in tokens: `tools.find` first (when the agent has
/// any tool), then the relevant tools by rank, each while the budget holds.
pub(crate) fn offer(all: &[ToolSpec], said: &[&str], budget: u32) -> Vec<ToolSpec> {
    if all.is_empty() {
        return Vec::new();
    }
    let finder = finder_spec();
    let mut left = budget.saturating_sub(spec_tokens(&finder));
    let mut offered = vec![finder];
    let words = Words::of(said.iter().copied());
    let mut ranked: Vec<(u32, usize)> = all
        .iter()
        .enumerate()
        .map(|(i, spec)| (relevance(spec, &words, said), i))
        .filter(|(score, _)| *score > 0)
        .collect();
    // Highest first; equal scores keep the catalogue's order.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in ranked {
        let cost = spec_tokens(&all[i]);
        if cost <= left {
            left -= cost;
            offered.push(all[i].clone());
        }
    }
    offered
}

/// How much `said` points at `spec`: 100 when its name is written out, 3 for each word of its
/// name, 1 for each other word of its description. `words` are `said`'s.
///
/// Every model call ranks every tool, so this builds no word set of its own: it looks each of
/// the spec's words up in the turn's, and keeps only those found.
fn relevance(spec: &ToolSpec, words: &Words, said: &[&str]) -> u32 {
    let mut score = 0;
    if said.iter().any(|text| names(text, &spec.name)) {
        score += 100;
    }
    if words.0.is_empty() {
        return score;
    }
    let mut in_name: Vec<String> = Vec::new();
    each_stem(&spec.name, |stem| {
        if words.0.contains(stem) && !in_name.iter().any(|seen| seen == stem) {
            in_name.push(stem.to_owned());
        }
    });
    let mut in_description: Vec<String> = Vec::new();
    each_stem(&spec.description, |stem| {
        if words.0.contains(stem) && !in_name.iter().chain(&in_description).any(|seen| seen == stem)
        {
            in_description.push(stem.to_owned());
        }
    });
    3 * in_name.len() as u32 + in_description.len() as u32 + score
}

/// Whether `text` names the tool `name` as a whole (not as a part of a longer name).
fn names(text: &str, name: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

/// The distinct word stems of some texts, without the words every sentence has.
struct Words(BTreeSet<String>);

impl Words {
    fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = BTreeSet::new();
        for text in texts {
            each_stem(text, |stem| {
                if !set.contains(stem) {
                    set.insert(stem.to_owned());
                }
            });
        }
        Self(set)
    }
}

/// Calls `found` with the stem of each word of `text` that can say which tool is meant: at
/// least 3 bytes, lowercased, not a [`STOP`] word.
fn each_stem(text: &str, mut found: impl FnMut(&str)) {
    let mut lower = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.len() < 3 {
            continue;
        }
        lower.clear();
        lower.extend(word.chars().flat_map(char::to_lowercase));
        if STOP_SET.contains(lower.as_str()) {
            continue;
        }
        found(stem(&lower));
    }
}

/// `word` without a plural or verb ending, when enough is left to mean something.
fn stem(word: &str) -> &str {
    for ending in ["ing", "ies", "es", "ed", "s"] {
        if let Some(root) = word.strip_suffix(ending)
            && root.len() >= 3
        {
            return root;
        }
    }
    word
}

/// [`STOP`], looked up once per word of every tool's description on every model call.
static STOP_SET: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| STOP.iter().copied().collect());

/// Words too common to say which tool a turn needs.
const STOP: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "yours", "all", "any", "can", "had",
    "her", "was", "one", "our", "out", "has", "him", "his", "how", "its", "may", "new", "now",
    "see", "who", "did", "get", "got", "let", "say", "she", "too", "use", "way", "what", "when",
    "where", "which", "with", "this", "that", "these", "those", "from", "they", "them", "then",
    "than", "there", "their", "have", "will", "would", "could", "should", "into", "about", "some",
    "more", "most", "other", "only", "also", "just", "like", "make", "please", "thank", "thanks",
    "hello", "hey", "yes", "okay", "each", "does", "been", "being", "were", "very", "much", "many",
    "here", "why", "well", "want", "need", "know", "tell", "give", "call", "tool", "tools",
    "agent", "its", "it's", "i'm", "don't", "doesn't", "given", "returns", "return", "string",
    "object", "true", "false", "null", "name",
];

fn finder_spec() -> ToolSpec {
    ToolSpec {
        name: FIND.to_owned(),
        description: FIND_DESCRIPTION.to_owned(),
        input_schema: serde_json::json!({
            "type": "object",
            "properties": {
                "query": { "type": "string", "description": "what you want to do, in a few words" }
            },
            "required": ["query"]
        }),
    }
}

/// `tools.find`: lists the agent's tools that match a query, with their parameters. Its answer
/// names them, so the next call of the turn offers them ([`offer`]).
pub(crate) struct Finder {
    /// The tools the turn may call, as the model sees them.
    pub(crate) specs: Arc<[ToolSpec]>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindArgs {
    /// What you want to do, in a few words.
    query: String,
}

impl TypedTool for Finder {
    type Args = FindArgs;
    const NAME: &'static str = FIND;
    const DESCRIPTION: &'static str = FIND_DESCRIPTION;
    const EFFECT: EffectClass = EffectClass::Pure;

    fn run<'a>(
        &'a self,
        args: FindArgs,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, clade_tools::ToolResult> {
        Box::pin(std::future::ready(Ok(self.find(&args.query))))
    }
}

impl Finder {
    fn find(&self, query: &str) -> String {
        let words = Words::of([query]);
        let mut ranked: Vec<(u32, &ToolSpec)> = self
            .specs
            .iter()
            .map(|spec| (relevance(spec, &words, &[query]), spec))
            .filter(|(score, _)| *score > 0)
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        if ranked.is_empty() {
            let all: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
            return format!(
                "no tool matches {query:?}; your tools are: {}. Ask again naming one of them.",
                all.join(", ")
            );
        }
        let mut out = String::from("Tools you can call now:\n");
        for (_, spec) in ranked.into_iter().take(FIND_LIMIT) {
            out.push_str(&format!(
                "- {}: {}\n  parameters: {}\n",
                spec.name, spec.description, spec.input_schema
            ));
        }
        out
    }
}

/// The texts of a turn's own messages that point at tools: what people wrote, the model's
/// answers and calls, and tool results.
pub(crate) fn turn_texts(messages: &[Message]) -> Vec<&str> {
    let mut texts = Vec::with_capacity(messages.len());
    for message in messages {
        match message {
            Message::System { .. } => {}
            Message::User { text } => texts.push(text.as_str()),
            Message::Assistant { text, tool_calls } => {
                texts.push(text.as_str());
                texts.extend(tool_calls.iter().map(|c| c.name.as_str()));
            }
            Message::Tool { content, .. } => texts.push(content.as_str()),
        }
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, description: &str) -> ToolSpec {
        ToolSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            input_schema: serde_json::json!({"type": "object", "properties": {"x": {"type": "string"}}}),
        }
    }

    fn catalogue() -> Vec<ToolSpec> {
        vec![
            spec("cron.create", "Schedule a job that sends you a message at set times."),
            spec("memory.save", "Remember a fact or preference for later turns."),
            spec("time.now", "The current date and time in UTC."),
            spec("time.nowish", "A rough time."),
        ]
    }

    fn names_of(offered: &[ToolSpec]) -> Vec<&str> {
        offered.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_greeting_offers_only_the_finder() {
        assert_eq!(names_of(&offer(&catalogue(), &["hi"], 2000)), [FIND]);
        assert_eq!(names_of(&offer(&catalogue(), &["Hello! How are you?"], 2000)), [FIND]);
        assert!(offer(&[], &["hi"], 2000).is_empty());
    }

    #[test]
    fn words_of_the_turn_rank_tools_and_a_named_tool_comes_first() {
        let all = catalogue();
        assert_eq!(
            names_of(&offer(&all, &["please remember that I prefer tea"], 2000)),
            [FIND, "memory.save"]
        );
        assert_eq!(names_of(&offer(&all, &["schedule a daily job"], 2000)), [FIND, "cron.create"]);
        // Named outright (as a finder's answer names it), a tool outranks word matches, and a
        // longer name that begins with it is not named.
        assert_eq!(
            names_of(&offer(&all, &["what time is it", "call time.now"], 2000)),
            [FIND, "time.now", "time.nowish"]
        );
    }

    #[test]
    fn a_word_counts_once_and_most_in_the_name() {
        let timer = spec("time.now", "The current time; times in UTC, timed to the second.");
        let score = |said: &str| relevance(&timer, &Words::of([said]), &[said]);
        // In the name and the description: counted once, as the name's.
        assert_eq!(score("time"), 3);
        assert_eq!(score("the current second"), 2);
        // "times", "timed" and "timing" share a stem, counted once.
        assert_eq!(score("times and timing"), 1);
        assert_eq!(score("hi"), 0);
        assert_eq!(score("run time.now"), 100 + 3);
    }

    #[test]
    fn the_budget_bounds_the_schemas_offered() {
        let all = catalogue();
        let finder = spec_tokens(&finder_spec());
        let one = spec_tokens(&all[2]);
        let offered = offer(&all, &["what time is it? time.now"], finder + one);
        assert_eq!(names_of(&offered), [FIND, "time.now"]);
        assert_eq!(names_of(&offer(&all, &["time.now"], 0)), [FIND]);
    }

    #[test]
    fn the_finder_lists_matching_tools_with_their_parameters_or_all_names() {
        let finder = Finder { specs: catalogue().into() };
        let found = finder.find("schedule something every morning");
        assert!(found.contains("cron.create: Schedule a job"), "{found}");
        assert!(found.contains("\"properties\""), "{found}");
        assert!(!found.contains("memory.save"), "{found}");
        let none = finder.find("zzz");
        assert!(none.contains("cron.create, memory.save, time.now"), "{none}");
    }
}
