use proptest::prelude::*;

use super::*;
use crate::{FileSpec, LimitsRequest};

fn req(json: serde_json::Value) -> ExecuteRequest {
    serde_json::from_value(json).expect("request decodes")
}

fn err(json: serde_json::Value) -> ValidationError {
    req(json).validate(&Policy::default()).unwrap_err()
}

#[test]
fn seed_request_validates_with_defaults() {
    let spec = req(serde_json::json!({"command": "echo hello", "image": "kiln/busybox"}))
        .validate(&Policy::default())
        .unwrap();
    assert_eq!(spec.argv, ["/bin/sh", "-c", "echo hello"]);
    assert_eq!(spec.workdir, DEFAULT_WORKDIR);
    assert_eq!(spec.limits, Limits::DEFAULT);
    assert!(!spec.network);
}

#[test]
fn missing_image_and_command_are_named() {
    let e = err(serde_json::json!({"command": "true"}));
    assert_eq!((e.code, e.field.as_str()), ("missing_field", "image"));
    let e = err(serde_json::json!({"image": "x"}));
    assert_eq!((e.code, e.field.as_str()), ("missing_field", "command"));
    let e = err(serde_json::json!({"image": "x", "command": "a", "argv": ["a"]}));
    assert_eq!(e.field, "command");
    let e = err(serde_json::json!({"image": "x", "argv": []}));
    assert_eq!(e.field, "argv");
}

#[test]
fn limit_above_maximum_names_field_and_maximum() {
    let e = err(serde_json::json!({"image": "x", "command": "a", "limits": {"memory_mb": 999999}}));
    assert_eq!(e.code, "limit_exceeded");
    assert_eq!(e.field, "limits.memory_mb");
    assert_eq!(
        e.maximum,
        Some(serde_json::json!(Limits::MAXIMUM.memory_mb))
    );
    let e = err(serde_json::json!({"image": "x", "command": "a", "limits": {"cpus": 0.0}}));
    assert_eq!((e.code, e.field.as_str()), ("invalid_field", "limits.cpus"));
}

#[test]
fn network_needs_the_servers_permission() {
    let r = req(serde_json::json!({"image": "x", "command": "a", "network": true}));
    assert_eq!(
        r.validate(&Policy::default()).unwrap_err().code,
        "network_not_allowed"
    );
    let open = Policy {
        allow_network: true,
        ..Policy::default()
    };
    assert!(r.validate(&open).unwrap().network);
}

#[test]
fn file_paths_that_escape_are_refused() {
    for p in [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "",
        ".",
        "a/",
        "a\0b",
    ] {
        let e = err(
            serde_json::json!({"image": "x", "command": "a", "files": [{"path": p, "content": ""}]}),
        );
        assert_eq!(e.field, "files[0].path", "path {p:?}");
    }
    let spec = req(serde_json::json!({"image": "x", "command": "a",
        "files": [{"path": "./src//main.py", "content": "aGk=", "encoding": "base64", "mode": "0755"}]}))
        .validate(&Policy::default())
        .unwrap();
    assert_eq!(
        spec.files[0],
        ResolvedFile {
            path: "src/main.py".into(),
            mode: 0o755,
            content: b"hi".to_vec()
        }
    );
}

#[test]
fn duplicate_and_conflicting_files_are_refused() {
    let e = err(serde_json::json!({"image": "x", "command": "a",
        "files": [{"path": "a", "content": ""}, {"path": "./a", "content": ""}]}));
    assert_eq!(e.field, "files[1].path");
    let e = err(serde_json::json!({"image": "x", "command": "a",
        "files": [{"path": "a", "content": ""}, {"path": "a/b", "content": ""}]}));
    assert_eq!(e.field, "files");
}

#[test]
fn bad_base64_mode_env_workdir() {
    let e = err(
        serde_json::json!({"image": "x", "command": "a", "files": [{"path": "a", "content": "***", "encoding": "base64"}]}),
    );
    assert_eq!(e.field, "files[0].content");
    let e = err(
        serde_json::json!({"image": "x", "command": "a", "files": [{"path": "a", "content": "", "mode": 0o4755}]}),
    );
    assert_eq!(e.field, "files[0].mode");
    let e = err(serde_json::json!({"image": "x", "command": "a", "env": {"A=B": "c"}}));
    assert_eq!(e.field, "env.A=B");
    for w in ["relative", "/", "/proc/self", "/a/../b", "/.kiln"] {
        let e = err(serde_json::json!({"image": "x", "command": "a", "workdir": w}));
        assert_eq!(e.field, "workdir", "workdir {w:?}");
    }
    let spec = req(serde_json::json!({"image": "x", "command": "a", "workdir": "/home//me/"}))
        .validate(&Policy::default())
        .unwrap();
    assert_eq!(spec.workdir, "/home/me");
}

#[test]
fn unknown_fields_are_refused_by_the_decoder() {
    assert!(serde_json::from_value::<ExecuteRequest>(serde_json::json!({"imgae": "x"})).is_err());
    assert!(serde_json::from_value::<LimitsRequest>(serde_json::json!({"memory": 1})).is_err());
}

proptest! {
    /// Whatever the path, an accepted one is relative, has no `..`, and stays under the directory.
    #[test]
    fn accepted_paths_stay_inside(path in "[a-z./]{0,12}") {
        let files = [FileSpec { path: Some(path.clone()), ..FileSpec::default() }];
        if let Ok(out) = validate_files(&files, 10) {
            let p = &out[0].path;
            prop_assert!(!p.starts_with('/'));
            prop_assert!(!p.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
        }
    }

    #[test]
    fn limits_within_policy_pass(t in 1u64..=300_000, m in 8u64..=4096, c in 0.01f64..=2.0) {
        let l = LimitsRequest { timeout_ms: Some(t), memory_mb: Some(m), cpus: Some(c), ..Default::default() }
            .resolve(&Limits::DEFAULT);
        prop_assert!(l.check(&Limits::MAXIMUM, "limits.").is_ok());
    }
}
