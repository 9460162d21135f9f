//! `clade doctor`: checks what a new user trips over, each with what to do about it. It runs
//! before any store is opened, so it reports a broken data dir or config instead of stopping
//! at it.

use std::path::Path;

use anyhow::Result;

use crate::cli::Global;
use crate::context;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Works, but something may bite later.
    Warn,
    Fail,
}

struct Check {
    name: &'static str,
    outcome: Outcome,
    /// What was found, and for anything but `Ok` what to do.
    said: String,
}

fn check(name: &'static str, outcome: Outcome, said: impl Into<String>) -> Check {
    Check { name, outcome, said: said.into() }
}

/// Runs every check, prints one line each, and fails when any check failed.
pub(crate) async fn run(global: &Global) -> Result<()> {
    let mut checks = Vec::new();
    let root = context::data_dir_path(global)?;
    let data_dir = match clade_store::DataDir::open(&root) {
        Ok(dir) => {
            checks.push(check("data dir", Outcome::Ok, format!("{} is writable", root.display())));
            Some(dir)
        }
        Err(err) => {
            checks.push(check(
                "data dir",
                Outcome::Fail,
                format!("{err}: make it writable by this user, or pass --data-dir DIR"),
            ));
            None
        }
    };
    let config = match data_dir.as_ref().map(|dir| context::load_config(global, dir)) {
        Some(Ok(config)) => {
            checks.push(check("config", Outcome::Ok, "valid"));
            Some(config)
        }
        Some(Err(err)) => {
            checks.push(check(
                "config",
                Outcome::Fail,
                format!("{err:#}: fix it (`clade config validate` shows the same)"),
            ));
            None
        }
        None => None,
    };
    if let (Some(dir), Some(config)) = (&data_dir, &config) {
        checks.push(store_check(global, dir, config).await);
        checks.push(token_check(dir));
        checks.push(model_check(dir, config));
        checks.push(port_check(config).await);
        checks.push(sandbox_check(config).await);
    }
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut failed = 0;
    for c in &checks {
        let mark = match c.outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => {
                failed += 1;
                "FAIL"
            }
        };
        println!("{mark}  {:width$}  {}", c.name, c.said);
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed; each says what to do", checks.len());
    }
    Ok(())
}

async fn store_check(
    global: &Global,
    dir: &clade_store::DataDir,
    config: &clade_config::Config,
) -> Check {
    let location = match context::location(global, dir, config) {
        Ok(location) => location,
        Err(err) => return check("store", Outcome::Fail, format!("{err:#}")),
    };
    let shown = match &location {
        clade_store::Location::Sqlite(path) => format!("SQLite at {}", path.display()),
        clade_store::Location::Postgres(_) => "PostgreSQL".to_owned(),
    };
    if let clade_store::Location::Sqlite(path) = &location
        && std::fs::metadata(path).is_err()
    {
        return check(
            "store",
            Outcome::Warn,
            format!("{shown}: not made yet; `clade serve` makes it"),
        );
    }
    let options = clade_store::StoreOptions {
        migrations: clade_store::Migrations::RequireCurrent,
        ..clade_store::StoreOptions::new(location, clade_store::Durability::Normal)
    };
    match clade_store::Store::open(options).await {
        Ok(_) => check("store", Outcome::Ok, format!("{shown} opens and is current")),
        Err(err) => check(
            "store",
            Outcome::Fail,
            format!(
                "{shown}: {err}; for PostgreSQL check that the server runs and the URL is right, for a store that needs upgrading run `clade migrate`"
            ),
        ),
    }
}

fn token_check(dir: &clade_store::DataDir) -> Check {
    match dir.read_token() {
        Ok(Some(_)) => check("token", Outcome::Ok, format!("{}", dir.token_path().display())),
        Ok(None) => check(
            "token",
            Outcome::Warn,
            format!(
                "{} is not there yet: `clade serve` writes it on its first start",
                dir.token_path().display()
            ),
        ),
        Err(err) => check("token", Outcome::Fail, format!("{err}: make it readable by this user")),
    }
}

/// Which model answers with nothing configured, and whether the local one loads.
#[allow(clippy::disallowed_methods)] // The configuration edge: provider keys come from the environment.
fn model_check(dir: &clade_store::DataDir, config: &clade_config::Config) -> Check {
    if !config.models.is_empty() {
        let missing: Vec<String> = config
            .models
            .iter()
            .filter_map(|(name, m)| {
                let var = m.api_key_env.as_deref()?;
                context::env_value(var).is_none().then(|| format!("models.{name} needs {var}"))
            })
            .collect();
        return if missing.is_empty() {
            check("models", Outcome::Ok, format!("{} configured", config.models.len()))
        } else {
            check(
                "models",
                Outcome::Fail,
                format!("{}: set the variables before `clade serve`", missing.join(", ")),
            )
        };
    }
    for key in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
        if context::env_value(key).is_some() {
            return check("models", Outcome::Ok, format!("{key} is set: that provider answers"));
        }
    }
    let file = dir.models_dir().join(clade_runtime::models::DEFAULT_LOCAL_CHAT).join("model.gguf");
    local_model_check(&file)
}

#[cfg(feature = "local-models")]
fn local_model_check(file: &Path) -> Check {
    if std::fs::metadata(file).is_err() {
        return check(
            "models",
            Outcome::Warn,
            "no model configured and no provider key: agents answer with the echoing offline provider; `clade models fetch local` installs a small model that runs here",
        );
    }
    match clade_model::local_chat::LocalChat::load(file) {
        Ok(model) => check(
            "models",
            Outcome::Ok,
            format!(
                "the local model {} loads ({} tokens of context)",
                model.model_name(),
                model.context()
            ),
        ),
        Err(err) => {
            let advice = crate::advice::for_local_model(&err).unwrap_or("");
            check("models", Outcome::Fail, format!("{err}; {advice}").trim_end_matches("; "))
        }
    }
}

#[cfg(not(feature = "local-models"))]
fn local_model_check(_file: &Path) -> Check {
    check(
        "models",
        Outcome::Warn,
        "no model configured and no provider key, and this build has no local models: set OPENAI_API_KEY or ANTHROPIC_API_KEY, or configure `models` in clade.yaml",
    )
}

/// Whether `server.listen` is free, or held by a Clade gateway already.
async fn port_check(config: &clade_config::Config) -> Check {
    let listen = config.server.listen.clone();
    match tokio::net::TcpListener::bind(&listen).await {
        Ok(_) => check("port", Outcome::Ok, format!("{listen} is free for `clade serve`")),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            let url = format!("http://{listen}/healthz");
            let ours = reqwest::Client::new()
                .get(&url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ours {
                check("port", Outcome::Ok, format!("a gateway answers on {listen}"))
            } else {
                check(
                    "port",
                    Outcome::Fail,
                    format!(
                        "{listen} is taken by another program: stop it, or set server.listen (or `clade serve --listen`)"
                    ),
                )
            }
        }
        Err(err) => check(
            "port",
            Outcome::Fail,
            format!(
                "{listen} cannot be listened on ({err}): set server.listen to an address of this host"
            ),
        ),
    }
}

/// Whether bubblewrap is there and runs a command, when the sandbox is on.
async fn sandbox_check(config: &clade_config::Config) -> Check {
    if config.tools.sandbox == clade_config::SandboxMode::None {
        return check(
            "sandbox",
            Outcome::Warn,
            "off (tools.sandbox: none): host-touching tools run unconfined",
        );
    }
    match context::sandbox_of(config).probe().await {
        Ok(()) => check("sandbox", Outcome::Ok, "bubblewrap runs commands"),
        Err(err) => check(
            "sandbox",
            Outcome::Fail,
            format!(
                "{err}: install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and allow unprivileged user namespaces; without it, tools that touch the host are refused"
            ),
        ),
    }
}
