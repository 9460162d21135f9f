//! `clade channels`: the running gateway's chat channels.

use anyhow::Result;
use clade_gateway::api::ChannelListResponse;

use super::sessions::Client;
use crate::cli::ChannelsCommand;
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: ChannelsCommand) -> Result<()> {
    // `listen` is dispatched before a store is opened.
    let ChannelsCommand::Status { json, server } = cmd else { return Ok(()) };
    let client = Client::new(ctx, server.server.as_deref())?;
    let value = client.get("/v1/channels").await?;
    let list: ChannelListResponse = serde_json::from_value(value)?;
    if json {
        return output::json(&list.items);
    }
    // Channels are taken at the gateway's start: a bot declared since is not running yet.
    let declared = &ctx.config.channels;
    let waiting: Vec<String> = [
        ("telegram", declared.telegram.keys().collect::<Vec<_>>()),
        ("slack", declared.slack.keys().collect()),
        ("discord", declared.discord.keys().collect()),
    ]
    .into_iter()
    .flat_map(|(platform, names)| names.into_iter().map(move |name| (platform, name)))
    .filter(|(platform, name)| {
        !list.items.iter().any(|c| c.platform == *platform && &c.name == *name)
    })
    .map(|(platform, name)| format!("{platform}:{name}"))
    .collect();
    if !waiting.is_empty() {
        eprintln!(
            "declared in clade.yaml but not running: {}; the gateway takes channels when it starts: restart `clade serve`",
            waiting.join(", ")
        );
    }
    if list.items.is_empty() {
        if waiting.is_empty() {
            println!(
                "no channels: declare bots under channels in clade.yaml (channels.telegram.<name>)"
            );
        }
        return Ok(());
    }
    let now = ctx.store.now().as_millis();
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|c| {
            vec![
                format!("{}:{}", c.platform, c.name),
                c.mode.clone(),
                c.state.clone(),
                c.last_ok_at
                    .map_or("never".to_owned(), |at| format!("{}s ago", (now - at).max(0) / 1000)),
                c.received.to_string(),
                c.sent.to_string(),
                c.unrouted.to_string(),
                c.malformed.to_string(),
                output::clip(c.last_error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "CHANNEL",
            "MODE",
            "STATE",
            "LAST OK",
            "RECEIVED",
            "SENT",
            "UNROUTED",
            "MALFORMED",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}

/// `clade channels listen <name>`: a channel's listener as a process of its own (Telegram's
/// poller, Slack's Socket Mode, Discord's gateway socket). It reads the channel from clade.yaml
/// (tokens from the environment), takes the platform's messages, and posts each to the
/// gateway's route for the channel, confirming it to the platform only once the gateway stored
/// it: killed at any point, it is sent the unconfirmed messages again, and the gateway takes
/// each once (its key is the platform's message id). It proves itself with the channel's
/// secret, or, `paired`, with the key `clade remote listen` keeps once the gateway's operator
/// paired it (`clade pair listener`): then it holds none of the channel's secrets.
pub(super) async fn listen(
    data_dir: &clade_store::DataDir,
    config: &clade_config::Config,
    name: &str,
    platform: Option<&str>,
    server: Option<String>,
    paired: bool,
) -> Result<()> {
    let channels = &config.channels;
    let found: Vec<&str> = [
        ("telegram", channels.telegram.contains_key(name)),
        ("slack", channels.slack.contains_key(name)),
        ("discord", channels.discord.contains_key(name)),
    ]
    .into_iter()
    .filter(|(p, there)| *there && platform.is_none_or(|wanted| wanted == *p))
    .map(|(p, _)| p)
    .collect();
    let (signer, paired_gateway) = if paired {
        let (identity, gateway) = super::remote::paired_identity(data_dir)?;
        (Some(identity), Some(gateway))
    } else {
        (None, None)
    };
    let gateway =
        server.or(paired_gateway).unwrap_or_else(|| format!("http://{}", config.server.listen));
    let listening = Listening { gateway, signer, clock: clade_core::SystemClock };
    match found.as_slice() {
        ["telegram"] => listen_telegram(config, name, &listening).await,
        ["slack"] => listen_slack(config, name, &listening).await,
        ["discord"] => listen_discord(config, name, &listening).await,
        [] => {
            let named: Vec<&String> = channels
                .telegram
                .keys()
                .chain(channels.slack.keys())
                .chain(channels.discord.keys())
                .collect();
            anyhow::bail!(
                "no channel {name:?} under channels.telegram, channels.slack or channels.discord in clade.yaml (there are: {named:?})"
            )
        }
        several => anyhow::bail!(
            "{name:?} names a channel of each of {several:?}: say which with --platform"
        ),
    }
}

/// Where a listener sends, and how it proves itself.
struct Listening {
    gateway: String,
    /// The paired listener's key; `None`: the channel's secret.
    signer: Option<std::sync::Arc<clade_tools::remote::identity::Identity>>,
    clock: clade_core::SystemClock,
}

const PLATFORM_TELEGRAM: &str = clade_channels::telegram::PLATFORM;
const PLATFORM_SLACK: &str = clade_channels::slack::PLATFORM;
const PLATFORM_DISCORD: &str = clade_channels::discord::PLATFORM;

impl Listening {
    /// Where the channel's messages go, with its `secret` (empty when paired).
    fn forward(
        &self,
        platform: &str,
        name: &str,
        secret: &str,
    ) -> clade_channels::channel::Forward {
        let signer = self.signer.clone();
        clade_channels::channel::Forward::new(&self.gateway, platform, name, secret, signer)
    }

    /// The channel's secret from the environment variable `variable` names, unless paired.
    fn secret(&self, field: &str, variable: Option<&str>, what: &str) -> Result<String> {
        if self.signer.is_some() {
            return Ok(String::new());
        }
        let Some(variable) = variable else {
            anyhow::bail!(
                "{field}: name the variable holding {what}, or pair this listener (`clade pair listener`) and pass --paired"
            );
        };
        crate::context::env_value(variable).ok_or_else(|| {
            anyhow::anyhow!("{variable} is not set: it holds {field}'s {what} (or pair this listener and pass --paired)")
        })
    }
}

/// The channel's settings (its token from the environment).
fn settings_of(
    field: &str,
    name: &str,
    api: (&str, &Option<String>, &str),
    delivery: (bool, u32, clade_config::GroupSessions),
) -> Result<clade_channels::channel::Settings> {
    crate::context::channel_settings(field, name, api, delivery).map_err(anyhow::Error::msg)
}

async fn listen_telegram(
    config: &clade_config::Config,
    bot: &str,
    listening: &Listening,
) -> Result<()> {
    let field = format!("channels.telegram.{bot}");
    let Some(entry) = config.channels.telegram.get(bot) else {
        anyhow::bail!("no Telegram bot {bot:?} under channels.telegram in clade.yaml");
    };
    if entry.mode != clade_config::TelegramMode::Webhook {
        anyhow::bail!(
            "{field} is in polling mode, so the gateway polls Telegram itself: set mode: webhook (with webhook_secret_env) so it takes updates from this listener"
        );
    }
    if entry.public_url.is_some() {
        anyhow::bail!(
            "{field}.public_url is set, so the gateway registers a webhook with Telegram, which then refuses to be polled: remove public_url to run a listener of its own"
        );
    }
    let api = (entry.token_env.as_str(), &entry.api_url, clade_channels::telegram::PUBLIC_API);
    let settings =
        settings_of(&field, bot, api, (entry.stream, entry.max_attempts, entry.group_sessions))?;
    let secret = listening.secret(&field, entry.webhook_secret_env.as_deref(), "webhook secret")?;
    let http = reqwest::Client::new();
    let api = clade_channels::telegram::Api::new(http, &settings.api_url, &settings.token);
    let relay = clade_channels::telegram::Relay(listening.forward(PLATFORM_TELEGRAM, bot, &secret));
    tracing::info!(
        bot,
        target = relay.0.target(),
        paired = listening.signer.is_some(),
        "telegram listener relaying updates to the gateway"
    );
    println!("clade channels listen: telegram bot {bot} -> {}", relay.0.target());
    let wait = std::time::Duration::from_secs(entry.poll_timeout_secs.into());
    clade_channels::telegram::poll(&api, bot, wait, &listening.clock, &relay).await;
    Ok(())
}

async fn listen_slack(
    config: &clade_config::Config,
    app: &str,
    listening: &Listening,
) -> Result<()> {
    let field = format!("channels.slack.{app}");
    let Some(entry) = config.channels.slack.get(app) else {
        anyhow::bail!("no Slack app {app:?} under channels.slack in clade.yaml");
    };
    if entry.mode != clade_config::SlackMode::Events {
        anyhow::bail!(
            "{field} is in socket mode, so the gateway holds the socket itself: set mode: events (with signing_secret_env), keeping app_token_env for this listener"
        );
    }
    let Some(variable) = entry.app_token_env.as_deref() else {
        anyhow::bail!(
            "{field}.app_token_env: the listener connects to Socket Mode with the app-level token (xapp-…); name the variable holding it"
        );
    };
    let Some(app_token) = crate::context::env_value(variable) else {
        anyhow::bail!("{variable} is not set: it holds {field}'s app-level token (xapp-…)");
    };
    let api = (entry.token_env.as_str(), &entry.api_url, clade_channels::slack::PUBLIC_API);
    let settings =
        settings_of(&field, app, api, (entry.stream, entry.max_attempts, entry.group_sessions))?;
    let secret = listening.secret(&field, entry.signing_secret_env.as_deref(), "signing secret")?;
    let http = reqwest::Client::new();
    let api = clade_channels::slack::Api::new(http, &settings.api_url, &settings.token);
    let relay = clade_channels::slack::Relay(listening.forward(PLATFORM_SLACK, app, &secret));
    tracing::info!(
        app,
        target = relay.0.target(),
        paired = listening.signer.is_some(),
        "slack listener relaying events to the gateway"
    );
    println!("clade channels listen: slack app {app} -> {}", relay.0.target());
    clade_channels::slack::socket_mode(&api, app, &app_token, &listening.clock, &relay).await;
    Ok(())
}

async fn listen_discord(
    config: &clade_config::Config,
    bot: &str,
    listening: &Listening,
) -> Result<()> {
    let field = format!("channels.discord.{bot}");
    let Some(entry) = config.channels.discord.get(bot) else {
        anyhow::bail!("no Discord bot {bot:?} under channels.discord in clade.yaml");
    };
    if entry.mode != clade_config::DiscordMode::Relay {
        anyhow::bail!(
            "{field} is in gateway mode, so the gateway holds Discord's socket itself: set mode: relay (with relay_secret_env) so it takes messages from this listener"
        );
    }
    let api = (entry.token_env.as_str(), &entry.api_url, clade_channels::discord::PUBLIC_API);
    let settings =
        settings_of(&field, bot, api, (entry.stream, entry.max_attempts, entry.group_sessions))?;
    let secret = listening.secret(&field, entry.relay_secret_env.as_deref(), "relay secret")?;
    let http = reqwest::Client::new();
    let api = clade_channels::discord::Api::new(http, &settings.api_url, &settings.token);
    let relay =
        clade_channels::discord::Relay::start(listening.forward(PLATFORM_DISCORD, bot, &secret));
    tracing::info!(
        bot,
        target = relay.target(),
        paired = listening.signer.is_some(),
        "discord listener relaying messages to the gateway"
    );
    println!("clade channels listen: discord bot {bot} -> {}", relay.target());
    clade_channels::discord::run(&api, bot, &listening.clock, &relay).await;
    anyhow::bail!(
        "Discord refused the bot (the log says why): fix it, then start the listener again"
    )
}
