use std::fmt;

use kiln_api::ExecSpec;
use sha2::{Digest, Sha256};

/// SHA-256 over a canonical encoding of everything that decides a run's result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key a [`CacheKey::hex`] string names, if it is one.
    pub fn parse(hex: &str) -> Option<CacheKey> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(CacheKey(out))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Everything a key is made of besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// The resolved image id (`sha256:…`), never the tag: a re-tagged image must miss.
    pub image_id: &'a str,
    /// The isolation backend and the server's sandbox settings that decide results
    /// (`docker user=65534:65534`).
    pub backend: &'a str,
    /// The version of kiln-init (a digest of its binary).
    pub init_version: &'a str,
}

impl KeyInputs<'_> {
    /// The key of `spec`. Env and files are sorted first, so their order never matters; every
    /// field is length-prefixed and tagged, so no two different inputs encode alike.
    pub fn key(&self, spec: &ExecSpec) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update((tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("kiln-cache-key", b"v1");
        field("image", self.image_id.as_bytes());
        field("backend", self.backend.as_bytes());
        field("init", self.init_version.as_bytes());
        field("argc", &(spec.argv.len() as u64).to_le_bytes());
        for a in &spec.argv {
            field("arg", a.as_bytes());
        }
        let mut env: Vec<_> = spec.env.iter().collect();
        env.sort();
        field("envc", &(env.len() as u64).to_le_bytes());
        for (k, v) in env {
            field("env.k", k.as_bytes());
            field("env.v", v.as_bytes());
        }
        field("stdin", &spec.stdin);
        let mut files: Vec<_> = spec.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        field("filec", &(files.len() as u64).to_le_bytes());
        for f in files {
            field("file.path", f.path.as_bytes());
            field("file.mode", &f.mode.to_le_bytes());
            field("file.content", &f.content);
        }
        field("workdir", spec.workdir.as_bytes());
        let l = &spec.limits;
        for (name, v) in [
            ("timeout_ms", l.timeout_ms),
            ("memory_mb", l.memory_mb),
            ("cpus", l.cpus.to_bits()),
            ("pids", l.pids),
            ("output_bytes", l.output_bytes),
            ("tmp_mb", l.tmp_mb),
        ] {
            field(name, &v.to_le_bytes());
        }
        field("network", &[u8::from(spec.network)]);
        if let Some(c) = &spec.compile {
            field("compile.argc", &(c.argv.len() as u64).to_le_bytes());
            for a in &c.argv {
                field("compile.arg", a.as_bytes());
            }
            field("compile.timeout_ms", &c.timeout_ms.to_le_bytes());
        }
        CacheKey(h.finalize().into())
    }
}

#[cfg(test)]
mod tests;
