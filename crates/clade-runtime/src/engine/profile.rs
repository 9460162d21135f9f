//! Process kinds as profiles: the one place that knows how a conversation's turn, a branch and
//! a worker differ. A session's origin picks its profile ([`of`]); the actor, the turn and the
//! context sources ask the profile and never name a kind. A new kind of process is a new
//! [`Profile`] here, its origin in [`of`], and a test.

use std::time::Duration;

use clade_config::SessionsConfig;
use clade_core::{Origin, ProcessKind};
use clade_store::Source;

use crate::forks::{SET_STATUS, STARTERS};

/// What a kind of process does differently.
pub(crate) trait Profile: Send + Sync {
    /// The kind its model calls are routed, limited and counted as.
    fn kind(&self) -> ProcessKind;

    /// How far one of its turns may go before it yields or fails.
    fn limits(&self, sessions: &SessionsConfig) -> Limits;

    /// Its share of the agent's spending: the tokens one run may spend, and the setting that
    /// says so; `None` leaves the conversation's budgets to apply.
    fn token_share(&self, _sessions: &SessionsConfig) -> Option<(u64, &'static str)> {
        None
    }

    /// Whether its turns are offered the tool `name`; `allowed` is what its fork's row lists
    /// (empty: no list).
    fn offers(&self, name: &str, allowed: &[String]) -> bool;

    /// Whether its session is a fork of another: its row says what it may use and whether it
    /// was cancelled, and once it has nothing left to run it reports to its parent.
    fn forked(&self) -> bool {
        false
    }

    /// Whether its context shows the conversation it forked (a branch's view).
    fn sees_its_parent(&self) -> bool {
        false
    }

    /// Whether its context lists the branches and workers it started that still run.
    fn shows_work_under_way(&self) -> bool {
        false
    }

    /// The line that tells the model where it is, for a session from `source`; `today` is the
    /// date.
    fn whereabouts(&self, source: &Source, today: &str) -> String;
}

/// How far one turn may go: model calls before it yields, and time before it fails, with the
/// setting that sets that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_iterations: u32,
    pub(crate) timeout: Duration,
    pub(crate) timeout_setting: &'static str,
}

impl Limits {
    fn of_fork(limits: clade_config::ForkLimitsResolved, timeout_setting: &'static str) -> Self {
        Limits {
            max_iterations: limits.max_iterations,
            timeout: Duration::from_secs(limits.timeout_secs),
            timeout_setting,
        }
    }
}

/// The profile of a session whose events come from `origin`.
pub(crate) fn of(origin: &Origin) -> &'static dyn Profile {
    match origin {
        Origin::Branch => &Branch,
        Origin::Worker => &Worker,
        _ => &Conversation,
    }
}

/// A conversation's own turn: with a person on a platform, another agent, or a schedule.
struct Conversation;

/// A branch of a conversation: a parallel line of thought on its view of the conversation.
struct Branch;

/// A worker a conversation started: a fresh context with a task and the tools it was given.
struct Worker;

impl Profile for Conversation {
    fn kind(&self) -> ProcessKind {
        ProcessKind::Channel
    }

    fn limits(&self, sessions: &SessionsConfig) -> Limits {
        Limits {
            max_iterations: sessions.max_iterations,
            timeout: Duration::from_secs(sessions.turn_timeout_secs),
            timeout_setting: "sessions.turn_timeout_secs",
        }
    }

    fn offers(&self, name: &str, _: &[String]) -> bool {
        name != SET_STATUS
    }

    fn shows_work_under_way(&self) -> bool {
        true
    }

    fn whereabouts(&self, source: &Source, today: &str) -> String {
        let topic = source.channel.strip_prefix(clade_store::messages::TOPIC_CHANNEL);
        match (&source.platform, topic) {
            (Origin::Agent, Some(topic)) => format!(
                "You receive what the agent {}, another agent of your team, publishes on the topic {topic:?}, which you subscribed to. Today is {today} (UTC).",
                source.actor
            ),
            (Origin::Agent, None) => format!(
                "You are talking with the agent {}, another agent of your team, which messages you with agent.send and agent.ask; when it asks, your reply is its answer. Today is {today} (UTC).",
                source.actor
            ),
            _ => format!(
                "You are talking on {} in channel {} with {}. Today is {today} (UTC).",
                source.platform, source.channel, source.actor
            ),
        }
    }
}

impl Profile for Branch {
    fn kind(&self) -> ProcessKind {
        ProcessKind::Branch
    }

    fn limits(&self, sessions: &SessionsConfig) -> Limits {
        Limits::of_fork(sessions.branch_limits(), "sessions.branches.timeout_secs")
    }

    fn token_share(&self, sessions: &SessionsConfig) -> Option<(u64, &'static str)> {
        Some((sessions.branch_limits().max_tokens, "sessions.branches.max_tokens"))
    }

    /// Branches start no forks and set no status line.
    fn offers(&self, name: &str, _: &[String]) -> bool {
        !STARTERS.contains(&name) && name != SET_STATUS
    }

    fn forked(&self) -> bool {
        true
    }

    fn sees_its_parent(&self) -> bool {
        true
    }

    fn whereabouts(&self, source: &Source, today: &str) -> String {
        format!(
            "You are a branch of your conversation {}: a parallel line of thought about the one task below, while the conversation goes on without you. You see the conversation up to where you were started. Think the task through and end with your conclusion: your reply goes back into the conversation as a message. Today is {today} (UTC).",
            source.actor
        )
    }
}

impl Profile for Worker {
    fn kind(&self) -> ProcessKind {
        ProcessKind::Worker
    }

    fn limits(&self, sessions: &SessionsConfig) -> Limits {
        Limits::of_fork(sessions.worker_limits(), "sessions.workers.timeout_secs")
    }

    fn token_share(&self, sessions: &SessionsConfig) -> Option<(u64, &'static str)> {
        Some((sessions.worker_limits().max_tokens, "sessions.workers.max_tokens"))
    }

    /// Workers start no forks, set their status line, and when given tools have only those.
    fn offers(&self, name: &str, allowed: &[String]) -> bool {
        !STARTERS.contains(&name)
            && (name == SET_STATUS || allowed.is_empty() || allowed.iter().any(|a| a == name))
    }

    fn forked(&self) -> bool {
        true
    }

    fn whereabouts(&self, source: &Source, today: &str) -> String {
        format!(
            "You are a worker started by your conversation {}: carry out the task below with the tools you have. Say how it is getting on with worker.set_status as you go; your reply is your report, which goes back into the conversation as a message. Today is {today} (UTC).",
            source.actor
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(platform: &str, channel: &str) -> Source {
        Source { platform: platform.into(), channel: channel.into(), actor: "a".into() }
    }

    #[test]
    fn each_origin_runs_as_its_profile() {
        let kind = |platform: &str| of(&Origin::parse(platform)).kind();
        assert_eq!(kind("branch"), ProcessKind::Branch);
        assert_eq!(kind("worker"), ProcessKind::Worker);
        for conversation in ["http", "telegram", "agent", "cron", "Branch"] {
            assert_eq!(kind(conversation), ProcessKind::Channel, "{conversation}");
        }
        let sessions = SessionsConfig::default();
        let conversation = of(&Origin::parse("http"));
        assert_eq!(conversation.limits(&sessions).timeout_setting, "sessions.turn_timeout_secs");
        assert_eq!(conversation.token_share(&sessions), None, "its budgets apply");
        assert!(!conversation.forked() && conversation.shows_work_under_way());
        let branch = of(&Origin::Branch);
        assert!(branch.forked() && branch.sees_its_parent() && !branch.shows_work_under_way());
        assert_eq!(
            branch.limits(&sessions).max_iterations,
            sessions.branch_limits().max_iterations
        );
        let worker = of(&Origin::Worker);
        assert!(worker.forked() && !worker.sees_its_parent());
        assert_eq!(
            worker.token_share(&sessions).map(|(_, s)| s),
            Some("sessions.workers.max_tokens")
        );
    }

    #[test]
    fn tools_are_offered_by_profile() {
        let (conversation, branch, worker) = (&Conversation, &Branch, &Worker);
        let start = STARTERS[0];
        assert!(conversation.offers(start, &[]) && !conversation.offers(SET_STATUS, &[]));
        assert!(!branch.offers(start, &[]) && !branch.offers(SET_STATUS, &[]));
        assert!(branch.offers("time.now", &[]));
        assert!(!worker.offers(start, &[]) && worker.offers(SET_STATUS, &[]));
        let given = ["time.now".to_owned()];
        assert!(worker.offers("time.now", &given) && !worker.offers("shell.exec", &given));
        assert!(worker.offers(SET_STATUS, &given), "its status line whatever it was given");
    }

    #[test]
    fn the_model_is_told_where_it_is() {
        let today = "2026-11-28";
        let on = |profile: &dyn Profile, platform: &str, channel: &str| {
            profile.whereabouts(&source(platform, channel), today)
        };
        assert!(on(&Conversation, "http", "c").starts_with("You are talking on http in channel c"));
        assert!(on(&Conversation, "agent", "ada").contains("another agent of your team"));
        assert!(
            on(&Conversation, "agent", "topic:news").contains("publishes on the topic \"news\"")
        );
        assert!(on(&Branch, "branch", "x").starts_with("You are a branch"));
        assert!(on(&Worker, "worker", "x").starts_with("You are a worker"));
        assert!(on(&Worker, "worker", "x").contains(today));
    }

    /// A new kind is one profile: this skeleton (a reviewer that may use only reading tools,
    /// with a short leash) needs nothing beyond its `impl`, and the engine's seams accept it.
    #[test]
    fn a_new_kind_is_one_profile() {
        struct Reviewer;
        impl Profile for Reviewer {
            fn kind(&self) -> ProcessKind {
                ProcessKind::Worker
            }
            fn limits(&self, _: &SessionsConfig) -> Limits {
                Limits {
                    max_iterations: 2,
                    timeout: Duration::from_secs(30),
                    timeout_setting: "reviewers.timeout_secs",
                }
            }
            fn offers(&self, name: &str, _: &[String]) -> bool {
                name.ends_with(".read") || name == "time.now"
            }
            fn whereabouts(&self, source: &Source, today: &str) -> String {
                format!("You review what {} wrote. Today is {today} (UTC).", source.actor)
            }
        }
        let reviewer: &dyn Profile = &Reviewer;
        assert!(reviewer.offers("shared.read", &[]) && !reviewer.offers("shell.exec", &[]));
        assert!(!reviewer.forked(), "defaults: not a fork, no parent's view, no work list");
        assert_eq!(reviewer.limits(&SessionsConfig::default()).max_iterations, 2);
        assert!(reviewer.whereabouts(&source("http", "c"), "today").contains("review what a"));
    }
}
