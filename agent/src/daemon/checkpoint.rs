//! The tailer's checkpoint: for every followed file, where reading stopped (device, inode, the
//! offset after the last delivered line, the line count) and a fingerprint of the file's head, so
//! a restart neither re-reads nor skips lines. Stored as versioned JSON in the state directory and
//! written atomically (temporary file, fsync, rename, fsync of the directory).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::LogSource;

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// The whole checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// When it was written (Unix milliseconds): files born after it are read from their start.
    pub saved_at_ms: i64,
    pub files: Vec<FileCheckpoint>,
}

/// Where reading of one file stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// The configured or discovered path (for a rotated file still being drained: the path it had).
    pub path: PathBuf,
    pub source: LogSource,
    pub dev: u64,
    pub ino: u64,
    /// The byte after the last delivered line (a partial line is read again after a restart).
    pub offset: u64,
    /// Lines delivered from this file so far.
    pub line: u64,
    /// How many bytes of the file's start the fingerprint covers, and their FNV-1a hash.
    pub head_len: u64,
    pub head_hash: u64,
    /// True when the file had been renamed or deleted away from `path` and was being drained.
    #[serde(default)]
    pub rotated: bool,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("checkpoint {path} has version {found}, this agent reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a checkpoint; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Read the version first, so a future format gives a clear error rather than a parse error.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let versioned: Versioned =
        serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    if versioned.version != VERSION {
        return Err(CheckpointError::Version {
            path: path.to_path_buf(),
            found: versioned.version,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CheckpointError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes a checkpoint atomically: a reader (or a crash) sees the old file or the new one, never
/// a torn one.
pub fn store(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let write_err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(checkpoint)
        .map_err(|err| write_err(std::io::Error::other(err)))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = File::create(&tmp).map_err(write_err)?;
        file.write_all(&json).map_err(write_err)?;
        file.write_all(b"\n").map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    // The rename itself is durable once the directory is synced.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            saved_at_ms: 1_700_000_000_000,
            files: vec![FileCheckpoint {
                path: PathBuf::from("/var/log/nginx/access.log"),
                source: LogSource::NginxAccess,
                dev: 2049,
                ino: u64::MAX - 1,
                offset: 12345,
                line: 99,
                head_len: 256,
                head_hash: 0xcbf2_9ce4_8422_2325,
                rotated: false,
            }],
        }
    }

    #[test]
    fn round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/tail.json");
        assert!(load(&path).unwrap().is_none());
        store(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tail.json")]);
    }

    #[test]
    fn other_versions_and_garbage_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.json");
        std::fs::write(&path, br#"{"version": 2, "files": []}"#).unwrap();
        assert!(matches!(
            load(&path),
            Err(CheckpointError::Version { found: 2, .. })
        ));
        std::fs::write(&path, b"\x00\xff{{").unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Parse { .. })));
        std::fs::write(&path, br#"{"version": 1, "files": [{"path": 3}]}"#).unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Parse { .. })));
    }
}
