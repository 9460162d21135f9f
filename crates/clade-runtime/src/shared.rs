//! Folders a tenant's agents share: `shared.read`, `shared.list` and `shared.write`, each
//! allowed only by a grant naming the folder (`--tool shared.read --resource "research/*"` to
//! read one, `shared.write` to write it, `shared.*` for both), and audited as every call is.
//!
//! A folder is `<data-dir>/shared/<tenant id>/<name>/`, made by its first write. The tenant is
//! the caller's, never an argument, so no agent names another tenant's folders; files are
//! reached through `clade-tools`' confined reader and writer, so no link planted inside leads
//! out of the folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clade_tools::builtin::{self, blocking};
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool, workspace};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

/// Registers the shared-folder tools over the folders under `root` (`<data-dir>/shared`).
pub fn register(registry: &mut Registry, root: PathBuf) {
    let root = Arc::new(root);
    registry.register(Arc::new(SharedRead(root.clone())));
    registry.register(Arc::new(SharedList(root.clone())));
    registry.register(Arc::new(SharedWrite(root)));
}

fn check_folder(name: &str) -> Result<(), Error> {
    Ok(clade_tools::check_shared_name("folder", name)?)
}

/// What a grant names: `<folder>/<path>` (the folder alone for its root).
fn resource(folder: &str, path: &str) -> Result<String, Error> {
    check_folder(folder)?;
    let path = workspace::normalize(path)?;
    Ok(if path.is_empty() || path == "." { folder.to_owned() } else { format!("{folder}/{path}") })
}

/// The caller's tenant's folder `name`, which may not exist yet.
fn folder(root: &Path, ctx: &CallContext, name: &str) -> Result<PathBuf, Error> {
    check_folder(name)?;
    let caller = ctx.caller()?;
    Ok(root.join(caller.tenant.to_string()).join(name))
}

/// The folder `name` for reading: an error naming it when nothing was written there yet.
fn existing(root: &Path, ctx: &CallContext, name: &str) -> Result<PathBuf, Error> {
    let dir = folder(root, ctx, name)?;
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::Failed(format!(
            "no shared folder {name:?} yet: shared.write makes it with its first file"
        )))
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// The shared folder's name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub folder: String,
    /// A file's path inside it.
    pub path: String,
    /// Most bytes returned (default 256 KiB).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

pub struct SharedRead(Arc<PathBuf>);

impl TypedTool for SharedRead {
    type Args = ReadArgs;
    const NAME: &'static str = "shared.read";
    const DESCRIPTION: &'static str = "Reads a text file of a folder your tenant's agents share (a grant names the folders you may read).";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &ReadArgs) -> Result<String, Error> {
        resource(&args.folder, &args.path)
    }
    fn run<'a>(&'a self, args: ReadArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let dir = existing(&self.0, ctx, &args.folder)?;
            let max = args.max_bytes.unwrap_or(256 * 1024).min(4 * 1024 * 1024);
            let (data, truncated) =
                blocking(move || workspace::read(&dir, &args.path, max)).await?;
            Ok(builtin::read_as_text(&data, truncated, max))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The shared folder's name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub folder: String,
    /// A directory inside it (default: its root).
    #[serde(default)]
    pub path: Option<String>,
}

pub struct SharedList(Arc<PathBuf>);

impl TypedTool for SharedList {
    type Args = ListArgs;
    const NAME: &'static str = "shared.list";
    const DESCRIPTION: &'static str = "Lists a directory of a folder your tenant's agents share.";
    const EFFECT: EffectClass = EffectClass::Pure;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &ListArgs) -> Result<String, Error> {
        resource(&args.folder, args.path.as_deref().unwrap_or("."))
    }
    fn run<'a>(&'a self, args: ListArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let dir = existing(&self.0, ctx, &args.folder)?;
            let path = args.path.unwrap_or_else(|| ".".into());
            let entries = blocking(move || workspace::list(&dir, &path)).await?;
            if entries.is_empty() {
                return Ok("(empty)".into());
            }
            Ok(builtin::listing(&entries))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// The shared folder's name (made by its first write).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub folder: String,
    /// A file's path inside it; parent directories are made.
    pub path: String,
    pub content: String,
    /// Append instead of replacing.
    #[serde(default)]
    pub append: bool,
}

pub struct SharedWrite(Arc<PathBuf>);

impl TypedTool for SharedWrite {
    type Args = WriteArgs;
    const NAME: &'static str = "shared.write";
    const DESCRIPTION: &'static str = "Writes (or appends to) a file of a folder your tenant's agents share (a grant names the folders you may write).";
    const EFFECT: EffectClass = EffectClass::AtMostOnce;
    const TOUCHES_HOST: bool = true;
    fn resource(&self, args: &WriteArgs) -> Result<String, Error> {
        resource(&args.folder, &args.path)
    }
    fn run<'a>(&'a self, args: WriteArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let dir = folder(&self.0, ctx, &args.folder)?;
            let (folder, path) = (args.folder.clone(), args.path.clone());
            let written = blocking(move || {
                // Ours alone: `<root>/<tenant id>/<folder>`, names checked above.
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::failed(format!("cannot make shared folder {:?}: {e}", args.folder))
                })?;
                Ok::<_, Error>(workspace::write(
                    &dir,
                    &args.path,
                    args.content.as_bytes(),
                    args.append,
                )?)
            })
            .await?;
            Ok(format!("wrote {written} bytes to {path} in shared folder {folder}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_names_the_folder_and_the_path_within_it() {
        assert_eq!(resource("research", "notes/a.md").unwrap(), "research/notes/a.md");
        assert_eq!(resource("research", ".").unwrap(), "research");
        assert_eq!(resource("research", "x/../y").unwrap(), "research/y");
        assert!(resource("research", "../other/secret").is_err());
        for bad in ["", "Research", "../x", "a/b", "-x", &"x".repeat(65)] {
            assert!(resource(bad, "f").is_err(), "{bad:?}");
        }
    }
}
