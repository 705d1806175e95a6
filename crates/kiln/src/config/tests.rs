use super::*;

fn load(toml: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.toml");
    std::fs::write(&path, toml).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(Some(&path), env, &sets)
}

#[test]
fn defaults_without_file() {
    let c = Config::load(None, Vec::new(), &[]).unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:8080");
    assert_eq!(c.policy(), kiln_api::Policy::default());
}

#[test]
fn file_then_env_then_overrides() {
    let c = load(
        "[server]\nlisten = \"127.0.0.1:9000\"\nmax_concurrent = 3\n[limits.max]\nmemory_mb = 512\n",
        &[("KILN__SERVER__MAX_CONCURRENT", "5"), ("KILN__NETWORK__ALLOW", "true"), ("OTHER", "x")],
        &["limits.default.timeout_ms=2500"],
    )
    .unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000");
    assert_eq!(c.server.max_concurrent, 5);
    assert!(c.network.allow);
    let p = c.policy();
    assert_eq!(p.maxima.memory_mb, 512);
    assert_eq!(p.maxima.timeout_ms, kiln_api::Limits::MAXIMUM.timeout_ms);
    assert_eq!(p.defaults.timeout_ms, 2500);
}

#[test]
fn default_is_lowered_to_a_smaller_maximum_unless_set_above_it() {
    let c = load("[limits.max]\nmemory_mb = 128\n", &[], &[]).unwrap();
    assert_eq!(c.policy().defaults.memory_mb, 128);
    let e = load(
        "[limits.max]\nmemory_mb = 128\n[limits.default]\nmemory_mb = 256\n",
        &[],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("limits.default.memory_mb"), "{e}");
}

#[test]
fn bad_values_are_refused_with_their_name() {
    for (toml, needle) in [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nmax_concurrent = 0\n", "max_concurrent"),
        ("[docker]\nuser = \"0:0\"\n", "docker.user"),
        ("[limts]\n", "limts"),
        ("[limits.max]\nmemory = 1\n", "memory"),
        ("[server\n", "kiln.toml"),
    ] {
        let e = load(toml, &[], &[]).unwrap_err().to_string();
        assert!(e.contains(needle), "{toml:?} gave {e}");
    }
    assert!(matches!(
        load("", &[], &["nodots"]),
        Err(ConfigError::Override(_))
    ));
}

#[test]
fn pool_minimums_must_fit_the_global_caps() {
    let e = load("[pool]\nmax_pooled = 3\n", &[], &[]).unwrap_err();
    assert!(e.to_string().contains("pool.max_pooled"), "{e}");
    let e = load(
        "[[pool.pools]]\nimage = \"x\"\nmin = 5\nmax = 2\n",
        &[],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("min 5 is above max 2"), "{e}");
    let c = load("[pool]\nenabled = false\nmax_pooled = 0\n", &[], &[]).unwrap();
    assert!(c.pool_config().unwrap().is_none());
}
