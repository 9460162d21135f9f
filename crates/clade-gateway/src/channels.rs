//! Chat channels' routes: Telegram's webhook (`POST /channels/telegram/{bot}`), Slack's
//! Events API (`POST /channels/slack/{app}`) and Discord's relay (`POST
//! /channels/discord/{bot}`), which take no token: the channel's secret or signature
//! authenticates them, or the signature of the listener paired for the channel (`clade pair
//! listener`); and the operator's `GET /v1/channels`.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clade_channels::telegram::Taken;

use crate::AppState;
use crate::api::{ChannelListResponse, ChannelStatus};
use crate::auth::Caller;
use crate::error::{ApiError, Code};

/// Whether a request to a channel's route comes from the listener paired for the channel:
/// `None` when it is not signed (the channel's own secret decides), else whether its signature
/// is good and its key the one paired as `<platform>-<channel>`. Refusals read alike.
async fn paired_listener(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &[u8],
    platform: &str,
    channel: &str,
) -> Option<Result<(), ApiError>> {
    if !crate::auth::is_signed(headers) {
        return None;
    }
    let refused = |why: &str| {
        tracing::info!(platform, channel, reason = why, "a signed channel request was refused");
        ApiError::new(
            Code::InvalidSignature,
            "not signed by the listener paired for this channel (`clade pair listener`), or no such channel in a mode that takes them (the gateway's log says which)",
        )
    };
    let route = uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    let key = match crate::auth::verify_signed(state, headers, "POST", route, body) {
        Ok(key) => key,
        Err(why) => return Some(Err(refused(&why.to_string()))),
    };
    let name = clade_channels::listener_name(platform, channel);
    let paired = match state
        .store
        .peers()
        .is_paired(clade_channels::LISTENER_PEER_KIND, &name, &key)
        .await
    {
        Ok(paired) => paired,
        Err(err) => return Some(Err(err.into())),
    };
    Some(if paired {
        Ok(())
    } else {
        Err(refused("the key is not paired as this channel's listener"))
    })
}

/// The channel a request reaches: `found` (if in a mode that takes such requests), when the
/// request is signed by its paired listener, or, unsigned, when `secret_ok` accepts the
/// secret it carries. A signature that fails refuses at once.
async fn admitted<C>(
    state: &AppState,
    (headers, uri, body): (&HeaderMap, &axum::http::Uri, &[u8]),
    (platform, name): (&str, &str),
    found: Option<C>,
    secret_ok: impl FnOnce(&C) -> bool,
) -> Result<Option<C>, ApiError> {
    match paired_listener(state, headers, uri, body, platform, name).await {
        Some(Err(refused)) => Err(refused),
        Some(Ok(())) => Ok(found),
        None => Ok(found.filter(secret_ok)),
    }
}

/// `POST /channels/telegram/{bot}`: one update, as Telegram's webhook posts it. 200 once it is
/// stored (or can never be: an update Telegram should not send again); 503 when it could not
/// be stored now, so Telegram delivers it again.
pub(crate) async fn telegram(
    State(state): State<AppState>,
    Path(bot_name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secret =
        headers.get("x-telegram-bot-api-secret-token").map(|v| v.as_bytes()).unwrap_or_default();
    let found = state.channels.telegram(&bot_name).filter(|bot| bot.takes_webhooks());
    let request = (&headers, &uri, &body[..]);
    let channel = (clade_channels::telegram::PLATFORM, bot_name.as_str());
    // An unknown bot and a wrong secret answer alike: a stranger learns no bot's name.
    let bot =
        admitted(&state, request, channel, found, |bot| bot.webhook_secret_matches(secret)).await?;
    let Some(bot) = bot else {
        tracing::info!(bot = %bot_name, "telegram webhook request refused: no such bot in webhook mode, or a wrong secret token");
        return Err(ApiError::new(
            Code::InvalidSignature,
            "not a webhook of this gateway's: X-Telegram-Bot-Api-Secret-Token must be the secret in the bot's webhook_secret_env",
        ));
    };
    let update: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => {
            // Telegram would send it again and again: take it as unreadable, and say so.
            bot.accept(&serde_json::Value::Null).await.ok();
            tracing::warn!(bot = %bot_name, error = %err, "a telegram webhook body is not JSON; skipped");
            return Ok(
                (StatusCode::OK, axum::Json(serde_json::json!({"ok": false}))).into_response()
            );
        }
    };
    match bot.accept(&update).await {
        Ok(Taken::Event { .. }) => Ok(axum::Json(serde_json::json!({"ok": true})).into_response()),
        Ok(Taken::Skipped(why)) => {
            Ok(axum::Json(serde_json::json!({"ok": true, "skipped": why})).into_response())
        }
        Err(err) => Err(ApiError::new(
            Code::StoreUnavailable,
            format!("the update could not be stored now ({err}); Telegram delivers it again"),
        )),
    }
}

/// `POST /channels/slack/{app}`: one Events API request, signed with the app's signing
/// secret. A URL check is answered with its challenge; a message is taken (200) or, when it
/// cannot be stored now, refused with 503 so that Slack sends it again.
pub(crate) async fn slack(
    State(state): State<AppState>,
    Path(app_name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = state.store.now().as_millis().div_euclid(1000);
    let found = state.channels.slack(&app_name).filter(|app| app.takes_events());
    let request = (&headers, &uri, &body[..]);
    let channel = (clade_channels::slack::PLATFORM, app_name.as_str());
    let mut why = "no such app in events mode".to_owned();
    let signed_by_slack = |app: &&std::sync::Arc<clade_channels::slack::App>| {
        let stamp = header("x-slack-request-timestamp");
        app.verify(stamp, header("x-slack-signature"), &body, now)
            .map_err(|refused| why = refused.to_string())
            .is_ok()
    };
    let app = admitted(&state, request, channel, found, signed_by_slack).await?;
    // An unknown app and a bad signature answer alike: a stranger learns no app's name.
    let Some(app) = app else {
        tracing::info!(app = %app_name, reason = %why, "slack events request refused");
        return Err(ApiError::new(
            Code::InvalidSignature,
            "not signed by this app's signing secret within 5 minutes, or no such app in events mode (the gateway's log says which)",
        ));
    };
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        app.accept(&serde_json::Value::Null).await.ok();
        return Ok(axum::Json(serde_json::json!({"ok": false})).into_response());
    };
    if payload["type"] == "url_verification" {
        let challenge = payload["challenge"].clone();
        return Ok(axum::Json(serde_json::json!({ "challenge": challenge })).into_response());
    }
    match app.accept(&payload).await {
        Ok(_) => Ok(axum::Json(serde_json::json!({"ok": true})).into_response()),
        Err(err) => Err(ApiError::new(
            Code::StoreUnavailable,
            format!("the event could not be stored now ({err}); Slack sends it again"),
        )),
    }
}

/// `POST /channels/discord/{bot}`: what a bot's listener of its own relays (relay mode), with
/// the bot's relay secret: a message, taken once (200) or refused with 503 when it cannot be
/// stored now, so that the listener sends it again; or a new session's notice, which starts
/// the catch-up of what was sent meanwhile.
pub(crate) async fn discord(
    State(state): State<AppState>,
    Path(bot_name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secret = headers
        .get(clade_channels::discord::RELAY_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let found = state.channels.discord(&bot_name).filter(|bot| bot.is_relayed());
    let request = (&headers, &uri, &body[..]);
    let channel = (clade_channels::discord::PLATFORM, bot_name.as_str());
    // An unknown bot and a wrong secret answer alike: a stranger learns no bot's name.
    let bot =
        admitted(&state, request, channel, found, |bot| bot.relay_secret_matches(secret)).await?;
    let Some(bot) = bot else {
        tracing::info!(bot = %bot_name, "discord relay request refused: no such bot in relay mode, or a wrong secret");
        return Err(ApiError::new(
            Code::InvalidSignature,
            "not a relay of this gateway's: X-Clade-Relay-Secret must be the secret in the bot's relay_secret_env",
        ));
    };
    let relayed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(relayed) => relayed,
        Err(err) => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("a relayed message must be JSON: {err}"),
            ));
        }
    };
    match bot.relayed(&relayed).await {
        Ok(()) => Ok(axum::Json(serde_json::json!({"ok": true})).into_response()),
        Err(err) => Err(ApiError::new(
            Code::StoreUnavailable,
            format!("the message could not be stored now ({err}); send it again"),
        )),
    }
}

/// `GET /v1/channels`: every chat channel's health, for the operator.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<ChannelListResponse>, ApiError> {
    crate::config::operator_only(&tenant, &reach)?;
    let items = state
        .channels
        .health()
        .snapshot()
        .into_iter()
        .map(|h| ChannelStatus {
            platform: h.platform,
            name: h.name,
            mode: h.mode,
            state: h.state.as_str().to_owned(),
            last_ok_at: h.last_ok.map(|t| t.as_millis()),
            last_error: h.last_error,
            received: h.received,
            sent: h.sent,
            unrouted: h.unrouted,
            malformed: h.malformed,
        })
        .collect();
    Ok(axum::Json(ChannelListResponse { items }))
}
