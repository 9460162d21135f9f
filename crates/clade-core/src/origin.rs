//! Where an event came from: the engine's own machinery (another agent, a schedule, a branch or
//! worker of a conversation), a chat channel's listener, or a client naming its own platform.
//!
//! Stored and sent as its name (`agent`, `telegram`, `http`, …); code that decides by origin
//! matches on the variants, so a new kind of origin is a compile error wherever it matters.

use std::fmt;

/// Where an event came from; with tenant, agent, channel and actor it keys a session.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Another agent of the tenant (`agent.send`, `agent.ask`, a topic it publishes on).
    Agent,
    /// A scheduled job's fire.
    Cron,
    /// A branch of a conversation (`agent.branch`).
    Branch,
    /// A worker a conversation started (`agent.spawn_worker`).
    Worker,
    /// A chat channel's listener, which alone opens conversations on its platform.
    Chat(ChatPlatform),
    /// Any other name a client gives its platform (`http`, `cli`, `openai`, …).
    Client(String),
}

/// A chat platform a channel speaks for. No client of the API may start a conversation on one:
/// a reply there goes to a chat through the operator's bot, so only the platform's own
/// listener opens such a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatPlatform {
    Telegram,
    Slack,
    Discord,
}

impl ChatPlatform {
    pub const ALL: [ChatPlatform; 3] =
        [ChatPlatform::Telegram, ChatPlatform::Slack, ChatPlatform::Discord];

    pub const fn as_str(self) -> &'static str {
        match self {
            ChatPlatform::Telegram => "telegram",
            ChatPlatform::Slack => "slack",
            ChatPlatform::Discord => "discord",
        }
    }
}

impl Origin {
    /// The origin a platform's name stands for; every name is some origin.
    pub fn parse(name: &str) -> Self {
        match name {
            "agent" => Origin::Agent,
            "cron" => Origin::Cron,
            "branch" => Origin::Branch,
            "worker" => Origin::Worker,
            _ => match ChatPlatform::ALL.into_iter().find(|p| p.as_str() == name) {
                Some(chat) => Origin::Chat(chat),
                None => Origin::Client(name.to_owned()),
            },
        }
    }

    /// The name it is stored and sent as.
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Agent => "agent",
            Origin::Cron => "cron",
            Origin::Branch => "branch",
            Origin::Worker => "worker",
            Origin::Chat(chat) => chat.as_str(),
            Origin::Client(name) => name,
        }
    }
}

impl From<&str> for Origin {
    fn from(name: &str) -> Self {
        Origin::parse(name)
    }
}

impl From<String> for Origin {
    fn from(name: String) -> Self {
        Origin::parse(&name)
    }
}

/// As its name, quoted: a message that shows an origin with `{:?}` shows what the user wrote.
impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_origin_reads_back_from_its_name() {
        let named = [
            Origin::Agent,
            Origin::Cron,
            Origin::Branch,
            Origin::Worker,
            Origin::Chat(ChatPlatform::Telegram),
            Origin::Chat(ChatPlatform::Slack),
            Origin::Chat(ChatPlatform::Discord),
            Origin::Client("http".into()),
            Origin::Client("Agent".into()),
            Origin::Client(String::new()),
        ];
        for origin in named {
            assert_eq!(Origin::parse(origin.as_str()), origin, "{origin}");
        }
        assert_eq!(Origin::parse("AGENT"), Origin::Client("AGENT".into()), "names are exact");
        let chat = Origin::parse("telegram");
        assert_eq!(format!("{chat:?} {chat}"), "\"telegram\" telegram", "no Rust names shown");
    }
}
