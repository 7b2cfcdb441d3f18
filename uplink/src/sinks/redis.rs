//! Redis "latest value": for each series, one hash holding its latest fields
//! and their timestamp, for dashboards and control loops that only need now.
//!
//! The key is `key_prefix` + the series as line protocol writes it
//! (`weather,device_id=pi-1,sensor=env`); the hash holds each field
//! (`pressure_hpa` → `1013.2`) and `_time`, the reading's timestamp in
//! nanoseconds. A reading older than the hash's `_time` changes nothing, so
//! a backlog drained late or a record read twice never turns the clock back.
//! The check and the update run in one Lua script per batch, atomically.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use telemetry::FieldValue;
use telemetry::line_protocol::view;
use tokio::sync::Mutex;

use super::config::SinkConfig;
use super::{BuildError, Sink, WriteError};
use crate::record::Line;

/// KEYS: one per series. ARGV per key: timestamp, field count, then field
/// name and value pairs. A series is updated only if its stored `_time` is
/// not newer (timestamps compared as decimal strings of non-negative
/// integers, exactly, beyond what Lua's doubles hold).
const SCRIPT: &str = r#"
local function newer_or_same(a, b)
  if not b then return true end
  if #a ~= #b then return #a > #b end
  return a >= b
end
local at = 1
for _, key in ipairs(KEYS) do
  local ts = ARGV[at]
  local n = tonumber(ARGV[at + 1])
  at = at + 2
  if newer_or_same(ts, redis.call('HGET', key, '_time')) then
    local args = {'_time', ts}
    for j = 0, n - 1 do
      args[#args + 1] = ARGV[at + 2 * j]
      args[#args + 1] = ARGV[at + 2 * j + 1]
    end
    redis.call('HSET', key, unpack(args))
  end
  at = at + 2 * n
end
return #KEYS
"#;

pub struct Redis {
    name: String,
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    prefix: String,
    script: redis::Script,
}

impl Redis {
    pub async fn new(config: &SinkConfig) -> Result<Self, BuildError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())?;
        if let Some(user) = &config.username {
            let settings = info.redis_settings().clone().set_username(user);
            info = info.set_redis_settings(settings);
        }
        if let Some(path) = &config.password_file {
            let password = super::read_secret(path)?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let prefix = if config.key_prefix.is_empty() {
            "buoy:latest:".to_owned()
        } else {
            config.key_prefix.clone()
        };
        Ok(Redis {
            name: format!("redis {}", redact(&config.url)),
            client,
            connection: Mutex::new(None),
            prefix,
            script: redis::Script::new(SCRIPT),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.client.get_connection_manager().await?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// The newest reading of each series in `lines`: key → (timestamp, fields).
/// Readings of one series at the same time are merged.
pub fn latest(
    prefix: &str,
    lines: &[Line<'_>],
) -> BTreeMap<String, (i64, BTreeMap<String, String>)> {
    let mut out: BTreeMap<String, (i64, BTreeMap<String, String>)> = BTreeMap::new();
    for line in lines {
        let key = format!("{prefix}{}", line.series());
        let time = line.timestamp_ns();
        let fields =
            view::field_values(line.field_set()).map(|(k, v)| (k.into_owned(), value_text(v)));
        match out.get_mut(&key) {
            Some((t, _)) if *t > time => {}
            Some((t, held)) if *t == time => held.extend(fields),
            _ => {
                out.insert(key, (time, fields.collect()));
            }
        }
    }
    out
}

fn value_text(v: FieldValue) -> String {
    match v {
        FieldValue::Float(f) => f.to_string(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::UInt(u) => u.to_string(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::String(s) => s,
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn classify(e: redis::RedisError) -> WriteError {
    let reason = format!("redis: {e}");
    match e.code() {
        Some("NOAUTH" | "WRONGPASS" | "NOPERM") => WriteError::Misconfigured {
            reason: format!("{reason} (check the sink's username and password_file)"),
        },
        // A key of another type under the prefix: that series cannot be
        // written, the others can.
        Some("WRONGTYPE") => WriteError::Rejected {
            reason,
            lines: Vec::new(),
        },
        _ => WriteError::Retry {
            reason,
            retry_after: None,
        },
    }
}

#[async_trait]
impl Sink for Redis {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, lines: &[Line<'_>]) -> Result<(), WriteError> {
        let latest = latest(&self.prefix, lines);
        if latest.is_empty() {
            return Ok(());
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, (ts, fields)) in &latest {
            invocation.key(key).arg(ts.to_string()).arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name).arg(value);
            }
        }
        let mut connection = self.connection().await.map_err(classify)?;
        let result: Result<i64, _> = invocation.invoke_async(&mut connection).await;
        result.map(|_| ()).map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::http::tests::lines;

    #[test]
    fn keeps_the_newest_reading_of_each_series() {
        let buffer = lines(&[
            "weather,device_id=a pressure_hpa=1000 20",
            "weather,device_id=a pressure_hpa=990 10",
            "weather,device_id=a temperature_c=5 20",
            r"weather,device_id=b\ c pressure_hpa=1 5",
            "fan,fan=cpu fan_rpm=1200i,on=true 7",
        ]);
        let ls: Vec<_> = buffer.iter().collect();
        let l = latest("p:", &ls);
        assert_eq!(l.len(), 3);
        let (t, fields) = &l["p:weather,device_id=a"];
        assert_eq!(*t, 20);
        assert_eq!(fields["pressure_hpa"], "1000");
        assert_eq!(fields["temperature_c"], "5");
        assert!(l.contains_key(r"p:weather,device_id=b\ c"));
        assert_eq!(l["p:fan,fan=cpu"].1["fan_rpm"], "1200");
        assert_eq!(l["p:fan,fan=cpu"].1["on"], "true");
    }

    #[test]
    fn passwords_stay_out_of_the_name() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://…@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
