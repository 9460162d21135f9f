//! `clade tui`, driven in a real terminal: tmux runs it in a pseudo-terminal, `send-keys`
//! types, and `capture-pane` reads the screen the test asserts on.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::support::{Env, eventually, on_path, write};

fn tmux(test: &str) -> Option<PathBuf> {
    on_path("tmux", test, "run scripts/test, which installs Debian's tmux")
}

/// A tmux server of the test's own, holding one session that runs the TUI.
struct Screen {
    tmux: PathBuf,
    socket: String,
}

impl Screen {
    fn run(&self, args: &[&str]) -> String {
        #[allow(clippy::disallowed_methods)] // tmux is a program we did not write.
        let out = Command::new(&self.tmux).args(["-L", &self.socket]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn text(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "tui", "-l", line]);
        self.run(&["send-keys", "-t", "tui", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "tui", key]);
    }

    /// Waits until the screen shows `text`; the screen, for the failure message.
    async fn shows(&self, text: &str) -> Result<(), String> {
        let found = eventually(async || self.text().contains(text).then_some(())).await;
        found.ok_or_else(|| format!("the screen never showed {text:?}:\n{}", self.text()))
    }

    fn alive(&self) -> bool {
        #[allow(clippy::disallowed_methods)]
        let out = Command::new(&self.tmux)
            .args(["-L", &self.socket, "has-session", "-t", "tui"])
            .output()
            .unwrap();
        out.status.success()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// Every command of the TUI on a live gateway: a message answered live, pause and resume,
/// spawn, an approval, a bad command, the view of every agent, and Esc giving the terminal
/// back; and a gateway that does not answer is a plain error before the screen is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_in_a_real_terminal() {
    let Some(tmux) = tmux("the TUI test") else { return };
    let env = Env::new();
    env.run(&["agents", "create", "alice"]).ok();
    write(
        &env.data_dir().join("clade.yaml"),
        "tools:\n  approval_timeout_secs: 60\n  policy:\n    - { effect: ask, tool: shell.exec }\ntui:\n  theme: mono\n",
    );
    let server = env.serve(&[]);

    env.run(&["tui", "--server", "http://127.0.0.1:1"]).fails_with("cannot reach the gateway");

    let command = env.command();
    let program = command.get_program().to_str().unwrap().to_owned();
    let screen = Screen { tmux, socket: format!("clade-tui-{}", std::process::id()) };
    let data_dir = format!("CLADE_DATA_DIR={}", env.data_dir().display());
    let token = format!("CLADE_TOKEN={}", server.token);
    screen.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "160",
        "-y",
        "40",
        "-e",
        &data_dir,
        "-e",
        &token,
        &program,
        "tui",
        "--server",
        &server.url,
    ]);
    screen.shows("agents (1)").await.unwrap();
    screen.shows("alice").await.unwrap();

    screen.type_line("hello tui");
    screen.shows("echo: hello tui").await.unwrap();

    screen.type_line("/pause");
    screen.shows("paused alice").await.unwrap();
    let (_, status) = server.send("GET", "/v1/agents/alice/status", None, None).await;
    assert!(!status["paused"].is_null(), "{status}");
    screen.type_line("/resume");
    screen.shows("resumed alice").await.unwrap();
    let (_, status) = server.send("GET", "/v1/agents/alice/status", None, None).await;
    assert!(status["paused"].is_null(), "{status}");

    screen.type_line("/spawn scout");
    screen.shows("spawned scout").await.unwrap();
    screen.shows("agents (2)").await.unwrap();
    let (status, _) = server.send("GET", "/v1/agents/scout", None, None).await;
    assert_eq!(status, 200);

    // An approval decided from the TUI: the waiting call runs.
    let (url, token) = server.address();
    let call = tokio::spawn(async move {
        let body = json!({ "arguments": { "command": "echo from-the-tui" } });
        let path = "/v1/agents/alice/tools/shell.exec/call";
        super::support::request(&url, &token, "POST", path, Some(body)).await.1
    });
    let pending = eventually(async || {
        let (_, body) = server.send("GET", "/v1/approvals", None, None).await;
        body["items"].as_array().and_then(|a| a.first()).cloned()
    })
    .await
    .expect("no approval became pending");
    screen.type_line("/switch alice");
    screen.type_line("/approve");
    let approved = format!("approved {}", pending["id"].as_str().unwrap());
    screen.shows(&approved).await.unwrap();
    let result = call.await.unwrap();
    assert_eq!(result["is_error"], false, "{result}");

    // Stepping through a turn from the TUI: a breakpoint before each model call, the paused
    // turn shown in the transcript, then skipped with an answer given there.
    screen.type_line("/break model");
    screen.shows("alice's turns pause at model").await.unwrap();
    screen.type_line("stop here");
    screen.shows("paused at model/0").await.unwrap();
    let (_, waiting) = server.send("GET", "/v1/debug/stops", None, None).await;
    assert_eq!(waiting["items"][0]["agent"], "alice", "{waiting}");
    screen.type_line("/skip answered in the tui");
    screen.shows("skip at model/0").await.unwrap();
    screen.shows("answered in the tui").await.unwrap();
    screen.type_line("/unbreak");
    screen.shows("removed 1 breakpoint(s) of alice").await.unwrap();
    screen.type_line("/continue");
    screen.shows("no turn of alice waits at a breakpoint").await.unwrap();

    screen.type_line("/switch nobody");
    screen.shows("no agent nobody").await.unwrap();
    screen.type_line("/frobnicate");
    screen.shows("no command /frobnicate").await.unwrap();
    screen.key("Tab");
    screen.shows("every agent: live").await.unwrap();

    screen.key("Escape");
    let gone = eventually(async || (!screen.alive()).then_some(())).await;
    assert!(gone.is_some(), "Esc ends the TUI:\n{}", screen.text());
}
