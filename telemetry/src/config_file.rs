//! Loading a TOML config file with environment overrides, and reporting every
//! problem with the line it is on.
//!
//! Both binaries load their config the same way:
//!
//! 1. The file (or an empty one) is deserialised into the typed config; serde
//!    defaults fill what is missing, and unknown keys or wrong types fail here
//!    with a line number.
//! 2. Environment variables `<PREFIX><SECTION>_<KEY>` (or `<PREFIX><KEY>` for
//!    top-level keys) override scalar keys and arrays of scalars (comma
//!    separated). The variable is parsed as the type the key already has, so
//!    `BUOY_KAFKA_BROKERS=a:9092,b:9092` becomes a list of two strings.
//! 3. The caller's semantic checks run on the result. Each problem names a key
//!    path (`sensor[1].interval`), which is traced back to its line in the
//!    file, or to the environment variable that set it.
//!
//! Apart from [`read_file`], everything here is pure: the caller passes the
//! file text and the environment.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Value};

/// One thing wrong with a config, at a key path such as `journal.commit_interval`
/// or `sensor[2].interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    /// `message` is anything that displays: text, or an error.
    pub fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Problem {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Where a problem's value came from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    File {
        line: usize,
        column: usize,
        text: String,
    },
    Env(String),
    /// A built-in default (or nowhere in particular).
    Default,
}

#[derive(Debug, Clone, PartialEq)]
struct Located {
    origin: Origin,
    problem: Problem,
}

/// Everything wrong with a config, ready to print for a human.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    source_name: String,
    problems: Vec<Located>,
}

impl ConfigError {
    /// The problems' messages, without locations.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.problems.iter().map(|l| l.problem.message.as_str())
    }

    /// The 1-based file lines of the problems that have one.
    pub fn lines(&self) -> Vec<usize> {
        self.problems
            .iter()
            .filter_map(|l| match l.origin {
                Origin::File { line, .. } => Some(line),
                _ => None,
            })
            .collect()
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for Located { origin, problem } in &self.problems {
            let path = if problem.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", problem.path)
            };
            match origin {
                Origin::File { line, column, text } => {
                    writeln!(
                        f,
                        "  {}:{line}:{column}: {path}{}",
                        self.source_name, problem.message
                    )?;
                    writeln!(f, "      {line:>4} | {text}")?;
                }
                Origin::Env(var) => {
                    writeln!(f, "  environment variable {var}: {path}{}", problem.message)?;
                }
                Origin::Default => writeln!(f, "  {path}{}", problem.message)?,
            }
        }
        Ok(())
    }
}

/// Reads the config file named on the command line, or else `default` if it
/// exists. Returns the name to use in messages and the text (`None`: no file,
/// built-in defaults apply). A file named explicitly must exist.
pub fn read_file(
    explicit: Option<&std::path::Path>,
    default: &std::path::Path,
) -> std::io::Result<(String, Option<String>)> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read config file {}: {e}", p.display()),
            )
        })
    };
    match explicit {
        Some(p) => Ok((p.display().to_string(), Some(read(p)?))),
        None if default.exists() => Ok((default.display().to_string(), Some(read(default)?))),
        None => Ok(("built-in defaults".to_owned(), None)),
    }
}

/// A loaded config and how the environment changed it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    /// `(variable, key path)` for every override applied.
    pub overrides: Vec<(String, String)>,
    /// Variables with the prefix that match no key; worth a warning.
    pub unknown_env: Vec<String>,
}

/// Loads a config: `text` is the file's contents (`None` when there is no
/// file), `source_name` names it in messages, `env` is the process
/// environment, and `validate` returns the semantic problems of the result.
pub fn load<T>(
    source_name: &str,
    text: Option<&str>,
    env: &[(String, String)],
    prefix: &str,
    validate: impl FnOnce(&T) -> Vec<Problem>,
) -> Result<Loaded<T>, ConfigError>
where
    T: DeserializeOwned + Serialize,
{
    let text = text.unwrap_or("");
    let fail = |problems: Vec<Located>| ConfigError {
        source_name: source_name.to_owned(),
        problems,
    };

    // 1. The file alone: syntax, unknown keys and types, with their lines.
    let from_file: T = toml::from_str(text).map_err(|e| fail(vec![file_error(text, &e)]))?;

    // 2. Environment overrides, typed by the value each key already has.
    let mut table = match Value::try_from(&from_file) {
        Ok(Value::Table(t)) => t,
        _ => unreachable!("a config struct serialises to a table"),
    };
    let Overrides {
        applied: overrides,
        unknown: unknown_env,
    } = apply_env(&mut table, env, prefix).map_err(fail)?;
    let config: T = if overrides.is_empty() {
        from_file
    } else {
        Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let vars: Vec<_> = overrides.iter().map(|(v, _)| v.as_str()).collect();
                fail(vec![Located {
                    origin: Origin::Env(vars.join(", ")),
                    problem: Problem::new("", e.message().trim().to_owned()),
                }])
            })?
    };

    // 3. Semantic checks, traced back to where each value came from.
    let problems = validate(&config);
    if !problems.is_empty() {
        return Err(fail(locate_problems(text, problems, &overrides)));
    }
    Ok(Loaded {
        config,
        overrides,
        unknown_env,
    })
}

/// `problems` of the file `text` (named `source_name`), each at the line
/// of its key path: for checks a caller runs on a file beyond [`load`]'s.
pub fn problems_in_file(source_name: &str, text: &str, problems: Vec<Problem>) -> ConfigError {
    ConfigError {
        source_name: source_name.to_owned(),
        problems: locate_problems(text, problems, &[]),
    }
}

/// A syntax or type error of the file, at its line.
fn file_error(text: &str, e: &toml::de::Error) -> Located {
    let origin = e
        .span()
        .map_or(Origin::Default, |span| file_origin(text, span.start));
    Located {
        origin,
        problem: Problem::new("", e.message().trim().to_owned()),
    }
}

/// What [`apply_env`] did.
struct Overrides {
    /// `(variable, key path)` for every override applied.
    applied: Vec<(String, String)>,
    /// Variables with the prefix that match no key.
    unknown: Vec<String>,
}

/// Sets every key that an environment variable `<prefix><KEY>` names, typed
/// like the value it replaces; every variable that does not parse is a
/// problem.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
    prefix: &str,
) -> Result<Overrides, Vec<Located>> {
    let mut done = Overrides {
        applied: Vec::new(),
        unknown: Vec::new(),
    };
    let mut problems = Vec::new();
    for (var, raw) in env {
        let Some(name) = var.strip_prefix(prefix) else {
            continue;
        };
        let Some((section, key)) = find_key(table, name) else {
            done.unknown.push(var.clone());
            continue;
        };
        let slot = match &section {
            None => table.get_mut(&key),
            Some(s) => table
                .get_mut(s)
                .and_then(Value::as_table_mut)
                .and_then(|t| t.get_mut(&key)),
        }
        .expect("find_key found it");
        let path = section.map_or(key.clone(), |s| format!("{s}.{key}"));
        match parse_like(slot, raw) {
            Ok(value) => {
                *slot = value;
                done.applied.push((var.clone(), path));
            }
            Err(message) => problems.push(Located {
                origin: Origin::Env(var.clone()),
                problem: Problem::new(path, message),
            }),
        }
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(problems)
    }
}

/// Each problem with where its value came from: the variable that set it,
/// or its line in the file (`text`), or the default.
fn locate_problems(
    text: &str,
    problems: Vec<Problem>,
    overrides: &[(String, String)],
) -> Vec<Located> {
    let doc = DeTable::parse(text).ok();
    problems
        .into_iter()
        .map(|problem| {
            let from_env = overrides.iter().find(|(_, path)| {
                problem.path == *path || problem.path.starts_with(&format!("{path}["))
            });
            let origin = match (from_env, &doc) {
                (Some((var, _)), _) => Origin::Env(var.clone()),
                (None, Some(doc)) => locate(doc, &problem.path)
                    .map_or(Origin::Default, |offset| file_origin(text, offset)),
                (None, None) => Origin::Default,
            };
            Located { origin, problem }
        })
        .collect()
}

/// Finds the key an environment variable name (without prefix) refers to:
/// `KAFKA_BROKERS` → `(Some("kafka"), "brokers")`, `DEVICE_ID` → `(None, "device_id")`.
fn find_key(table: &toml::Table, name: &str) -> Option<(Option<String>, String)> {
    for (key, value) in table {
        if is_overridable(value) && key.to_uppercase() == name {
            return Some((None, key.clone()));
        }
        if let Value::Table(section) = value {
            let Some(rest) = name
                .strip_prefix(&key.to_uppercase())
                .and_then(|r| r.strip_prefix('_'))
            else {
                continue;
            };
            for (inner, v) in section {
                if is_overridable(v) && inner.to_uppercase() == rest {
                    return Some((Some(key.clone()), inner.clone()));
                }
            }
        }
    }
    None
}

fn is_overridable(value: &Value) -> bool {
    match value {
        Value::Table(_) => false,
        Value::Array(items) => items
            .iter()
            .all(|v| !matches!(v, Value::Table(_) | Value::Array(_))),
        _ => true,
    }
}

/// Why an environment variable cannot override a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EnvValueError {
    #[error("expected {expected}, got {raw:?}")]
    Expected { expected: &'static str, raw: String },
    #[error("a table cannot be set from the environment")]
    Table,
}

impl EnvValueError {
    fn expected(expected: &'static str, raw: &str) -> Self {
        EnvValueError::Expected {
            expected,
            raw: raw.to_owned(),
        }
    }
}

/// Parses an environment variable as the same TOML type as `current`.
fn parse_like(current: &Value, raw: &str) -> Result<Value, EnvValueError> {
    let raw = raw.trim();
    Ok(match current {
        Value::String(_) | Value::Datetime(_) => Value::String(raw.to_owned()),
        Value::Integer(_) => Value::Integer(
            raw.parse()
                .map_err(|_| EnvValueError::expected("a whole number", raw))?,
        ),
        Value::Float(_) => Value::Float(
            raw.parse()
                .map_err(|_| EnvValueError::expected("a number", raw))?,
        ),
        Value::Boolean(_) => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(EnvValueError::expected("true or false", raw)),
        }),
        Value::Array(items) => {
            let element = items
                .first()
                .cloned()
                .unwrap_or(Value::String(String::new()));
            Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|item| parse_like(&element, item))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Table(_) => return Err(EnvValueError::Table),
    })
}

/// The byte offset in the file of the value at `path`, or of the nearest
/// enclosing element that is in the file.
fn locate(doc: &Spanned<DeTable<'_>>, path: &str) -> Option<usize> {
    let mut best = None;
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    for segment in split_path(path) {
        let next = match (segment, current.map(Spanned::get_ref)) {
            (Segment::Key(k), None) => lookup(doc.get_ref(), k),
            (Segment::Key(k), Some(DeValue::Table(t))) => lookup(t, k),
            (Segment::Index(i), Some(DeValue::Array(a))) => a.get(i),
            _ => None,
        };
        match next {
            Some(v) => {
                best = Some(v.span().start);
                current = Some(v);
            }
            None => break,
        }
    }
    best
}

fn lookup<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| v)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `sensor[2].interval` into `sensor`, `2`, `interval`.
fn split_path(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Segment::Key(&rest[..open]));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Segment::Key(rest));
        }
    }
    out
}

fn file_origin(text: &str, offset: usize) -> Origin {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or("").to_owned();
    Origin::File {
        line,
        column: offset - line_start + 1,
        text: line_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default = "default_name")]
        name: String,
        #[serde(default)]
        section: Section,
        #[serde(default)]
        item: Vec<Item>,
    }
    fn default_name() -> String {
        "dev".into()
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Section {
        count: i64,
        hosts: Vec<String>,
        on: bool,
    }
    impl Default for Section {
        fn default() -> Self {
            Section {
                count: 1,
                hosts: vec!["localhost:1".into()],
                on: false,
            }
        }
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        size: i64,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn no_checks(_: &Demo) -> Vec<Problem> {
        vec![]
    }

    fn check_sizes(d: &Demo) -> Vec<Problem> {
        d.item
            .iter()
            .enumerate()
            .filter(|(_, i)| i.size < 0)
            .map(|(n, _)| Problem::new(format!("item[{n}].size"), "must not be negative"))
            .collect()
    }

    #[test]
    fn no_file_gives_defaults() {
        let got = load::<Demo>("x.toml", None, &[], "T_", no_checks).unwrap();
        assert_eq!(got.config.name, "dev");
        assert_eq!(got.config.section, Section::default());
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let text = "name = \"a\"\n[section]\ncount = 2\nhosts = []\non = true\ncolour = 3\n";
        let err = load::<Demo>("x.toml", Some(text), &[], "T_", no_checks).unwrap_err();
        assert_eq!(err.lines(), vec![6], "{err}");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn wrong_types_are_reported_with_their_line() {
        let text = "name = \"a\"\n\n[section]\ncount = \"many\"\nhosts = []\non = true\n";
        let err = load::<Demo>("x.toml", Some(text), &[], "T_", no_checks).unwrap_err();
        assert_eq!(err.lines(), vec![4], "{err}");
    }

    #[test]
    fn env_overrides_are_typed_by_the_key() {
        let vars = env(&[
            ("T_NAME", "pi-7"),
            ("T_SECTION_COUNT", "5"),
            ("T_SECTION_HOSTS", "a:1, b:2"),
            ("T_SECTION_ON", "yes"),
            ("T_NOPE", "x"),
            ("OTHER", "y"),
        ]);
        let got = load::<Demo>("x.toml", None, &vars, "T_", no_checks).unwrap();
        assert_eq!(got.config.name, "pi-7");
        assert_eq!(got.config.section.count, 5);
        assert_eq!(got.config.section.hosts, ["a:1", "b:2"]);
        assert!(got.config.section.on);
        assert_eq!(got.unknown_env, ["T_NOPE"]);
        assert_eq!(got.overrides.len(), 4);
    }

    #[test]
    fn a_bad_env_value_names_the_variable() {
        let vars = env(&[("T_SECTION_COUNT", "lots")]);
        let err = load::<Demo>("x.toml", None, &vars, "T_", no_checks).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("T_SECTION_COUNT") && shown.contains("whole number"),
            "{shown}"
        );
    }

    #[test]
    fn semantic_problems_point_at_their_line() {
        let text = "[[item]]\nsize = 1\n\n[[item]]\nsize = -4\n";
        let err = load::<Demo>("x.toml", Some(text), &[], "T_", check_sizes).unwrap_err();
        assert_eq!(err.lines(), vec![5], "{err}");
        assert!(
            err.to_string()
                .contains("item[1].size: must not be negative"),
            "{err}"
        );
    }
}
