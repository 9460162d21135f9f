//! Files of an agent's workspace, opened so that nothing outside it can be reached.
//!
//! Paths are first normalised lexically (so the policy sees a clean relative path and `..`
//! escapes are refused with a clear error), then every open goes through `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` from a descriptor of the workspace: the kernel
//! refuses any symlink, `..` or `/proc/self/root` that would leave it, at the moment of the
//! open, so a path swapped between check and use cannot escape either.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Where the workspace appears inside the sandbox; such absolute paths are accepted too.
pub const MOUNT: &str = "/workspace";

/// A path argument that cannot name a place in the workspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} is absolute and outside {MOUNT}; use a path relative to the workspace")]
    Absolute(String),
    #[error("path {0:?} leaves the workspace")]
    Escapes(String),
    #[error("path is longer than 4096 bytes")]
    TooLong,
}

/// The workspace-relative form of `path`: no `.`, `..` or empty components; `.` for the root.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if path.len() > 4096 {
        return Err(PathError::TooLong);
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    let relative = if let Some(rest) = path.strip_prefix('/') {
        match rest.strip_prefix(&MOUNT[1..]) {
            Some("") => "",
            Some(inner) if inner.starts_with('/') => inner,
            _ => return Err(PathError::Absolute(path.to_owned())),
        }
    } else {
        path
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes(path.to_owned()));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(if parts.is_empty() { ".".to_owned() } else { parts.join("/") })
}

/// Why a file of the workspace was not read, written, listed or searched. Its text is what the
/// agent reads: the action, the path as the workspace names it, and why; never a host path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Path(#[from] PathError),
    /// The workspace's own directory could not be opened.
    #[error("cannot open the workspace: {}", why_io(.0))]
    Workspace(#[source] std::io::Error),
    /// The system refused `action` on `path`.
    #[error("cannot {action} {path:?}: {}", why_io(.source))]
    Io { action: &'static str, path: String, source: std::io::Error },
    /// `path` is not a file this action takes: a directory, a hard link, too large, …
    #[error("cannot {action} {path:?}: {why}")]
    Refused { action: &'static str, path: String, why: String },
    /// The request itself names nothing to do.
    #[error("{0}")]
    Invalid(&'static str),
}

impl FileError {
    fn refused(action: &'static str, path: &str, why: impl Into<String>) -> Self {
        Self::Refused { action, path: path.to_owned(), why: why.into() }
    }
}

/// What the agent is told of a refused open: the kernel's refusals of a way out in words.
fn why_io(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(18) => {
            "it leaves the workspace (EXDEV: a symlink, `..` or mount point points outside)"
                .to_owned()
        }
        Some(40) => "it is a symbolic link, which is not followed here".to_owned(),
        _ => err.to_string(),
    }
}

fn io(action: &'static str, path: &str, err: impl Into<std::io::Error>) -> FileError {
    FileError::Io { action, path: path.to_owned(), source: err.into() }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

fn root(workspace: &Path) -> Result<OwnedFd, FileError> {
    rustix::fs::open(workspace, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| FileError::Workspace(e.into()))
}

fn open_beneath(
    dir: impl AsFd,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC | OFlags::NOCTTY, mode, BENEATH)
}

/// Reads up to `max` bytes of a regular file.
pub fn read(workspace: &Path, path: &str, max: usize) -> Result<(Vec<u8>, bool), FileError> {
    let rel = normalize(path)?;
    let root = root(workspace)?;
    let fd = open_beneath(&root, &rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(|e| io("read", &rel, e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io("read", &rel, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileError::refused("read", &rel, "not a regular file"));
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| io("read", &rel, e))?;
    let truncated = data.len() > max;
    data.truncate(max);
    Ok((data, truncated))
}

/// Reads a whole file to send out of the workspace (a reply's attachment), at most `max`
/// bytes. Stricter than [`read`]: no link anywhere on the path (not even one that stays
/// inside), a regular file with one name (a hard link the agent planted is refused), and a
/// file over `max` is refused rather than cut.
pub fn read_upload(workspace: &Path, path: &str, max: u64) -> Result<Vec<u8>, FileError> {
    let rel = normalize(path)?;
    let root = root(workspace)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        rustix::fs::openat2(&root, &rel, flags, Mode::empty(), BENEATH | ResolveFlags::NO_SYMLINKS)
            .map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
                    FileError::refused("send", &rel, "a link is on its path; send the file itself")
                }
                e => io("send", &rel, e),
            })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io("send", &rel, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileError::refused("send", &rel, "not a regular file"));
    }
    if stat.st_nlink > 1 {
        return Err(FileError::refused("send", &rel, "it has more than one name (a hard link)"));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > max {
        return Err(FileError::refused(
            "send",
            &rel,
            format!("{size} bytes, over the {max}-byte limit"),
        ));
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| io("send", &rel, e))?;
    if data.len() as u64 > max {
        return Err(FileError::refused("send", &rel, format!("it grew past the {max}-byte limit")));
    }
    Ok(data)
}

/// Opens (creating as needed) the directory `rel` beneath `root`.
fn make_dirs(root: &OwnedFd, rel: &str) -> Result<OwnedFd, FileError> {
    let mut dir = rustix::io::dup(root).map_err(|e| io("open", rel, e))?;
    if rel == "." {
        return Ok(dir);
    }
    for part in rel.split('/') {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY;
        let next = match open_beneath(&dir, part, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io("create directory", rel, e)),
                }
                open_beneath(&dir, part, flags, Mode::empty()).map_err(|e| io("open", rel, e))?
            }
            Err(e) => return Err(io("open directory", rel, e)),
        };
        dir = next;
    }
    Ok(dir)
}

/// Writes (or appends) a regular file, creating parent directories. Refuses symlinks and
/// files with more than one link, so a hard link planted in the workspace cannot redirect it.
pub fn write(workspace: &Path, path: &str, content: &[u8], append: bool) -> Result<u64, FileError> {
    let rel = normalize(path)?;
    let (parent, name) = match rel.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => (".", rel.as_str()),
    };
    if name == "." {
        return Err(FileError::Invalid("cannot write the workspace itself; name a file"));
    }
    let root = root(workspace)?;
    let dir = make_dirs(&root, parent)?;
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    flags |= if append { OFlags::APPEND } else { OFlags::empty() };
    let fd = open_beneath(&dir, name, flags, Mode::from_raw_mode(0o644))
        .map_err(|e| io("write", &rel, e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io("write", &rel, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileError::refused("write", &rel, "not a regular file"));
    }
    if stat.st_nlink > 1 {
        return Err(FileError::refused(
            "write",
            &rel,
            format!("it has {} hard links", stat.st_nlink),
        ));
    }
    if !append {
        rustix::fs::ftruncate(&fd, 0).map_err(|e| io("write", &rel, e))?;
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(content).map_err(|e| io("write", &rel, e))?;
    Ok(content.len() as u64)
}

/// The most entries [`usage`] visits: a workspace past it is counted as full.
const MAX_USAGE_ENTRIES: usize = 1_000_000;

/// The bytes of disk the files under `workspace` take (their allocated blocks, so a sparse file
/// counts what it uses), links not followed. A tree of more than [`MAX_USAGE_ENTRIES`] entries
/// counts as `u64::MAX`: that many files is itself the abuse a quota is for.
pub fn usage(workspace: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0u64;
    let complete = visit_tree(workspace, |_, meta| {
        total = total.saturating_add(meta.blocks().saturating_mul(512));
    });
    if complete { total } else { u64::MAX }
}

/// Visits every entry under `workspace` (links not followed) with its metadata, directories
/// before what they hold; `false` when the tree has more than [`MAX_USAGE_ENTRIES`] entries,
/// where it stops.
pub(crate) fn visit_tree(
    workspace: &Path,
    mut visit: impl FnMut(&Path, &std::fs::Metadata),
) -> bool {
    let mut seen = 0usize;
    let mut stack = vec![workspace.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_USAGE_ENTRIES {
                return false;
            }
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else { continue };
            visit(&path, &meta);
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    true
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: &'static str,
    pub size: u64,
}

fn kind_of(file_type: rustix::fs::FileType) -> &'static str {
    match file_type {
        rustix::fs::FileType::Directory => "dir",
        rustix::fs::FileType::RegularFile => "file",
        rustix::fs::FileType::Symlink => "symlink",
        _ => "other",
    }
}

fn entries(dir: &OwnedFd) -> Result<Vec<Entry>, FileError> {
    let mut out = Vec::new();
    let reader = rustix::fs::Dir::read_from(dir).map_err(|e| io("list", ".", e))?;
    for entry in reader {
        let entry = entry.map_err(|e| io("list", ".", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let stat =
            rustix::fs::statat(dir, entry.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        let (kind, size) = match stat {
            Ok(st) => (kind_of(rustix::fs::FileType::from_raw_mode(st.st_mode)), st.st_size as u64),
            Err(_) => ("other", 0),
        };
        out.push(Entry { name, kind, size });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The entries of a directory, sorted by name.
pub fn list(workspace: &Path, path: &str) -> Result<Vec<Entry>, FileError> {
    let rel = normalize(path)?;
    let root = root(workspace)?;
    let dir = open_beneath(&root, &rel, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
        .map_err(|e| io("list", &rel, e))?;
    entries(&dir)
}

/// One line that contains the searched text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub path: String,
    pub line: usize,
    pub text: String,
}

/// Bounds of one search.
const MAX_FILES: usize = 10_000;
const MAX_DEPTH: usize = 16;
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Lines containing `needle` in the regular files under `path` (symlinks are not followed).
pub fn search(
    workspace: &Path,
    path: &str,
    needle: &str,
    max_hits: usize,
) -> Result<Vec<Hit>, FileError> {
    if needle.is_empty() {
        return Err(FileError::Invalid("the search text must not be empty"));
    }
    let rel = normalize(path)?;
    let root = root(workspace)?;
    let dir = open_beneath(&root, &rel, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
        .map_err(|e| io("search", &rel, e))?;
    let mut hits = Vec::new();
    let mut files = 0;
    let prefix = if rel == "." { String::new() } else { format!("{rel}/") };
    walk(&dir, &prefix, needle, max_hits, 0, &mut files, &mut hits)?;
    Ok(hits)
}

fn walk(
    dir: &OwnedFd,
    prefix: &str,
    needle: &str,
    max_hits: usize,
    depth: usize,
    files: &mut usize,
    hits: &mut Vec<Hit>,
) -> Result<(), FileError> {
    for entry in entries(dir)? {
        if hits.len() >= max_hits || *files >= MAX_FILES {
            return Ok(());
        }
        let path = format!("{prefix}{}", entry.name);
        let no_links = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        match entry.kind {
            "dir" if depth < MAX_DEPTH => {
                let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                if let Ok(sub) =
                    rustix::fs::openat2(dir, entry.name.as_str(), flags, Mode::empty(), no_links)
                {
                    walk(&sub, &format!("{path}/"), needle, max_hits, depth + 1, files, hits)?;
                }
            }
            "file" if entry.size <= MAX_FILE_BYTES => {
                *files += 1;
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let Ok(fd) =
                    rustix::fs::openat2(dir, entry.name.as_str(), flags, Mode::empty(), no_links)
                else {
                    continue;
                };
                let mut data = Vec::new();
                if std::fs::File::from(fd).take(MAX_FILE_BYTES).read_to_end(&mut data).is_err() {
                    continue;
                }
                let text = String::from_utf8_lossy(&data);
                for (index, line) in text.lines().enumerate() {
                    if line.contains(needle) {
                        let text: String = line.chars().take(300).collect();
                        hits.push(Hit { path: path.clone(), line: index + 1, text });
                        if hits.len() >= max_hits {
                            return Ok(());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Clears setuid and setgid bits on the regular files under `workspace` (bounded walk, no
/// symlinks followed). Inside the sandbox the workspace is mounted `nosuid`, but on the host a
/// file the sandbox made setuid belongs to the daemon's user (root, often): it must not stay
/// there for anyone to run. Returns how many files were fixed.
pub fn strip_setid(workspace: &Path) -> usize {
    let Ok(root) = root(workspace) else { return 0 };
    let mut fixed = 0;
    let mut visited = 0;
    strip_in(&root, 0, &mut visited, &mut fixed);
    fixed
}

fn strip_in(dir: &OwnedFd, depth: usize, visited: &mut usize, fixed: &mut usize) {
    let Ok(list) = entries(dir) else { return };
    for entry in list {
        *visited += 1;
        if *visited > MAX_FILES * 10 {
            return;
        }
        let no_links = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        match entry.kind {
            "dir" if depth < MAX_DEPTH * 4 => {
                let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                if let Ok(sub) =
                    rustix::fs::openat2(dir, entry.name.as_str(), flags, Mode::empty(), no_links)
                {
                    strip_in(&sub, depth + 1, visited, fixed);
                }
            }
            "file" => {
                let Ok(stat) = rustix::fs::statat(
                    dir,
                    entry.name.as_str(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                ) else {
                    continue;
                };
                let mode = Mode::from_raw_mode(stat.st_mode);
                if mode.intersects(Mode::SUID | Mode::SGID) {
                    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    // O_PATH descriptors cannot fchmod; chmod through the dir with no symlink.
                    if rustix::fs::openat2(dir, entry.name.as_str(), flags, Mode::empty(), no_links)
                        .is_ok()
                    {
                        let keep = Mode::from_raw_mode(stat.st_mode & 0o1777);
                        if rustix::fs::chmodat(
                            dir,
                            entry.name.as_str(),
                            keep,
                            rustix::fs::AtFlags::empty(),
                        )
                        .is_ok()
                        {
                            *fixed += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(normalize("a/../b").unwrap(), "b");
        assert_eq!(normalize("").unwrap(), ".");
        assert_eq!(normalize("/workspace").unwrap(), ".");
        assert_eq!(normalize("/workspace/x/y").unwrap(), "x/y");
        assert!(matches!(normalize("/workspacex/y"), Err(PathError::Absolute(_))));
        assert!(matches!(normalize("/etc/shadow"), Err(PathError::Absolute(_))));
        assert!(matches!(normalize("a/../../b"), Err(PathError::Escapes(_))));
        assert!(matches!(normalize(".."), Err(PathError::Escapes(_))));
        assert!(matches!(normalize("a\0b"), Err(PathError::Nul(_))));
    }

    /// What a reply may carry out of the workspace: one plain file inside it, whole.
    #[test]
    fn an_upload_is_read_only_from_one_plain_file_inside_the_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(ws.join("out/real")).unwrap();
        let secret = tmp.path().join("secret.txt");
        std::fs::write(&secret, "SECRET").unwrap();
        std::fs::write(ws.join("out/report.csv"), "a,b\n").unwrap();
        assert_eq!(read_upload(&ws, "out/report.csv", 100).unwrap(), b"a,b\n");
        assert_eq!(read_upload(&ws, "/workspace/out/report.csv", 100).unwrap(), b"a,b\n");
        std::os::unix::fs::symlink(&secret, ws.join("out/outside")).unwrap();
        std::os::unix::fs::symlink("report.csv", ws.join("out/inside")).unwrap();
        std::os::unix::fs::symlink("real", ws.join("out/dir")).unwrap();
        std::fs::write(ws.join("out/real/x.txt"), "x").unwrap();
        std::fs::hard_link(&secret, ws.join("out/hard")).unwrap();
        let big = std::fs::File::create(ws.join("out/big")).unwrap();
        big.set_len(101).unwrap();
        for (path, needle) in [
            ("out/outside", "link"),
            ("out/inside", "link"),
            ("out/dir/x.txt", "link"),
            ("out/hard", "more than one name"),
            ("out/big", "over the 100-byte limit"),
            ("out/real", "not a regular file"),
            ("../secret.txt", "leaves the workspace"),
            ("/etc/passwd", "absolute"),
            ("out/none", "no such"),
        ] {
            let refused = read_upload(&ws, path, 100).unwrap_err().to_string();
            assert!(refused.to_lowercase().contains(needle), "{path}: {refused}");
        }
    }

    /// The agent reads what it named and why; where its workspace lives on the host is the
    /// operator's to know, and a workspace that cannot be opened is the gateway's failure.
    #[test]
    fn an_unopenable_workspace_names_no_host_path() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        let host = tmp.path().to_string_lossy().into_owned();
        for error in [
            read(&gone, "notes.md", 10).unwrap_err(),
            write(&gone, "notes.md", b"x", false).unwrap_err(),
            list(&gone, ".").unwrap_err(),
            search(&gone, ".", "x", 10).unwrap_err(),
        ] {
            assert!(matches!(error, FileError::Workspace(_)), "{error}");
            assert!(!error.to_string().contains(&host), "{error}");
            let told = crate::Error::from(error);
            assert!(told.detail().is_some(), "the gateway's failure, not the agent's: {told}");
            assert!(!told.to_string().contains(&host), "{told}");
        }
        let missing = read(tmp.path(), "notes.md", 10).unwrap_err();
        assert!(matches!(missing, FileError::Io { action: "read", .. }), "{missing}");
        assert_eq!(
            crate::Error::from(missing).to_string(),
            "cannot read \"notes.md\": No such file or directory (os error 2)"
        );
    }
}
