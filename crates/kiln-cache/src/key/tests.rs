use kiln_api::{ExecuteRequest, Policy};
use proptest::prelude::*;

use super::*;

const INPUTS: KeyInputs<'static> = KeyInputs {
    image_id: "sha256:aa",
    backend: "docker",
    init_version: "1",
};

fn spec(json: serde_json::Value) -> ExecSpec {
    let open = Policy {
        allow_network: true,
        ..Policy::default()
    };
    serde_json::from_value::<ExecuteRequest>(json)
        .unwrap()
        .validate(&open)
        .unwrap()
}

#[test]
fn hex_round_trips() {
    let k = INPUTS.key(&spec(serde_json::json!({"image": "i", "command": "x"})));
    assert_eq!(CacheKey::parse(&k.hex()), Some(k));
    assert_eq!(CacheKey::parse("zz"), None);
}

proptest! {
    #[test]
    fn env_and_file_order_never_matter(
        env in proptest::collection::btree_map("[A-Z]{1,4}", "[a-z]{0,4}", 0..6),
        names in proptest::collection::btree_set("[a-z]{1,6}", 1..5),
    ) {
        let files: Vec<_> = names.iter().map(|n| serde_json::json!({"path": n, "content": n})).collect();
        let mut reversed = files.clone();
        reversed.reverse();
        let a = spec(serde_json::json!({"image": "i", "command": "x", "env": env, "files": files}));
        let mut b = spec(serde_json::json!({"image": "i", "command": "x", "env": env, "files": reversed}));
        b.env.reverse();
        prop_assert_eq!(INPUTS.key(&a), INPUTS.key(&b));
    }

    #[test]
    fn every_input_that_matters_changes_the_key(which in 0usize..20, s in "[a-z]{1,5}") {
        let base = serde_json::json!({"image": "i", "command": "x", "stdin": "in", "env": {"A": "1"},
            "files": [{"path": "f", "content": "c"}]});
        let a = spec(base.clone());
        let mut inputs = INPUTS;
        let image_id = format!("sha256:{s}-other");
        let mut b = a.clone();
        match which {
            0 => inputs.image_id = &image_id,
            1 => inputs.backend = "gvisor",
            2 => inputs.init_version = "2",
            3 => b.argv.push(s.clone()),
            4 => b.env.push((format!("B{s}"), s.clone())),
            5 => b.stdin.extend_from_slice(s.as_bytes()),
            6 => b.files[0].content.extend_from_slice(s.as_bytes()),
            7 => b.files[0].mode ^= 0o100,
            8 => b.files[0].path.push_str(&s),
            9 => b.workdir.push_str(&s),
            10 => b.limits.timeout_ms += 1,
            11 => b.limits.memory_mb += 1,
            12 => b.limits.cpus += 0.5,
            13 => b.limits.pids += 1,
            14 => b.limits.output_bytes += 1,
            15 => b.limits.tmp_mb += 1,
            16 => b.network = !b.network,
            17 => b.compile = Some(kiln_api::CompileSpec { argv: vec![s.clone()], timeout_ms: 1 }),
            18 => {
                // The same compile step with another time limit, or another command.
                let mut c = kiln_api::CompileSpec { argv: vec![s.clone()], timeout_ms: 1 };
                b.compile = Some(c.clone());
                c.timeout_ms = 2;
                let mut a2 = a.clone();
                a2.compile = Some(c);
                prop_assert_ne!(INPUTS.key(&a2), inputs.key(&b));
                c = kiln_api::CompileSpec { argv: vec![s.clone(), s.clone()], timeout_ms: 1 };
                a2.compile = Some(c);
                prop_assert_ne!(INPUTS.key(&a2), inputs.key(&b));
            }
            _ => b.compile = Some(kiln_api::CompileSpec { argv: vec![], timeout_ms: 10_000 }),
        }
        prop_assert_ne!(INPUTS.key(&a), inputs.key(&b));
    }
}

#[test]
fn argument_boundaries_are_part_of_the_key() {
    let a = spec(serde_json::json!({"image": "i", "argv": ["ab", "c"]}));
    let b = spec(serde_json::json!({"image": "i", "argv": ["a", "bc"]}));
    assert_ne!(INPUTS.key(&a), INPUTS.key(&b));
}
