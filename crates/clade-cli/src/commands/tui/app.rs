//! What the terminal UI shows and what its command line means: plain state, no terminal and
//! no network, so it is tested alone.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

/// Lines kept per agent and in the feed of every agent.
const KEPT_LINES: usize = 500;

/// One agent in the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct AgentRow {
    pub(super) handle: String,
    pub(super) paused: bool,
    pub(super) running: usize,
    pub(super) waiting: usize,
    /// Tokens in and out over the last 30 days.
    pub(super) tokens: u64,
}

/// One line of a transcript: what happened, to which agent, in which session.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Line {
    pub(super) agent: String,
    pub(super) kind: String,
    pub(super) text: String,
}

/// Which view the right side shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// The selected agent's sessions and transcript.
    Agent,
    /// Every followed agent's events, as they come.
    All,
}

/// What a command line asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Send(String),
    Spawn {
        handle: String,
        task: Option<String>,
    },
    Switch(String),
    Pause,
    Resume,
    Stop,
    Approve(Option<String>),
    Deny(Option<String>),
    /// Sets a breakpoint on the selected agent: at `model`, `tool` (one tool when named) or
    /// `error`.
    Break {
        at: String,
        tool: Option<String>,
    },
    /// Removes every breakpoint of the selected agent.
    Unbreak,
    /// Tells the selected agent's paused turn (its oldest stop) what to do: `continue`, `step`,
    /// `skip` with a result, `edit` with arguments.
    Tell {
        action: clade_core::StopAction,
        data: Option<String>,
    },
    All,
    Help,
    Quit,
}

pub(super) const HELP: &str = "type a message for the selected agent, or: /send TEXT · /spawn HANDLE [TASK] · /switch HANDLE · /pause · /resume · /stop (cancel its running turns) · /approve [ID] · /deny [ID] · /break model|tool|error [TOOL] · /unbreak · /continue · /step · /skip RESULT · /edit JSON · /all (every agent) · /quit   ↑↓ select · Tab view · Esc quit";

/// A command line that means nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadCommand(String);

impl std::fmt::Display for BadCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a command line; `Err` names what is wrong.
pub(super) fn parse(line: &str) -> Result<Action, BadCommand> {
    let line = line.trim();
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Action::Send(line.to_owned()));
    };
    let (word, rest) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
    let rest = rest.trim();
    let argument = || (!rest.is_empty()).then(|| rest.to_owned());
    let needs = |what: &str| BadCommand(format!("/{word} needs {what}: {HELP}"));
    match word {
        "send" if rest.is_empty() => Err(needs("a message")),
        "send" => Ok(Action::Send(rest.to_owned())),
        "spawn" => {
            let (handle, task) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if handle.is_empty() {
                return Err(needs("a handle"));
            }
            let task = (!task.trim().is_empty()).then(|| task.trim().to_owned());
            Ok(Action::Spawn { handle: handle.to_owned(), task })
        }
        "switch" if rest.is_empty() => Err(needs("an agent's handle")),
        "switch" => Ok(Action::Switch(rest.to_owned())),
        "pause" => Ok(Action::Pause),
        "resume" => Ok(Action::Resume),
        "stop" => Ok(Action::Stop),
        "approve" => Ok(Action::Approve(argument())),
        "break" => {
            let (at, tool) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if clade_core::BreakAt::parse(at).is_none() {
                return Err(needs("where: model, tool or error"));
            }
            let tool = (!tool.trim().is_empty()).then(|| tool.trim().to_owned());
            Ok(Action::Break { at: at.to_owned(), tool })
        }
        "unbreak" => Ok(Action::Unbreak),
        "continue" | "step" | "skip" | "edit" => {
            let action = clade_core::StopAction::parse(word)
                .ok_or_else(|| BadCommand(format!("no command /{word}: {HELP}")))?;
            let data = match action {
                clade_core::StopAction::Skip if rest.is_empty() => {
                    return Err(needs("the result that stands for the call's"));
                }
                clade_core::StopAction::Edit
                    if !serde_json::from_str::<Value>(rest).is_ok_and(|v| v.is_object()) =>
                {
                    return Err(needs("the tool call's arguments as a JSON object"));
                }
                clade_core::StopAction::Skip | clade_core::StopAction::Edit => argument(),
                clade_core::StopAction::Continue | clade_core::StopAction::Step => None,
            };
            Ok(Action::Tell { action, data })
        }
        "deny" => Ok(Action::Deny(argument())),
        "all" => Ok(Action::All),
        "help" => Ok(Action::Help),
        "quit" | "exit" => Ok(Action::Quit),
        _ => Err(BadCommand(format!("no command /{word}: {HELP}"))),
    }
}

/// Everything on screen.
pub(super) struct App {
    pub(super) gateway: String,
    pub(super) agents: Vec<AgentRow>,
    pub(super) selected: usize,
    pub(super) view: View,
    /// Each agent's transcript, oldest first.
    pub(super) transcripts: BTreeMap<String, VecDeque<Line>>,
    /// Every agent's lines, oldest first.
    pub(super) feed: VecDeque<Line>,
    /// The selected agent's recent sessions: (channel · actor, state).
    pub(super) sessions: Vec<(String, String)>,
    pub(super) input: String,
    /// The last outcome, and whether it is an error.
    pub(super) notice: (String, bool),
    pub(super) quit: bool,
}

impl App {
    pub(super) fn new(gateway: String) -> Self {
        Self {
            gateway,
            agents: Vec::new(),
            selected: 0,
            view: View::Agent,
            transcripts: BTreeMap::new(),
            feed: VecDeque::new(),
            sessions: Vec::new(),
            input: String::new(),
            notice: (HELP.to_owned(), false),
            quit: false,
        }
    }

    pub(super) fn selected_handle(&self) -> Option<&str> {
        self.agents.get(self.selected).map(|a| a.handle.as_str())
    }

    /// Takes a new list of agents, keeping the selection on the same agent.
    pub(super) fn set_agents(&mut self, agents: Vec<AgentRow>) {
        let current = self.selected_handle().map(str::to_owned);
        self.agents = agents;
        self.selected = current
            .and_then(|h| self.agents.iter().position(|a| a.handle == h))
            .unwrap_or(0)
            .min(self.agents.len().saturating_sub(1));
    }

    pub(super) fn select(&mut self, handle: &str) -> bool {
        match self.agents.iter().position(|a| a.handle == handle) {
            Some(index) => {
                self.selected = index;
                self.view = View::Agent;
                true
            }
            None => false,
        }
    }

    pub(super) fn move_selection(&mut self, by: isize) {
        if self.agents.is_empty() {
            return;
        }
        let last = self.agents.len() as isize - 1;
        self.selected = (self.selected as isize + by).clamp(0, last) as usize;
    }

    /// Takes a live event of `agent`; tool calls fold into one line each.
    pub(super) fn live(&mut self, agent: &str, kind: &str, data: &Value) {
        let Some(text) = summary(kind, data) else { return };
        let line = Line { agent: agent.to_owned(), kind: kind.to_owned(), text };
        let lines = self.transcripts.entry(agent.to_owned()).or_default();
        push(lines, line.clone());
        push(&mut self.feed, line);
    }

    pub(super) fn tell(&mut self, text: impl Into<String>, error: bool) {
        self.notice = (text.into(), error);
    }
}

fn push(lines: &mut VecDeque<Line>, line: Line) {
    if lines.len() >= KEPT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

/// One line for a lifecycle event, or `None` for one not shown (a turn's start: its end says
/// more).
fn summary(kind: &str, data: &Value) -> Option<String> {
    use clade_core::EventKind as K;
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    let one_line = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(match K::parse(kind) {
        Some(K::TurnStarted | K::TextDelta | K::ToolProgress) => return None,
        Some(K::TurnFinished) => one_line(text("reply")),
        Some(K::TurnFailed | K::TurnYielded) => one_line(text("error")),
        Some(K::ToolCalled) => {
            let arguments = one_line(data["arguments"].to_string());
            format!("▸ {}({})", text("name"), truncate(&arguments, 80))
        }
        Some(K::ToolResult) => {
            let outcome = if data["is_error"].as_bool() == Some(true) { "error" } else { "ok" };
            format!("◂ {} {outcome}", text("name"))
        }
        Some(K::ApprovalRequested) => {
            format!("? {} waits for approval ({})", text("tool"), text("approval"))
        }
        Some(K::ApprovalDecided) => format!("approval {}", text("status")),
        Some(K::AgentMessageSent) => format!("→ {}", text("to")),
        Some(K::AgentMessageReceived) => format!("← {}", text("from")),
        Some(K::ExecutionsPaused) => "a pause holds: no new turn starts".to_owned(),
        Some(K::ExecutionsResumed) => "the pause was lifted".to_owned(),
        Some(K::DebugStopped) => format!(
            "‖ paused at {} (stop {}): /continue · /step · /skip RESULT · /edit JSON",
            text("place"),
            text("stop")
        ),
        Some(K::DebugResumed) => format!("▶ {} at {}", text("action"), text("place")),
        _ => one_line(data.to_string()),
    })
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(chars).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Action, AgentRow, App, View, parse};

    #[test]
    fn commands_read_as_the_help_says() {
        assert_eq!(parse("hello there"), Ok(Action::Send("hello there".into())));
        assert_eq!(parse("/send hi"), Ok(Action::Send("hi".into())));
        assert_eq!(
            parse("/spawn scout find the bug"),
            Ok(Action::Spawn { handle: "scout".into(), task: Some("find the bug".into()) })
        );
        assert_eq!(parse("/spawn scout"), Ok(Action::Spawn { handle: "scout".into(), task: None }));
        assert_eq!(parse("/switch ada"), Ok(Action::Switch("ada".into())));
        assert_eq!(parse("/approve"), Ok(Action::Approve(None)));
        assert_eq!(parse("/deny 01ab"), Ok(Action::Deny(Some("01ab".into()))));
        assert_eq!(parse("/quit"), Ok(Action::Quit));
        assert_eq!(
            parse("/break tool fs.write"),
            Ok(Action::Break { at: "tool".into(), tool: Some("fs.write".into()) })
        );
        use clade_core::StopAction as S;
        assert_eq!(parse("/step"), Ok(Action::Tell { action: S::Step, data: None }));
        assert_eq!(
            parse("/skip not today"),
            Ok(Action::Tell { action: S::Skip, data: Some("not today".into()) })
        );
        assert_eq!(
            parse("/edit {\"path\": \"b\"}"),
            Ok(Action::Tell { action: S::Edit, data: Some("{\"path\": \"b\"}".into()) })
        );
        for bad in
            ["/send", "/spawn", "/switch", "/frobnicate", "/break soon", "/skip", "/edit [1]"]
        {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(&bad[1..]) && err.contains("/help") || err.contains("/quit"));
        }
    }

    #[test]
    fn the_selection_stays_on_its_agent_and_tool_calls_fold() {
        let mut app = App::new("http://gw".into());
        let row = |h: &str| AgentRow { handle: h.into(), ..AgentRow::default() };
        app.set_agents(vec![row("ada"), row("bob")]);
        assert!(app.select("bob"));
        app.set_agents(vec![row("aaron"), row("ada"), row("bob")]);
        assert_eq!(app.selected_handle(), Some("bob"));
        app.move_selection(5);
        assert_eq!(app.selected_handle(), Some("bob"));
        assert!(!app.select("nobody"));
        app.view = View::All;
        use clade_core::EventKind as K;
        app.live("bob", K::TurnStarted.as_str(), &json!({}));
        let called = json!({ "name": "fs.read", "arguments": { "path": "a" } });
        app.live("bob", K::ToolCalled.as_str(), &called);
        app.live("bob", K::ToolResult.as_str(), &json!({ "name": "fs.read", "is_error": false }));
        app.live("bob", K::TurnFinished.as_str(), &json!({ "reply": "done\nnow" }));
        let lines: Vec<&str> = app.transcripts["bob"].iter().map(|l| l.text.as_str()).collect();
        assert_eq!(lines, ["▸ fs.read({\"path\":\"a\"})", "◂ fs.read ok", "done now"]);
        assert_eq!(app.feed.len(), 3);
    }
}
