//! The data dir: where an embedded deployment keeps its database, keys, token and the agents'
//! workspaces.
//!
//! ```text
//! <data-dir>/          0700 (made so at every open)
//!   clade.db            SQLite store (unless --store points elsewhere), with its -wal and -shm; 0600
//!   clade.db.lock       held (flock) by the `clade serve` that owns the store; holds its pid
//!   clade.yaml          configuration (optional)
//!   master.key          secrets master key, 0600 (created with the first secret)
//!   token               the default tenant's CLI token, 0600 (created on first start)
//!   current-agent       the agent `clade agents switch` selected
//!   templates/<name>/   operator-defined persona templates
//!   agents/<agent-id>/  each agent's private workspace, created on first use
//!   trash/              workspaces being deleted
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A data dir that exists and is writable.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed and proves it is writable.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let fail = |source| Error::DataDir { path: root.clone(), source };
        create_private_dir_all(&root).map_err(fail)?;
        // An existing dir keeps the mode it was made with: make it private too, since it holds
        // every tenant's messages, keys and workspaces.
        make_dir_private(&root).map_err(fail)?;
        let probe = root.join(".write-probe");
        std::fs::write(&probe, b"").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.root.join("clade.db")
    }

    /// Where models run in process keep their files, a folder each (`clade models fetch`).
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(clade_config_file_name())
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.root.join("master.key")
    }

    pub fn token_path(&self) -> PathBuf {
        self.root.join("token")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.root.join("templates")
    }

    /// The folders each tenant's agents share (`shared.*` tools): `<tenant id>/<folder>/`.
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    pub fn workspaces_dir(&self) -> PathBuf {
        self.root.join("agents")
    }

    pub(crate) fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// The token the CLI uses by default, if one has been written.
    pub fn read_token(&self) -> Result<Option<String>> {
        read_optional(&self.token_path()).map(|t| t.map(|s| s.trim().to_owned()))
    }

    /// Writes the CLI token file (0600) unless one exists; returns whether it wrote it.
    pub fn write_token_if_absent(&self, secret: &str) -> Result<bool> {
        let path = self.token_path();
        match create_new_private(&path, format!("{secret}\n").as_bytes()) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(Error::Io { action: "write", path, source }),
        }
    }

    /// The `(tenant, handle)` selected by `clade agents switch`.
    pub fn current_agent(&self) -> Result<Option<(String, String)>> {
        let Some(text) = read_optional(&self.root.join("current-agent"))? else { return Ok(None) };
        Ok(text.trim().split_once('/').map(|(t, h)| (t.to_owned(), h.to_owned())))
    }

    pub fn set_current_agent(&self, tenant: &str, handle: &str) -> Result<()> {
        write_atomic(&self.root.join("current-agent"), format!("{tenant}/{handle}\n").as_bytes())
    }
}

fn clade_config_file_name() -> &'static str {
    "clade.yaml"
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { action: "read", path: path.to_owned(), source }),
    }
}

#[cfg(unix)]
fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

#[cfg(unix)]
fn make_dir_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_dir_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

pub(crate) fn create_dir(path: &Path) -> Result<()> {
    create_private_dir_all(path).map_err(|source| Error::Io {
        action: "create directory",
        path: path.to_owned(),
        source,
    })
}

fn create_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes a file readable only by its owner, replacing any previous one atomically.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic(path, contents)
}

/// Write to a temporary sibling, fsync, then rename: readers see the old or the new file.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    create_new_private(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io { action: "write", path: path.to_owned(), source })
}
