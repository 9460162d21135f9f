//! Files people send with their messages: fetched from the platform (at most
//! [`MAX_ATTACHMENT_BYTES`] each), kept in the receiving agent's workspace under
//! `inbox/<platform>/<message>/`, and named in the message's text, so the agent reads them with
//! its file tools. A file over the limit is not fetched, and the chat is told; one that cannot
//! be fetched is named with the reason. Either way the message itself is taken.
//!
//! The workspace is the agent's to write, and its tools could plant a link where a file is
//! about to go: every directory on the way is checked to be a real directory inside the
//! workspace, and the file is opened without following a link.
//!
//! Files go out too: a reply carries the workspace files its agent attached (`reply.attach`),
//! read again as they are sent ([`clade_tools::workspace::read_upload`]: no link on the path,
//! one name, within the limit) and sent as an [`Upload`].

use std::path::{Path, PathBuf};

use clade_tools::workspace::FileError;

use crate::channel::PlatformError;

/// The largest file taken (Telegram's bots can fetch no more).
pub const MAX_ATTACHMENT_BYTES: u64 = 20 * 1024 * 1024;
/// The longest file name kept, in bytes.
const MAX_NAME: usize = 100;
/// The most files taken from one message.
pub const MAX_ATTACHMENTS: usize = 10;

/// A file sent with a message, as the platform describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its file name: the platform's, else one for its kind (`photo.jpg`).
    pub name: String,
    /// Its size in bytes, when the platform says.
    pub size: Option<u64>,
    /// How the platform's API fetches it: a file id, or a URL.
    pub locator: String,
}

/// A file to send into a chat: its name there, its bytes and a line shown with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
    pub caption: Option<String>,
}

/// A `multipart/form-data` body (RFC 7578): the text `fields`, then the file as `file_field`;
/// and its content type. The boundary occurs in no field and not in the file, so a caption or
/// a file the agent wrote cannot add a field of its own (another chat, say).
pub fn multipart(
    fields: &[(&str, String)],
    file_field: &str,
    upload: &Upload,
) -> (String, Vec<u8>) {
    use sha2::{Digest, Sha256};
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut boundary = String::new();
    for n in 0u32.. {
        let mut hash = Sha256::new();
        hash.update(&upload.bytes);
        hash.update(n.to_le_bytes());
        let digest = hash.finalize();
        boundary = format!(
            "clade-{}",
            digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
        );
        let taken = contains(&upload.bytes, boundary.as_bytes())
            || fields.iter().any(|(_, value)| value.contains(&boundary));
        if !taken {
            break;
        }
    }
    let mut body = Vec::with_capacity(upload.bytes.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            safe_name(&upload.name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(&upload.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A size for people: bytes, KB or MB.
pub fn size_text(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{} KB", bytes.div_ceil(1024)),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

/// The body of `request`, refused past `max` bytes (whatever the platform declared).
pub async fn fetch_capped(
    request: reqwest::RequestBuilder,
    max: u64,
) -> Result<Vec<u8>, PlatformError> {
    let mut response = request
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| PlatformError::Unavailable(format!("cannot fetch the file: {e}")))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(match status {
            429 | 500.. => PlatformError::Unavailable(format!("fetching the file: HTTP {status}")),
            _ => PlatformError::Refused(format!("fetching the file: HTTP {status}")),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| PlatformError::Unavailable(format!("the file stopped coming: {e}")))?
    {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large(None, max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The refusal of a file over `max` bytes.
pub fn too_large(size: Option<u64>, max: u64) -> PlatformError {
    let size = size.map(|s| format!(" ({})", size_text(s))).unwrap_or_default();
    PlatformError::Refused(format!("the file is over the {} limit{size}", size_text(max)))
}

/// A file name safe to keep: letters, digits, `.`, `-` and `_` (others become `_`), no leading
/// dot, at most [`MAX_NAME`] bytes; `file` when nothing is left.
pub fn safe_name(name: &str) -> String {
    let kept: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let kept = kept.trim_start_matches('.');
    let mut cut = kept.len().min(MAX_NAME);
    while !kept.is_char_boundary(cut) {
        cut -= 1;
    }
    match &kept[..cut] {
        "" => "file".to_owned(),
        name => name.to_owned(),
    }
}

/// Writes `bytes` as `<workspace>/<dir>/<name>` (each part made safe), making the
/// directories, as the agent's own tools write (`clade_tools::workspace::write`: every open
/// beneath the workspace with `openat2`, so no link, planted before or swapped in during the
/// write, leads out of it; only a regular file with one link is written, opened without
/// blocking, so a planted FIFO cannot hang the caller). The path written, relative to the
/// workspace. Blocking: call it off the async runtime.
pub fn keep(
    workspace: &Path,
    dir: &[&str],
    name: &str,
    bytes: &[u8],
) -> Result<PathBuf, FileError> {
    let mut relative = PathBuf::new();
    for part in dir.iter().copied().map(safe_name) {
        relative.push(part);
    }
    relative.push(safe_name(name));
    let text = relative.to_str().ok_or(FileError::Invalid("the file's path is not text"))?;
    clade_tools::workspace::write(workspace, text, bytes, false)?;
    Ok(relative)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code.
    #[test]
    fn a_multipart_body_has_its_fields_and_file_and_a_boundary_nothing_holds() {
        let upload = super::Upload {
            name: "../re\"port\r\n.csv".into(),
            bytes: b"a,b\r\n1,2\r\n".to_vec(),
            caption: None,
        };
        let (kind, body) = super::multipart(&[("chat_id", "5".into())], "document", &upload);
        let boundary = kind.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2, "{text}");
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("name=\"chat_id\"\r\n\r\n5\r\n"));
        // The name cannot break out of its quotes or its header line.
        assert!(text.contains("filename=\"re_port__.csv\""), "{text}");
        assert!(text.contains("\r\n\r\na,b\r\n1,2\r\n\r\n--"));
        // A caption that spells the boundary it would get makes the body take another.
        let (first, _) = super::multipart(&[], "document", &upload);
        let spelled = first.strip_prefix("multipart/form-data; boundary=").unwrap();
        let forged = format!(
            "hi\r\n--{spelled}\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n666"
        );
        let (kind, body) = super::multipart(&[("caption", forged)], "document", &upload);
        let boundary = kind.strip_prefix("multipart/form-data; boundary=").unwrap();
        assert_ne!(boundary, spelled);
        assert_eq!(
            String::from_utf8(body).unwrap().matches(&format!("--{boundary}\r\n")).count(),
            2
        );
    }

    use super::*;

    #[test]
    fn names_are_kept_safe() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..."), "file");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name("my report (1).pdf"), "my_report__1_.pdf");
        assert_eq!(safe_name("ça.txt"), "_a.txt");
        assert_eq!(safe_name(&"x".repeat(300)).len(), 100);
        assert_eq!(size_text(10), "10 bytes");
        assert_eq!(size_text(2048), "2 KB");
        assert_eq!(size_text(25 * 1024 * 1024), "25.0 MB");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // Test code: `mkfifo` plants the FIFO.
    fn a_file_is_kept_inside_the_workspace_and_planted_links_and_fifos_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let workspace = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let kept = keep(&workspace, &["inbox", "telegram", "1:2"], "a.txt", b"hi").unwrap();
        assert_eq!(kept, Path::new("inbox/telegram/1_2/a.txt"));
        assert_eq!(std::fs::read(workspace.join(&kept)).unwrap(), b"hi");
        // The agent's tools plant a directory link to outside where the next file goes.
        std::os::unix::fs::symlink(&outside, workspace.join("inbox/discord")).unwrap();
        assert!(keep(&workspace, &["inbox", "discord", "3"], "b.txt", b"x").is_err());
        // And a file link.
        let link = workspace.join("inbox/telegram/1_2/c.txt");
        std::os::unix::fs::symlink(outside.join("c.txt"), &link).unwrap();
        assert!(keep(&workspace, &["inbox", "telegram", "1:2"], "c.txt", b"x").is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing was written outside");
        // A FIFO where the file goes is refused at once, not waited on.
        let fifo = workspace.join("inbox/telegram/1_2/d.txt");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert!(keep(&workspace, &["inbox", "telegram", "1:2"], "d.txt", b"x").is_err());
    }
}
