//! Session ids (SPEC §3): what ties the events of one run together on the wire.
//!
//! Inside a Slurm job the id is derived from the cluster name and job id with a keyed
//! hash, so every step of a job — on any node, in any process — agrees on it without
//! coordination, while the job id itself never leaves the machine: without the
//! spool's secret key nobody can go from the session id back to the job.

use crate::error::{Error, Result};

pub const SESSION_ENV: &str = "NEMO_EVALUATOR_TELEMETRY_SESSION_ID";
pub const CLIENT_VERSION_ENV: &str = "NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION";

/// Where this process's session id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSource {
    /// Given by the environment.
    Given(String),
    /// Derived from a Slurm job; needs the spool's key to become an id.
    SlurmJob { cluster: String, job: String },
    /// A fresh random UUID v4, drawn once per process.
    Random(String),
}

impl SessionSource {
    /// Picks the source from the environment, `env` answering look-ups of non-empty
    /// variables. An empty session variable counts as unset, as upstream treats it.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<SessionSource> {
        if let Some(given) = env(SESSION_ENV) {
            validate_session_id(&given)
                .map_err(|e| Error::bad_event(format!("{SESSION_ENV}: {e}")))?;
            return Ok(SessionSource::Given(given));
        }
        if let Some(job) = env("SLURM_JOB_ID") {
            let cluster = env("SLURM_CLUSTER_NAME").unwrap_or_default();
            return Ok(SessionSource::SlurmJob { cluster, job });
        }
        Ok(SessionSource::Random(uuid::Uuid::new_v4().to_string()))
    }

    /// The session id; `key` is asked for the spool's secret only for a Slurm job.
    pub fn resolve(&self, key: impl FnOnce() -> Result<[u8; 32]>) -> Result<String> {
        match self {
            SessionSource::Given(id) | SessionSource::Random(id) => Ok(id.clone()),
            SessionSource::SlurmJob { cluster, job } => Ok(slurm_session_id(&key()?, cluster, job)),
        }
    }
}

/// A session id is 1..=128 printable ASCII bytes: it goes on the wire verbatim.
pub fn validate_session_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("must be 1 to 128 bytes, got {}", id.len()));
    }
    if !id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("must be printable ASCII".to_string());
    }
    Ok(())
}

/// The keyed hash of cluster and job id, shaped as a UUID v4 so it looks like any
/// other session id upstream sends.
pub fn slurm_session_id(key: &[u8; 32], cluster: &str, job: &str) -> String {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"telespool slurm session v1\0");
    hasher.update(cluster.as_bytes());
    hasher.update(b"\0");
    hasher.update(job.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A new secret key for a spool.
pub fn new_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::io(format!("cannot draw random bytes: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_ids_correlate_per_job_and_key() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let a = slurm_session_id(&k1, "c", "100");
        assert_eq!(a, slurm_session_id(&k1, "c", "100"));
        assert_ne!(a, slurm_session_id(&k1, "c", "101"));
        assert_ne!(a, slurm_session_id(&k1, "d", "100"));
        assert_ne!(a, slurm_session_id(&k2, "c", "100"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 4);
    }

    #[test]
    fn session_rules() {
        assert!(validate_session_id("abc-123").is_ok());
        assert!(validate_session_id("").is_err());
        assert!(validate_session_id(&"x".repeat(129)).is_err());
        assert!(validate_session_id("a\tb").is_err());
        assert!(validate_session_id("é").is_err());
    }
}
