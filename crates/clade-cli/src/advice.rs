//! What to do about a failure, in the command line's words. Libraries say what went wrong;
//! the CLI says which command, flag or variable fixes it (the gateway says it in HTTP terms).

/// The advice for the first failure in `err`'s chain that the CLI has advice for.
pub(crate) fn for_error(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(|cause| {
        let store =
            cause.downcast_ref::<clade_store::Error>().or_else(|| match cause
                .downcast_ref::<clade_runtime::engine::Error>(
            ) {
                Some(clade_runtime::engine::Error::Store(store)) => Some(store),
                _ => None,
            });
        match store {
            Some(store) => for_store(store),
            None => for_local_model(cause),
        }
    })
}

/// A local model that is missing or damaged is installed (again) by `clade models fetch`.
#[cfg(feature = "local-models")]
pub(crate) fn for_local_model(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use clade_model::local_chat::LoadError;
    use clade_model::local_embeddings::Error as Embeddings;
    use clade_runtime::memory::LocalModelError;
    if let Some(err) = cause.downcast_ref::<LoadError>() {
        return match err {
            LoadError::Missing(_) => Some("install it with `clade models fetch local`"),
            LoadError::Corrupt { .. } => Some("install it again with `clade models fetch local`"),
            _ => None,
        };
    }
    let embeddings = cause.downcast_ref::<Embeddings>().or_else(|| {
        match cause.downcast_ref::<LocalModelError>() {
            Some(LocalModelError::Load(err)) => Some(err),
            _ => None,
        }
    })?;
    match embeddings {
        Embeddings::Missing(_) | Embeddings::Corrupt { .. } => {
            Some("install the embeddings model (again) with `clade models fetch <name>`")
        }
        _ => None,
    }
}

#[cfg(not(feature = "local-models"))]
pub(crate) fn for_local_model(_cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    None
}

fn for_store(err: &clade_store::Error) -> Option<&'static str> {
    use clade_store::Error as E;
    Some(match err {
        E::TenantNotFound(_) => "list tenants with `clade tenants list`",
        E::AgentNotFound(_) => "list agents with `clade agents list`",
        E::SecretNotFound(_) => "list secrets with `clade secrets list`",
        E::TokenNotFound(_) => "list tokens with `clade tokens list`",
        E::BadToken => "create a token with `clade tokens create`",
        E::SessionNotFound(_) => "list sessions with `clade sessions list`",
        E::GrantNotFound(_) => "list grants with `clade grants list`",
        E::ApprovalNotFound(_) => "list pending approvals with `clade approvals list`",
        E::NewerSchema { .. } => {
            "upgrade clade, or point --store or --data-dir at another database"
        }
        E::NeedsMigration { .. } => {
            "run `clade migrate` (or start `clade serve`, which migrates) first"
        }
        E::Unreachable { .. } => "the URL comes from --store or CLADE_STORE",
        E::InUse { .. } | E::CannotOpen { .. } => "or give this one its own --data-dir or --store",
        E::DataDir { .. } => "or pass a writable --data-dir",
        E::MasterKeyMissing { .. } | E::WrongMasterKey { .. } => {
            "or set CLADE_MASTER_KEY to the key the secrets were encrypted with"
        }
        E::WriterGone => "restart clade",
        E::ChecksumMismatch { .. } => {
            "restore it from a backup; if you changed it on purpose with another SQLite program, \
             accept the change with `clade migrate --rewrite-checksums` (no server running)"
        }
        E::ChecksumsInterrupted { .. } => "run `clade migrate` with no server running to finish it",
        E::NotAnAgentArchive { format } if format == clade_memory::archive::FORMAT => {
            "it is a memory export: read it with `clade memory import`"
        }
        E::ArchivedAgentHeld { .. } => {
            "delete that agent first (`clade agents delete`) to bring it back from the archive"
        }
        E::LeaseeNotFound { kind, .. } if kind == clade_store::peers::SUBSCRIBER => {
            "pair the subscriber first with `clade pair subscriber`"
        }
        E::LeaseeNotFound { .. } => "pair the operator for leases with `clade pair cli --leased`",
        _ => return None,
    })
}

/// The one line `clade` prints for a failure: the context chain joined, then the advice.
pub(crate) fn error_line(err: &anyhow::Error) -> String {
    let text = chain_text(err);
    match for_error(err) {
        Some(advice) => format!("error: {text}; {advice}"),
        None => format!("error: {text}"),
    }
}

/// The context chain joined with `: `, each cause said once: a cause whose text an outer
/// message already carries (a library error that prints its source) is not repeated, and a
/// cause's own `error: ` prefix is dropped.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        let said = said.trim();
        let said = said.strip_prefix("error: ").unwrap_or(said);
        if said.is_empty() || text.contains(said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(said);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_get_the_cli_s_advice_and_others_none() {
        let missing = anyhow::Error::from(clade_store::Error::AgentNotFound("bob".into()));
        assert_eq!(
            error_line(&missing),
            "error: agent \"bob\" not found; list agents with `clade agents list`"
        );
        let wrapped = missing.context("cannot show the agent");
        assert_eq!(
            error_line(&wrapped),
            "error: cannot show the agent: agent \"bob\" not found; list agents with `clade agents list`"
        );
        let through_engine = anyhow::Error::from(clade_runtime::engine::Error::Store(
            clade_store::Error::SessionNotFound("s1".into()),
        ));
        assert!(
            error_line(&through_engine).ends_with("; list sessions with `clade sessions list`")
        );
        assert_eq!(error_line(&anyhow::anyhow!("bad flag")), "error: bad flag");
        let memory_export = anyhow::Error::from(clade_store::Error::NotAnAgentArchive {
            format: clade_memory::archive::FORMAT.into(),
        });
        assert!(error_line(&memory_export).ends_with("`clade memory import`"));
        let other =
            anyhow::Error::from(clade_store::Error::NotAnAgentArchive { format: "zip".into() });
        assert_eq!(
            error_line(&other),
            "error: this is not an agent archive (format \"zip\", not \"clade.agent\")"
        );
        let subscriber = anyhow::Error::from(clade_store::Error::LeaseeNotFound {
            kind: clade_store::peers::SUBSCRIBER.into(),
            peer: "laptop".into(),
            what: "this tenant's events".into(),
        });
        assert!(error_line(&subscriber).ends_with("`clade pair subscriber`"));
    }

    #[cfg(feature = "local-models")]
    #[test]
    fn a_missing_or_damaged_local_model_is_fetched_again() {
        let missing = clade_model::local_chat::LoadError::Missing("m.gguf".into());
        let line = error_line(&anyhow::Error::from(missing).context("cannot load the model"));
        assert!(line.ends_with("install it with `clade models fetch local`"), "{line}");
        let tmp = tempfile::tempdir().unwrap();
        let Err(err) = clade_runtime::memory::local_embeddings(tmp.path(), "none") else {
            panic!("no embeddings model is there");
        };
        let line = error_line(&anyhow::Error::from(err));
        assert!(line.contains("not installed") && line.contains("clade models fetch"), "{line}");
    }

    /// A library error that prints its source, under context, says the source once.
    #[derive(Debug)]
    struct Unread {
        source: std::io::Error,
    }

    impl std::fmt::Display for Unread {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read clade.yaml: {}", self.source)
        }
    }

    impl std::error::Error for Unread {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_is_said_once_and_without_a_second_error_prefix() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        let err = anyhow::Error::from(Unread { source: io }).context("config validate");
        assert_eq!(
            error_line(&err),
            "error: config validate: cannot read clade.yaml: No such file (os error 2)"
        );
        let prefixed = anyhow::anyhow!("error: line 3 column 3").context("f.yaml:3:3");
        assert_eq!(error_line(&prefixed), "error: f.yaml:3:3: line 3 column 3");
    }
}
