//! Why a tool call failed, with what the model is told kept apart from what only the
//! operator's log may hold.

/// Why a tool call failed. `Display` is what the model reads; [`Error::detail`] is the cause
/// the operator's log holds besides, which the model never sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The arguments do not fit the tool: its schema, or a rule of its own.
    #[error("invalid arguments for {tool}: {reason}")]
    InvalidArguments { tool: String, reason: String },
    /// The policy, or an operator asked, refused the call.
    #[error("denied: {reason}")]
    Denied { reason: String },
    /// The tool could not do what was asked, for a reason the model can act on: a file that
    /// does not exist, a name already taken, a limit reached, a command that failed.
    #[error("{0}")]
    Failed(String),
    /// Something on the gateway's side failed (its store, a service it relies on). The model
    /// is told that much and what to do; the cause is for the operator.
    #[error("{told}")]
    Internal { told: String, detail: String },
}

impl Error {
    /// A failure the model can act on, told as `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// A failure on the gateway's side: the model reads `told`, the operator's log `cause`.
    pub fn internal(told: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::Internal { told: told.into(), detail: cause.to_string() }
    }

    /// A failure of something the tool relies on (its store, say): in the failure's own words
    /// when the caller can act on it, else only that it happened ([`clade_core::Fault`]).
    pub fn relied(error: impl clade_core::Fault) -> Self {
        if error.is_internal() {
            Self::internal(
                "the gateway could not read or write its records: try again later",
                error,
            )
        } else {
            Self::Failed(error.to_string())
        }
    }

    /// What the model is told of a call of `tool` that failed so; a cause it is not told goes
    /// to the operator's log.
    pub fn told(&self, tool: &str) -> String {
        if let Some(detail) = self.detail() {
            tracing::warn!(tool, error = %self, detail, "a tool call failed on the gateway's side");
        }
        self.to_string()
    }

    /// The same error with each of its texts passed through `redact` (the secrets a call was
    /// granted, taken out of what it says).
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Self {
        match self {
            Self::InvalidArguments { tool, reason } => {
                Self::InvalidArguments { tool, reason: redact(&reason) }
            }
            Self::Denied { reason } => Self::Denied { reason: redact(&reason) },
            Self::Failed(text) => Self::Failed(redact(&text)),
            Self::Internal { told, detail } => {
                Self::Internal { told: redact(&told), detail: redact(&detail) }
            }
        }
    }

    /// The cause only the operator's log holds, when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Internal { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

// What the model is told of these is their own text: each says what went wrong and, where it
// can, what to do.
impl From<crate::sandbox::SandboxError> for Error {
    fn from(error: crate::sandbox::SandboxError) -> Self {
        Self::Failed(error.to_string())
    }
}

impl From<crate::workspace::PathError> for Error {
    fn from(error: crate::workspace::PathError) -> Self {
        Self::Failed(error.to_string())
    }
}

impl From<crate::workspace::FileError> for Error {
    fn from(error: crate::workspace::FileError) -> Self {
        match error {
            // The workspace's own directory is the gateway's to keep: its path and cause are
            // the operator's.
            crate::workspace::FileError::Workspace(cause) => {
                Self::internal("the workspace could not be opened: try again later", cause)
            }
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<crate::net::EgressError> for Error {
    fn from(error: crate::net::EgressError) -> Self {
        Self::Failed(error.to_string())
    }
}

impl From<crate::net::SendError> for Error {
    fn from(error: crate::net::SendError) -> Self {
        Self::Failed(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_reads_the_message_and_never_the_cause() {
        let failed = Error::from("no such file \"a.txt\"");
        assert_eq!(failed.to_string(), "no such file \"a.txt\"");
        assert_eq!(failed.detail(), None);
        let internal = Error::internal(
            "the gateway could not save the job: try again later",
            "database is locked (code 5) at /srv/clade/clade.db",
        );
        assert!(!internal.to_string().contains("clade.db"), "{internal}");
        assert_eq!(internal.detail(), Some("database is locked (code 5) at /srv/clade/clade.db"));
        let hidden = Error::internal("told pw-123", "cause pw-123")
            .redacted(|t| t.replace("pw-123", "[redacted]"));
        assert_eq!(
            (hidden.to_string().as_str(), hidden.detail()),
            ("told [redacted]", Some("cause [redacted]"))
        );
        let invalid = Error::InvalidArguments {
            tool: "fs.read".into(),
            reason: "missing field `path`".into(),
        };
        assert_eq!(invalid.to_string(), "invalid arguments for fs.read: missing field `path`");
    }
}
