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

/// `clade channels listen <bot>`: a Telegram bot's listener as a process of its own. It reads
/// the bot from clade.yaml (its token, API and webhook secret from the environment), polls
/// Telegram, and posts each update to the gateway's webhook route, confirming it to Telegram
/// only once the gateway stored it: killed at any point, it polls the unconfirmed updates
/// again, and the gateway takes each message once (its key is Telegram's message id).
pub(super) async fn listen(
    config: &clade_config::Config,
    bot: &str,
    gateway: String,
) -> Result<()> {
    let bots = crate::context::telegram_bots_of(config).map_err(anyhow::Error::msg)?;
    let Some(options) = bots.into_iter().find(|b| b.settings.name == bot) else {
        let named: Vec<&String> = config.channels.telegram.keys().collect();
        anyhow::bail!(
            "no Telegram bot {bot:?} under channels.telegram in clade.yaml (there are: {named:?})"
        );
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
    let api = clade_channels::telegram::Api::new(
        reqwest::Client::new(),
        &settings.api_url,
        &settings.token,
    );
    let relay = clade_channels::telegram::Relay::new(&gateway, bot, secret);
    tracing::info!(
        bot,
        target = relay.target(),
        "telegram listener relaying updates to the gateway"
    );
    println!("clade channels listen: telegram bot {bot} -> {}", relay.target());
    let clock = clade_core::SystemClock;
    clade_channels::telegram::poll(&api, bot, options.poll_timeout, &clock, &relay).await;
    Ok(())
}
