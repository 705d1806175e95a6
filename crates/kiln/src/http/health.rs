use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// `GET /health`: the process answers. Says nothing of Docker; that is `/ready`.
pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: Docker answers, kiln-init is a static executable, the required images are
/// present. 503 with the reason of each failed check otherwise.
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let backend = state.executor().backend().clone();
    let init_path = &state.inner.init_path;
    let mut checks: Vec<(&str, Result<Value, String>)> = Vec::new();
    checks.push((
        "kiln_init",
        check_init(init_path).map(|()| json!({"path": init_path})),
    ));

    let engine = match tokio::time::timeout(Duration::from_secs(2), backend.ping()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    };
    let engine_up = engine.is_ok();
    checks.push((backend.name(), engine.map(|()| json!({}))));
    if engine_up {
        let mut missing = Vec::new();
        for image in &state.inner.required_images {
            match backend.has_image(image).await {
                Ok(true) => {}
                Ok(false) => missing.push(image.clone()),
                Err(e) => missing.push(format!("{image} ({e})")),
            }
        }
        let images = if missing.is_empty() {
            Ok(json!({"present": state.inner.required_images}))
        } else {
            Err(format!(
                "missing: {}; build them with scripts/images.sh",
                missing.join(", ")
            ))
        };
        checks.push(("images", images));
    }
    if let Some(pool) = state.executor().pool() {
        let short: Vec<String> = pool
            .status()
            .into_iter()
            .filter(|p| p.configured && p.ready < p.min)
            .map(|p| format!("{} ({}/{} ready)", p.name, p.ready, p.min))
            .collect();
        let pools = if short.is_empty() {
            Ok(json!({}))
        } else {
            Err(format!("below their minimum: {}", short.join(", ")))
        };
        checks.push(("pools", pools));
    }

    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let checks: BTreeMap<&str, Value> = checks
        .into_iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(mut v) => {
                    v["ok"] = json!(true);
                    v
                }
                Err(reason) => json!({"ok": false, "reason": reason}),
            };
            (name, v)
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ok, "checks": checks})))
}

/// kiln-init must exist, be executable, and be statically linked: it runs inside images that may
/// have no C library at all.
pub(crate) fn check_init(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if has_interpreter(&bytes)
        .ok_or_else(|| format!("{} is not a 64-bit ELF file", path.display()))?
    {
        return Err(format!(
            "{} is dynamically linked; build it with scripts/build-init.sh",
            path.display()
        ));
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF image asks for a dynamic loader (has `PT_INTERP`).
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(off..off + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_refused() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        let err = check_init(&me).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(check_init(Path::new("/nonexistent/kiln-init")).is_err());
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
    }
}
