use anyhow::Result;
use clade_config::Config;

use crate::cli::{ConfigCommand, Global};
use crate::context;

pub(super) fn run(global: &Global, cmd: &ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&Config::json_schema())?);
        }
        ConfigCommand::Validate { file } => {
            let path = match (file, &global.config) {
                (Some(path), _) | (None, Some(path)) => path.clone(),
                (None, None) => context::data_dir_path(global)?.join(clade_config::FILE_NAME),
            };
            let config = Config::load(&path)?;
            // Heartbeats are jobs: checked as every job is.
            clade_sched::heartbeats::check(
                &config,
                clade_core::Clock::now(&clade_core::SystemClock),
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("{}: ok", path.display());
        }
    }
    Ok(())
}
