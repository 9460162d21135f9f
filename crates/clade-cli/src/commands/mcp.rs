//! `clade mcp serve`: MCP over stdio, bridged to the running gateway's MCP route, so an MCP
//! host that launches servers as commands reaches the same agents, under the same token checks,
//! as one that speaks HTTP. The gateway answers every message; this process only carries them.

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::cli::{McpCommand, McpServeArgs};
use crate::context::Ctx;

/// The longest one line of input may be: a message larger than the gateway takes is refused
/// there, with a JSON-RPC error.
const MAX_LINE: usize = 16 * 1024 * 1024;

pub(super) async fn run(ctx: &Ctx, cmd: McpCommand) -> Result<()> {
    match cmd {
        McpCommand::Serve(args) => serve(ctx, args).await,
    }
}

async fn serve(ctx: &Ctx, args: McpServeArgs) -> Result<()> {
    let (url, token) = match args.token {
        Some(token) => (ctx.server_url(args.server.server.as_deref()), token),
        None => ctx.server(args.server.server.as_deref())?,
    };
    let endpoint = match ctx.explicit_agent() {
        Some(handle) => format!("{url}/v1/agents/{handle}/mcp"),
        None => format!("{url}/v1/mcp"),
    };
    tracing::info!(%endpoint, "serving MCP on stdio");
    let bridge = Bridge { http: reqwest::Client::new(), endpoint, token };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(line) = next_line(&mut input).await.context("cannot read standard input")? {
        let Some(line) = line else {
            let _ = out_tx.send(error_line(None, -32600, "the message is larger than 16 MiB"));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        // Each message on its own: a long call does not hold up a ping or a listing.
        let (bridge, out) = (bridge.clone(), out_tx.clone());
        in_flight.spawn(async move { bridge.carry(line, out).await });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// The next line of `input`, without its end; `Some(None)` for one longer than [`MAX_LINE`],
/// which is read past, never held; `None` at the end of the input.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
) -> std::io::Result<Option<Option<String>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            if line.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let (taken, ended) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        if !too_long {
            line.extend_from_slice(&buffer[..taken]);
            if line.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            }
        }
        input.consume(taken);
        if ended {
            break;
        }
    }
    if too_long {
        return Ok(Some(None));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(Some(String::from_utf8_lossy(&line).into_owned())))
}

#[derive(Clone)]
struct Bridge {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl Bridge {
    /// Posts one message and writes what answers it: the response, or each message of a
    /// streamed answer, or a JSON-RPC error saying why there is none.
    async fn carry(&self, line: String, out: tokio::sync::mpsc::UnboundedSender<String>) {
        let id = serde_json::from_str::<Value>(&line).ok().and_then(|v| v.get("id").cloned());
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(line)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                if id.is_some() {
                    let message = format!(
                        "cannot reach the gateway at {} ({err}): is `clade serve` running? (--server URL)",
                        self.endpoint
                    );
                    let _ = out.send(error_line(id, -32603, &message));
                }
                return;
            }
        };
        let status = response.status().as_u16();
        if status == 202 {
            return;
        }
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_stream {
            let mut parser = clade_model::sse::SseParser::default();
            let mut body = response.bytes_stream();
            let mut answered = false;
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                let mut events = Vec::new();
                if parser.push(&chunk, &mut events).is_err() {
                    break;
                }
                for event in events.into_iter().filter(|e| !e.data.is_empty()) {
                    // The response is the message that carries the request's id.
                    answered |= serde_json::from_str::<Value>(&event.data)
                        .is_ok_and(|message| message.get("id") == id.as_ref());
                    let _ = out.send(event.data);
                }
            }
            if !answered && id.is_some() {
                let message = "the gateway's stream ended before its answer: the agent's reply, if any, is in the session (resources/list)";
                let _ = out.send(error_line(id, -32603, message));
            }
            return;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body.get("jsonrpc").is_some() {
            let _ = out.send(body.to_string());
        } else if id.is_some() {
            // The gateway's own refusal (a bad token, a limit): said as JSON-RPC.
            let message = body["error"]["message"].as_str().unwrap_or("the gateway refused it");
            let _ = out.send(error_line(id, -32603, &format!("{message} (HTTP {status})")));
        }
    }
}

fn error_line(id: Option<Value>, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_and_an_oversize_one_is_skipped_not_held() {
        let mut input = b"first\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(4096, input.as_slice());
        assert_eq!(next_line(&mut reader).await.unwrap(), Some(Some("first".to_owned())));
        assert_eq!(next_line(&mut reader).await.unwrap(), Some(None));
        assert_eq!(next_line(&mut reader).await.unwrap(), Some(Some("last".to_owned())));
        assert_eq!(next_line(&mut reader).await.unwrap(), None);
    }
}
