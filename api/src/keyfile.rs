//! Key files under the data directory: created once with mode 0600, never logged.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Reads the key at `path`, or creates it from `generate` with mode 0600 (never overwriting
/// a file another process created first).
pub fn read_or_create(
    path: &Path,
    generate: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    match fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    }
    let bytes = generate()?;
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
            Ok(bytes)
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        }
        Err(err) => Err(format!("cannot create {}: {err}", path.display())),
    }
}
