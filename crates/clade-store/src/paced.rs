//! Paced writeback and page checksums of the SQLite database file: the crate's one piece of
//! `unsafe` code.
//!
//! A checkpoint copies pages from the WAL into the database file and then fsyncs it. The copies
//! are scattered writes that sit in the page cache until that fsync, which hands them all to the
//! disk at once: about a megabyte of random 2 KiB writes per checkpoint at 500 turns/s. Every
//! fsync of the WAL issued meanwhile (the one each durable commit waits for) queued behind them,
//! so a WAL fsync of 0.3 ms took 5–20 ms about 20 times per 10,000 turns, and those stalls set
//! the turn latency's p99.
//!
//! This VFS is SQLite's default one with a shim on the main database file: it remembers what
//! was written since the last sync, and before passing a sync on it writes those pages back in
//! small rounds ([`PAGES_PER_ROUND`], in file order), waiting for each round to reach the disk
//! before starting the next. A WAL fsync that arrives meanwhile waits for one round, not for the
//! whole checkpoint. The sync itself still runs, so durability is SQLite's own: the shim only
//! starts writes earlier than the sync would have, and syncs with `fdatasync` (see [`sync`]).
//!
//! Only files opened as a main database are paced, and only they and the WAL get `fdatasync`;
//! the shared memory and temporary files pass straight through.
//!
//! The same shim seals each page written to a main database file with its checksum and checks
//! each page read from it, when the file reserves room for one (see [`crate::checksums`]).

#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_void};
use std::sync::Mutex;
use std::sync::OnceLock;

use rusqlite::ffi;

/// How a connection's syncs of its database file write it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writeback {
    /// In paced rounds: for the checkpointer, whose syncs run while commits wait for WAL fsyncs.
    Paced,
    /// All at once: for the writer, whose catch-up checkpoint stops every write until its sync
    /// is done, so pacing it would only make that stop longer (at 1,000 turns/s its slowest
    /// catch-ups took 18–28 ms paced).
    AtOnce,
}

impl Writeback {
    fn vfs_name(self) -> &'static CStr {
        match self {
            Writeback::Paced => c"clade-paced",
            Writeback::AtOnce => c"clade-fdatasync",
        }
    }
}

/// Writes (pages) written back per round. Smaller rounds make a WAL fsync wait for less, and
/// cost the checkpointer more system calls and waits (a pass of ~1,200 pages at 500 turns/s
/// takes tens of milliseconds, well inside its 250 ms period). `clade bench turns --sessions 100
/// --rate 500`, turn p99 over three runs each: 2 pages 3.5–4.2 ms, 4 pages 3.6–4.2, 8 pages
/// 4.8–5.4, 32 pages 6.7–7.8 (plus one run with a 233 ms stall of the host's disk), 128 pages
/// 7.0–8.1; unpaced, 7.8–8.9 ms with 17–27 WAL fsyncs over 5 ms per run instead of 3–5.
const PAGES_PER_ROUND: usize = 4;

/// Most rounds one sync is split into. Each round waits for the disk, so under heavy writes
/// (a checkpoint pass folding 25 MB) rounds of [`PAGES_PER_ROUND`] left the checkpointer far
/// behind the writer, and the WAL grew past 600 MiB where it should start over at 128 MiB
/// (test `the_wal_starts_over_under_writes_that_never_pause`). Past this many rounds they grow
/// instead, and bound how long a sync takes to about this many disk round trips.
const MOST_ROUNDS: usize = 256;

/// A main database file grows by this much at a time. Each growth is a change of the file's
/// size, so the sync after it must also commit ext4's journal, and at 1,000 turns/s the writer's
/// catch-up syncs (which stop every write) took 5–22 ms with the file growing a little in most
/// checkpoints, 1–4 ms with it growing in chunks of this size. A new database file is at least
/// this large.
const CHUNK_BYTES: c_int = 4 << 20;

/// A chunk's growth is written back in steps of this many bytes, each counting as one page.
const GROWTH_STEP: i64 = 8 << 10;

/// Past this many remembered writes (a connection that never syncs), they are written back
/// without a sync, so the list stays bounded.
const MOST_REMEMBERED: usize = 1 << 16;

thread_local! {
    /// Rounds of paced writeback run on this thread, for tests: a sync runs on the thread of
    /// the connection's caller, so tests running side by side do not count each other's.
    static ROUNDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Rounds of paced writeback this thread has run so far.
#[cfg(test)]
fn rounds() -> u64 {
    ROUNDS.get()
}

/// Why SQLite would not take our VFS, or a connection's reserved bytes.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ShimError {
    #[error("SQLite has no default VFS")]
    NoDefaultVfs,
    #[error("{0} does not fit SQLite's int")]
    TooLarge(&'static str),
    #[error("SQLite refused the VFS {name:?} (code {code})")]
    Refused { name: &'static CStr, code: c_int },
    #[error("SQLite refused to reserve {bytes} bytes per page (code {code})")]
    Reserve { bytes: u8, code: c_int },
}

/// Registers both VFSes with SQLite (once per process) and returns the name of the one for
/// `writeback`.
pub(crate) fn vfs(writeback: Writeback) -> Result<&'static CStr, ShimError> {
    static REGISTERED: OnceLock<Result<(), ShimError>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| [Writeback::Paced, Writeback::AtOnce].into_iter().try_for_each(register))
        .clone()
        .map(|()| writeback.vfs_name())
}

/// The pragma that turns a connection's checksums off (`PRAGMA clade_page_checksums = off`):
/// its reads of the database file are not checked and its writes not sealed. Only for the steps
/// that make the checksums ([`crate::checksums`]).
pub(crate) const CHECKSUMS_PRAGMA: &str = "clade_page_checksums";

/// Sets how many bytes at the end of each page SQLite leaves to us (`SQLITE_FCNTL_RESERVE_BYTES`):
/// a new database gets them with its first write, an existing one with its next `VACUUM`.
pub(crate) fn reserve_bytes(conn: &rusqlite::Connection, bytes: u8) -> Result<(), ShimError> {
    let mut value = c_int::from(bytes);
    // SAFETY: the handle is live for the borrow of `conn`; the call reads and writes an int.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_RESERVE_BYTES,
            (&raw mut value).cast(),
        )
    };
    match rc {
        ffi::SQLITE_OK => Ok(()),
        code => Err(ShimError::Reserve { bytes, code }),
    }
}

/// The file and page of the last read that failed its checksum.
static LAST_MISMATCH: Mutex<Option<(std::path::PathBuf, u64)>> = Mutex::new(None);

/// The page of `path` whose checksum failed last, if it is that file's.
pub(crate) fn last_mismatch(path: &str) -> Option<u64> {
    let last = LAST_MISMATCH.lock().unwrap_or_else(|e| e.into_inner());
    last.as_ref().filter(|(file, _)| file.as_os_str() == path).map(|(_, page)| *page)
}

/// What one of our VFSes keeps in its `pAppData`.
struct Shim {
    base: *mut ffi::sqlite3_vfs,
    writeback: Writeback,
}

fn register(writeback: Writeback) -> Result<(), ShimError> {
    // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which SQLite keeps for the life
    // of the process; copying it by value reads a plain C struct.
    let base = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if base.is_null() {
        return Err(ShimError::NoDefaultVfs);
    }
    // SAFETY: `base` is non-null and points to a live `sqlite3_vfs`.
    let mut ours = unsafe { *base };
    let size = usize::try_from(ours.szOsFile)
        .map_err(|_| ShimError::TooLarge("the default VFS's file size"))?;
    ours.szOsFile = c_int::try_from(std::mem::size_of::<PacedFile>() + size)
        .map_err(|_| ShimError::TooLarge("the paced VFS's file size"))?;
    ours.zName = writeback.vfs_name().as_ptr();
    ours.pNext = std::ptr::null_mut();
    // Leaked on purpose, like the VFS itself: SQLite keeps a registered VFS for the life of the
    // process.
    ours.pAppData = Box::into_raw(Box::new(Shim { base, writeback })).cast();
    ours.xOpen = Some(open);
    let ours: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(ours));
    // SAFETY: `ours` lives forever; registering does not make it the default.
    match unsafe { ffi::sqlite3_vfs_register(ours, 0) } {
        ffi::SQLITE_OK => Ok(()),
        code => Err(ShimError::Refused { name: writeback.vfs_name(), code }),
    }
}

/// The file object SQLite allocates for this VFS: our header, then the default VFS's own file
/// object, which every call is passed on to.
#[repr(C)]
struct PacedFile {
    /// SQLite's view: its methods are [`methods_for`] the inner file's; null if opening failed.
    header: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Set for a main database file, else null.
    pacer: *mut Pacer,
    /// Set for a main database file, else null.
    seal: *mut Seal,
}

/// The page checksums of a main database file.
struct Seal {
    /// Whether its pages carry checksums: its header reserves exactly the bytes for one.
    on: bool,
    /// Whether this connection checks and seals them (see [`CHECKSUMS_PRAGMA`]).
    enabled: bool,
    page_size: usize,
    /// The page being written, with its checksum.
    scratch: Vec<u8>,
    path: std::path::PathBuf,
}

impl Seal {
    /// Learns the file's page layout from its header, as read or about to be written.
    fn learn(&mut self, header: &[u8]) {
        if let Some(header) = crate::checksums::Header::parse(header) {
            self.on = header.reserved == crate::checksums::RESERVED;
            self.page_size = header.page_size;
        }
    }

    /// The number (from 1) of the page a read or write of `amount` bytes at `offset` is, if it
    /// is a whole page to check or seal.
    fn page(&self, amount: c_int, offset: i64) -> Option<u64> {
        let whole = self.on
            && self.enabled
            && usize::try_from(amount).is_ok_and(|amount| amount == self.page_size)
            && offset % i64::from(amount) == 0;
        whole.then(|| u64::try_from(offset / i64::from(amount)).map_or(0, |index| index + 1))
    }
}

/// Our own handle on a main database file or a WAL.
struct Pacer {
    /// A descriptor of our own for the same file: `sync_file_range` and `fdatasync` work on
    /// the file's pages whichever descriptor wrote them.
    file: std::fs::File,
    /// Writes since the last sync, remembered for a main database file opened for paced
    /// writeback only: the WAL's are appends that its own fsyncs already send out as they come.
    written: Option<Vec<(i64, i64)>>,
    /// Whether the next sync is still SQLite's own (see [`sync`]).
    sqlite_syncs_next: bool,
}

impl Pacer {
    /// Writes back what was written since the last call, in rounds, each waited for.
    fn write_back(&mut self) {
        let Some(written) = &mut self.written else { return };
        written.sort_unstable();
        let per_round = PAGES_PER_ROUND.max(written.len().div_ceil(MOST_ROUNDS));
        for round in written.chunks(per_round) {
            let (Some(first), Some(end)) =
                (round.first(), round.iter().map(|(offset, len)| offset + len).max())
            else {
                continue;
            };
            write_back_range(&self.file, first.0, end - first.0);
            ROUNDS.set(ROUNDS.get() + 1);
        }
        written.clear();
    }
}

#[cfg(target_os = "linux")]
fn write_back_range(file: &std::fs::File, offset: i64, len: i64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor we own. Its error is not ours to report: the
    // sync that follows writes whatever this did not, and reports any failure to SQLite.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn write_back_range(_file: &std::fs::File, _offset: i64, _len: i64) {}

/// What [`register`] kept in our VFS's `pAppData`.
///
/// # Safety
/// `vfs` must be a VFS [`register`] built.
unsafe fn shim_of(vfs: *mut ffi::sqlite3_vfs) -> &'static Shim {
    // SAFETY: per the contract, `vfs` is ours and its `pAppData` a leaked `Shim`.
    unsafe { &*(*vfs).pAppData.cast::<Shim>() }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite allocated `file` with our `szOsFile`: a `PacedFile` followed by room for
    // the base VFS's file object, which is where `inner` points.
    unsafe {
        let shim = shim_of(vfs);
        let base = shim.base;
        let paced = file.cast::<PacedFile>();
        let inner = file.cast::<u8>().add(std::mem::size_of::<PacedFile>()).cast();
        (*paced).header.pMethods = std::ptr::null();
        (*paced).inner = inner;
        (*paced).pacer = std::ptr::null_mut();
        (*paced).seal = std::ptr::null_mut();
        let Some(base_open) = (*base).xOpen else { return ffi::SQLITE_CANTOPEN };
        let rc = base_open(base, name, inner, flags, out_flags);
        let inner_methods = (*inner).pMethods;
        if inner_methods.is_null() {
            return rc;
        }
        (*paced).header.pMethods = methods_for(inner_methods);
        let main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
        let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
        if rc == ffi::SQLITE_OK && main && !name.is_null() {
            let path =
                std::ffi::OsStr::from_encoded_bytes_unchecked(CStr::from_ptr(name).to_bytes());
            let mut seal = Seal {
                on: false,
                enabled: true,
                page_size: 0,
                scratch: Vec::new(),
                path: path.into(),
            };
            // A new, empty file has no header yet: its first write of page 1 brings one.
            let mut header = [0u8; 100];
            if let Some(read) = (*inner_methods).xRead
                && read(inner, header.as_mut_ptr().cast(), 100, 0) == ffi::SQLITE_OK
            {
                seal.learn(&header);
            }
            (*paced).seal = Box::into_raw(Box::new(seal));
        }
        if rc == ffi::SQLITE_OK
            && main
            && let Some(control) = (*inner_methods).xFileControl
        {
            // Only a hint: a file that does not take it grows as before.
            let mut chunk = CHUNK_BYTES;
            control(inner, ffi::SQLITE_FCNTL_CHUNK_SIZE, (&raw mut chunk).cast());
        }
        if rc == ffi::SQLITE_OK && (main || wal) && !name.is_null() {
            let path =
                std::ffi::OsStr::from_encoded_bytes_unchecked(CStr::from_ptr(name).to_bytes());
            // Without a descriptor of our own the file simply passes through.
            if let Ok(own) = std::fs::File::open(path) {
                (*paced).pacer = Box::into_raw(Box::new(Pacer {
                    file: own,
                    written: (main && shim.writeback == Writeback::Paced).then(Vec::new),
                    // SQLite syncs the directory of a WAL it has just created on its first
                    // sync; a main database file's own sync is never more than `fsync`.
                    sqlite_syncs_next: wal,
                }));
            }
        }
        rc
    }
}

/// Our methods for files whose inner methods are `inner`: each method the inner file has, passed
/// on; the ones it lacks stay absent, so SQLite sees the same capabilities (WAL support, mmap).
/// One table per distinct inner table, built once and kept.
///
/// # Safety
/// `inner` must point to a methods table that lives for the rest of the process (the base VFS's
/// static tables do).
unsafe fn methods_for(inner: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    static TABLES: Mutex<Vec<(usize, &'static ffi::sqlite3_io_methods)>> = Mutex::new(Vec::new());
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ours)) = tables.iter().find(|(of, _)| *of == inner as usize) {
        return *ours;
    }
    // SAFETY: per the contract, `inner` points to a live table.
    let inner_table = unsafe { *inner };
    macro_rules! ours_if_present {
        ($($field:ident => $ours:ident),* $(,)?) => {
            ffi::sqlite3_io_methods {
                iVersion: inner_table.iVersion,
                $($field: inner_table.$field.and(Some($ours)),)*
            }
        };
    }
    let table = ours_if_present! {
        xClose => close, xRead => read, xWrite => write, xTruncate => truncate, xSync => sync,
        xFileSize => file_size, xLock => lock, xUnlock => unlock,
        xCheckReservedLock => check_reserved_lock, xFileControl => file_control,
        xSectorSize => sector_size, xDeviceCharacteristics => device_characteristics,
        xShmMap => shm_map, xShmLock => shm_lock, xShmBarrier => shm_barrier,
        xShmUnmap => shm_unmap, xFetch => fetch, xUnfetch => unfetch,
    };
    let ours: &'static ffi::sqlite3_io_methods = Box::leak(Box::new(table));
    tables.push((inner as usize, ours));
    ours
}

/// The inner file and its methods (a table the base VFS keeps for the life of the process, so
/// borrowed, not copied, on every call).
///
/// # Safety
/// `file` must be a `PacedFile` that [`open`] opened (its methods are only ours then).
unsafe fn inner_of(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: per the contract; an opened inner file has a non-null, static methods table.
    unsafe {
        let inner = (*file.cast::<PacedFile>()).inner;
        (inner, &*(*inner).pMethods)
    }
}

/// Defines a method that passes the call on to the inner file. Our table only holds it when the
/// inner table has it, so the `unwrap_or` never decides anything.
macro_rules! pass_on {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $absent:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls our methods only on files `open` opened.
            unsafe {
                let (inner, methods) = inner_of(file);
                match methods.$field {
                    Some(method) => method(inner $(, $arg)*),
                    None => $absent,
                }
            }
        }
    };
}

pass_on!(truncate, xTruncate, (size: i64) -> c_int, ffi::SQLITE_IOERR);
pass_on!(file_size, xFileSize, (size: *mut i64) -> c_int, ffi::SQLITE_IOERR);
pass_on!(lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_IOERR);
pass_on!(unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_IOERR);
pass_on!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, ffi::SQLITE_IOERR);
pass_on!(sector_size, xSectorSize, () -> c_int, 4096);
pass_on!(device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
pass_on!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR);
pass_on!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR);
pass_on!(shm_barrier, xShmBarrier, () -> (), ());
pass_on!(shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_IOERR);
pass_on!(fetch_mapped, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR);
pass_on!(unfetch, xUnfetch, (offset: i64, page: *mut c_void) -> c_int, ffi::SQLITE_IOERR);

/// Reads, and checks a whole page of a database file that carries checksums: a page that does
/// not match fails the read with `SQLITE_IOERR_DATA`, which the store reports as corruption.
unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files `open` opened; `seal` is ours or null;
    // `buf` holds `amount` bytes, which a successful read filled.
    unsafe {
        let (inner, methods) = inner_of(file);
        let Some(method) = methods.xRead else { return ffi::SQLITE_IOERR_READ };
        let rc = method(inner, buf, amount, offset);
        let seal = (*file.cast::<PacedFile>()).seal;
        if rc != ffi::SQLITE_OK || seal.is_null() {
            return rc;
        }
        let seal = &mut *seal;
        let Ok(len) = usize::try_from(amount) else { return rc };
        let bytes = std::slice::from_raw_parts(buf.cast::<u8>().cast_const(), len);
        if offset == 0 && len >= 100 {
            seal.learn(bytes);
        }
        if let Some(number) = seal.page(amount, offset)
            && !crate::checksums::verify(bytes, number)
        {
            // SQLite's error cannot say which page: the store's can.
            *LAST_MISMATCH.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((seal.path.clone(), number));
            return ffi::SQLITE_IOERR_DATA;
        }
        rc
    }
}

/// A checked file is read through [`read`] only: no memory-mapped pages.
unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: as in `read`; `out` is SQLite's to receive a page or null.
    unsafe {
        let seal = (*file.cast::<PacedFile>()).seal;
        if !seal.is_null() && (*seal).on {
            *out = std::ptr::null_mut();
            return ffi::SQLITE_OK;
        }
        fetch_mapped(file, offset, amount, out)
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files `open` opened; `pacer` and `seal` are ours
    // or null; `buf` holds `amount` bytes.
    unsafe {
        let (inner, methods) = inner_of(file);
        let Some(method) = methods.xWrite else { return ffi::SQLITE_IOERR_WRITE };
        let mut buf = buf;
        let seal = (*file.cast::<PacedFile>()).seal;
        if !seal.is_null()
            && let Ok(len) = usize::try_from(amount)
        {
            let seal = &mut *seal;
            let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), len);
            if offset == 0 && len >= 100 {
                seal.learn(bytes);
            }
            if let Some(number) = seal.page(amount, offset) {
                // SQLite's buffer is its own: the checksum goes into a copy.
                seal.scratch.clear();
                seal.scratch.extend_from_slice(bytes);
                crate::checksums::seal(&mut seal.scratch, number);
                buf = seal.scratch.as_ptr().cast();
            }
        }
        let rc = method(inner, buf, amount, offset);
        let pacer = (*file.cast::<PacedFile>()).pacer;
        if rc == ffi::SQLITE_OK && !pacer.is_null() {
            let pacer = &mut *pacer;
            if let Some(written) = &mut pacer.written {
                written.push((offset, i64::from(amount)));
                if written.len() >= MOST_REMEMBERED {
                    pacer.write_back();
                }
            }
        }
        rc
    }
}

/// Paces what the file wrote, then makes it durable. SQLite's own sync (the bundled build has
/// no `HAVE_FDATASYNC`) is `fsync`, which also commits the file's new modification time to
/// ext4's journal: a journal commit per checkpoint, for the database file and for the WAL. Ours
/// is `fdatasync`, as SQLite's own is when built with `HAVE_FDATASYNC`: it syncs the data and
/// what is needed to read it back (the size), not the times. A WAL's first sync is still
/// SQLite's, which also syncs the directory of a WAL it has just created.
unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `write`.
    unsafe {
        let (inner, methods) = inner_of(file);
        let pacer = (*file.cast::<PacedFile>()).pacer;
        if !pacer.is_null() {
            let pacer = &mut *pacer;
            pacer.write_back();
            if !pacer.sqlite_syncs_next {
                return match pacer.file.sync_data() {
                    Ok(()) => ffi::SQLITE_OK,
                    Err(_) => ffi::SQLITE_IOERR_FSYNC,
                };
            }
            pacer.sqlite_syncs_next = false;
        }
        match methods.xSync {
            Some(method) => method(inner, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        }
    }
}

/// Passes file controls on; when a checkpoint's size hint grows a paced database file, the
/// blocks SQLite wrote to allocate the new chunk are remembered with its other writes, so the
/// sync writes them back in rounds too.
unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as in `write`.
    unsafe {
        let (inner, methods) = inner_of(file);
        let seal = (*file.cast::<PacedFile>()).seal;
        if op == ffi::SQLITE_FCNTL_PRAGMA && !seal.is_null() {
            // `arg` is SQLite's `char*[3]`: an error message out, the pragma's name, its value.
            let words = arg.cast::<*const std::ffi::c_char>();
            let name = *words.add(1);
            if !name.is_null()
                && CStr::from_ptr(name).to_bytes().eq_ignore_ascii_case(CHECKSUMS_PRAGMA.as_bytes())
            {
                let value = *words.add(2);
                if !value.is_null() {
                    let value = CStr::from_ptr(value).to_bytes();
                    (*seal).enabled = !(value.eq_ignore_ascii_case(b"off") || value == b"0");
                }
                return ffi::SQLITE_OK;
            }
        }
        let Some(control) = methods.xFileControl else { return ffi::SQLITE_NOTFOUND };
        let pacer = (*file.cast::<PacedFile>()).pacer;
        let tracked = !pacer.is_null() && (*pacer).written.is_some();
        if op != ffi::SQLITE_FCNTL_SIZE_HINT || !tracked {
            return control(inner, op, arg);
        }
        let size = |pacer: &Pacer| pacer.file.metadata().map_or(0, |m| m.len());
        let before = size(&*pacer);
        let rc = control(inner, op, arg);
        let pacer = &mut *pacer;
        let after = size(pacer);
        if let (Some(written), Ok(from), Ok(to)) =
            (&mut pacer.written, i64::try_from(before), i64::try_from(after))
        {
            written.extend((from..to).step_by(GROWTH_STEP as usize).map(|at| (at, GROWTH_STEP)));
        }
        rc
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `write`; SQLite closes a file once, after which nothing reads `pacer`.
    unsafe {
        let paced = file.cast::<PacedFile>();
        if !(*paced).pacer.is_null() {
            drop(Box::from_raw((*paced).pacer));
            (*paced).pacer = std::ptr::null_mut();
        }
        if !(*paced).seal.is_null() {
            drop(Box::from_raw((*paced).seal));
            (*paced).seal = std::ptr::null_mut();
        }
        let (inner, methods) = inner_of(file);
        match methods.xClose {
            Some(method) => method(inner),
            None => ffi::SQLITE_OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a checkpoint of 2,000 rows of 1 KB (about 1,000 pages) did: the WAL's pages, the
    /// paced rounds it ran, and the database file's length after it.
    fn checkpoint_rows(writeback: Writeback) -> (u64, u64, u64) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("paced.db");
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
        let name = vfs(writeback).unwrap_or_else(|e| panic!("{e}"));
        let conn = rusqlite::Connection::open_with_flags_and_vfs(&path, flags, name)
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(
            "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT i, randomblob(1000) FROM n;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let before = rounds();
        let (busy, log, folded): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((busy, folded), (0, log), "the checkpoint folded the whole WAL");
        let ran = rounds() - before;
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count, 2000, "every row reads back");
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_else(|e| panic!("{e}"));
        (log as u64, ran, len)
    }

    fn assert_whole_chunks(len: u64) {
        let chunk = CHUNK_BYTES as u64;
        assert!(
            len >= chunk && len.is_multiple_of(chunk),
            "{len} bytes is not whole {chunk}-byte chunks"
        );
    }

    /// The checkpointer's flavour grows the database file by whole chunks, so most later syncs
    /// change no size, and syncs it through paced rounds.
    #[test]
    fn a_paced_checkpoint_grows_the_database_in_chunks_and_writes_it_back_in_rounds() {
        let (pages, ran, len) = checkpoint_rows(Writeback::Paced);
        let least = pages / (PAGES_PER_ROUND as u64) / 2;
        assert!(ran >= least, "{ran} paced rounds for {pages} pages, expected at least {least}");
        assert_whole_chunks(len);
    }

    /// A file that cannot be opened fails as it would without the shim, with SQLite's error, and
    /// leaves nothing for the shim to close.
    #[test]
    fn a_file_that_cannot_be_opened_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("no-such-dir").join("x.db");
        for writeback in [Writeback::Paced, Writeback::AtOnce] {
            let name = vfs(writeback).unwrap_or_else(|e| panic!("{e}"));
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
            let opened = rusqlite::Connection::open_with_flags_and_vfs(&path, flags, name);
            let err = opened.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("unable to open"), "{writeback:?}: {err:?}");
        }
    }

    /// The writer's flavour grows the file the same way but writes it back at once: its
    /// catch-up stops every write until the sync is done.
    #[test]
    fn the_writers_checkpoint_grows_in_chunks_and_writes_back_at_once() {
        let (_, ran, len) = checkpoint_rows(Writeback::AtOnce);
        assert_eq!(ran, 0, "the writer's sync ran {ran} paced rounds");
        assert_whole_chunks(len);
    }
}
