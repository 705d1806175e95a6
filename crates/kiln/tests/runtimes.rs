//! The runtime catalog end to end (issue 7): every runtime compiles where it must, runs a
//! hello world and reads stdin, in the real kiln/runtimes image; a failed compile skips the
//! run; bad language requests are refused clearly.

mod common;

use common::{Gateway, BUSYBOX};
use serde_json::{json, Value};

/// A program per language that greets, then echoes the first line of stdin.
fn hello(language: &str) -> &'static str {
    match language {
        "bash" => "echo hello from bash; read line; echo \"got $line\"",
        "python" => "import sys\nprint('hello from python')\nprint('got ' + sys.stdin.readline().strip())",
        "javascript" => "console.log('hello from javascript');\nconst l = require('fs').readFileSync(0, 'utf8').split('\\n')[0];\nconsole.log('got ' + l);",
        "c" => "#include <stdio.h>\nint main(void) { char l[64]; puts(\"hello from c\"); if (fgets(l, sizeof l, stdin)) printf(\"got %s\", l); return 0; }",
        "c++" => "#include <iostream>\n#include <string>\nint main() { std::string l; std::cout << \"hello from c++\" << std::endl; std::getline(std::cin, l); std::cout << \"got \" << l << std::endl; }",
        other => panic!("no hello world for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_runtime_says_hello_and_reads_stdin() {
    let gw = Gateway::start("runtimes").await;
    let (code, list) = gw.get("/api/v1/runtimes").await;
    assert_eq!(code, 200);
    let runtimes = list["runtimes"].as_array().unwrap().clone();
    assert!(runtimes.len() >= 5, "{list}");
    for r in runtimes {
        let language = r["language"].as_str().unwrap();
        let v = gw
            .run(json!({"language": language, "code": hello(language), "stdin": "kiln\n"}))
            .await;
        assert_eq!(
            v["stdout"],
            format!("hello from {language}\ngot kiln\n"),
            "{language}: {v}"
        );
        assert_eq!(v["status"], "ok", "{language}: {v}");
        assert_eq!(v["runtime"]["language"], language);
        assert_eq!(v["runtime"]["version"], r["version"]);
        assert_eq!(
            v.get("compile").is_some(),
            r["compiled"] == true,
            "{language}: a compile report exactly where there is a compile step: {v}"
        );
        if r["compiled"] == true {
            assert_eq!(v["compile"]["status"], "ok", "{v}");
            assert_eq!(v["compile"]["exit_code"], 0, "{v}");
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_compile_skips_the_run_and_says_why() {
    let gw = Gateway::start("compile").await;
    let v = gw
        .run(json!({"language": "c", "code": "int main(void) { return missing; }"}))
        .await;
    assert_eq!(v["status"], "compile_error", "{v}");
    assert_eq!(v["compile"]["exit_code"], 1, "{v}");
    assert!(
        v["compile"]["stderr"].as_str().unwrap().contains("missing"),
        "the compiler's message: {v}"
    );
    assert_eq!(
        (v["stdout"].as_str(), v["exit_code"].as_i64()),
        (Some(""), None),
        "{v}"
    );

    // Arguments, extra files, aliases and version selectors.
    let v = gw
        .run(
            json!({"language": "py", "version": "3.x", "args": ["a", "b c"],
            "code": "import sys, helper\nprint(sys.argv[1:], helper.X)",
            "files": [{"path": "helper.py", "content": "X = 42\n"}]}),
        )
        .await;
    assert_eq!(v["stdout"], "['a', 'b c'] 42\n", "{v}");
    // Without code, the first file is the program.
    let v = gw
        .run(json!({"language": "node", "files": [{"path": "whatever.js", "content": "console.log(6 * 7)"}]}))
        .await;
    assert_eq!(v["stdout"], "42\n", "{v}");
    // A compile that runs past its own limit.
    let v = gw
        .run(json!({"language": "c++", "compile_timeout_ms": 1,
            "code": "#include <iostream>\nint main() { std::cout << 1; }"}))
        .await;
    assert_eq!(v["status"], "compile_error", "{v}");
    assert_eq!(v["compile"]["status"], "timeout", "{v}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_requests_are_checked() {
    let gw = Gateway::start("langcheck").await;
    let cases: [(Value, &str, &str); 6] = [
        (
            json!({"language": "cobol", "code": "x"}),
            "unknown_runtime",
            "language",
        ),
        (
            json!({"language": "python", "version": "2.x", "code": "x"}),
            "unknown_runtime",
            "version",
        ),
        (json!({"language": "python"}), "missing_field", "code"),
        (
            json!({"language": "python", "code": "x", "image": BUSYBOX}),
            "invalid_field",
            "image",
        ),
        (
            json!({"image": BUSYBOX, "command": "true", "code": "x"}),
            "invalid_field",
            "code",
        ),
        (
            json!({"language": "c", "code": "x", "compile_timeout_ms": 10_000_000}),
            "limit_exceeded",
            "compile_timeout_ms",
        ),
    ];
    for (body, code, field) in cases {
        let (status, v) = gw.post(body.clone()).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (Some(code), Some(field)),
            "{body}: {v}"
        );
    }
    gw.stop().await;
}
