//! Which agent an event reaches when it names none (`bindings`, `default_agent`), and every agent reference the file makes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The other sections' types and the checks they share.
use crate::*;

/// Maps (platform, channel, actor) patterns to an agent. `*` matches anything; the first
/// matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    #[serde(default = "star")]
    pub platform: String,
    #[serde(default = "star")]
    pub channel: String,
    #[serde(default = "star")]
    pub actor: String,
    /// The agent: `tenant/handle`, or a bare handle in the default tenant. A binding routes
    /// only events of that agent's tenant.
    pub agent: String,
    /// Whose memory the sessions it matches share, when not `memory.isolation`: `global` (the
    /// agent's), `actor` (each person's) or `channel` (each conversation's). The first binding
    /// that matches a session's source decides. Read at start.
    #[serde(default)]
    pub isolation: Option<MemoryIsolation>,
}

fn star() -> String {
    "*".into()
}

impl Config {
    /// Every reference to an agent (heartbeats, bindings, the default agent, chat bots) names one agent of one tenant.
    pub(crate) fn check_agent_references(&self) -> Result<(), Invalid> {
        // Every agent reference names one agent of one tenant.
        for result in [
            check_agent_keys("routing.agents", &self.routing.agents),
            check_agent_keys("sessions.agents", &self.sessions.agents),
            check_agent_keys("budgets.agents", &self.budgets.agents),
            check_agent_keys("heartbeats", &self.heartbeats),
        ] {
            result?;
        }
        for (agent, heartbeat) in &self.heartbeats {
            if heartbeat.prompt.trim().is_empty() {
                return fail(format!(
                    "heartbeats.{agent}.prompt is empty: a heartbeat says what the agent is to do at every beat"
                ));
            }
        }
        let agent_ref = |field: String, text: &str| {
            clade_core::AgentRef::parse(text).map(|_| ()).map_err(|e| {
                format!("{field}: {e}; name an agent as tenant/handle, or a bare handle in the default tenant")
            })
        };
        for (index, binding) in self.bindings.iter().enumerate() {
            if let Err(message) = agent_ref(format!("bindings[{index}].agent"), &binding.agent) {
                return fail(message);
            }
        }
        if let Some(agent) = &self.default_agent
            && let Err(message) = agent_ref("default_agent".into(), agent)
        {
            return fail(message);
        }
        for (name, bot) in &self.channels.telegram {
            bot.check(name)?;
        }
        for (name, app) in &self.channels.slack {
            app.check(name)?;
        }
        for (name, bot) in &self.channels.discord {
            bot.check(name)?;
        }
        Ok(())
    }
}
