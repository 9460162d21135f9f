//! Which agent an event goes to when it names none: the bindings, then the default agent.

use clade_core::TurnStatus;
use clade_sim::Sim;

/// An event that names no agent, from `platform`.
async fn unnamed(sim: &Sim, platform: &str, channel: &str) -> clade_runtime::Envelope {
    let mut envelope = sim.envelope("nobody", channel, "u", "hi").await;
    envelope.agent = None;
    envelope.source.platform = platform.into();
    envelope
}

/// The handle of the agent whose session `session` is.
async fn agent_of(sim: &Sim, session: clade_core::SessionId) -> (String, String) {
    let (store, tenant) = (sim.store(), sim.tenant().await.id);
    sim.on_node(async move |_| {
        let row = store.sessions(tenant).get(session).await?;
        let agent = store.agents(tenant).by_id(row.agent_id).await?;
        Ok::<_, clade_store::Error>((agent.handle.to_string(), row.last_active_channel))
    })
    .await
    .unwrap()
}

/// A binding sends its platform's events to its agent, in a session of that agent on the
/// event's channel; an event no binding takes, with no default agent, is refused as having no
/// agent (the API's 404 `no_agent`: `clade-cli`'s `suite::turns`).
#[tokio::test]
async fn bindings_pick_the_agent() {
    let sim = Sim::builder("bindings_pick_the_agent")
        .config("bindings:\n  - platform: irc\n    agent: bob\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.create_agent("bob").await;
    let accepted = sim.submit(unnamed(&sim, "irc", "42").await).await.unwrap();
    assert_eq!(sim.finished(&accepted).await.status, TurnStatus::Completed);
    assert_eq!(agent_of(&sim, accepted.session_id).await, ("bob".into(), "42".into()));
    let refused = sim.submit(unnamed(&sim, "matrix", "1").await).await.unwrap_err();
    assert!(matches!(refused, clade_runtime::engine::Error::NoAgent), "{refused:?}");
}

/// An event that names no agent and matches no binding goes to `default_agent`; once that
/// agent is gone, such an event is refused naming it, and starts nothing.
#[tokio::test]
async fn a_default_agent_takes_what_no_binding_matches() {
    let mut sim = Sim::builder("a_default_agent_takes_what_no_binding_matches")
        .config("bindings:\n  - platform: irc\n    agent: bob\ndefault_agent: ada\n")
        .start()
        .await;
    sim.create_agent("ada").await;
    sim.create_agent("bob").await;
    for (platform, agent) in [("irc", "bob"), ("matrix", "ada")] {
        let accepted = sim.submit(unnamed(&sim, platform, "1").await).await.unwrap();
        assert_eq!(sim.finished(&accepted).await.status, TurnStatus::Completed);
        let (went_to, _) = agent_of(&sim, accepted.session_id).await;
        assert_eq!(went_to, agent, "{platform} went to {went_to}");
    }
    let (store, data, tenant) = (sim.store(), sim.data_dir().clone(), sim.tenant().await.id);
    sim.on_node(async move |_| clade_store::Agents::new(store, data).delete(tenant, "ada").await)
        .await
        .unwrap();
    sim.restart().await;
    let refused = sim.submit(unnamed(&sim, "matrix", "2").await).await.unwrap_err();
    assert!(refused.to_string().contains("ada"), "{refused}");
}
