//! Chat platforms the gateway listens on (`channels`): Telegram, Slack, Discord.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// Chat platforms, each by bot name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Telegram bots by name (`[a-z0-9_-]`, 1-32): the name is the first part of their chats'
    /// channels (`<bot>:<chat id>`), so two bots' chats never share a session.
    #[serde(default)]
    pub telegram: BTreeMap<String, TelegramConfig>,
    /// Slack apps by name (`[a-z0-9_-]`, 1-32), the first part of their chats' channels
    /// (`<app>:<channel id>`, `<app>:<channel id>/<thread ts>` in a thread).
    #[serde(default)]
    pub slack: BTreeMap<String, SlackConfig>,
    /// Discord bots by name (`[a-z0-9_-]`, 1-32), the first part of their chats' channels
    /// (`<bot>:<channel id>`).
    #[serde(default)]
    pub discord: BTreeMap<String, DiscordConfig>,
}

/// One Discord bot: its token for the gateway and the REST API. Enable the Message Content
/// intent for it in Discord's developer portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The environment variable holding the bot token.
    pub token_env: String,
    /// The REST API's base URL (`…/api/v10`); Discord's own when not given. The gateway's URL
    /// comes from it (`GET /gateway/bot`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Who holds Discord's gateway socket: `gateway` (this process) or `relay` (a listener of
    /// its own, `clade channels listen`, which posts each message to
    /// `POST /channels/discord/<bot>`).
    #[serde(default)]
    pub mode: DiscordMode,
    /// Relay mode: the environment variable holding the secret the listener sends with each
    /// message (16-256 bytes; the gateway and the listener read the same).
    #[serde(default)]
    pub relay_secret_env: Option<String>,
    /// Whether replies stream into one message edited in place.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// Who holds a Discord bot's gateway socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscordMode {
    #[default]
    Gateway,
    Relay,
}

impl DiscordConfig {
    /// What types alone cannot say: the name, the token variable, the URL, relay's secret.
    pub(crate) fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.discord.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        let named = self.relay_secret_env.as_deref().is_some_and(|v| !v.trim().is_empty());
        if self.mode == DiscordMode::Relay && !named {
            return Err(Invalid(format!(
                "{field}.relay_secret_env: relay mode takes messages from a listener of its own, proved by a secret, or anyone could post messages as Discord; name the variable holding it"
            )));
        }
        Ok(())
    }
}

/// One Slack app: its bot token for the Web API, and Socket Mode or the Events API for what
/// people write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The environment variable holding the bot token (`xoxb-…`).
    pub token_env: String,
    /// The Web API's base URL; Slack's own when not given.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How events arrive: `socket` (Socket Mode: the gateway connects out, no public URL) or
    /// `events` (the Events API posts them to `POST /channels/slack/<app>`).
    #[serde(default)]
    pub mode: SlackMode,
    /// Socket Mode: the environment variable holding the app-level token (`xapp-…`).
    #[serde(default)]
    pub app_token_env: Option<String>,
    /// Events API: the environment variable holding the app's signing secret.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Whether replies stream into one message edited in place (`chat.update`).
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// How a Slack app's events arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    #[default]
    Socket,
    Events,
}

impl SlackConfig {
    /// What types alone cannot say: the name, the variables each mode needs, the URL.
    pub(crate) fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.slack.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        let named = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        match self.mode {
            SlackMode::Socket if !named(&self.app_token_env) => Err(Invalid(format!(
                "{field}.app_token_env: Socket Mode connects with an app-level token (xapp-…); name the variable holding it, or use mode: events"
            ))),
            SlackMode::Events if !named(&self.signing_secret_env) => Err(Invalid(format!(
                "{field}.signing_secret_env: the Events API is checked against the app's signing secret, or anyone could post events as Slack; name the variable holding it"
            ))),
            _ => Ok(()),
        }
    }
}

/// What every channel's entry must hold: a plain name, a token variable, an http(s) API URL
/// if any, and at least one delivery attempt.
fn check_channel(
    field: &str,
    name: &str,
    token_env: &str,
    api_url: &Option<String>,
    max_attempts: u32,
) -> Result<(), Invalid> {
    check_channel_name(field, name)?;
    if token_env.trim().is_empty() {
        return Err(Invalid(format!(
            "{field}.token_env: name the variable holding the bot's token"
        )));
    }
    check_url(&format!("{field}.api_url"), api_url)?;
    if max_attempts == 0 {
        return Err(Invalid(format!("{field}.max_attempts: must be at least 1")));
    }
    Ok(())
}

/// An http(s) URL, if one is given.
fn check_url(field: &str, url: &Option<String>) -> Result<(), Invalid> {
    match url {
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            Err(Invalid(format!("{field}: {url:?} is not an http(s) URL")))
        }
        _ => Ok(()),
    }
}

/// A channel's name: what its sessions' channels start with.
fn check_channel_name(field: &str, name: &str) -> Result<(), Invalid> {
    let good = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if good {
        Ok(())
    } else {
        Err(Invalid(format!("{field}: a name is 1-32 of a-z, 0-9, - and _")))
    }
}

/// One Telegram bot, through the Bot API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The environment variable holding the bot's token (from @BotFather). Tokens never go in
    /// this file.
    pub token_env: String,
    /// The Bot API's base URL; the public one when not given. A local Bot API server or a
    /// test emulator goes here.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How updates arrive: `polling` (the gateway asks, `getUpdates`) or `webhook` (Telegram
    /// posts them to `POST /channels/telegram/<bot>`).
    #[serde(default)]
    pub mode: TelegramMode,
    /// Webhook mode: the environment variable holding the secret Telegram sends in
    /// `X-Telegram-Bot-Api-Secret-Token` (1-256 of A-Z, a-z, 0-9, _ and -).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// Webhook mode: the gateway's public base URL. When given, the gateway registers
    /// `<public_url>/channels/telegram/<bot>` with `setWebhook` at start; without it, the
    /// operator registers the webhook.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Polling mode: how long one `getUpdates` waits for news, in seconds (1-50).
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u32,
    /// Whether replies stream: one message edited in place as the model writes, at most
    /// about once a second. Off, each reply is sent whole when its turn ends.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Attempts to deliver a reply before it is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Group chats (Telegram groups, Discord guild channels, Slack channels): `shared` (the
    /// default), one conversation per chat in which each message names its sender, as people
    /// in a group expect; or `per_person`, one per sender in each chat.
    #[serde(default)]
    pub group_sessions: GroupSessions,
}

/// How a chat channel's group chats map to conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupSessions {
    /// One conversation per group chat, each message naming its sender.
    #[default]
    Shared,
    /// One conversation per sender in each group chat.
    PerPerson,
}

/// How a Telegram bot's updates arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    #[default]
    Polling,
    Webhook,
}

fn default_poll_timeout() -> u32 {
    25
}

impl TelegramConfig {
    /// What types alone cannot say: the name, the variables, the URLs, the timeout.
    pub(crate) fn check(&self, name: &str) -> Result<(), Invalid> {
        let field = format!("channels.telegram.{name}");
        check_channel(&field, name, &self.token_env, &self.api_url, self.max_attempts)?;
        check_url(&format!("{field}.public_url"), &self.public_url)?;
        if !(1..=50).contains(&self.poll_timeout_secs) {
            return Err(Invalid(format!(
                "{field}.poll_timeout_secs: {} is out of range; Telegram waits 1 to 50 seconds",
                self.poll_timeout_secs
            )));
        }
        match self.mode {
            TelegramMode::Webhook
                if self.webhook_secret_env.as_deref().is_none_or(|v| v.trim().is_empty()) =>
            {
                Err(Invalid(format!(
                    "{field}.webhook_secret_env: webhook mode needs a secret, or anyone could post updates as Telegram; name the variable holding it"
                )))
            }
            TelegramMode::Polling if self.public_url.is_some() => Err(Invalid(format!(
                "{field}.public_url: only webhook mode registers a URL; set mode: webhook, or remove it"
            ))),
            _ => Ok(()),
        }
    }
}
