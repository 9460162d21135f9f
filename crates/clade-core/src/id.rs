//! Time-ordered identifiers (UUIDv7), one newtype per kind so they cannot be mixed up.

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use uuid::{ContextV7, Uuid};

use crate::time::Timestamp;

/// The id string was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} id {input:?}: expected a UUID such as 0192f0c6-7d2a-7c3e-9f1a-2b3c4d5e6f70"
)]
pub struct Error {
    kind: &'static str,
    input: String,
}

/// One counter for the process, so ids made within the same millisecond still sort in the
/// order they were made (RFC 9562, method 1).
static CONTEXT: Mutex<ContextV7> = Mutex::new(ContextV7::new());

fn v7(at: Timestamp) -> Uuid {
    let millis = u64::try_from(at.as_millis()).unwrap_or(0);
    let context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let ts = uuid::Timestamp::from_unix(
        &*context,
        millis / 1000,
        u32::try_from((millis % 1000) * 1_000_000).unwrap_or(0),
    );
    Uuid::new_v7(ts)
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id whose leading bits are `at`, so ids sort by creation time.
            pub fn generate(at: Timestamp) -> Self {
                Self(v7(at))
            }

            /// Rebuilds an id from the 16 bytes the store keeps.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// The 16 bytes the store keeps.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Parses the hyphenated text form.
            pub fn parse(input: &str) -> Result<Self, Error> {
                Uuid::parse_str(input)
                    .map(Self)
                    .map_err(|_| Error { kind: $kind, input: input.to_owned() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

define_id!(
    /// Identifies a tenant.
    TenantId,
    "tenant"
);
define_id!(
    /// Identifies an agent across all tenants.
    AgentId,
    "agent"
);
define_id!(
    /// Identifies an API token (never the token's secret value).
    TokenId,
    "token"
);
define_id!(
    /// Identifies a session (tenant + agent + platform + channel + actor).
    SessionId,
    "session"
);
define_id!(
    /// Identifies an inbound envelope.
    EventId,
    "event"
);
define_id!(
    /// Identifies a turn.
    TurnId,
    "turn"
);
define_id!(
    /// Identifies a durable execution (see `clade_core::ExecutionKind`).
    ExecutionId,
    "execution"
);
define_id!(
    /// Identifies a grant (a policy rule held by one agent).
    GrantId,
    "grant"
);
define_id!(
    /// Identifies a lease: a temporary grant to a paired component.
    LeaseId,
    "lease"
);
define_id!(
    /// Identifies an item of an agent's long-term memory.
    MemoryId,
    "memory"
);
define_id!(
    /// Identifies a message from one agent to another (an `ask`'s correlation id).
    MessageId,
    "message"
);

define_id!(
    /// Identifies a breakpoint: where an agent's turns pause for a person to step through.
    BreakpointId,
    "breakpoint"
);
define_id!(
    /// Identifies a stop: one turn paused at a breakpoint, waiting for a person.
    StopId,
    "stop"
);
define_id!(
    /// Identifies a request for an operator's approval of one tool call.
    ApprovalId,
    "approval"
);

/// A turn is one kind of execution: its execution has the turn's own id.
impl From<TurnId> for ExecutionId {
    fn from(turn: TurnId) -> Self {
        Self(turn.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let a = AgentId::generate(Timestamp::from_millis(1_000));
        let b = AgentId::generate(Timestamp::from_millis(2_000));
        assert!(a < b);
    }

    #[test]
    fn ids_of_one_millisecond_still_sort_in_creation_order() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let ids: Vec<_> = (0..1000).map(|_| AgentId::generate(at)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn text_form_round_trips() {
        let id = TenantId::generate(Timestamp::from_millis(1_700_000_000_000));
        assert_eq!(TenantId::parse(&id.to_string()), Ok(id));
        assert_eq!(TenantId::from_bytes(*id.as_bytes()), id);
    }

    #[test]
    fn bad_text_names_the_kind() {
        let err = AgentId::parse("nope").unwrap_err();
        assert!(err.to_string().starts_with("invalid agent id \"nope\""), "{err}");
    }
}
