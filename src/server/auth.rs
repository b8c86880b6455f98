//! Who may connect to `segql serve`: password hashes and the users of
//! `[server.users]`.
//!
//! Clients prove their password with SCRAM-SHA-256, as PostgreSQL does by
//! default, so the password never crosses the wire. The project file holds
//! `segql-scram-sha-256$<iterations>$<salt>$<salted password>` (base64),
//! which `segql hash-password` writes: the password cannot be read back from
//! it, but it is what SCRAM checks a client's proof against, so it is kept
//! as private as a password.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password};
use datafusion_postgres::pgwire::error::PgWireResult;

use crate::config::{PasswordSource, ServerConfig, ServerRole};
use crate::error::Error;

const PREFIX: &str = "segql-scram-sha-256";

/// A password's SCRAM salt and salted password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}${SCRAM_ITERATIONS}${}${}",
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.salted)
        )
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        Self::with_salt(password, &rand::random::<[u8; 16]>())
    }

    /// Hashes `password` with `salt`.
    pub fn with_salt(password: &str, salt: &[u8]) -> Self {
        Self {
            salt: salt.to_vec(),
            salted: gen_salted_password(password, salt, SCRAM_ITERATIONS),
        }
    }

    /// Reads a hash written by [`PasswordHash`]'s `Display`; the error says
    /// what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('$').collect();
        let [prefix, iterations, salt, salted] = parts.as_slice() else {
            return Err(format!(
                "it is not a segql password hash ({PREFIX}$4096$<salt>$<key>); make one with \
                 `segql hash-password`"
            ));
        };
        if *prefix != PREFIX {
            return Err(format!(
                "it starts with `{prefix}`, not `{PREFIX}`; make the hash with `segql \
                 hash-password`"
            ));
        }
        if iterations.parse::<usize>().ok() != Some(SCRAM_ITERATIONS) {
            return Err(format!(
                "it uses {iterations} iterations, and this segql checks {SCRAM_ITERATIONS}; \
                 make the hash again with `segql hash-password`"
            ));
        }
        let decode = |text: &str, what: &str| {
            STANDARD
                .decode(text)
                .map_err(|_| format!("its {what} is not base64; copy the whole hash"))
        };
        let (salt, salted) = (decode(salt, "salt")?, decode(salted, "key")?);
        if salt.is_empty() || salted.len() != 32 {
            return Err("it is cut short; copy the whole hash".into());
        }
        Ok(Self { salt, salted })
    }

    /// Whether `password` is the one this hash was made from.
    pub fn matches(&self, password: &str) -> bool {
        gen_salted_password(password, &self.salt, SCRAM_ITERATIONS) == self.salted
    }
}

/// The users of `[server.users]`, their hashes read (from the environment
/// where the file says so) and checked.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, (PasswordHash, ServerRole)>,
}

impl Users {
    /// The users `config` names; reads `password_hash_env` variables now.
    pub fn from_config(config: &ServerConfig) -> Result<Self, Error> {
        let mut users = BTreeMap::new();
        for (name, user) in &config.users {
            let text = match &user.password {
                PasswordSource::Hash(hash) => hash.clone(),
                PasswordSource::Env(variable) => std::env::var(variable).map_err(|_| {
                    Error::Usage(format!(
                        "[server.users.{name}] takes its password hash from the environment \
                         variable {variable}, which is not set; set it to the output of `segql \
                         hash-password`"
                    ))
                })?,
            };
            let hash = PasswordHash::parse(&text).map_err(|problem| {
                Error::Usage(format!(
                    "[server.users.{name}]: the password hash is not usable: {problem}"
                ))
            })?;
            users.insert(name.clone(), (hash, user.role));
        }
        Ok(Self { users })
    }

    /// Whether any user is configured (and so every client needs a
    /// password).
    pub fn any(&self) -> bool {
        !self.users.is_empty()
    }

    /// The role of `name`; every client is an admin when no users are
    /// configured.
    pub fn role(&self, name: Option<&str>) -> Option<ServerRole> {
        if !self.any() {
            return Some(ServerRole::Admin);
        }
        self.users.get(name?).map(|(_, role)| *role)
    }
}

/// The users, as pgwire's SCRAM exchange asks for them.
#[derive(Debug)]
pub struct UserSource(pub Arc<Users>);

#[async_trait]
impl AuthSource for UserSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        Ok(match self.0.users.get(user) {
            Some((hash, _)) => Password::new(Some(hash.salt.clone()), hash.salted.clone()),
            // A user that does not exist gets a random key no password
            // matches: the exchange runs as usual and fails the same way as
            // a wrong password, so the answer does not tell which user names
            // exist.
            None => Password::new(
                Some(rand::random::<[u8; 16]>().to_vec()),
                rand::random::<[u8; 32]>().to_vec(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerUser;

    #[test]
    fn a_hash_reads_back_and_checks_its_password() {
        let hash = PasswordHash::with_salt("s3cret", b"0123456789abcdef");
        let text = hash.to_string();
        assert!(text.starts_with("segql-scram-sha-256$4096$MDEyMzQ1Njc4OWFiY2RlZg==$"));
        let read = PasswordHash::parse(&text).unwrap();
        assert_eq!(read, hash);
        assert!(read.matches("s3cret"));
        assert!(!read.matches("s3cret "));
        assert!(!text.contains("s3cret"));
        // Fresh salts: the same password hashes differently each time.
        assert_ne!(
            PasswordHash::new("x").to_string(),
            PasswordHash::new("x").to_string()
        );
        assert_eq!(format!("{hash:?}"), "PasswordHash(..)");
    }

    #[test]
    fn bad_hashes_say_what_is_wrong() {
        let good = PasswordHash::with_salt("pw", b"salt").to_string();
        let cases = [
            ("plaintext", "it is not a segql password hash"),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$a:b",
                "it is not a segql password hash",
            ),
            ("md5$4096$c2FsdA==$eA==", "it starts with `md5`"),
            (
                &good.replace("$4096$", "$1000$"),
                "it uses 1000 iterations, and this segql checks 4096",
            ),
            (
                &good.replace("$c2FsdA==$", "$not base64!$"),
                "its salt is not base64",
            ),
            (&good[..good.len() - 8], "it is cut short"),
        ];
        for (text, expected) in cases {
            let err = PasswordHash::parse(text).unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }

    #[test]
    fn users_come_from_the_file_or_the_environment() {
        let hash = PasswordHash::with_salt("pw", b"salt").to_string();
        let mut config = ServerConfig::default();
        config.users.insert(
            "analyst".into(),
            ServerUser {
                password: PasswordSource::Hash(hash.clone()),
                role: ServerRole::ReadOnly,
            },
        );
        config.users.insert(
            "pipeline".into(),
            ServerUser {
                password: PasswordSource::Env("SEGQL_TEST_UNSET_HASH_VARIABLE".into()),
                role: ServerRole::Admin,
            },
        );
        let err = Users::from_config(&config).unwrap_err().to_string();
        assert_eq!(
            err,
            "[server.users.pipeline] takes its password hash from the environment variable \
             SEGQL_TEST_UNSET_HASH_VARIABLE, which is not set; set it to the output of `segql \
             hash-password`"
        );
        config.users.remove("pipeline");
        let users = Users::from_config(&config).unwrap();
        assert_eq!(users.role(Some("analyst")), Some(ServerRole::ReadOnly));
        assert_eq!(users.role(Some("nobody")), None);
        assert_eq!(users.role(None), None);
        assert_eq!(Users::default().role(None), Some(ServerRole::Admin));
    }
}
