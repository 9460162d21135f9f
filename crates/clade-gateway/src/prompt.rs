//! `POST /v1/agents/{handle}/prompt`: what an agent's model would be sent for a message,
//! composed by the turn's own code, with nothing called or written (`clade agents prompt`).

use axum::Extension;
use axum::extract::{Path, State};

use crate::AppState;
use crate::agents::JsonBody;
use crate::api::{PromptMessage, PromptPreviewParams, PromptPreviewResponse};
use crate::auth::Caller;
use crate::error::ApiError;

pub(crate) async fn preview(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    JsonBody(params): JsonBody<PromptPreviewParams>,
) -> Result<axum::Json<PromptPreviewResponse>, ApiError> {
    crate::events::check_text("text", &params.text)?;
    let agent = state.of(&tenant).agents().get(&handle).await?;
    reach.agent(&agent)?;
    let session = params.session.as_deref().map(crate::sessions::session_id).transpose()?;
    let preview = state.engine.preview(&tenant, &agent, &params.text, session).await?;
    Ok(axum::Json(PromptPreviewResponse {
        agent: agent.handle.as_str().to_owned(),
        messages: preview
            .messages()
            .into_iter()
            .map(|(role, content)| PromptMessage { role: role.to_owned(), content })
            .collect(),
        tools: preview.tools(),
        bytes: preview.bytes(),
        fits: preview.fits(),
        estimated_tokens: preview.estimated_tokens,
        context_window: preview.context_window,
        prompt_room: preview.prompt_room,
        tool_tokens: preview.tool_tokens,
        route: preview.route,
        provider: preview.provider,
        model: preview.model,
        body: preview.body,
    }))
}
