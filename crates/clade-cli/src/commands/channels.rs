//! `clade channels`: the running gateway's chat channels.

use anyhow::Result;
use clade_gateway::api::ChannelListResponse;

use super::sessions::Client;
use crate::cli::ChannelsCommand;
use crate::context::Ctx;
use crate::output;

pub(super) async fn run(ctx: &Ctx, cmd: ChannelsCommand) -> Result<()> {
    let ChannelsCommand::Status { json, server } = cmd;
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
