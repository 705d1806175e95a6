use std::path::PathBuf;

use kiln_api::Catalog;
use serde::Deserialize;

use super::ConfigError;

/// The catalog built into the binary: `config/runtimes.toml`.
pub const BUILTIN_CATALOG: &str = include_str!("../../../../config/runtimes.toml");

/// The runtime catalog: `path` to a TOML file of `[[runtime]]` entries, or the built-in one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimesSection {
    pub path: Option<PathBuf>,
}

impl RuntimesSection {
    /// The catalog, read and checked.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let (text, from) = match &self.path {
            Some(p) if !p.as_os_str().is_empty() => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
                p.display().to_string(),
            ),
            _ => (
                BUILTIN_CATALOG.to_owned(),
                "the built-in catalog".to_owned(),
            ),
        };
        let catalog: Catalog =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(format!("{from}: {e}")))?;
        catalog
            .check()
            .map_err(|e| ConfigError::Invalid(format!("{from}: {e}")))?;
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_languages_users_expect() {
        let c = RuntimesSection::default().catalog().unwrap();
        for (lang, compiled) in [
            ("bash", false),
            ("python", false),
            ("javascript", false),
            ("c", true),
            ("c++", true),
            ("node", false),
            ("cpp", true),
        ] {
            let r = c.find(lang, None).unwrap_or_else(|| panic!("{lang}"));
            assert_eq!(r.compile.is_some(), compiled, "{lang}");
        }
    }
}
