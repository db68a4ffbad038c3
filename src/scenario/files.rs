//! Reading the files a scenario names (and the scenario file itself) without trusting
//! what is at the path: only a regular file is read, and only up to a size that such a
//! file never needs. A named pipe would block `check` for ever waiting for a writer, and
//! `/dev/zero` would be read until memory ran out.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// How large a PEM file of a certificate chain or a private key may be: a chain of a
/// dozen RSA-4096 certificates is under 30 KiB.
pub(crate) const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How large a scenario file may be: the shipped ones are under 10 KiB, and a generated
/// one of 70,000 hosts fits. Parsing takes about 40 times the file's size in memory
/// (4 MiB: 170 MB at most), so the bound is on memory too.
pub(crate) const MAX_SCENARIO_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// It could not be opened or read (missing, not permitted, a directory...).
    Io(std::io::Error),
    /// It is not a regular file: what it is, like "a named pipe (FIFO)".
    NotRegular(&'static str),
    /// It holds more than the limit, in bytes.
    TooBig(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(error) => write!(f, "{error}"),
            ReadError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            ReadError::TooBig(limit) => write!(f, "it is larger than {}", size(*limit)),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for std::io::Error {
    /// The error as an I/O error, for errors that hold one: what went wrong is its text.
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Io(error) => error,
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// `limit` bytes as people write them, like "1 MiB".
pub(crate) fn size(limit: u64) -> String {
    match limit {
        n if n >= 1024 * 1024 && n % (1024 * 1024) == 0 => format!("{} MiB", n / 1024 / 1024),
        n if n >= 1024 && n % 1024 == 0 => format!("{} KiB", n / 1024),
        n => format!("{n} bytes"),
    }
}

/// The bytes of the regular file at `path` (symbolic links followed), at most `limit`.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    // Looked at before it is opened: opening a named pipe for reading waits for a writer.
    regular(&std::fs::metadata(path).map_err(ReadError::Io)?)?;
    // Non-blocking, and looked at again once open, for a path that changed in between: the
    // flag keeps the open of a pipe from waiting, and does nothing to a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    regular(&metadata)?;
    if metadata.len() > limit {
        return Err(ReadError::TooBig(limit));
    }
    read_at_most(file, limit)
}

/// Up to `limit` bytes of `file`; more is an error. The size the file said is not trusted
/// (a file in /proc says 0, and a file may grow while it is read).
fn read_at_most(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooBig(limit));
    }
    Ok(bytes)
}

/// `Ok` for a regular file; otherwise what it is.
fn regular(metadata: &Metadata) -> Result<(), ReadError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(ReadError::NotRegular(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_regular(&path, 5).unwrap(), b"12345");
        assert!(matches!(read_regular(&path, 4), Err(ReadError::TooBig(4))));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Without a writer, opening it would wait for ever.
        let error = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(
            error.to_string(),
            "it is a named pipe (FIFO), not a regular file"
        );
        let error = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(
            error.to_string(),
            "it is a character device, not a regular file"
        );
        let error = read_regular(dir.path(), 10).unwrap_err();
        assert_eq!(error.to_string(), "it is a directory, not a regular file");
    }

    #[test]
    fn a_file_that_says_it_is_empty_is_still_bounded() {
        // /proc files say they are 0 bytes long and hold more.
        let bytes = read_regular(Path::new("/proc/self/status"), 1 << 20).unwrap();
        assert!(!bytes.is_empty());
        assert!(matches!(
            read_regular(Path::new("/proc/self/status"), 8),
            Err(ReadError::TooBig(8))
        ));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(MAX_PEM_BYTES), "1 MiB");
        assert_eq!(size(MAX_SCENARIO_BYTES), "4 MiB");
        assert_eq!(size(2048), "2 KiB");
        assert_eq!(size(100), "100 bytes");
    }
}
