//! The admin socket's requests and replies: one JSON object a line each way, over the gateway's
//! Unix socket (`server.admin_socket`), which only the operator's user can open. Nothing here is
//! reachable over HTTP or WebSocket.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A control action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminRequest {
    /// What the gateway runs now.
    Status {},
    /// Take the newest configuration revision now instead of at the next poll.
    Reload {},
    /// Work for these sessions was stored by another process (a `clade cron-service` fire):
    /// run it. Session ids as the API writes them.
    Wake { sessions: Vec<String> },
    /// Operators' pauses changed in the store (`clade agents pause|resume`, `clade sessions
    /// pause`): read them again, and run the sessions no longer held.
    Pauses {},
    /// Pair with a remote component: the gateway sends it a challenge from its own process,
    /// authorized by the component's token, and keeps its key.
    Pair {
        /// `tool`: a remote tool host; `subscriber`: a component sent the lifecycle events;
        /// `operator`: a CLI that calls the API with its key, as its agents' tenant.
        kind: String,
        /// Its base URL.
        endpoint: String,
        /// The name the gateway knows it by.
        name: String,
        /// The component's bearer token, which authorizes the pairing.
        token: String,
        /// The agents it serves (agent patterns; default: the default tenant's). A
        /// subscriber is sent their events.
        #[serde(default)]
        agents: Vec<String>,
        /// A subscriber sent only what its tenants lease to it.
        #[serde(default)]
        leased: bool,
        /// What an operator may do (API token scopes; default `operate`).
        #[serde(default)]
        scopes: Vec<String>,
    },
    /// The gateway's own key, and how many components are paired.
    Identity {},
    /// Take no new event from now on (before stopping this gateway), and wait up to
    /// `wait_secs` (default 60) for the turns under way to end.
    Drain {
        #[serde(default)]
        wait_secs: Option<u64>,
    },
    /// A separate scheduler (`clade cron-service`) asks to fire `events` of a tenant's jobs:
    /// they take from the bucket the tenant's API events take from in this gateway, so the
    /// two processes together stay within its `events_per_second`.
    TakeEvents {
        /// The tenant's id, as the API writes it.
        tenant: String,
        events: u32,
    },
    /// The cluster's nodes, as `GET /v1/cluster/nodes` shows them.
    Nodes {},
    /// Flow runs stored by another process (a `clade cron-service` fire of a job whose target
    /// is a flow): drive them.
    TakeUpRuns { runs: Vec<RunRef> },
}

/// A flow run, and the tenant it belongs to (ids as the API writes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunRef {
    pub tenant: String,
    pub run: String,
}

/// The answer to one [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminReply {
    Status(AdminStatus),
    /// The configuration revision the gateway runs after the reload (none before the first).
    Reloaded {
        revision: Option<i64>,
    },
    /// How many sessions were woken (ids that named no session were skipped).
    Woken {
        sessions: u32,
    },
    /// Paired: the component's key, and the tools it offers now (names taken by other tools
    /// are left out).
    Paired {
        name: String,
        key: String,
        tools: u32,
        left_out: Vec<String>,
    },
    Identity {
        key: String,
        peers: u32,
    },
    /// Draining: no new event is taken; how many turns still run after the wait (0: it can be
    /// stopped without cutting one short).
    Drained {
        running_turns: u64,
    },
    /// Whether the events asked for in [`AdminRequest::TakeEvents`] were taken (no: the tenant
    /// is over its rate now; ask again later).
    Taken {
        admitted: bool,
    },
    Nodes {
        items: Vec<crate::ClusterNodeResponse>,
    },
    /// How many of the runs in [`AdminRequest::TakeUpRuns`] are now driven (runs ended, paused
    /// or unknown are skipped).
    TakenUp {
        runs: u32,
    },
    /// The request was refused or failed.
    Error {
        message: String,
    },
}

/// What a gateway runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdminStatus {
    pub version: String,
    /// The process id.
    pub pid: u32,
    /// The HTTP address it listens on (`none (a worker node)` for a worker).
    pub listen: String,
    pub store: String,
    /// Sessions with an actor in memory.
    pub active_sessions: u64,
    /// The configuration revision it runs (none before the first).
    pub config_revision: Option<i64>,
    /// Turns running now.
    #[serde(default)]
    pub running_turns: u64,
    /// Whether it takes no new events (`clade gateway drain`).
    #[serde(default)]
    pub draining: bool,
    pub uptime_secs: u64,
}
