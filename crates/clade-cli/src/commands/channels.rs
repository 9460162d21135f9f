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
    if list.items.is_empty() {
        println!(
            "no channels: declare bots under channels in clade.yaml (channels.telegram.<name>)"
        );
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
/// poller, Slack's Socket Mode). It reads the channel from clade.yaml (tokens and secrets from
/// the environment), takes the platform's messages, and posts each to the gateway's webhook
/// route for the channel as the platform would, confirming it to the platform only once the
/// gateway stored it: killed at any point, it is sent the unconfirmed messages again, and the
/// gateway takes each once (its key is the platform's message id).
pub(super) async fn listen(
    config: &clade_config::Config,
    name: &str,
    platform: Option<&str>,
    gateway: String,
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
    let clock = clade_core::SystemClock;
    match found.as_slice() {
        ["telegram"] => listen_telegram(config, name, gateway, &clock).await,
        ["slack"] => listen_slack(config, name, gateway, &clock).await,
        ["discord"] => listen_discord(config, name, gateway, &clock).await,
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

async fn listen_discord(
    config: &clade_config::Config,
    bot: &str,
    gateway: String,
    clock: &clade_core::SystemClock,
) -> Result<()> {
    let bots = crate::context::discord_bots_of(config).map_err(anyhow::Error::msg)?;
    let Some(options) = bots.into_iter().find(|b| b.settings.name == bot) else {
        anyhow::bail!("no Discord bot {bot:?} under channels.discord in clade.yaml");
    };
    let Some(secret) = options.relay_secret.as_deref() else {
        anyhow::bail!(
            "channels.discord.{bot} is in gateway mode, so the gateway holds Discord's socket itself: set mode: relay and relay_secret_env (the same variable for the gateway and this listener)"
        );
    };
    let settings = &options.settings;
    let http = reqwest::Client::new();
    let api = clade_channels::discord::Api::new(http, &settings.api_url, &settings.token);
    let relay = clade_channels::discord::Relay::start(&gateway, bot, secret);
    tracing::info!(
        bot,
        target = relay.target(),
        "discord listener relaying messages to the gateway"
    );
    println!("clade channels listen: discord bot {bot} -> {}", relay.target());
    clade_channels::discord::run(&api, bot, clock, &relay).await;
    anyhow::bail!(
        "Discord refused the bot (the log says why): fix it, then start the listener again"
    )
}

async fn listen_telegram(
    config: &clade_config::Config,
    bot: &str,
    gateway: String,
    clock: &clade_core::SystemClock,
) -> Result<()> {
    let bots = crate::context::telegram_bots_of(config).map_err(anyhow::Error::msg)?;
    let Some(options) = bots.into_iter().find(|b| b.settings.name == bot) else {
        anyhow::bail!("no Telegram bot {bot:?} under channels.telegram in clade.yaml");
    };
    let Some(secret) = options.webhook_secret.as_deref() else {
        anyhow::bail!(
            "channels.telegram.{bot} is in polling mode, so the gateway polls Telegram itself: set mode: webhook and webhook_secret_env (the same variable for the gateway and this listener)"
        );
    };
    if options.public_url.is_some() {
        anyhow::bail!(
            "channels.telegram.{bot}.public_url is set, so the gateway registers a webhook with Telegram, which then refuses to be polled: remove public_url to run a listener of its own"
        );
    }
    let settings = &options.settings;
    let http = reqwest::Client::new();
    let api = clade_channels::telegram::Api::new(http, &settings.api_url, &settings.token);
    let relay = clade_channels::telegram::Relay::new(&gateway, bot, secret);
    tracing::info!(
        bot,
        target = relay.target(),
        "telegram listener relaying updates to the gateway"
    );
    println!("clade channels listen: telegram bot {bot} -> {}", relay.target());
    clade_channels::telegram::poll(&api, bot, options.poll_timeout, clock, &relay).await;
    Ok(())
}

async fn listen_slack(
    config: &clade_config::Config,
    app: &str,
    gateway: String,
    clock: &clade_core::SystemClock,
) -> Result<()> {
    let apps = crate::context::slack_apps_of(config).map_err(anyhow::Error::msg)?;
    let Some(options) = apps.into_iter().find(|a| a.settings.name == app) else {
        anyhow::bail!("no Slack app {app:?} under channels.slack in clade.yaml");
    };
    let clade_channels::slack::Mode::Events { signing_secret } = &options.mode else {
        anyhow::bail!(
            "channels.slack.{app} is in socket mode, so the gateway holds the socket itself: set mode: events with signing_secret_env, keeping app_token_env for this listener"
        );
    };
    let entry = config.channels.slack.get(app);
    let Some(variable) = entry.and_then(|a| a.app_token_env.as_deref()) else {
        anyhow::bail!(
            "channels.slack.{app}.app_token_env: the listener connects to Socket Mode with the app-level token (xapp-…); name the variable holding it"
        );
    };
    let Some(app_token) = crate::context::env_value(variable) else {
        anyhow::bail!(
            "{variable} is not set: it holds channels.slack.{app}'s app-level token (xapp-…)"
        );
    };
    let settings = &options.settings;
    let http = reqwest::Client::new();
    let api = clade_channels::slack::Api::new(http, &settings.api_url, &settings.token);
    let relay = clade_channels::slack::Relay::new(&gateway, app, signing_secret);
    tracing::info!(app, target = relay.target(), "slack listener relaying events to the gateway");
    println!("clade channels listen: slack app {app} -> {}", relay.target());
    clade_channels::slack::socket_mode(&api, app, &app_token, clock, &relay).await;
    Ok(())
}
