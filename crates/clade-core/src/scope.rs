//! What an API token may do within its tenant.

use std::fmt;

/// One right of a token. A route names the scopes that may call it; a token holds some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Everything of the tenant (agents, grants, audit, …) except deciding approvals.
    Admin,
    /// Use agents and sessions: send events, call tools, steer, resume and cancel sessions.
    Operate,
    /// Send events only.
    Send,
    /// Read agents, sessions, turns, streams, usage, grants and approvals.
    Read,
    /// Decide approvals (an operator's gate: not implied by any other scope).
    Approve,
}

impl Scope {
    pub const ALL: [Scope; 5] =
        [Scope::Admin, Scope::Operate, Scope::Send, Scope::Read, Scope::Approve];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operate => "operate",
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Approve => "approve",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether holding `self` gives `needed`: admin gives operate, send and read; operate gives
    /// send and read; approve gives only itself.
    pub fn gives(self, needed: Scope) -> bool {
        use Scope::*;
        self == needed
            || matches!((self, needed), (Admin, Operate | Send | Read) | (Operate, Send | Read))
    }

    /// Whether any of `held` gives any of `needed`.
    pub fn allows(held: &[Scope], needed: &[Scope]) -> bool {
        held.iter().any(|h| needed.iter().any(|n| h.gives(*n)))
    }

    /// `admin,approve` as stored.
    pub fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Reads [`Scope::join`]'s form; the error names the unknown scope.
    pub fn split(text: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                format!("unknown scope {part:?}: use admin, operate, send, read or approve")
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_imply_only_narrower_ones_and_approve_stands_alone() {
        use Scope::*;
        assert!(Admin.gives(Read) && Admin.gives(Send) && Operate.gives(Send));
        assert!(!Admin.gives(Approve) && !Operate.gives(Admin) && !Send.gives(Read));
        assert!(!Read.gives(Send) && !Approve.gives(Read));
        assert_eq!(Scope::split("admin, approve,admin").unwrap(), vec![Admin, Approve]);
        assert!(Scope::split("root").unwrap_err().contains("\"root\""));
        assert_eq!(Scope::join(&[Send, Read]), "send,read");
    }
}
