//! Secret files, read the same way by both binaries.
//!
//! Passwords, tokens and key passwords are never written in a config file:
//! the config names a file holding the secret. A relative name is looked up
//! in `$CREDENTIALS_DIRECTORY` when systemd's `LoadCredential=` set it (the
//! directory is taken from the environment when the config is loaded, see
//! [`credentials_directory`]), else relative to the working directory.
//!
//! One rule for the file's content: everything but one trailing line end
//! (`\n` or `\r\n`), and an empty secret is refused, so a file truncated by
//! a bad copy is found at start-up rather than as a refused login.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

use crate::config_file::{self, ConfigError, Loaded, Problem};

/// A secret read from a file. Shown as `<secret>`, never logged.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
}

/// The secret in `path`: its content without one trailing line end.
pub fn read(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Secret(text.to_owned()))
}

/// `$CREDENTIALS_DIRECTORY` from the environment a config is loaded with.
pub fn credentials_directory(env: &[(String, String)]) -> Option<OsString> {
    env.iter()
        .find(|(k, _)| k == "CREDENTIALS_DIRECTORY")
        .map(|(_, v)| OsString::from(v))
}

/// Where a configured file is: as given if absolute, else in `credentials`
/// when set, else relative to the working directory.
pub fn resolve_in(path: &Path, credentials: Option<&OsStr>) -> PathBuf {
    match credentials {
        Some(dir) if path.is_relative() => Path::new(dir).join(path),
        _ => path.to_owned(),
    }
}

/// Each file [`resolve_in`] `credentials`.
pub fn resolve_files<'a>(
    files: impl IntoIterator<Item = &'a mut Option<PathBuf>>,
    credentials: Option<&OsStr>,
) {
    for file in files.into_iter().flatten() {
        *file = resolve_in(file, credentials);
    }
}

/// [`config_file::load`] for a config that names secret files: `resolve`
/// makes its relative files absolute in `$CREDENTIALS_DIRECTORY` (taken
/// from `env`), before the config is validated and in the config returned.
pub fn load_resolving_files<T>(
    source_name: &str,
    text: Option<&str>,
    env: &[(String, String)],
    prefix: &str,
    resolve: impl Fn(&mut T, Option<&OsStr>),
    validate: impl FnOnce(&T) -> Vec<Problem>,
) -> Result<Loaded<T>, ConfigError>
where
    T: DeserializeOwned + Serialize + Clone,
{
    let credentials = credentials_directory(env);
    let resolved = |c: &T| {
        let mut c = c.clone();
        resolve(&mut c, credentials.as_deref());
        c
    };
    let mut loaded = config_file::load(source_name, text, env, prefix, |c| validate(&resolved(c)))?;
    loaded.config = resolved(&loaded.config);
    Ok(loaded)
}

/// A problem for each configured file (key `at.name`) that cannot be
/// opened: a missing secret is found when the config is checked, not when
/// the link is first needed.
pub fn unreadable_files<'a>(
    at: &str,
    files: impl IntoIterator<Item = (&'static str, &'a Option<PathBuf>)>,
) -> Vec<Problem> {
    files
        .into_iter()
        .filter_map(|(name, file)| {
            let file = file.as_ref()?;
            let e = std::fs::File::open(file).err()?;
            Some(Problem::new(
                format!("{at}.{name}"),
                format!("cannot read {}: {e}", file.display()),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_in(content: &str) -> Result<Secret, SecretError> {
        let dir = std::env::temp_dir().join(format!("buoy-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("secret-{n}"));
        std::fs::write(&path, content).unwrap();
        let read = read(&path);
        std::fs::remove_file(&path).unwrap();
        read
    }

    #[test]
    fn one_trailing_line_end_is_not_part_of_the_secret() {
        assert_eq!(secret_in("hunter2\n").unwrap().expose(), "hunter2");
        assert_eq!(secret_in("hunter2\r\n").unwrap().expose(), "hunter2");
        assert_eq!(secret_in("hunter2").unwrap().expose(), "hunter2");
        // Anything else is the secret, spaces and inner lines included.
        assert_eq!(secret_in(" pw \n\n").unwrap().expose(), " pw \n");
    }

    #[test]
    fn an_empty_or_missing_secret_is_refused_and_never_shown() {
        assert!(matches!(secret_in("\n"), Err(SecretError::Empty { .. })));
        assert!(matches!(secret_in(""), Err(SecretError::Empty { .. })));
        let missing = read(Path::new("/nonexistent/buoy/secret")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/buoy/secret"));
        assert_eq!(format!("{:?}", secret_in("hunter2").unwrap()), "<secret>");
    }

    #[test]
    fn relative_files_are_looked_up_in_the_credentials_directory() {
        let env = vec![(
            "CREDENTIALS_DIRECTORY".to_owned(),
            "/run/creds/x".to_owned(),
        )];
        let dir = credentials_directory(&env);
        assert_eq!(
            resolve_in(Path::new("kafka.pw"), dir.as_deref()),
            Path::new("/run/creds/x/kafka.pw")
        );
        assert_eq!(
            resolve_in(Path::new("/etc/buoy/pw"), dir.as_deref()),
            Path::new("/etc/buoy/pw")
        );
        assert_eq!(resolve_in(Path::new("pw"), None), Path::new("pw"));
        assert_eq!(credentials_directory(&[]), None);
    }
}
