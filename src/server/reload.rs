//! Config reload (SIGHUP, and the admin API once wired): a new state and a new app are
//! built from the new config beside the old ones, then swapped in. Each request is served
//! by the app current when it arrives, so keep-alive connections pick up the new config
//! at their next request, and requests in flight (streams included) finish on the old
//! state, which their `Arc`s keep alive. The router carries its live estimates and
//! breakers over for endpoints whose id did not change. What outlives reloads ([`Shared`]:
//! the limits store and its counters) is reused, never rebuilt.
//!
//! Not reloaded (they need a restart): `[server]` listen address, header timeout,
//! connection limit and shutdown grace, and the `[state]` section.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{app, state, AppState, Shared, StartError};
use crate::config::{Config, ConfigError, StateConfig};

/// The app and the state it serves, swapped together so a request never sees one from
/// before a reload and the other from after.
pub struct Live {
    pub app: axum::Router,
    pub state: Arc<AppState>,
}

impl Live {
    fn new(state: Arc<AppState>) -> Live {
        Live {
            app: app(state.clone()),
            state,
        }
    }
}

pub struct Reloader {
    live: ArcSwap<Live>,
    shared: Shared,
    /// The address actually served (the CLI's `--listen` may have overridden the file).
    listen: SocketAddr,
    /// One reload at a time, so two cannot both carry over from the same old router.
    busy: Mutex<()>,
}

impl Reloader {
    pub(super) fn new(state: Arc<AppState>, shared: Shared, listen: SocketAddr) -> Self {
        Reloader {
            live: ArcSwap::from_pointee(Live::new(state)),
            shared,
            listen,
            busy: Mutex::new(()),
        }
    }

    /// The app and state serving new requests now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The state serving new requests now.
    pub fn state(&self) -> Arc<AppState> {
        self.live.load().state.clone()
    }

    /// What outlives reloads (limits store and its health counters).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Loads, validates and swaps in the config at `path`. On error nothing changes: the
    /// old config keeps serving, and the error names the field at fault.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        self.apply(Config::load(path)?)
    }

    /// Swaps in an already parsed config (validated again against the running server).
    pub fn apply(&self, mut cfg: Config) -> Result<(), ConfigError> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        cfg.server.listen = self.listen;
        cfg.check_exposure()?;
        let old = self.state();
        if !same_state(&old.cfg.state, &cfg.state) {
            tracing::warn!("config reload: [state] changes take effect only after a restart");
        }
        let new = state(cfg, &self.shared, Some(&old)).map_err(|e| match e {
            StartError::Provider(name, err) => ConfigError::Invalid {
                field: format!("providers.{name}"),
                message: err.to_string(),
            },
            other => ConfigError::Invalid {
                field: "config".to_owned(),
                message: other.to_string(),
            },
        })?;
        if let Some(store) = &self.shared.keys {
            // Stored keys are validated against the new catalog from the next refresh on
            // (within `ledger.keys_refresh_s`).
            store.set_raw(new.cfg.raw.0.clone());
        }
        let (models, keys) = (new.cfg.models.len(), new.cfg.keys.len());
        self.live.store(Arc::new(Live::new(new)));
        tracing::info!(models, keys, "config reloaded");
        Ok(())
    }
}

fn same_state(a: &StateConfig, b: &StateConfig) -> bool {
    a.redis_url.as_ref().map(|s| s.expose()) == b.redis_url.as_ref().map(|s| s.expose())
        && a.on_redis_error == b.on_redis_error
        && a.redis_timeout == b.redis_timeout
}
