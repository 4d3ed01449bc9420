//! Files and folders only their owner may read: the embedded mode's data folder (`data/` by default),
//! its SQLite database and the key file that opens every webhook secret. Folders Herald creates are
//! 0700, files 0600; what exists already is left as the operator made it.

use std::{fs, io, path::Path};

/// Creates `folder` and any missing parents, each owner-only (0700 on Unix).
pub(crate) fn create_folder(folder: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// Opens a new file for writing, owner-only (0600 on Unix), creating its folder as [`create_folder`]
/// does; fails if the file exists.
pub(crate) fn create_file(path: &Path) -> io::Result<fs::File> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_folder(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates an empty owner-only file at `path` unless one exists (SQLite then opens it; its `-wal` and
/// `-shm` files take the database file's permissions).
pub(crate) fn ensure_file(path: &Path) -> io::Result<()> {
    match create_file(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}
