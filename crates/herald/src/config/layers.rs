//! The layering: defaults < TOML file < `HERALD_*` environment < flags, merged as TOML
//! tables that remember where each value came from, then checked key by key so that
//! every problem is reported at once with its key and origin.

use super::env::{EnvVar, classify, env_names};
use super::{DEPRECATED_KEYS, HeraldConfig};
use herald_gateway::config::NamespaceConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The built-in defaults, or a value Herald set itself (such as `--dev`'s).
    Default,
    /// A TOML file, at a line when known.
    File {
        /// The file as given.
        path: PathBuf,
        /// 1-based line of the key.
        line: Option<usize>,
    },
    /// TOML text given in code, at a line.
    #[cfg(test)]
    Text {
        /// 1-based line of the key.
        line: Option<usize>,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, line) = match self {
            Self::Default => return f.write_str("default"),
            Self::Env(name) | Self::Flag(name) => return f.write_str(name),
            Self::File { path, line } => (path.display().to_string(), line),
            #[cfg(test)]
            Self::Text { line } => ("<toml>".to_owned(), line),
        };
        match line {
            Some(line) => write!(f, "{source}:{line}"),
            None => f.write_str(&source),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The setting, as a dotted key such as `client.ping_interval` ("" for a whole file).
    pub key: String,
    /// Where the offending value came from.
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            // The variable or flag is what the operator typed, and names the key.
            Origin::Env(_) | Origin::Flag(_) => write!(f, "{}: {}", self.origin, self.message),
            Origin::Default if self.key.is_empty() => f.write_str(&self.message),
            Origin::Default => write!(f, "{}: {}", self.key, self.message),
            _ if self.key.is_empty() => write!(f, "{}: {}", self.origin, self.message),
            _ => write!(f, "{} ({}): {}", self.key, self.origin, self.message),
        }
    }
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) struct ConfigError {
    /// The problems: loading, then types and unknown keys, then values.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Builds a [`HeraldConfig`] from its layers. Each layer is a TOML table merged over
/// the previous one; [`Layers::build`] checks and deserializes once.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    /// The starting point, against which each layered value is checked on its own.
    base: toml::Table,
    table: toml::Table,
    /// Where the value at each dotted key (tables included) came from.
    origins: BTreeMap<String, Origin>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// A file or TOML layer failed to load: further checks would only add noise.
    load_failed: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    /// Starts from the defaults.
    pub(crate) fn new() -> Self {
        Self::from_config(&HeraldConfig::default())
    }

    /// Starts from an existing configuration (e.g. the `--dev` defaults).
    pub(crate) fn from_config(config: &HeraldConfig) -> Self {
        let table = config.to_table();
        Self {
            base: table.clone(),
            table,
            origins: BTreeMap::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            load_failed: false,
        }
    }

    /// Merges a TOML file over the current values.
    pub(crate) fn file(mut self, path: &Path) -> Self {
        let origin = |line| Origin::File {
            path: path.to_owned(),
            line,
        };
        match std::fs::read_to_string(path) {
            Err(e) => self.load_failed(origin(None), format!("cannot read: {e}")),
            Ok(text) => self.layer(&text, origin, "not valid TOML: "),
        }
        self
    }

    /// Merges TOML text over the current values.
    #[cfg(test)]
    pub(crate) fn toml(mut self, text: &str) -> Self {
        self.layer(text, |line| Origin::Text { line }, "");
        self
    }

    fn load_failed(&mut self, origin: Origin, message: String) {
        self.load_failed = true;
        self.problems.push(Problem {
            key: String::new(),
            origin,
            message,
        });
    }

    fn layer(&mut self, text: &str, origin: impl Fn(Option<usize>) -> Origin, what: &str) {
        let mut table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let message = format!("{what}{}", e.to_string().trim());
                return self.load_failed(origin(None), message);
            }
        };
        let mut lines = key_lines(text);
        self.move_deprecated(&mut table, &mut lines, &origin);
        let mut paths = Vec::new();
        key_paths(&table, "", &mut paths);
        for path in paths {
            let line = lines.get(&path).copied();
            self.origins.insert(path, origin(line));
        }
        merge(&mut self.table, table);
    }

    /// Moves the old top-level Redis keys into `[redis]`, with a warning; a key also
    /// set in `[redis]` of the same layer wins.
    fn move_deprecated(
        &mut self,
        table: &mut toml::Table,
        lines: &mut BTreeMap<String, usize>,
        origin: &impl Fn(Option<usize>) -> Origin,
    ) {
        for (old, new) in DEPRECATED_KEYS {
            let Some(value) = table.remove(old) else {
                continue;
            };
            let line = lines.get(old).copied();
            let at = origin(line);
            let new_path = format!("redis.{new}");
            let redis = table
                .entry("redis")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(redis) = redis.as_table_mut() else {
                // `redis` is not a table: both are reported, the old key as unknown.
                table.insert(old.to_owned(), value);
                continue;
            };
            if redis.contains_key(new) {
                self.warnings.push(format!(
                    "{old} ({at}) is deprecated and ignored: {new_path} is also set"
                ));
                continue;
            }
            redis.insert(new.to_owned(), value);
            if let Some(line) = line {
                lines.insert(new_path.clone(), line);
            }
            self.warnings.push(format!(
                "{old} ({at}) is deprecated: set {new} in [redis] ({new_path}) instead"
            ));
        }
    }

    /// Applies `HERALD_*` variables: `HERALD_CLIENT_PING_INTERVAL=10s` sets
    /// `client.ping_interval`. Unknown `HERALD_*` names become warnings (a typo should be
    /// visible), except the ones Kubernetes injects for a Service named `herald`.
    pub(crate) fn env<I: IntoIterator<Item = (String, String)>>(mut self, vars: I) -> Self {
        let names = env_names(&self.table);
        for (name, value) in vars {
            match classify(&name, &names) {
                Some(EnvVar::Setting(path)) => self.set_from(&path, &value, Origin::Env(name)),
                Some(EnvVar::Unknown) => self
                    .warnings
                    .push(format!("ignoring unknown environment variable {name}")),
                Some(EnvVar::NotOurs) | None => {}
            }
        }
        self
    }

    /// Sets one key path from a command-line flag (`flag` names it in problems).
    pub(crate) fn flag(mut self, flag: &str, path: &str, value: &str) -> Self {
        self.set_from(path, value, Origin::Flag(flag.to_owned()));
        self
    }

    /// Sets one key path (such as `client.ping_interval`) to a value Herald chose.
    pub(crate) fn set(mut self, path: &str, value: &str) -> Self {
        self.set_from(path, value, Origin::Default);
        self
    }

    /// Sets a namespace (used by `--dev`) unless the file already defines it.
    pub(crate) fn namespace_if_absent(mut self, name: &str, ns: &NamespaceConfig) -> Self {
        let table = self
            .table
            .entry("namespaces")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = table
            && !t.contains_key(name)
            && let Ok(v) = toml::Table::try_from(ns)
        {
            t.insert(name.to_owned(), toml::Value::Table(v));
        }
        self
    }

    /// Converts `value` to the type of the key's current value, so that text from the
    /// environment or a flag reads as a number or a boolean where one is expected.
    fn set_from(&mut self, path: &str, value: &str, origin: Origin) {
        match set_str(&mut self.table, path, value) {
            Ok(()) => {
                self.origins.insert(path.to_owned(), origin);
            }
            Err(message) => self.problems.push(Problem {
                key: path.to_owned(),
                origin,
                message,
            }),
        }
    }

    /// Checks every layered value on its own (types, unknown keys), then the whole
    /// configuration, reporting every problem at once.
    pub(crate) fn build(self) -> Result<HeraldConfig, ConfigError> {
        let mut problems = self.problems;
        if self.load_failed {
            return Err(ConfigError { problems });
        }
        // Values that do not even read as their type leave nothing to check further.
        let mut mistyped = false;
        for (path, origin) in &self.origins {
            let Some(value) = get(&self.table, path) else {
                continue; // replaced by a later layer
            };
            if matches!(value, toml::Value::Table(t) if !t.is_empty()) {
                continue; // its keys are checked one by one
            }
            // Against the defaults, so the problem found is this value's own.
            let mut probe = self.base.clone();
            insert(&mut probe, path, value.clone());
            if let Err(message) = HeraldConfig::from_table(probe) {
                mistyped = true;
                problems.push(Problem {
                    key: path.clone(),
                    origin: origin.clone(),
                    message: explain(&self.base, path, value, message),
                });
            }
        }
        if mistyped {
            return Err(ConfigError { problems });
        }
        let mut config = HeraldConfig::from_table(self.table).map_err(|message| ConfigError {
            problems: vec![Problem {
                key: String::new(),
                origin: Origin::Default,
                message,
            }],
        })?;
        for (key, message) in config.problems() {
            let origin = self.origins.get(&key).cloned().unwrap_or(Origin::Default);
            problems.push(Problem {
                key,
                origin,
                message,
            });
        }
        if problems.is_empty() {
            config.warnings = self.warnings;
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Names a bad duration as one, with what is wrong in it: serde's message only says
/// that a duration was expected.
fn explain(base: &toml::Table, path: &str, value: &toml::Value, message: String) -> String {
    let toml::Value::String(text) = value else {
        return message;
    };
    if path == "listen" {
        return format!(
            "{text:?} is not an address to listen on: HOST:PORT, e.g. 127.0.0.1:8000, or 0.0.0.0:8000 for every interface"
        );
    }
    let default = match path.split('.').collect::<Vec<_>>()[..] {
        ["namespaces", _, field] => toml::Table::try_from(NamespaceConfig::default())
            .ok()
            .and_then(|t| t.get(field).cloned()),
        _ => get(base, path).cloned(),
    };
    match default {
        Some(toml::Value::String(d)) if humantime::parse_duration(&d).is_ok() => {
            match humantime::parse_duration(text) {
                Err(e) => format!("invalid duration {text:?}: {e}"),
                Ok(_) => message,
            }
        }
        _ => message,
    }
}

fn set_str(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut table = table;
    for p in parts {
        table = match table
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{p} is not a section")),
        };
    }
    let converted = match table.get(last) {
        Some(toml::Value::Boolean(_)) => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("expected true or false, got {value:?}")),
        },
        Some(toml::Value::Integer(_)) => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got {value:?}"))?,
        Some(toml::Value::Table(_)) => return Err("is a section, not a value".into()),
        // Lists from the environment or a flag: comma-separated.
        Some(toml::Value::Array(_)) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(value.to_owned()),
    };
    table.insert(last.to_owned(), converted);
    Ok(())
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn get<'t>(table: &'t toml::Table, path: &str) -> Option<&'t toml::Value> {
    let mut parts = path.split('.');
    let mut value = table.get(parts.next()?)?;
    for p in parts {
        value = value.as_table()?.get(p)?;
    }
    Some(value)
}

/// Sets `path`, replacing whatever is in the way with tables.
fn insert(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let mut table = table;
    for p in parts {
        let slot = table
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !slot.is_table() {
            *slot = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = slot else {
            return;
        };
        table = inner;
    }
    table.insert(last.to_owned(), value);
}

/// Every dotted key of `table`, tables included.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(inner) = v {
            key_paths(inner, &path, out);
        }
        out.push(path);
    }
}

/// The 1-based line of every key in a TOML document (keys with dots or quotes in a
/// single segment are not told apart from nested ones; the config has none).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    fn walk(
        table: &toml::de::DeTable<'_>,
        prefix: &str,
        line_of: &dyn Fn(usize) -> usize,
        out: &mut BTreeMap<String, usize>,
    ) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            if let toml::de::DeValue::Table(inner) = value.get_ref() {
                walk(inner, &path, line_of, out);
            }
            out.entry(path).or_insert_with(|| line_of(key.span().start));
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        let line_of = |offset: usize| {
            text.get(..offset)
                .map_or(0, |before| before.matches('\n').count())
                + 1
        };
        walk(doc.get_ref(), "", &line_of, &mut out);
    }
    out
}
