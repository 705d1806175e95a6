//! Request decoding and validation, as the gateway does them for `POST /api/v1/execute`: any
//! bytes give a request or an error, never a panic; a request that validates keeps within the
//! policy's limits.
#![no_main]

use kiln_api::{ExecuteRequest, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ExecuteRequest>(data) else {
        return;
    };
    let policy = Policy::default();
    if let Ok(spec) = request.validate(&policy) {
        assert!(spec.limits.timeout_ms <= policy.maxima.timeout_ms);
        assert!(spec.limits.memory_mb <= policy.maxima.memory_mb);
        assert!(spec.files.len() <= policy.max_files);
        assert!(!spec.argv.is_empty());
    }
});
