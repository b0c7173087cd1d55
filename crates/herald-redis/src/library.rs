//! Herald's function library in Redis: loading it without ever downgrading it,
//! checking its version, and calling its functions, loading it again when Redis lost it.

use crate::error::{protocol, unavailable};
use crate::{FUNCTION_LIBRARY, FUNCTION_VERSION};
use fred::prelude::*;
use herald_broker::BrokerError;

/// Why the library could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// Redis refused a command.
    Redis(fred::error::Error),
    /// After loading, Redis reports a version older than this gateway's.
    Version(String),
}

/// The function library on one Redis deployment.
#[derive(Clone)]
pub(crate) struct Library {
    client: Client,
    cluster: bool,
}

impl Library {
    /// The library reached through `client` (on every primary when `cluster`).
    pub(crate) fn new(client: Client, cluster: bool) -> Self {
        Self { client, cluster }
    }

    /// Loads the library unless the same or a newer version is already there, so a
    /// gateway of an older release never downgrades it during a rolling update.
    pub(crate) async fn load(&self) -> Result<(), LoadError> {
        let ours: u64 = FUNCTION_VERSION.parse().unwrap_or(0);
        let loaded = self.version().await.ok().flatten();
        match loaded.as_deref().map(|v| v.parse::<u64>().unwrap_or(0)) {
            // A cluster may hold it on some primaries only: always load there.
            Some(v) if v >= ours && !self.cluster => return Ok(()),
            _ => {}
        }
        if self.cluster {
            self.client
                .function_load_cluster::<(), _>(true, FUNCTION_LIBRARY)
                .await
                .map_err(LoadError::Redis)?;
        } else {
            self.client
                .function_load::<Value, _>(true, FUNCTION_LIBRARY)
                .await
                .map_err(LoadError::Redis)?;
        }
        match self.version().await.map_err(LoadError::Redis)? {
            Some(v) if v.parse::<u64>().unwrap_or(0) >= ours => Ok(()),
            other => Err(LoadError::Version(other.unwrap_or_default())),
        }
    }

    async fn version(&self) -> Result<Option<String>, fred::error::Error> {
        self.client
            .fcall_ro::<Value, _, _, _>(
                "herald_version",
                Vec::<String>::new(),
                Vec::<String>::new(),
            )
            .await
            .map(|v| v.as_string())
    }

    /// Calls a library function; an empty Redis (restarted without persistence) has no
    /// library, so it is loaded again and the call retried once.
    pub(crate) async fn call(
        &self,
        name: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, BrokerError> {
        match self
            .client
            .fcall::<Value, _, _, _>(name, keys.clone(), args.clone())
            .await
        {
            Ok(v) => Ok(v),
            Err(e) if e.details().contains("Function not found") => {
                tracing::warn!(
                    "Herald's function library is missing (Redis lost its data?); loading it again"
                );
                self.load().await.map_err(|e| match e {
                    LoadError::Redis(e) => unavailable(e),
                    LoadError::Version(v) => protocol(&format!("function library version {v:?}")),
                })?;
                self.client
                    .fcall(name, keys, args)
                    .await
                    .map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}
