//! One `[[sink]]` table: which database, where, and how to write to it.
//!
//! The table is flat: `kind` selects the database, and each kind uses a few
//! of the keys. A key the kind does not use is refused with a message that
//! says which kinds use it, so a typo never passes silently.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;

/// The database behind a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// InfluxDB 1.x: `/write?db=&rp=&precision=`, basic auth.
    InfluxdbV1,
    /// InfluxDB 2.x: `/api/v2/write?org=&bucket=&precision=`, token.
    InfluxdbV2,
    /// InfluxDB 3: `/api/v3/write_lp?db=&precision=`, token.
    InfluxdbV3,
    /// VictoriaMetrics: `/write`, or `/insert/<tenant>/influx/write` on a
    /// cluster's vminsert.
    Victoriametrics,
    /// CnosDB: `/api/v1/write?db=&tenant=&precision=`, basic auth.
    Cnosdb,
    /// QuestDB: `/write?precision=` (InfluxDB line protocol over HTTP).
    Questdb,
    /// Redis: the latest fields and timestamp of each series in one hash.
    Redis,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::InfluxdbV1 => "influxdb_v1",
            SinkKind::InfluxdbV2 => "influxdb_v2",
            SinkKind::InfluxdbV3 => "influxdb_v3",
            SinkKind::Victoriametrics => "victoriametrics",
            SinkKind::Cnosdb => "cnosdb",
            SinkKind::Questdb => "questdb",
            SinkKind::Redis => "redis",
        }
    }

    /// The precision used when the table does not say.
    pub fn default_precision(self) -> Precision {
        match self {
            // VictoriaMetrics keeps milliseconds; sending more is wasted.
            SinkKind::Victoriametrics => Precision::Ms,
            _ => Precision::Ns,
        }
    }

    /// Whether gzip is on when the table does not say: on where the
    /// database documents it.
    pub fn default_gzip(self) -> bool {
        matches!(
            self,
            SinkKind::InfluxdbV1
                | SinkKind::InfluxdbV2
                | SinkKind::InfluxdbV3
                | SinkKind::Victoriametrics
        )
    }
}

/// The unit of the timestamps sent to a database. Timestamps are converted
/// to it (rounding down) and it is always named in the request, so the
/// database never guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn unit_ns(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Base URL, e.g. `http://localhost:8428`, or `redis://host:6379/0`.
    pub url: String,
    /// influxdb_v1, influxdb_v3, cnosdb: the database. It must exist for
    /// influxdb_v1 (`CREATE DATABASE`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    /// influxdb_v1: retention policy; empty for the database's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retention_policy: String,
    /// influxdb_v2: organisation and bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// cnosdb: tenant (default `cnosdb`). victoriametrics: the cluster
    /// tenant (`accountID` or `accountID:projectID`); empty for a single node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    /// influxdb_v1, cnosdb, questdb, redis: user for basic auth (redis: ACL user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password, read at start-up and never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// influxdb_v2, influxdb_v3, questdb: file holding the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Timestamp unit sent: `ns`, `us`, `ms` or `s`. Default: `ms` for
    /// victoriametrics (what it stores), else `ns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Compress request bodies with gzip. Default: on for InfluxDB and
    /// VictoriaMetrics, off for CnosDB and QuestDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// Batches written to this sink at the same time.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_writes: usize,
    /// One request's time limit; a request that runs out is retried.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// redis: prefix of the hash keys (default `buoy:latest:`); the rest of
    /// the key is the series, `measurement,tag=value,...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_prefix: String,
}

const fn default_concurrency() -> usize {
    2
}

const fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkConfig {
    /// A sink of `kind` at `url` with every other key at its default.
    pub fn new(kind: SinkKind, url: &str) -> SinkConfig {
        SinkConfig {
            kind,
            url: url.to_owned(),
            database: String::new(),
            retention_policy: String::new(),
            org: String::new(),
            bucket: String::new(),
            tenant: String::new(),
            username: None,
            password_file: None,
            token_file: None,
            precision: None,
            gzip: None,
            max_concurrent_writes: default_concurrency(),
            timeout: default_timeout(),
            key_prefix: String::new(),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
            .unwrap_or_else(|| self.kind.default_precision())
    }

    pub fn gzip(&self) -> bool {
        self.gzip.unwrap_or_else(|| self.kind.default_gzip())
    }

    /// Relative secret files made absolute in `$CREDENTIALS_DIRECTORY`
    /// (systemd's `LoadCredential=`), when set.
    pub fn resolve_files(&mut self, credentials: Option<&std::ffi::OsStr>) {
        telemetry::secret::resolve_files(
            [&mut self.password_file, &mut self.token_file],
            credentials,
        );
    }

    /// What is wrong with the table, as `sink[i].key` problems.
    pub fn problems(&self, i: usize) -> Vec<Problem> {
        use SinkKind::*;
        let key = |k: &str| format!("sink[{i}].{k}");
        let kind = self.kind;
        let mut p = self.url_problems(&key);
        p.extend(self.key_problems(&key));
        if self.password_file.is_some() && self.username.is_none() && kind != Redis {
            p.push(Problem::new(
                key("username"),
                "is needed with password_file",
            ));
        }
        if self.token_file.is_some() && self.password_file.is_some() {
            p.push(Problem::new(
                key("token_file"),
                "give either token_file or username and password_file, not both",
            ));
        }
        if kind == Redis && (self.precision.is_some() || self.gzip.is_some()) {
            p.push(Problem::new(
                key("precision"),
                "redis keeps nanosecond timestamps and takes no gzip; remove precision and gzip",
            ));
        }
        if kind == Cnosdb && self.precision == Some(Precision::S) {
            p.push(Problem::new(
                key("precision"),
                "cnosdb accepts ns, us or ms",
            ));
        }
        if self.max_concurrent_writes == 0 || self.max_concurrent_writes > 64 {
            p.push(Problem::new(
                key("max_concurrent_writes"),
                "must be between 1 and 64",
            ));
        }
        if self.timeout < Duration::from_millis(100) {
            p.push(Problem::new(key("timeout"), "must be at least 100ms"));
        }
        p
    }

    /// The url's scheme, for the kind.
    fn url_problems(&self, key: &impl Fn(&str) -> String) -> Vec<Problem> {
        use SinkKind::*;
        let mut p = Vec::new();
        let kind = self.kind;
        let scheme_ok = if kind == Redis {
            self.url.starts_with("redis://") || self.url.starts_with("rediss://")
        } else {
            self.url.starts_with("http://") || self.url.starts_with("https://")
        };
        if !scheme_ok {
            let want = if kind == Redis {
                "redis:// or rediss://"
            } else {
                "http:// or https://"
            };
            p.push(Problem::new(
                key("url"),
                format!("{:?} must start with {want}", self.url),
            ));
        }
        p
    }

    /// Each optional key: whether it is set, and which kinds use it.
    fn key_uses(&self) -> [(&'static str, bool, &'static [SinkKind]); 9] {
        use SinkKind::*;
        [
            (
                "database",
                !self.database.is_empty(),
                &[InfluxdbV1, InfluxdbV3, Cnosdb],
            ),
            (
                "retention_policy",
                !self.retention_policy.is_empty(),
                &[InfluxdbV1],
            ),
            ("org", !self.org.is_empty(), &[InfluxdbV2]),
            ("bucket", !self.bucket.is_empty(), &[InfluxdbV2]),
            (
                "tenant",
                !self.tenant.is_empty(),
                &[Cnosdb, Victoriametrics],
            ),
            (
                "username",
                self.username.is_some(),
                &[InfluxdbV1, Cnosdb, Questdb, Redis],
            ),
            (
                "password_file",
                self.password_file.is_some(),
                &[InfluxdbV1, Cnosdb, Questdb, Redis],
            ),
            (
                "token_file",
                self.token_file.is_some(),
                &[InfluxdbV2, InfluxdbV3, Questdb],
            ),
            ("key_prefix", !self.key_prefix.is_empty(), &[Redis]),
        ]
    }

    /// Keys the kind does not use, and keys it needs that are missing.
    fn key_problems(&self, key: &impl Fn(&str) -> String) -> Vec<Problem> {
        use SinkKind::*;
        let mut p = Vec::new();
        let kind = self.kind;
        for (name, set, kinds) in self.key_uses() {
            if set && !kinds.contains(&kind) {
                let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                p.push(Problem::new(
                    key(name),
                    format!(
                        "is not used by kind {}; only by {}",
                        kind.as_str(),
                        kinds.join(", ")
                    ),
                ));
            }
        }
        let required: &[(&str, bool)] = match kind {
            InfluxdbV1 | InfluxdbV3 => &[("database", self.database.is_empty())],
            InfluxdbV2 => &[
                ("org", self.org.is_empty()),
                ("bucket", self.bucket.is_empty()),
            ],
            _ => &[],
        };
        for (name, missing) in required {
            if *missing {
                p.push(Problem::new(
                    key(name),
                    format!("is needed by kind {}", kind.as_str()),
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let c: SinkConfig = toml::from_str(toml_text).unwrap();
        c.problems(0)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn a_key_of_another_kind_is_refused_with_the_kinds_that_use_it() {
        let p = problems("kind = \"victoriametrics\"\nurl = \"http://x\"\norg = \"o\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("sink[0].org") && p[0].contains("influxdb_v2"),
            "{p:?}"
        );
    }

    #[test]
    fn each_kind_names_what_it_needs() {
        let p = problems("kind = \"influxdb_v2\"\nurl = \"http://x\"\n");
        assert_eq!(p.len(), 2, "{p:?}");
        let p = problems("kind = \"influxdb_v3\"\nurl = \"http://x\"\n");
        assert!(p[0].contains("sink[0].database"), "{p:?}");
        let p = problems("kind = \"redis\"\nurl = \"http://x\"\n");
        assert!(p[0].contains("redis://"), "{p:?}");
        assert!(problems("kind = \"questdb\"\nurl = \"http://x\"\n").is_empty());
    }

    #[test]
    fn defaults_are_explicit_per_kind() {
        let vm = SinkConfig::new(SinkKind::Victoriametrics, "http://x");
        assert_eq!(vm.precision(), Precision::Ms);
        assert!(vm.gzip());
        let q = SinkConfig::new(SinkKind::Questdb, "http://x");
        assert_eq!(q.precision(), Precision::Ns);
        assert!(!q.gzip());
    }
}
