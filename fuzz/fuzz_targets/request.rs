//! Request decoding and validation, as the gateway does them for `POST /api/v1/execute`: any
//! bytes give a request or an error, never a panic; a request that validates keeps within the
//! policy's limits.
#![no_main]

use std::sync::OnceLock;

use kiln_api::{Catalog, ExecuteRequest, Policy};
use libfuzzer_sys::fuzz_target;

/// A catalog of one interpreted and one compiled runtime, so that `language` requests are
/// decoded and validated too.
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        serde_json::from_value(serde_json::json!({"runtime": [
            {"name": "python", "aliases": ["py"], "version": "3.11.2", "image": "kiln/runtimes",
             "source_file": "main.py", "run": ["python3", "main.py"]},
            {"name": "c", "version": "12.2.0", "image": "kiln/runtimes", "source_file": "main.c",
             "compile": ["gcc", "main.c"], "run": ["./a.out"], "limits": {"memory_mb": 512}}
        ]}))
        .expect("a valid catalog")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ExecuteRequest>(data) else {
        return;
    };
    let policy = Policy::default();
    if let Ok(spec) = request.validate_with(&policy, catalog()) {
        if let Some(c) = &spec.compile {
            assert!(c.timeout_ms <= policy.maxima.timeout_ms);
        }
        assert!(spec.limits.timeout_ms <= policy.maxima.timeout_ms);
        assert!(spec.limits.memory_mb <= policy.maxima.memory_mb);
        assert!(spec.files.len() <= policy.max_files);
        assert!(!spec.argv.is_empty());
    }
});
