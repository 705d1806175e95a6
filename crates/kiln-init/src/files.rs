//! Writes the job's files under the working directory. The host validated the paths already;
//! they are checked again here, and every directory is walked with `openat(O_NOFOLLOW)` so that
//! a symlink the image planted can never redirect a write outside the working directory.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_proto::FileEntry;

/// A file that could not be written; the program is then not run.
#[derive(Debug)]
pub struct FileError {
    pub path: String,
    pub err: io::Error,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write file {}: {}", self.path, self.err)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

/// The components of a job file path: relative, no NUL, no `..`; empty and `.` components are
/// dropped, and something must remain.
pub fn components(path: &str) -> io::Result<Vec<&str>> {
    if path.is_empty() {
        return Err(invalid("empty path"));
    }
    if path.contains('\0') {
        return Err(invalid("path contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(invalid("path is absolute"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(invalid("path contains '..'"));
    }
    if parts.is_empty() {
        return Err(invalid("path names no file"));
    }
    Ok(parts)
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| invalid("path contains a NUL byte"))
}

fn open_dir(at: RawFd, name: &CString, nofollow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `name` is NUL-terminated and outlives the call; a successful openat returns a
    // fresh fd that nothing else owns.
    unsafe {
        let fd = libc::openat(at, name.as_ptr(), flags);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Writes every file under `base` in order; stops at the first failure.
pub fn write_files(base: &Path, files: &[FileEntry]) -> Result<(), FileError> {
    let Some(first) = files.first() else {
        return Ok(());
    };
    // The base is our own working directory, so it may be followed if it is a link.
    let root = CString::new(base.as_os_str().as_bytes())
        .map_err(|_| invalid("base path contains a NUL byte"))
        .and_then(|b| open_dir(libc::AT_FDCWD, &b, false))
        .map_err(|err| FileError {
            path: first.path.clone(),
            err,
        })?;
    for f in files {
        write_one(root.as_raw_fd(), f).map_err(|err| FileError {
            path: f.path.clone(),
            err,
        })?;
    }
    Ok(())
}

fn write_one(root: RawFd, f: &FileEntry) -> io::Result<()> {
    let parts = components(&f.path)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("path names no file"));
    };
    let mut dir: Option<OwnedFd> = None;
    for d in dirs {
        let at = dir.as_ref().map_or(root, AsRawFd::as_raw_fd);
        let c = cstr(d)?;
        // SAFETY: `c` is NUL-terminated and outlives the call.
        if unsafe { libc::mkdirat(at, c.as_ptr(), 0o755) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        // A symlink fails here (ENOTDIR with O_DIRECTORY) instead of being followed.
        dir = Some(open_dir(at, &c, true)?);
    }
    let at = dir.as_ref().map_or(root, AsRawFd::as_raw_fd);
    let c = cstr(name)?;
    let mode = f.mode & 0o7777;
    // SAFETY: `c` is NUL-terminated and outlives the call; a successful openat returns a fresh
    // fd that the File then owns.
    let mut file = unsafe {
        let fd = libc::openat(
            at,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        File::from_raw_fd(fd)
    };
    file.write_all(&f.content)?;
    // The umask trimmed the mode given to openat; the job asked for this exact one.
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir;
    use std::fs;

    fn entry(path: &str, mode: u32, content: &[u8]) -> FileEntry {
        FileEntry {
            path: path.into(),
            mode,
            content: content.into(),
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn accepted_paths_are_normalised() {
        assert_eq!(components("a").unwrap(), ["a"]);
        assert_eq!(components("./a").unwrap(), ["a"]);
        assert_eq!(components("a//b/./c").unwrap(), ["a", "b", "c"]);
        assert_eq!(components("a/b/").unwrap(), ["a", "b"]);
        assert_eq!(components("..a/b..").unwrap(), ["..a", "b.."]);
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "", "/a", "/", "..", "a/../b", "a/..", "./../a", ".", "./", "//", "a\0b",
        ] {
            let e = components(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}");
        }
    }

    #[test]
    fn files_are_written_with_exact_modes() {
        let dir = temp_dir("write");
        let files = [
            entry("main.py", 0o644, b"print(1)\n"),
            entry("a/b/c.txt", 0o600, b"deep"),
            entry("a/run.sh", 0o755, b"#!/bin/sh\n"),
            entry("./a//empty", 0o400, b""),
            entry("big", 0o100640, &vec![7u8; 300_000]),
        ];
        write_files(&dir, &files).unwrap();
        assert_eq!(fs::read(dir.join("main.py")).unwrap(), b"print(1)\n");
        assert_eq!(fs::read(dir.join("a/b/c.txt")).unwrap(), b"deep");
        assert_eq!(fs::read(dir.join("a/empty")).unwrap(), b"");
        assert_eq!(fs::read(dir.join("big")).unwrap().len(), 300_000);
        assert_eq!(mode_of(&dir.join("a/b/c.txt")), 0o600);
        assert_eq!(mode_of(&dir.join("a/run.sh")), 0o755);
        assert_eq!(mode_of(&dir.join("a/empty")), 0o400);
        // Only the permission bits of the mode count, not the file type bits.
        assert_eq!(mode_of(&dir.join("big")), 0o640);
        assert!(fs::symlink_metadata(dir.join("a/b")).unwrap().is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinked_directory_is_not_followed() {
        let dir = temp_dir("symdir");
        let outside = temp_dir("symdir-outside");
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let e = write_files(&dir, &[entry("link/x", 0o644, b"escape")]).unwrap_err();
        assert_eq!(e.path, "link/x");
        assert!(
            matches!(e.err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{e}"
        );
        assert!(!outside.join("x").exists());
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn symlinked_file_is_not_followed() {
        let dir = temp_dir("symfile");
        let outside = temp_dir("symfile-outside");
        std::os::unix::fs::symlink(outside.join("target"), dir.join("f")).unwrap();
        assert!(write_files(&dir, &[entry("f", 0o644, b"escape")]).is_err());
        assert!(!outside.join("target").exists());
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn failures_name_the_path_and_stop() {
        let dir = temp_dir("fail");
        let files = [
            entry("ok", 0o644, b"1"),
            entry("ok", 0o644, b"2"),
            entry("later", 0o644, b"3"),
        ];
        let e = write_files(&dir, &files).unwrap_err();
        assert_eq!(e.err.raw_os_error(), Some(libc::EEXIST));
        assert!(e.to_string().starts_with("cannot write file ok: "), "{e}");
        assert!(!dir.join("later").exists());

        let e = write_files(&dir, &[entry("../up", 0o644, b"")]).unwrap_err();
        assert_eq!(e.to_string(), "cannot write file ../up: path contains '..'");
        // A file where a directory is wanted.
        let e = write_files(&dir, &[entry("ok/inner", 0o644, b"")]).unwrap_err();
        assert_eq!(e.err.raw_os_error(), Some(libc::ENOTDIR));
        fs::remove_dir_all(&dir).unwrap();
    }
}
