//! Where an entry's secret comes from, and reading it safely.
//!
//! - A `password_file` is read when the configuration is loaded and again
//!   whenever it changes: every session start compares the file's
//!   identity (device, inode, size, modification and change times, mode)
//!   with the version read last, through symlinks, so a Kubernetes Secret
//!   volume's `..data` swap is seen. The next session uses the new secret;
//!   sessions already logged in keep going.
//! - A file that group or others may read or write is refused, at load and
//!   at every later read (fail closed: a rotated file left `0644` stops
//!   injection with a clear error rather than being used).
//! - A `password_env` is read at load (a process's environment does not
//!   change under it).
//!
//! Error messages say what is wrong with the secret's source but never
//! echo the file's path, the variable's name or the content: the
//! configuration's line and column (or the entry's name) locate it, and a
//! secret pasted into the wrong key stays unsaid.

use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use hoop_core::Secret;

/// The largest secret file read: a password, not a bundle.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be opened or read.
    #[error("its password_file cannot be read: {0}")]
    Read(#[source] std::io::Error),
    /// The path leads to something other than a regular file (reading a
    /// FIFO or a device could block or never end).
    #[error("its password_file is not a regular file")]
    NotAFile,
    /// Group or others may read or write the file.
    #[error(
        "its password_file has mode {mode:o}, which lets group or others read or change it; \
         make it readable by hoop only (chmod 600)"
    )]
    Mode {
        /// The file's permission bits.
        mode: u32,
    },
    /// The file is larger than any password.
    #[error("its password_file is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    /// The environment variable is not set (or set to nothing).
    #[error("the environment variable named by its password_env is not set or empty")]
    EnvUnset,
    /// The secret is empty (after its line ending).
    #[error("its secret is empty")]
    Empty,
    /// The secret holds a NUL byte, which no database protocol can carry
    /// in a password.
    #[error("its secret contains a NUL byte")]
    Nul,
}

/// Where one entry's secret comes from.
#[derive(Debug)]
pub enum SecretSource {
    /// A file, re-read when it changes.
    File(SecretFile),
    /// An environment variable, read once.
    Env(Secret),
}

impl SecretSource {
    /// A file source, read now (so a bad file is reported at load).
    pub fn file(path: PathBuf) -> Result<Self, SecretError> {
        let file = SecretFile {
            path,
            last: Mutex::new(None),
        };
        file.current()?;
        Ok(Self::File(file))
    }

    /// An environment variable source, read now.
    pub fn env(var: &str) -> Result<Self, SecretError> {
        let value = std::env::var_os(var).ok_or(SecretError::EnvUnset)?;
        if value.is_empty() {
            return Err(SecretError::EnvUnset);
        }
        checked(value.into_encoded_bytes()).map(Self::Env)
    }

    /// The secret as it is now (a file is re-read if it changed).
    pub fn current(&self) -> Result<Secret, SecretError> {
        match self {
            Self::File(file) => file.current(),
            Self::Env(secret) => Ok(secret.clone()),
        }
    }
}

/// What identifies one version of a file (through symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    mode: u32,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.permissions().mode(),
        }
    }
}

/// A `password_file` and the version of it read last.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    last: Mutex<Option<(FileVersion, Secret)>>,
}

impl SecretFile {
    /// The file's secret, re-read when the file changed since the last read.
    pub fn current(&self) -> Result<Secret, SecretError> {
        let meta = std::fs::metadata(&self.path).map_err(SecretError::Read)?;
        check_metadata(&meta)?;
        let seen = FileVersion::of(&meta);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((version, secret)) = last.as_ref()
            && *version == seen
        {
            return Ok(secret.clone());
        }
        let (version, secret) = read_file(&self.path)?;
        *last = Some((version, secret.clone()));
        Ok(secret)
    }
}

fn check_metadata(meta: &std::fs::Metadata) -> Result<(), SecretError> {
    if !meta.is_file() {
        return Err(SecretError::NotAFile);
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::Mode {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Opens the file and checks what was opened (not the path, which may
/// have changed since it was looked at), then reads it.
fn read_file(path: &Path) -> Result<(FileVersion, Secret), SecretError> {
    let file = File::open(path).map_err(SecretError::Read)?;
    let meta = file.metadata().map_err(SecretError::Read)?;
    check_metadata(&meta)?;
    if meta.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(SecretError::Read)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge);
    }
    Ok((FileVersion::of(&meta), checked(bytes)?))
}

/// Drops the line ending `echo` or an editor leaves, and refuses what no
/// login could use.
fn checked(mut bytes: Vec<u8>) -> Result<Secret, SecretError> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let secret = Secret::new(bytes);
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    if secret.expose().contains(&0) {
        return Err(SecretError::Nul);
    }
    Ok(secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &[u8], mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Replaces the file the way a Secret volume or a careful operator does.
    fn replace(path: &Path, content: &[u8], mode: u32) {
        let aside = path.with_extension("new");
        write(&aside, content, mode);
        std::fs::rename(&aside, path).unwrap();
    }

    #[test]
    fn a_file_is_read_at_load_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write(&path, b"first-secret\n", 0o600);
        let source = SecretSource::file(path.clone()).unwrap();
        assert_eq!(source.current().unwrap().expose(), b"first-secret");
        replace(&path, b"second-secret", 0o600);
        assert_eq!(source.current().unwrap().expose(), b"second-secret");
        // Rewritten in place, same length: the change time still moves.
        std::thread::sleep(std::time::Duration::from_millis(5));
        write(&path, b"third--secret", 0o600);
        assert_eq!(source.current().unwrap().expose(), b"third--secret");
    }

    #[test]
    fn an_open_file_is_refused_at_load_and_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write(&path, b"hunter2", 0o644);
        let err = SecretSource::file(path.clone()).unwrap_err();
        assert!(matches!(err, SecretError::Mode { mode: 0o644 }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("mode 644") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains(&path.display().to_string()));

        write(&path, b"hunter2", 0o600);
        let source = SecretSource::file(path.clone()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(source.current(), Err(SecretError::Mode { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(source.current().unwrap().expose(), b"hunter2");
    }

    #[test]
    fn unusable_files_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(matches!(
            SecretSource::file(path.clone()),
            Err(SecretError::Read(_))
        ));
        write(&path, b"\n", 0o600);
        assert!(matches!(
            SecretSource::file(path.clone()),
            Err(SecretError::Empty)
        ));
        write(&path, b"a\0b", 0o600);
        assert!(matches!(
            SecretSource::file(path.clone()),
            Err(SecretError::Nul)
        ));
        write(&path, &vec![b'x'; 70_000], 0o600);
        assert!(matches!(
            SecretSource::file(path.clone()),
            Err(SecretError::TooLarge)
        ));
        assert!(matches!(
            SecretSource::file(dir.path().to_owned()),
            Err(SecretError::NotAFile)
        ));
        // A symlink is followed, and what it leads to is checked.
        write(&path, b"linked-secret\r\n", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let source = SecretSource::file(link).unwrap();
        assert_eq!(source.current().unwrap().expose(), b"linked-secret");
    }

    #[test]
    fn an_unset_variable_is_refused() {
        assert!(matches!(
            SecretSource::env("HOOP_CREDENTIALS_TEST_UNSET_VARIABLE"),
            Err(SecretError::EnvUnset)
        ));
        // PATH is set in every test environment; its value is only a stand-in.
        let source = SecretSource::env("PATH").unwrap();
        assert!(!source.current().unwrap().is_empty());
    }
}
