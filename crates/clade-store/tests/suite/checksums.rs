//! Page checksums of the SQLite store: bytes changed inside a page are refused, an older store
//! gains them when upgraded, and an operator can accept a file changed on purpose.

use std::path::Path;

use clade_store::{Durability, Error, Location, Migrations, PageChecksums, Store, StoreOptions};

use super::harness::open;

async fn open_with(path: &Path, migrations: Migrations) -> Result<Store, Error> {
    let options = StoreOptions {
        migrations,
        ..StoreOptions::new(Location::Sqlite(path.into()), Durability::Full)
    };
    Store::open(options).await
}

/// A tenant name (64 bytes, the most a name may have) with 50 bytes to change, and found nowhere else in the file.
fn marked_name() -> String {
    format!("marked-{}", "q".repeat(57))
}

/// Creates the marked tenant and folds the WAL into the database file, where it is to be found.
async fn store_with_marked_tenant(store: &Store) {
    store.tenants().create(&marked_name()).await.unwrap();
    store.disk_bytes().await.unwrap();
}

/// Overwrites 50 bytes in the middle of the marked tenant's name, on disk: the record keeps
/// its length and format, so only the page's checksum can tell.
fn change_fifty_bytes(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let name = marked_name();
    let at = bytes
        .windows(name.len())
        .position(|window| window == name.as_bytes())
        .expect("the marked name is in the database file");
    bytes[at + 7..at + 57].copy_from_slice(&[b'z'; 50]);
    std::fs::write(path, bytes).unwrap();
}

/// A store with the marked tenant, which another SQLite program (one that knows nothing of
/// the checksums) then renames `to`, with the store closed.
async fn marked_then_renamed_elsewhere(path: &Path, to: &str) {
    let store = open(Location::Sqlite(path.to_owned())).await.unwrap();
    store_with_marked_tenant(&store).await;
    store.close().await;
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute("UPDATE tenants SET name = ?1 WHERE name = ?2", [to, &marked_name()]).unwrap();
}

fn reserved_bytes(path: &Path) -> u8 {
    std::fs::read(path).unwrap()[20]
}

#[tokio::test]
async fn fifty_changed_bytes_inside_a_page_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    let store = open(Location::Sqlite(path.clone())).await.unwrap();
    assert_eq!(store.page_checksums(), Some(PageChecksums::On));
    assert_eq!(reserved_bytes(&path), 8, "a new store reserves room for its checksums");
    store_with_marked_tenant(&store).await;
    store.close().await;

    change_fifty_bytes(&path);
    let err = match open(Location::Sqlite(path.clone())).await {
        Ok(store) => {
            let check = store.quick_check().await.expect_err("quick_check must fail");
            let read = store.tenants().named(&marked_name()).await.err();
            assert!(
                read.as_ref().is_some_and(|e| matches!(e, Error::ChecksumMismatch { .. })),
                "reading the changed page: {read:?}"
            );
            check
        }
        Err(err) => err,
    };
    assert!(matches!(err, Error::ChecksumMismatch { page: Some(_), .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "names the file: {text}");
    assert!(text.contains("checksum") && text.contains("(page "), "{text}");
}

#[tokio::test]
async fn a_store_made_before_checksums_gains_them_when_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    // A file as older builds made it: no room reserved at the end of its pages.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA page_size = 2048").unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    }
    assert_eq!(reserved_bytes(&path), 0);
    let old = open_with(&path, Migrations::RequireCurrent).await.unwrap();
    assert_eq!(old.page_checksums(), Some(PageChecksums::Absent), "only an upgrade adds them");
    store_with_marked_tenant(&old).await;
    old.close().await;

    let upgraded = open_with(&path, Migrations::Apply).await.unwrap();
    assert_eq!(upgraded.page_checksums(), Some(PageChecksums::Added));
    assert_eq!(reserved_bytes(&path), 8);
    assert!(upgraded.tenants().named(&marked_name()).await.is_ok(), "the data survives");
    upgraded.quick_check().await.unwrap();
    upgraded.disk_bytes().await.unwrap();
    upgraded.close().await;

    change_fifty_bytes(&path);
    let store = open_with(&path, Migrations::RequireCurrent).await;
    let refused = match store {
        Ok(store) => store.quick_check().await.err(),
        Err(err) => Some(err),
    };
    assert!(matches!(refused, Some(Error::ChecksumMismatch { .. })), "{refused:?}");
}

#[tokio::test]
async fn a_file_changed_on_purpose_is_accepted_by_rewriting_its_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    // Another SQLite program changes the file: it knows nothing of the checksums.
    marked_then_renamed_elsewhere(&path, "renamed").await;
    let store = open(Location::Sqlite(path.clone())).await;
    let refused = match store {
        Ok(store) => store.quick_check().await.err(),
        Err(err) => Some(err),
    };
    assert!(matches!(refused, Some(Error::ChecksumMismatch { .. })), "{refused:?}");

    let done = clade_store::checksums::rewrite(&path).unwrap();
    assert!(!done.added && done.rewritten >= 1 && done.rewritten < done.pages, "{done:?}");
    let store = open(Location::Sqlite(path.clone())).await.unwrap();
    store.quick_check().await.unwrap();
    assert!(store.tenants().named("renamed").await.is_ok());
    // Refused while a store is served: rewriting under a server would race its writes.
    let _owner = clade_store::OwnerLock::acquire(&Location::Sqlite(path.clone())).await.unwrap();
    let busy = clade_store::checksums::rewrite(&path).unwrap_err();
    assert!(matches!(busy, Error::InUse { .. }), "{busy}");
}

#[tokio::test]
async fn an_interrupted_conversion_is_finished_by_the_next_upgrade_and_refused_by_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clade.db");
    // As a crash leaves a conversion after its VACUUM: room reserved, pages not yet sealed.
    marked_then_renamed_elsewhere(&path, "during").await;
    std::fs::write(tmp.path().join("clade.db.sealing"), b"").unwrap();

    let err = open_with(&path, Migrations::RequireCurrent).await.err().unwrap();
    assert!(matches!(err, Error::ChecksumsInterrupted { .. }), "{err}");
    assert!(err.to_string().contains("interrupted"), "{err}");

    let store = open_with(&path, Migrations::Apply).await.unwrap();
    assert_eq!(store.page_checksums(), Some(PageChecksums::Added));
    store.quick_check().await.unwrap();
    assert!(store.tenants().named("during").await.is_ok());
    assert!(!tmp.path().join("clade.db.sealing").exists());
}
