//! Sessions side by side: steering, cancelling, timing out, and one slow session beside a
//! fast one.

use std::time::Duration;

use clade_core::TurnStatus;
use clade_sim::Sim;

use super::{model_called, model_calls, slow_model, slow_model_for, texts};

/// In steer mode a message that arrives while a turn runs joins that turn between its tool
/// calls and the next model call, which answers it: one turn, both events, one reply. The mode
/// is set for one agent (`sessions.agents`); another agent's sessions keep the deployment's
/// `queue` mode and run the same burst as two turns.
#[tokio::test]
async fn steer_injects_a_message_into_the_running_turn() {
    let config = slow_model(1500) + "sessions:\n  agents:\n    ada: { queue_mode: steer }\n";
    let sim =
        Sim::builder("steer_injects_a_message_into_the_running_turn").config(&config).start().await;
    sim.create_agent("ada").await;
    sim.create_agent("bob").await;
    let mut firsts = Vec::new();
    for agent in ["ada", "bob"] {
        let envelope = sim.envelope(agent, "desk", "pat", "/tool time.now").await;
        firsts.push(sim.submit(envelope).await.unwrap());
    }
    // While the first model calls run.
    model_called(&sim, 2).await;
    for agent in ["ada", "bob"] {
        let envelope = sim.envelope(agent, "desk", "pat", "and also this").await;
        sim.submit(envelope).await.unwrap();
    }
    let settled = |n: usize| {
        move |t: &[clade_store::TurnRecord]| {
            t.len() == n && t.iter().all(|t| t.turn.status != TurnStatus::Running)
        }
    };
    let adas = sim.turns_until(firsts[0].session_id, settled(1)).await;
    assert_eq!(texts(&adas[0]), ["/tool time.now", "and also this"], "one turn took both");
    assert_eq!(adas[0].turn.status, TurnStatus::Completed, "{adas:?}");
    assert_eq!(
        adas[0].turn.reply.as_deref(),
        Some("echo: and also this"),
        "the model answered the steered message"
    );
    let bobs = sim.turns_until(firsts[1].session_id, settled(2)).await;
    assert_eq!(bobs.len(), 2, "bob's sessions queue: {bobs:?}");
}

/// Cancel stops the session's running turn at once, with the reason, and the session goes on
/// with its next message. A turn that runs past `turn_timeout_secs` of the clock fails naming
/// the setting, and not a moment before: no test waits the timeout out.
#[tokio::test]
async fn cancel_and_timeout_end_the_running_turn_with_the_reason() {
    let config = slow_model_for("ada", 4000) + "sessions:\n  turn_timeout_secs: 600\n";
    let sim = Sim::builder("cancel_and_timeout_end_the_running_turn_with_the_reason")
        .config(&config)
        .start()
        .await;
    sim.create_agent("ada").await;
    let tenant = sim.tenant().await.id;
    let cancelled_before = sim.on_node(async move |engine| {
        let session = clade_core::SessionId::generate(clade_core::Timestamp::from_millis(0));
        engine.cancel(tenant, session).await
    });
    assert!(!cancelled_before.await.unwrap_or(false), "nothing runs yet: nothing to cancel");

    let one = sim.submit(sim.envelope("ada", "c", "u", "one").await).await.unwrap();
    model_called(&sim, 1).await;
    let session = one.session_id;
    let cancelled = sim.on_node(async move |engine| engine.cancel(tenant, session).await).await;
    assert!(cancelled.unwrap(), "the running turn was cancelled");
    let finished = sim.finished(&one).await;
    assert_eq!(finished.status, TurnStatus::Failed, "{finished:?}");
    assert_eq!(finished.error.as_deref(), Some("cancelled by request"));

    let two = sim.submit(sim.envelope("ada", "c", "u", "two").await).await.unwrap();
    model_called(&sim, 2).await;
    sim.advance(Duration::from_secs(599));
    sim.run_for(Duration::ZERO).await;
    let turns = sim.turns(session).await;
    assert!(
        turns.iter().all(|t| t.turn.status != TurnStatus::Failed || texts(t) == ["one"]),
        "timed out before its time: {turns:?}"
    );
    sim.advance(Duration::from_secs(1));
    let finished = sim.finished(&two).await;
    assert_eq!(finished.status, TurnStatus::Failed, "{finished:?}");
    assert!(
        finished.error.as_deref().unwrap_or_default().contains("turn_timeout_secs"),
        "{finished:?}"
    );
}

/// Sessions run side by side: a turn stuck on a slow model holds back only its own session.
#[tokio::test]
async fn a_slow_session_does_not_hold_back_another() {
    let sim = Sim::builder("a_slow_session_does_not_hold_back_another")
        .config(&slow_model_for("bob", 5000))
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.create_agent("bob").await;
    let slow = sim.submit(sim.envelope("bob", "x", "u", "slow one").await).await.unwrap();
    model_called(&sim, 1).await;
    let started = std::time::Instant::now();
    let (_, fast) = sim.say("ada", "y", "fast one").await;
    assert_eq!(fast.reply.as_deref(), Some("echo: fast one"), "{fast:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} behind the slow session",
        started.elapsed()
    );
    // A new turn is stored with its first model response: bob's has none yet.
    assert!(sim.turns(slow.session_id).await.is_empty(), "bob's turn is still waiting");
}

/// The model's system prompt is composed in layers: the agent's files (their `{{variables}}`
/// filled in), then its platform's, channel's and actor's files from the workspace, then the
/// runtime's additions (where the conversation happens, today's date). A layer's edit changes
/// the turn's config revision, and an edit from outside Clade applies once the engine's
/// one-second trust in its last check has passed on the clock; a name that is no plain file
/// name gets no layer, and a file linked outside the workspace reads as nothing.
#[tokio::test]
async fn persona_layers_compose_in_order() {
    let sim = Sim::builder("persona_layers_compose_in_order")
        .config("models:\n  m:\n    provider: openai\n    model: stub\n    base_url: {stub}/v1\n    api_key_env: STUB_KEY\nrouting:\n  default: [m]\ntenants:\n  \"*\":\n    variables: { company: Acme, tone: plain }\n  default:\n    variables: { tone: warm }\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    let ws = sim.workspace("ada").await;
    let write = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        &ws.join("SOUL.md"),
        "AGENT-LAYER: {{handle}} of {{tenant}} works for {{company}}, {{tone}}; {{unset}} stays",
    );
    let outside = sim.data_dir().root().join("outside.md");
    write(&outside, "OUTSIDE-SECRET");
    std::fs::remove_file(ws.join("IDENTITY.md")).ok();
    std::os::unix::fs::symlink(&outside, ws.join("IDENTITY.md")).unwrap();
    std::fs::remove_file(ws.join("USER.md")).ok();
    std::os::unix::fs::symlink("/proc/self/environ", ws.join("USER.md")).unwrap();
    write(&ws.join("channels/sim.md"), "PLATFORM-LAYER");
    write(&ws.join("channels/sim/c.md"), "CHANNEL-LAYER");
    write(&ws.join("actors/sim/pat.md"), "ACTOR-LAYER");
    let system_of_last = || {
        let captured = sim.stub().captured();
        let body = &captured.last().unwrap().body;
        body["messages"][0]["content"].as_str().unwrap_or_default().to_owned()
    };
    let send = async |platform: &str, channel: &str, actor: &str| {
        let mut envelope = sim.envelope("ada", channel, actor, "hi").await;
        envelope.source.platform = platform.into();
        let accepted = sim.submit(envelope).await.unwrap();
        let finished = sim.finished(&accepted).await;
        assert_eq!(finished.status, TurnStatus::Completed, "{finished:?}");
        let turns = sim.turns(accepted.session_id).await;
        turns.last().unwrap().turn.config_revision
    };
    let first = send("sim", "c", "pat").await;
    let system = system_of_last();
    let at =
        |needle: &str| system.find(needle).unwrap_or_else(|| panic!("{needle} not in {system:?}"));
    assert!(at("AGENT-LAYER") < at("PLATFORM-LAYER"), "{system}");
    assert!(at("PLATFORM-LAYER") < at("CHANNEL-LAYER"), "{system}");
    assert!(at("CHANNEL-LAYER") < at("ACTOR-LAYER"), "{system}");
    assert!(at("ACTOR-LAYER") < at("You are talking on sim in channel c with pat."), "{system}");
    assert!(system.contains(" (UTC)."), "{system}");
    assert!(!system.contains("OUTSIDE-SECRET") && !system.contains("sk-stub"), "{system}");
    assert!(
        system.contains("AGENT-LAYER: ada of default works for Acme, warm; {{unset}} stays"),
        "variables are filled in, the tenant's over \"*\": {system}"
    );
    // Another actor of the same channel: no actor layer, another revision.
    let other = send("sim", "c", "sam").await;
    let system = system_of_last();
    assert!(system.contains("CHANNEL-LAYER") && !system.contains("ACTOR-LAYER"), "{system}");
    assert_ne!(first, other);
    // An edit from outside Clade: trusted unchecked for a second of the clock, then read.
    write(&ws.join("actors/sim/pat.md"), "ACTOR-LAYER-EDITED");
    sim.advance(Duration::from_millis(1_001));
    let edited = send("sim", "c", "pat").await;
    let system = system_of_last();
    assert!(system.contains("ACTOR-LAYER-EDITED"), "{system}");
    assert_ne!(first, edited);
    // A channel name that is no plain file name reads nothing outside the layers.
    write(&ws.join("secret.md"), "OUTSIDE");
    send("sim", "../../secret", "pat").await;
    let system = system_of_last();
    assert!(!system.contains("OUTSIDE") && system.contains("PLATFORM-LAYER"), "{system}");
    send("..", "c", "pat").await;
    assert!(!system_of_last().contains("PLATFORM-LAYER"));
}

/// A session's own queue mode overrides its agent's: the live actor takes it up at its next
/// turn, and clearing it returns the session to its agent's mode. (Setting it over HTTP and
/// the CLI, and the refusals of bad values, are `clade-cli`'s `suite::sessions`.)
#[tokio::test]
async fn a_sessions_own_queue_mode_overrides_its_agents() {
    let sim = Sim::builder("a_sessions_own_queue_mode_overrides_its_agents")
        .config(&slow_model(1500))
        .start()
        .await;
    sim.create_agent("ada").await;
    let (hello, _) = sim.say("ada", "own", "hello").await;
    let (session, tenant) = (hello.session_id, sim.tenant().await.id);
    let mut expected_turns = 1;
    // A burst while a turn runs: steered into it, then (mode cleared) queued behind it.
    for (mode, turns_added) in [(Some(clade_config::QueueMode::Steer), 1), (None, 2)] {
        let set = sim.on_node(async move |e| e.set_queue_mode(tenant, session, mode).await).await;
        assert_eq!(set.unwrap().queue_mode.as_deref(), mode.map(|m| m.as_str()));
        let calls = model_calls(&sim);
        sim.submit(sim.envelope("ada", "own", "user", "/tool time.now").await).await.unwrap();
        model_called(&sim, calls + 1).await;
        sim.submit(sim.envelope("ada", "own", "user", "and this").await).await.unwrap();
        expected_turns += turns_added;
        let all = sim
            .turns_until(session, |t| {
                t.len() == expected_turns && t.iter().all(|t| t.turn.status != TurnStatus::Running)
            })
            .await;
        assert_eq!(all.len(), expected_turns, "mode {mode:?}");
    }
}

/// A session's actor stays in memory while it has work and leaves once the clock has passed
/// `sessions.idle_secs` without a message for it, and not before; the next message brings it
/// back, reading the session's history from the store, and the session goes on where it was.
#[tokio::test]
async fn an_idle_session_leaves_memory_when_the_clock_passes_its_idle_time_and_comes_back() {
    let sim = Sim::builder(
        "an_idle_session_leaves_memory_when_the_clock_passes_its_idle_time_and_comes_back",
    )
    .config("sessions:\n  idle_secs: 600\n")
    .start()
    .await;
    sim.create_agent("ada").await;
    for channel in ["a", "b"] {
        let (_, finished) = sim.say("ada", channel, "hello").await;
        assert_eq!(finished.reply.as_deref(), Some("echo: hello"));
    }
    let active = async || sim.on_node(async |engine| engine.active_sessions()).await;
    assert_eq!(active().await, 2, "both actors are still in memory");
    sim.advance(Duration::from_secs(599));
    clade_test_support::wait::holds_for(
        Duration::from_millis(300),
        "the sessions left memory early",
        active,
        |n| *n == 2,
    )
    .await;
    // Each actor arms its idle timer once its turn is done, which may be after the clock
    // first moved: time runs on until they have all passed.
    sim.run_for(Duration::from_secs(601)).await;
    let idle = clade_test_support::wait::polled(active, |n| *n == 0).await;
    assert_eq!(idle, 0, "idle actors left memory");

    let (again, _) = sim.say("ada", "a", "again").await;
    assert_eq!(active().await, 1, "the session's actor came back");
    // The returning actor read the session's history from the store: its context holds the
    // first turn too, so it is larger than a first turn's.
    let input = |turns: Vec<clade_store::TurnRecord>| turns.last().unwrap().usage.input_tokens;
    let with_history = input(sim.turns(again.session_id).await);
    let (fresh, _) = sim.say("ada", "c", "again").await;
    let without = input(sim.turns(fresh.session_id).await);
    assert!(with_history > without, "{with_history} input tokens with history, {without} without");
}
