//! The runtime catalog: languages by name, alias and version, each with the image that has
//! it, the file its source goes to, an optional compile command and the run command. A request
//! that names a `language` is turned into an ordinary run of that image with these commands.

use serde::{Deserialize, Serialize};

use crate::LimitsRequest;

/// One language runtime of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The name requests use (`python`, `c++`); lowercase.
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The version the image has (`3.11.2`).
    pub version: String,
    pub image: String,
    /// Where the program's source is written in the working directory (`main.py`).
    pub source_file: String,
    /// Run before the program, in the same sandbox; a failure skips the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<Vec<String>>,
    /// The program; the request's `args` are appended.
    pub run: Vec<String>,
    /// Limits of this runtime's runs where the request names none (else the server's).
    #[serde(default)]
    pub limits: LimitsRequest,
    /// Time limit of the compile step where the request names none.
    #[serde(default = "default_compile_timeout")]
    pub compile_timeout_ms: u64,
}

fn default_compile_timeout() -> u64 {
    10_000
}

/// Every runtime the server offers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default, rename = "runtime")]
    pub runtimes: Vec<Runtime>,
}

impl Catalog {
    /// The runtime `language` names (by name or alias, any case) whose version `version`
    /// selects: exact, `*`, or a prefix of dotted parts with `x` as a wildcard (`3`, `3.x`,
    /// `3.11.x`). The highest matching version wins.
    pub fn find(&self, language: &str, version: Option<&str>) -> Option<&Runtime> {
        let language = language.trim().to_ascii_lowercase();
        self.runtimes
            .iter()
            .filter(|r| r.name == language || r.aliases.contains(&language))
            .filter(|r| version.is_none_or(|v| version_matches(v, &r.version)))
            .max_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)))
    }

    /// Names and aliases used twice, or a runtime without a run command: configuration errors.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashMap::new();
        for r in &self.runtimes {
            if r.name.is_empty() || r.run.is_empty() || r.image.is_empty() {
                return Err(format!(
                    "runtime {:?}: name, image and run are required",
                    r.name
                ));
            }
            if r.source_file.is_empty() || r.source_file.contains('/') {
                return Err(format!(
                    "runtime {}: source_file must be a plain file name",
                    r.name
                ));
            }
            for n in std::iter::once(&r.name).chain(&r.aliases) {
                if n != &n.to_ascii_lowercase() {
                    return Err(format!("runtime {}: {n:?} must be lowercase", r.name));
                }
                if let Some(other) = seen.insert((n.clone(), r.version.clone()), &r.name) {
                    return Err(format!(
                        "runtime name {n:?} version {} used by {other} and {}",
                        r.version, r.name
                    ));
                }
            }
        }
        Ok(())
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Whether the selector `sel` picks `version`.
pub fn version_matches(sel: &str, version: &str) -> bool {
    let sel = sel.trim();
    if sel.is_empty() || sel == "*" || sel == version {
        return true;
    }
    let have: Vec<&str> = version.split('.').collect();
    let want: Vec<&str> = sel.split('.').collect();
    want.len() <= have.len()
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| *w == "x" || *w == "*" || w == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(name: &str, aliases: &[&str], version: &str) -> Runtime {
        Runtime {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            version: version.into(),
            image: "kiln/runtimes".into(),
            source_file: "main".into(),
            compile: None,
            run: vec!["true".into()],
            limits: LimitsRequest::default(),
            compile_timeout_ms: 10_000,
        }
    }

    #[test]
    fn finds_by_name_alias_and_version_selector() {
        let c = Catalog {
            runtimes: vec![
                rt("python", &["py", "python3"], "3.11.2"),
                rt("python", &["py", "python3"], "3.9.1"),
                rt("c++", &["cpp", "g++"], "12.2.0"),
            ],
        };
        assert_eq!(c.find("Python", None).unwrap().version, "3.11.2", "highest");
        assert_eq!(c.find("py", Some("3.9.x")).unwrap().version, "3.9.1");
        assert_eq!(c.find("python3", Some("*")).unwrap().version, "3.11.2");
        assert_eq!(c.find("python", Some("3")).unwrap().version, "3.11.2");
        assert_eq!(c.find("python", Some("3.11.2")).unwrap().version, "3.11.2");
        assert!(c.find("python", Some("4.x")).is_none());
        assert!(c.find("python", Some("3.11.2.1")).is_none());
        assert_eq!(c.find("cpp", None).unwrap().name, "c++");
        assert!(c.find("rust", None).is_none());
        assert!(c.check().is_ok());
        let dup = Catalog {
            runtimes: vec![rt("a", &["x"], "1"), rt("b", &["x"], "1")],
        };
        assert!(dup.check().unwrap_err().contains("\"x\""));
    }
}
