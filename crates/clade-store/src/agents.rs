//! Agents together with their workspaces: the one place that keeps an agent's row and its
//! directory consistent (both exist, or neither).
//!
//! A workspace is created lazily, on first use, from the agent's persona template, so a
//! million idle agents cost a million rows and no directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clade_core::{Agent, AgentConfig, AgentId, Handle, TemplateName, TenantId};

use crate::datadir::{DataDir, create_dir};
use crate::error::{Error, Result};
use crate::store::{NewAgent, Store};

/// The persona files every workspace is seeded with.
pub const PERSONA_FILES: [&str; 3] = ["SOUL.md", "IDENTITY.md", "USER.md"];
/// Files `clade agents import` recognises (the layout other agent gateways use).
pub const IMPORTABLE_FILES: [&str; 5] =
    ["SOUL.md", "IDENTITY.md", "USER.md", "AGENTS.md", "MEMORY.md"];

/// A template's default tools: rules, as YAML, given to a new agent as grants.
pub const TOOLS_FILE: &str = "tools.yaml";

/// A persona template shipped in the binary: its name, its files, and its default tools.
type BuiltinTemplate = (&'static str, [(&'static str, &'static str); 3], &'static str);

/// Declares a built-in template from `templates/<name>/` (`USER.md` is the default one's).
macro_rules! builtin {
    ($name:literal) => {
        (
            $name,
            [
                ("SOUL.md", include_str!(concat!("../templates/", $name, "/SOUL.md"))),
                ("IDENTITY.md", include_str!(concat!("../templates/", $name, "/IDENTITY.md"))),
                ("USER.md", include_str!("../templates/default/USER.md")),
            ],
            include_str!(concat!("../templates/", $name, "/tools.yaml")),
        )
    };
}

/// The persona templates shipped in the binary: the default and one per role. A folder of the
/// same name under `<data-dir>/templates/` takes precedence.
const BUILTIN_TEMPLATES: [BuiltinTemplate; 6] = [
    builtin!("default"),
    builtin!("assistant"),
    builtin!("researcher"),
    builtin!("coder"),
    builtin!("reviewer"),
    builtin!("operator"),
];

/// The names of the templates shipped in the binary.
pub fn builtin_templates() -> impl Iterator<Item = &'static str> {
    BUILTIN_TEMPLATES.iter().map(|(name, _, _)| *name)
}

/// Limits on what an import copies, so a wrong directory cannot fill the disk.
const MAX_IMPORT_FILE: u64 = 1024 * 1024;
const MAX_IMPORT_TOTAL: u64 = 16 * 1024 * 1024;

/// Creates, imports, deletes agents and materialises their workspaces.
#[derive(Clone)]
pub struct Agents {
    store: Store,
    data_dir: DataDir,
}

impl Agents {
    /// This handle, recording `actor` as who made its changes (see [`Store::acting_as`]).
    pub fn acting_as(&self, actor: impl Into<Arc<str>>) -> Self {
        Self { store: self.store.acting_as(actor), data_dir: self.data_dir.clone() }
    }

    pub fn new(store: Store, data_dir: DataDir) -> Self {
        Self { store, data_dir }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an agent after checking its template exists. No directory is created yet.
    pub async fn create(&self, tenant: TenantId, agent: NewAgent) -> Result<Agent> {
        self.template_files(&agent.config.template, &agent.handle, &agent.handle.to_string())?;
        self.store.agents(tenant).create(agent).await
    }

    /// Like [`Agents::create`], refused ([`crate::Error::QuotaExceeded`], naming `key`, where the
    /// quota is set) when the tenant already has `max` agents; counted in the creating
    /// transaction, so concurrent creations cannot pass it.
    pub async fn create_within(
        &self,
        tenant: TenantId,
        agent: NewAgent,
        max: u64,
        key: &str,
    ) -> Result<Agent> {
        self.template_files(&agent.config.template, &agent.handle, &agent.handle.to_string())?;
        let mut created = self
            .store
            .agents(tenant)
            .create_many_within(vec![agent], Some((max, key.to_owned())))
            .await?;
        created.pop().ok_or_else(|| crate::Error::BadRow("no agent created".into()))
    }

    /// The agent's workspace directory, created and seeded from its template on first use.
    pub fn workspace(&self, agent: &Agent) -> Result<PathBuf> {
        let path = self.workspace_path(agent.id);
        if path.is_dir() {
            return Ok(path);
        }
        let files =
            self.template_files(&agent.config.template, &agent.handle, &agent.display_name)?;
        let staging = self.staging_path(agent.id);
        let result = (|| {
            create_dir(&staging)?;
            for (name, contents) in &files {
                write_file(&staging.join(name), contents.as_bytes())?;
            }
            self.publish(&staging, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        // Another process may have won the race to create it; theirs is as good as ours.
        if path.is_dir() { Ok(path) } else { result.map(|()| path) }
    }

    /// Where the agent's workspace is (whether or not it exists yet).
    /// The folder holding every agent's workspace.
    pub(crate) fn workspaces_dir(&self) -> PathBuf {
        self.data_dir.workspaces_dir()
    }

    pub fn workspace_path(&self, id: AgentId) -> PathBuf {
        self.data_dir.workspaces_dir().join(id.to_string())
    }

    /// Deletes the agent's row, its secrets and its workspace, all or nothing: the workspace is
    /// first moved to the trash, and moved back if the row cannot be deleted.
    pub async fn delete(&self, tenant: TenantId, handle: &str) -> Result<Agent> {
        let agent = self.store.agents(tenant).get(handle).await?;
        let workspace = self.workspace_path(agent.id);
        let trashed = self.data_dir.trash_dir().join(agent.id.to_string());
        let moved = if workspace.is_dir() {
            create_dir(&self.data_dir.trash_dir())?;
            let _ = std::fs::remove_dir_all(&trashed);
            std::fs::rename(&workspace, &trashed).map_err(|source| Error::Io {
                action: "move to trash",
                path: workspace.clone(),
                source,
            })?;
            true
        } else {
            false
        };
        match self.store.agents(tenant).delete(handle).await {
            Ok(agent) => {
                if moved {
                    remove_dir_logged(&trashed);
                }
                Ok(agent)
            }
            Err(err) => {
                if moved {
                    let _ = std::fs::rename(&trashed, &workspace);
                }
                Err(err)
            }
        }
    }

    /// Removes the workspaces of agents already deleted from the store (e.g. with their tenant).
    pub fn remove_workspaces(&self, ids: &[AgentId]) {
        for id in ids {
            let path = self.workspace_path(*id);
            if path.is_dir() {
                remove_dir_logged(&path);
            }
        }
    }

    /// Creates an agent from a folder of persona files (SOUL.md, IDENTITY.md, USER.md,
    /// AGENTS.md, MEMORY.md, any other top-level `.md` file and a `memory/` folder).
    pub async fn import(
        &self,
        tenant: TenantId,
        dir: &Path,
        handle: Option<Handle>,
    ) -> Result<Agent> {
        let files = collect_import(dir)?;
        let handle = match handle {
            Some(handle) => handle,
            None => handle_from_dir(dir)?,
        };
        let display_name = files
            .iter()
            .find(|(rel, _)| rel == Path::new("IDENTITY.md"))
            .and_then(|(_, src)| std::fs::read_to_string(src).ok())
            .and_then(|text| name_from_identity(&text));
        // Stage the workspace with a temporary name, create the row, then publish the folder
        // under the agent's id. A failure at any step removes what the earlier steps made.
        let staging =
            self.data_dir.workspaces_dir().join(format!(".import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let staged = (|| {
            create_dir(&staging)?;
            for (rel, src) in &files {
                let dest = staging.join(rel);
                if let Some(parent) = dest.parent() {
                    create_dir(parent)?;
                }
                std::fs::copy(src, &dest).map_err(|source| Error::Io {
                    action: "copy",
                    path: src.clone(),
                    source,
                })?;
            }
            Ok(())
        })();
        if let Err(err) = staged {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
        let new = NewAgent { handle, display_name, config: AgentConfig::default() };
        let agent = match self.store.agents(tenant).create(new).await {
            Ok(agent) => agent,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(err);
            }
        };
        if let Err(err) = self.publish(&staging, &self.workspace_path(agent.id)) {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = self.store.agents(tenant).delete(agent.handle.as_str()).await;
            return Err(err);
        }
        Ok(agent)
    }

    fn staging_path(&self, id: AgentId) -> PathBuf {
        self.data_dir.workspaces_dir().join(format!(".new-{id}-{}", std::process::id()))
    }

    fn publish(&self, staging: &Path, path: &Path) -> Result<()> {
        std::fs::rename(staging, path).map_err(|source| Error::Io {
            action: "create workspace",
            path: path.to_owned(),
            source,
        })
    }

    /// The files a template seeds, with `{{handle}}` and `{{name}}` filled in.
    /// The template's default tools, as the YAML text of its `tools.yaml` (none for a folder
    /// under `<data-dir>/templates/` without one). A folder of the template's name takes
    /// precedence over the built-in template, as for its persona files.
    pub fn template_tools(&self, template: &TemplateName) -> Result<Option<String>> {
        let dir = self.data_dir.templates_dir().join(template.as_str());
        if dir.is_dir() {
            let path = dir.join(TOOLS_FILE);
            return match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Io { action: "read", path, source }),
            };
        }
        match BUILTIN_TEMPLATES.iter().find(|(n, _, _)| *n == template.as_str()) {
            Some((_, _, tools)) => Ok(Some((*tools).to_owned())),
            None => Err(Error::TemplateNotFound(template.to_string())),
        }
    }

    fn template_files(
        &self,
        template: &TemplateName,
        handle: &Handle,
        name: &str,
    ) -> Result<Vec<(String, String)>> {
        let fill =
            |text: &str| text.replace("{{handle}}", handle.as_str()).replace("{{name}}", name);
        let dir = self.data_dir.templates_dir().join(template.as_str());
        if dir.is_dir() {
            let mut files = Vec::new();
            for file in PERSONA_FILES {
                match std::fs::read_to_string(dir.join(file)) {
                    Ok(text) => files.push((file.to_owned(), fill(&text))),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(Error::Io { action: "read", path: dir.join(file), source });
                    }
                }
            }
            return Ok(files);
        }
        if let Some((_, files, _)) =
            BUILTIN_TEMPLATES.iter().find(|(n, _, _)| *n == template.as_str())
        {
            return Ok(files.iter().map(|(f, t)| ((*f).to_owned(), fill(t))).collect());
        }
        Err(Error::TemplateNotFound(template.to_string()))
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn remove_dir_logged(path: &Path) {
    if let Err(err) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %err, "could not remove deleted agent's workspace");
    }
}

/// Lists what an import copies as (path relative to the workspace, source path).
fn collect_import(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let bad = |msg: String| Error::Import(msg);
    let meta =
        std::fs::metadata(dir).map_err(|e| bad(format!("cannot import {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(bad(format!("cannot import {}: not a directory", dir.display())));
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut add = |rel: PathBuf, src: PathBuf, files: &mut Vec<(PathBuf, PathBuf)>| -> Result<()> {
        // Symlinks are skipped: an import must not copy whatever a link points at.
        let meta = std::fs::symlink_metadata(&src)
            .map_err(|e| bad(format!("cannot read {}: {e}", src.display())))?;
        if !meta.is_file() {
            return Ok(());
        }
        if meta.len() > MAX_IMPORT_FILE {
            return Err(bad(format!(
                "{} is larger than 1 MiB; persona files must be text",
                src.display()
            )));
        }
        total += meta.len();
        if total > MAX_IMPORT_TOTAL {
            return Err(bad(format!("{} holds more than 16 MiB of persona files", dir.display())));
        }
        files.push((rel, src));
        Ok(())
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| bad(format!("cannot list {}: {e}", dir.display())))?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else { continue };
        let src = dir.join(&name);
        if name.ends_with(".md") {
            add(PathBuf::from(&name), src, &mut files)?;
        } else if name == "memory" && src.is_dir() && !src.is_symlink() {
            let inner = std::fs::read_dir(&src)
                .map_err(|e| bad(format!("cannot list {}: {e}", src.display())))?;
            let mut inner: Vec<_> = inner.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            inner.sort();
            for file in inner {
                add(Path::new("memory").join(&file), src.join(&file), &mut files)?;
            }
        }
    }
    if !files.iter().any(|(rel, _)| rel == Path::new("SOUL.md") || rel == Path::new("IDENTITY.md"))
    {
        return Err(bad(format!(
            "{} has no SOUL.md or IDENTITY.md; an importable folder holds some of {}",
            dir.display(),
            IMPORTABLE_FILES.join(", ")
        )));
    }
    Ok(files)
}

fn handle_from_dir(dir: &Path) -> Result<Handle> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_lowercase))
        .unwrap_or_default();
    Handle::parse(&name).map_err(|_| {
        Error::Import(format!(
            "cannot derive a handle from the folder name {name:?}: pass --handle <handle>"
        ))
    })
}

/// Reads a display name from an IDENTITY.md line such as `- **Name:** Molty`.
fn name_from_identity(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches(['-', '*', ' ']);
        let rest = line
            .strip_prefix("Name:")
            .or_else(|| line.strip_prefix("name:"))
            .or_else(|| line.strip_prefix("Name**:"))?;
        let name = rest.trim().trim_matches('*').trim().to_owned();
        clade_core::agent::validate_display_name(&name).ok().map(|()| name)
    })
}

/// Where agents' files live, as the runtime sees them: it asks for an agent's directory and
/// never builds a path into the data dir itself. [`Agents`] keeps them on this machine's disk,
/// under the data dir; a cluster node that runs a session away from the disk holding its
/// agent's files provides them (mounted or synced) behind this trait. The sandbox and the fs
/// tools work on a directory of this machine, which is what [`Workspaces::open`] gives.
pub trait Workspaces: Send + Sync + 'static {
    /// The agent's directory on this machine, made (and seeded from its template) on first use.
    fn open(&self, agent: &Agent) -> Result<PathBuf>;

    /// Where the agent's directory is, without making it: it may not exist yet.
    fn locate(&self, agent: AgentId) -> PathBuf;
}

impl Workspaces for Agents {
    fn open(&self, agent: &Agent) -> Result<PathBuf> {
        self.workspace(agent)
    }

    fn locate(&self, agent: AgentId) -> PathBuf {
        self.workspace_path(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_from_identity_files() {
        assert_eq!(name_from_identity("# Identity\n- **Name:** Molty\n"), Some("Molty".into()));
        assert_eq!(name_from_identity("Name: Ada Lovelace"), Some("Ada Lovelace".into()));
        assert_eq!(name_from_identity("nothing here"), None);
    }
}
