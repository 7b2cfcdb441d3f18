//! InfluxDB 1.x: `/write?db=<database>&rp=<policy>&precision=ns`.
//!
//! The database must exist. A partial write answers 400 with the reason;
//! the valid points of that batch are written anyway.

use async_trait::async_trait;

use super::{BuildError, Sink, WriteError, http};
use crate::config::InfluxV1Config;

pub struct InfluxDbV1 {
    name: String,
    url: String,
    query: Vec<(&'static str, String)>,
    credentials: Option<(String, String)>,
    client: reqwest::Client,
}

impl InfluxDbV1 {
    pub fn new(config: &InfluxV1Config) -> Result<Self, BuildError> {
        let base = config.url.trim_end_matches('/');
        let mut query = vec![
            ("db", config.database.clone()),
            ("precision", "ns".to_owned()),
        ];
        if !config.retention_policy.is_empty() {
            query.push(("rp", config.retention_policy.clone()));
        }
        let credentials = match (&config.username, &config.password_file) {
            (Some(user), Some(path)) => {
                let password =
                    std::fs::read_to_string(path).map_err(|source| BuildError::Secret {
                        path: path.clone(),
                        source,
                    })?;
                Some((
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            (Some(user), None) => Some((user.clone(), String::new())),
            _ => None,
        };
        Ok(InfluxDbV1 {
            name: format!("influxdb_v1 {base} db={}", config.database),
            url: format!("{base}/write"),
            query,
            credentials,
            client: http::client(config.timeout)?,
        })
    }
}

#[async_trait]
impl Sink for InfluxDbV1 {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, body: String) -> Result<(), WriteError> {
        let mut request = self.client.post(&self.url).query(&self.query);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        http::post(request, body).await
    }
}
