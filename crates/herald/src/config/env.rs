//! `HERALD_*` environment variables: the name of each setting, and which other
//! `HERALD_*` names are not settings at all.

use super::HeraldConfig;
use std::collections::BTreeMap;

/// What a `HERALD_*` variable is to the configuration.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EnvVar {
    /// It sets this key path.
    Setting(String),
    /// Not a setting, and expected: read by the tools, test harnesses or Kubernetes.
    NotOurs,
    /// Not a setting, and probably a typo.
    Unknown,
}

// Read by the `herald` tools and test harnesses, not configuration keys: `serve` must
// start in a shell where they are set.
const ENV_IGNORED: &[&str] = &[
    "LOG",
    "CONFIG",
    "URL",
    "WS_URL",
    "TOKEN",
    "BIN",
    "DEV_STATE",
];

/// Kubernetes sets `<SERVICE>_PORT`, `<SERVICE>_PORT_<n>_TCP...` and
/// `<SERVICE>_SERVICE_HOST/PORT...` for every Service in the namespace.
fn is_kubernetes_service_var(rest: &str) -> bool {
    rest == "PORT" || rest.starts_with("PORT_") || rest.starts_with("SERVICE_")
}

/// Classifies `name` against the names [`env_names`] gave (`None` if it is not
/// `HERALD_*`).
pub(crate) fn classify(name: &str, names: &BTreeMap<String, String>) -> Option<EnvVar> {
    let rest = name.strip_prefix("HERALD_")?;
    if ENV_IGNORED.contains(&rest) || rest.starts_with("TEST_") {
        return Some(EnvVar::NotOurs);
    }
    Some(match names.get(name) {
        Some(path) => EnvVar::Setting(path.clone()),
        None if is_kubernetes_service_var(rest) => EnvVar::NotOurs,
        None => EnvVar::Unknown,
    })
}

/// Every `HERALD_*` name and the key path it sets (namespaces are file-only).
pub(crate) fn env_names(table: &toml::Table) -> BTreeMap<String, String> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            if prefix.is_empty() && k == "namespaces" {
                continue;
            }
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(inner, &path, out),
                _ => {
                    out.insert(
                        format!("HERALD_{}", path.replace('.', "_").to_ascii_uppercase()),
                        path,
                    );
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, "", &mut out);
    out
}

/// The environment variables Herald reads, with the key each sets.
pub(crate) fn env_reference() -> Vec<(String, String)> {
    env_names(&HeraldConfig::default().to_table())
        .into_iter()
        .collect()
}
