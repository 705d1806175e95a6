//! Sysfs values the gateway changes on the host, remembered so that a shutdown puts back
//! exactly what was there before.

use std::path::{Path, PathBuf};

/// Files under one sysfs directory, written in order and restored in reverse.
#[derive(Debug)]
pub(crate) struct Knobs {
    dir: PathBuf,
    previous: Vec<(&'static str, String)>,
}

impl Knobs {
    pub fn new(dir: PathBuf) -> Knobs {
        Knobs {
            dir,
            previous: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file's content, trimmed; `None` when it cannot be read.
    pub fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Writes every `(file, value)`, remembering the old values. On the first file that is
    /// missing or cannot be written, puts back what this call changed and says why.
    pub fn set(&mut self, wanted: &[(&'static str, String)]) -> Result<(), String> {
        let mut done = Vec::new();
        for (name, value) in wanted {
            let path = self.dir.join(name);
            let Some(old) = self.read(name) else {
                restore(&self.dir, &done);
                return Err(format!("{} does not exist", path.display()));
            };
            if let Err(e) = std::fs::write(&path, value) {
                restore(&self.dir, &done);
                return Err(format!("cannot write {}: {e}", path.display()));
            }
            // A choice list (`always [madvise] never`) is written back as its chosen word.
            let old = selected(&old).map(str::to_owned).unwrap_or(old);
            done.push((*name, old));
        }
        self.previous.extend(done);
        Ok(())
    }

    /// Puts back every value [`Knobs::set`] changed, newest first.
    pub fn restore(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        restore(&self.dir, &previous);
    }
}

fn restore(dir: &Path, list: &[(&'static str, String)]) {
    for (name, value) in list.iter().rev() {
        let _ = std::fs::write(dir.join(name), value);
    }
}

/// The selected word of a sysfs choice list such as `always [madvise] never`.
pub(crate) fn selected(list: &str) -> Option<&str> {
    list.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}
