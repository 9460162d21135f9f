//! Page checksums of a SQLite store: the last [`RESERVED`] bytes of every page of the database
//! file hold a CRC-32 of the rest of the page and of its page number, then that number, so a
//! page written where another belongs is caught as well as one whose bytes changed. The VFS in [`crate::paced`] seals each page as
//! SQLite writes it to the database file and checks each page it reads back, so bytes changed
//! on disk (a failing disk, a stray write, someone editing the file with another tool) fail the
//! read with a clear error instead of being served. `PRAGMA quick_check`, which `clade serve`
//! runs at start, reads every page and so checks every checksum.
//!
//! What it does not cover: a page read from the WAL is not checked (the WAL's frames carry
//! SQLite's own checksums, checked when a WAL is recovered after a crash); a checkpoint seals
//! what it copies from the WAL. A file written by another SQLite program (the `sqlite3` shell,
//! Python) has stale checksums on the pages it changed: `clade migrate --rewrite-checksums`
//! accepts the file as it is. PostgreSQL checks its own pages when the cluster was made with
//! `initdb --data-checksums`.
//!
//! A new store reserves the bytes before its first write. A store made before checksums gets
//! them the first time `clade serve` or `clade migrate` opens it with no server running: a
//! `VACUUM` that makes room on every page, then every page sealed. A marker file beside the
//! database (`<db>.sealing`) says a conversion is under way, so one interrupted by a crash is
//! finished by the next try instead of being taken for damage.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::paced::{self, Writeback};

/// Bytes reserved at the end of each page for its checksum.
pub(crate) const RESERVED: u8 = 8;

/// What a database file's first 100 bytes say about its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) page_size: usize,
    pub(crate) reserved: u8,
    /// The page count the header records, when SQLite marks it valid.
    page_count: Option<u64>,
}

impl Header {
    /// Reads a SQLite header, or `None` if `bytes` is not one.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..100)?;
        if !bytes.starts_with(b"SQLite format 3\0") {
            return None;
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            size => usize::from(size),
        };
        if !page_size.is_power_of_two() || page_size < 512 {
            return None;
        }
        // The count at 28 is valid when the change counter (24) matches "valid-for" (92).
        let page_count = (be32(24) == be32(92) && be32(28) > 0).then(|| u64::from(be32(28)));
        Some(Self { page_size, reserved: bytes[20], page_count })
    }
}

/// The seal of page `number` (from 1) whose bytes before the seal are `body`. CRC-32 because
/// `crc32fast` computes it with the CPU's carry-less multiply at some 13 GB/s even in a debug
/// build (a table-driven CRC-64 ran at 1 GB/s, and held the WAL's checkpoints back); 32 bits
/// catch all but one in four billion random changes. Not all zeros, so a zeroed page fails.
fn checksum(body: &[u8], number: u64) -> [u8; 8] {
    let number = u32::try_from(number).unwrap_or(u32::MAX).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(body);
    crc.update(&number);
    let crc = crc.finalize().to_le_bytes();
    [crc[0], crc[1], crc[2], crc[3], number[0], number[1], number[2], number[3]]
}

/// Writes the seal of `page`, page `number` of its file (from 1), into its last [`RESERVED`]
/// bytes.
pub(crate) fn seal(page: &mut [u8], number: u64) {
    if let Some(split) = page.len().checked_sub(usize::from(RESERVED)) {
        let (body, tail) = page.split_at_mut(split);
        tail.copy_from_slice(&checksum(body, number));
    }
}

/// Whether `page`, page `number` of its file (from 1), carries its seal.
pub(crate) fn verify(page: &[u8], number: u64) -> bool {
    page.len()
        .checked_sub(usize::from(RESERVED))
        .is_some_and(|split| page[split..] == checksum(&page[..split], number))
}

/// Whether a store's pages carry checksums, as [`prepare`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageChecksums {
    /// They do, and did before.
    On,
    /// They do now: this open added them.
    Added,
    /// They do not: the store predates them and this open was not allowed to add them (or a
    /// server holds the store), or its pages reserve room for something else.
    Absent,
}

/// Makes sure the SQLite store at `path` carries page checksums, before anything else opens
/// it: a new store is created with room for them; an older one gets them if `may_add` (the
/// commands that may upgrade a store) and no server holds it.
pub(crate) fn prepare(path: &Path, may_add: bool) -> Result<PageChecksums> {
    let header = read_header(path)?;
    let interrupted = exists(&marker_path(path))?;
    if interrupted && !may_add {
        return Err(Error::ChecksumsInterrupted { path: path.to_owned() });
    }
    match header {
        None if !exists(path)? => {
            create(path)?;
            Ok(PageChecksums::On)
        }
        // Not a SQLite file: opening it says so.
        None => Ok(PageChecksums::Absent),
        Some(header) if header.reserved == RESERVED && !interrupted => Ok(PageChecksums::On),
        Some(header) if may_add && (header.reserved == 0 || interrupted) => {
            let Some(_lock) = lock_unless_served(path)? else {
                tracing::warn!(
                    "{}: a server holds this store; it gains page checksums at the next start",
                    path.display()
                );
                return Ok(PageChecksums::Absent);
            };
            if add(path)?.is_some() {
                return Ok(PageChecksums::Added);
            }
            if interrupted {
                return Err(Error::ChecksumsInterrupted { path: path.to_owned() });
            }
            tracing::warn!(
                "{}: another program has the store open; it gains page checksums at the next \
                 start",
                path.display()
            );
            Ok(PageChecksums::Absent)
        }
        Some(_) => Ok(PageChecksums::Absent),
    }
}

/// What [`rewrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Pages of the database file.
    pub pages: u64,
    /// Pages whose checksum did not match and was written anew.
    pub rewritten: u64,
    /// Whether the store had no checksums and got them.
    pub added: bool,
}

/// Accepts the SQLite store at `path` as it is: folds its WAL in, then writes every page's
/// checksum anew (or adds checksums to a store without them). For a file changed on purpose
/// with another SQLite program; a page that was damaged stays damaged, only no longer refused.
/// Refuses while a server holds the store.
pub fn rewrite(path: &Path) -> Result<Rewritten> {
    let Some(header) = read_header(path)? else {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: "no SQLite header".into(),
        });
    };
    let _lock = crate::owner::lock_file(path)?;
    if header.reserved != RESERVED || exists(&marker_path(path))? {
        if header.reserved != 0 && header.reserved != RESERVED {
            return Err(Error::Corrupt {
                location: path.display().to_string(),
                detail: format!(
                    "its pages reserve {} bytes for another extension, so they cannot carry \
                     Clade's checksums",
                    header.reserved
                ),
            });
        }
        let Some(pages) = add(path)? else {
            return Err(Error::InUse {
                location: path.display().to_string(),
                holder: "another program".into(),
            });
        };
        return Ok(Rewritten { pages, rewritten: pages, added: true });
    }
    {
        let conn = open_unchecked(path)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let (pages, rewritten) = seal_pages(path)?;
    Ok(Rewritten { pages, rewritten, added: false })
}

/// Creates a new store whose pages have room for checksums: the reserve must be set before
/// SQLite writes the first page.
fn create(path: &Path) -> Result<()> {
    let vfs = vfs(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let cannot_open = |err| match err {
        rusqlite::Error::SqliteFailure(code, detail)
            if code.code == rusqlite::ErrorCode::CannotOpen =>
        {
            Error::CannotOpen {
                path: path.to_owned(),
                detail: detail.unwrap_or_else(|| code.to_string()),
            }
        }
        err => err.into(),
    };
    let conn = Connection::open_with_flags_and_vfs(path, flags, vfs).map_err(cannot_open)?;
    paced::reserve_bytes(&conn, RESERVED)
        .map_err(|detail| io(path, "reserve page bytes", detail))?;
    conn.execute_batch("PRAGMA page_size = 2048").map_err(cannot_open)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).map_err(cannot_open)?;
    crate::backend::make_private(path)
}

/// Gives an existing store checksums, or finishes doing so: the caller holds the store.
/// Returns the number of pages, or `None` if another program has the file open (a command run
/// beside), so it cannot be rewritten now. Every step can be run again after a crash: the
/// marker stays until the last one is done.
fn add(path: &Path) -> Result<Option<u64>> {
    let marker = marker_path(path);
    {
        // Unchecked: the pages are not all sealed yet. Leaving WAL mode folds the WAL in (or
        // rolls back a VACUUM a crash interrupted) and lets VACUUM rewrite the file in place;
        // it needs the only connection to the file.
        let conn = open_unchecked(path)?;
        let mode =
            conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("delete") => {}
            Ok(_) => return Ok(None),
            Err(rusqlite::Error::SqliteFailure(code, _))
                if code.code == rusqlite::ErrorCode::DatabaseBusy
                    || code.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            "adding page checksums to {} ({} MiB; once, by rewriting the file)",
            path.display(),
            size.div_ceil(1 << 20)
        );
        std::fs::File::create(&marker)
            .and_then(|file| file.sync_all())
            .and_then(|()| sync_dir(path))
            .map_err(|source| Error::Io { action: "create", path: marker.clone(), source })?;
        if read_header(path)?.is_none_or(|header| header.reserved != RESERVED) {
            paced::reserve_bytes(&conn, RESERVED)
                .map_err(|detail| io(path, "reserve page bytes", detail))?;
            conn.execute_batch("VACUUM")?;
        }
    }
    let (pages, _) = seal_pages(path)?;
    {
        // Checked: every page is sealed now, and going back to WAL mode writes page 1 again.
        let conn = open_checked(path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    }
    std::fs::remove_file(&marker).and_then(|()| sync_dir(path)).map_err(|source| Error::Io {
        action: "remove",
        path: marker,
        source,
    })?;
    tracing::info!("{}: page checksums added ({pages} pages)", path.display());
    Ok(Some(pages))
}

/// Seals every page of the database file that does not carry its checksum; the caller holds
/// the store and has folded its WAL in. Returns the pages and how many were sealed anew.
fn seal_pages(path: &Path) -> Result<(u64, u64)> {
    let fail = |action, source| Error::Io { action, path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| fail("open", e))?;
    let Some(header) = read_header(path)? else { return Ok((0, 0)) };
    let page_size = header.page_size as u64;
    let length = file.metadata().map_err(|e| fail("read", e))?.len();
    let pages = header.page_count.unwrap_or(length / page_size).min(length / page_size);
    let mut page = vec![0; header.page_size];
    let mut sealed = 0;
    for number in 0..pages {
        let offset = number * page_size;
        file.read_exact_at(&mut page, offset).map_err(|e| fail("read", e))?;
        if !verify(&page, number + 1) {
            seal(&mut page, number + 1);
            file.write_all_at(&page, offset).map_err(|e| fail("write", e))?;
            sealed += 1;
        }
    }
    file.sync_all().map_err(|e| fail("sync", e))?;
    Ok((pages, sealed))
}

/// A connection whose reads of the database file are not checked and whose writes are not
/// sealed, for the steps that make the checksums.
fn open_unchecked(path: &Path) -> Result<Connection> {
    let conn = open_checked(path)?;
    conn.execute_batch(&format!("PRAGMA {} = off", paced::CHECKSUMS_PRAGMA))?;
    Ok(conn)
}

fn open_checked(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags_and_vfs(path, flags, vfs(path)?)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

fn vfs(path: &Path) -> Result<&'static std::ffi::CStr> {
    paced::vfs(Writeback::AtOnce).map_err(|detail| io(path, "open", detail))
}

fn io(path: &Path, action: &'static str, detail: paced::ShimError) -> Error {
    Error::Io { action, path: path.to_owned(), source: std::io::Error::other(detail) }
}

/// The header of the file at `path`, or `None` if it does not exist or is not a SQLite file.
fn read_header(path: &Path) -> Result<Option<Header>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { action: "open", path: path.to_owned(), source }),
    };
    let mut bytes = [0; 100];
    match file.read_exact_at(&mut bytes, 0) {
        Ok(()) => Ok(Header::parse(&bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(source) => Err(Error::Io { action: "read", path: path.to_owned(), source }),
    }
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|source| Error::Io {
        action: "look for",
        path: path.to_owned(),
        source,
    })
}

/// The file that says a conversion of the store at `db` is under way.
fn marker_path(db: &Path) -> PathBuf {
    crate::owner::beside(db, ".sealing")
}

/// The store's owner lock, or `None` if a server holds it.
fn lock_unless_served(path: &Path) -> Result<Option<std::fs::File>> {
    match crate::owner::lock_file(path) {
        Ok(lock) => Ok(Some(lock)),
        Err(Error::InUse { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_page_verifies_and_a_changed_one_does_not() {
        let mut page: Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
        seal(&mut page, 3);
        assert!(verify(&page, 3));
        assert!(!verify(&page, 4), "a page written where another belongs must not pass");
        page[100] ^= 1;
        assert!(!verify(&page, 3));
        assert!(!verify(&[0; 2048], 1), "an all-zero page must not pass");
    }

    #[test]
    fn headers_are_read_and_garbage_is_not_one() {
        assert_eq!(Header::parse(b"not sqlite"), None);
        let mut bytes = [0u8; 100];
        bytes[..16].copy_from_slice(b"SQLite format 3\0");
        bytes[16..18].copy_from_slice(&2048u16.to_be_bytes());
        bytes[20] = 8;
        let header = Header::parse(&bytes).unwrap();
        assert_eq!((header.page_size, header.reserved), (2048, 8));
        bytes[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(Header::parse(&bytes), None, "a page size that is not a power of two");
    }
}
