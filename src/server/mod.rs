//! The HTTP server: routes, shared state, connection handling and graceful shutdown.

pub mod admin;
pub mod auth;
mod body;
mod door;
mod doors;
mod errors;
#[doc(hidden)]
pub mod fuzz;
pub mod gate;
mod headers;
mod info;
mod json_scan;
mod openai_errors;
mod pipeline;
mod receipts;
mod refusal;
mod reload;
mod scrape;
mod splice;
mod sticky;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, ServerConfig};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::keys::KeyStore;
use crate::ledger::Ledger;
use crate::limits::Limits;
use crate::metrics::sessions::SessionSeries;
use crate::metrics::{Metrics, MetricsObserver};
use crate::observe::{LogObserver, Observer, Observers};
use crate::provider;
use crate::router::executor::Executor;
use crate::router::Router;
use crate::sessions::SessionStore;
use gate::RouteClass;
pub use reload::Reloader;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub router: Arc<Router>,
    /// Runs plans: the one attempt loop every front door uses.
    pub executor: Executor,
    /// Where requests refused before planning are reported (`refused_early`): the log and
    /// the metrics, not the ledger. A wrong key or an unparseable body is anyone's to send
    /// at line rate; one ledger row each would let anyone grow the database.
    pub early_observer: Arc<dyn Observer>,
    /// Rate limits and budgets; created once per process, kept across reloads.
    pub limits: Arc<Limits>,
    /// The usage ledger, when a database is configured.
    pub ledger: Option<Arc<Ledger>>,
    /// Keys stored in the database, when one is configured.
    pub keys: Option<Arc<KeyStore>>,
    /// `None` when `[metrics] enabled = false`; created once, kept across reloads.
    pub metrics: Option<Arc<Metrics>>,
    /// Cache-sticky sessions' pins; created once, kept across reloads.
    pub sessions: Arc<SessionStore>,
    /// The config's client keys, shared with the requests they authenticate.
    pub config_keys: Arc<[Arc<crate::config::ClientKey>]>,
    /// Set when the shutdown's grace ran out: streams still open end with an error event.
    pub stream_cut: watch::Receiver<bool>,
    reloader: Arc<std::sync::OnceLock<std::sync::Weak<Reloader>>>,
}

impl AppState {
    /// The server's reloader (absent only while the server is being built).
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.get().and_then(std::sync::Weak::upgrade)
    }
}

/// What outlives config reloads: created once at start, handed to every new state.
#[derive(Clone)]
pub struct Shared {
    pub limits: Arc<Limits>,
    pub ledger: Option<Arc<Ledger>>,
    pub keys: Option<Arc<KeyStore>>,
    /// Prometheus metrics (counters must survive reloads).
    pub metrics: Option<Arc<Metrics>>,
    /// Cache-sticky sessions' pins (in Redis too when `state.redis_url` is set).
    pub sessions: Arc<SessionStore>,
    /// The server's reloader, for `POST /relais/admin/reload` (set once it exists; weak,
    /// since the reloader holds the states that hold this).
    pub reloader: Arc<std::sync::OnceLock<std::sync::Weak<Reloader>>>,
    /// Set when the shutdown's grace ran out (`serve`): streams still open are cut.
    pub stream_cut: Arc<watch::Sender<bool>>,
}

impl Shared {
    /// Without a database (the ledger and stored keys need [`Shared::open`]).
    pub fn new(cfg: &Config) -> Result<Shared, StartError> {
        let limits = Limits::from_config(&cfg.state).map_err(StartError::State)?;
        let metrics = cfg.metrics.enabled.then(|| {
            let m = Arc::new(Metrics::new(&cfg.metrics));
            m.watch_limits(&limits);
            m
        });
        let mut sessions = SessionStore::from_config(cfg.sessions, &cfg.state);
        if let Some(m) = &metrics {
            sessions = sessions.with_counters(Arc::new(SessionSeries::register(m)));
        }
        Ok(Shared {
            limits,
            sessions,
            ledger: None,
            keys: None,
            metrics,
            reloader: Arc::default(),
            stream_cut: Arc::new(watch::Sender::new(false)),
        })
    }

    /// Opens the configured database (migrated), starts the ledger's writer and loads the
    /// keys table (refreshed in the background from then on).
    pub async fn open(cfg: &Config) -> Result<Shared, StartError> {
        let mut shared = Shared::new(cfg)?;
        let Some(url) = &cfg.ledger.database else {
            return Ok(shared);
        };
        let db = Db::open(url).await.map_err(StartError::Database)?;
        let announcer = cfg
            .state
            .redis_url
            .as_ref()
            .and_then(|u| crate::keys::Announcer::new(u, cfg.state.redis_timeout));
        let keys = KeyStore::open(db.clone(), cfg.raw.0.clone(), announcer)
            .await
            .map_err(StartError::Database)?;
        keys.spawn_refresh(cfg.ledger.keys_refresh);
        // Also with receipts off: a reload may switch them on, and the key must exist.
        crate::ledger::receipts::ensure_signing_key(&db)
            .await
            .map_err(|e| StartError::Database(crate::db::DbError::Open(e.to_string())))?;
        let ledger = Ledger::start(db, &cfg.ledger);
        // Old receipts are deleted even while new ones are switched off.
        ledger.spawn_receipt_retention(cfg.receipts.retention_days);
        if let Some(m) = &shared.metrics {
            m.watch_ledger(&ledger);
        }
        shared.ledger = Some(ledger);
        shared.keys = Some(keys);
        Ok(shared)
    }
}

/// Per-request id, set by the middleware, returned as the `request-id` header.
#[derive(Clone)]
pub struct RequestId(pub HeaderValue);

pub fn app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(root).head(root))
        .route("/v1/messages", post(doors::serve::<doors::Messages>))
        .route("/v1/chat/completions", post(doors::serve::<doors::Chat>))
        .route("/v1/responses", post(doors::serve::<doors::Responses>))
        .route("/v1/messages/count_tokens", post(info::count_tokens))
        .route("/v1/models", get(info::list_models))
        .route("/v1/models/{id}", get(info::get_model))
        .route("/v1/route", post(doors::route_only))
        .route("/relais/endpoints", get(info::endpoints))
        .route("/relais/usage", get(admin::usage))
        .route("/relais/receipts/keys", get(receipts::keys))
        .route("/relais/receipts/{id}", get(receipts::get))
        .route(
            "/relais/admin/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/relais/admin/keys/{name}/revoke", post(admin::revoke_key))
        .route("/relais/admin/reload", post(admin::reload))
        .route(
            "/relais/admin/keys/{name}/policy",
            axum::routing::put(admin::put_policy).patch(admin::patch_policy),
        )
        .route("/health", get(root))
        .route("/metrics", get(scrape::main_listener))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn root() -> &'static str {
    "relais ok\n"
}

async fn not_found(
    method: Method,
    uri: axum::http::Uri,
    Extension(class): Extension<RouteClass>,
) -> Response {
    let e = ApiError::not_found(format!("no route for {method} {}", uri.path()));
    class.envelope.render(e)
}

async fn method_not_allowed(
    method: Method,
    uri: axum::http::Uri,
    Extension(class): Extension<RouteClass>,
) -> Response {
    class.envelope.render(ApiError::new(
        crate::error::ErrorKind::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    ))
}

/// Gives every request its id (the `request-id` header of its answer, and its ledger key),
/// authenticates it against its route's role (the gate: once, before any handler), and
/// counts error answers in the metrics. Done here, around the app, rather than as axum
/// middleware: `from_fn` layers box a clone of the inner service and a future per request,
/// which cost about as much as everything the metrics do (callgrind, bench/cg.py).
async fn handle<B>(
    live: &reload::Live,
    metrics: Option<&Metrics>,
    mut req: axum::http::Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    // Time-ordered (UUIDv7: Unix ms, then random bits; no shared counter, so no lock): the
    // ledger's primary key then grows at its right edge, where random ids dirtied a random
    // index page per row and made every batch commit rewrite hundreds of pages (bench, c=64:
    // the SQLite ledger's added CPU fell from 20.4 to 8.6 µs per request; README).
    let ts = uuid::Timestamp::now(uuid::NoContext);
    // `req_relais_` and the id's 32 hex digits, written in place (no `format!`).
    let mut id = [0u8; REQUEST_ID_PREFIX.len() + uuid::fmt::Simple::LENGTH];
    let (prefix, digits) = id.split_at_mut(REQUEST_ID_PREFIX.len());
    prefix.copy_from_slice(REQUEST_ID_PREFIX);
    uuid::Uuid::new_v7(ts).simple().encode_lower(digits);
    let value = HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("req_relais"));
    let rid = RequestId(value.clone());
    let class = RouteClass::of(req.method(), req.uri().path(), req.headers());
    let max_header = live.state.cfg.server.max_header_bytes;
    let checked = headers::within(&req, max_header)
        .and_then(|()| gate::check(&live.state, class.role, req.headers()));
    let mut resp = match checked {
        Ok(caller) => {
            let ext = req.extensions_mut();
            ext.insert(rid);
            ext.insert(caller);
            ext.insert(class);
            tower_service::Service::call(&mut live.app.clone(), req).await?
        }
        Err(e) => {
            if let Some(api) = class.api {
                refused_early(&live.state, &rid, api, tokio::time::Instant::now(), &e);
            }
            class.envelope.render(e)
        }
    };
    if let (Some(m), Some(e)) = (metrics, resp.extensions().get::<scrape::RenderedError>()) {
        m.error_response(e.status, e.error_type);
    }
    resp.headers_mut().insert(REQUEST_ID, value);
    Ok(resp)
}

const REQUEST_ID_PREFIX: &[u8] = b"req_relais_";
/// A constant: a name given as `&str` is parsed and copied on every insert.
const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("request-id");

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    /// The running server's state (its ledger counters, key table...).
    pub state: Arc<AppState>,
    /// The separate metrics listener (`[metrics] listen`), when configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    reloader: Arc<Reloader>,
}

impl ServerHandle {
    /// Reloads the config (what SIGHUP does), reads the current state and the shared parts.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Stops accepting, lets in-flight requests finish within the configured grace.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("provider `{0}`: {1}")]
    Provider(String, crate::error::UpstreamError),
    #[error("limits store: {0}")]
    State(crate::limits::StoreError),
    #[error("cannot read listener address: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Database(DbError),
    #[error("the config has a database ([ledger]): start with server::launch")]
    NeedsLaunch,
    #[error("cannot listen on metrics.listen {0}: {1}")]
    MetricsListen(SocketAddr, std::io::Error),
}

/// The state for `cfg`. With `previous`, the router keeps its live estimates and breakers
/// for endpoints that did not change (a reload).
pub fn state(
    cfg: Config,
    shared: &Shared,
    previous: Option<&AppState>,
) -> Result<Arc<AppState>, StartError> {
    let cfg = Arc::new(cfg);
    let mut providers = HashMap::new();
    for p in &cfg.providers {
        let adapter =
            provider::build(p.clone()).map_err(|e| StartError::Provider(p.name.clone(), e))?;
        providers.insert(p.name.clone(), adapter);
    }
    let router = Arc::new(match previous {
        Some(old) => Router::carry_over(cfg.clone(), &old.router),
        None => Router::new(cfg.clone()),
    });
    let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(LogObserver)];
    if let Some(m) = &shared.metrics {
        // Breakers and in-flight counts of the router now serving.
        m.set_router(router.clone());
        observers.push(Arc::new(MetricsObserver(m.clone())));
    }
    let early_observer: Arc<dyn Observer> = Arc::new(Observers(observers.clone()));
    if let Some(l) = &shared.ledger {
        observers.push(l.clone());
    }
    let observer: Arc<dyn Observer> = Arc::new(Observers(observers));
    Ok(Arc::new(AppState {
        config_keys: cfg.keys.iter().cloned().map(Arc::new).collect(),
        metrics: shared.metrics.clone(),
        early_observer,
        executor: Executor {
            router: router.clone(),
            providers: Arc::new(providers),
            observer,
        },
        router,
        cfg,
        limits: shared.limits.clone(),
        sessions: shared.sessions.clone(),
        ledger: shared.ledger.clone(),
        keys: shared.keys.clone(),
        reloader: shared.reloader.clone(),
        stream_cut: shared.stream_cut.subscribe(),
    }))
}

/// Serves `cfg` on `listener` until [`ServerHandle::shutdown`]. For a config without a
/// database; [`launch`] opens one first.
pub fn start(cfg: Config, listener: TcpListener) -> Result<ServerHandle, StartError> {
    if cfg.ledger.database.is_some() {
        return Err(StartError::NeedsLaunch);
    }
    let shared = Shared::new(&cfg)?;
    start_with(cfg, listener, shared)
}

/// Opens the configured database (if any), then serves until [`ServerHandle::shutdown`],
/// which also flushes the ledger.
pub async fn launch(cfg: Config, listener: TcpListener) -> Result<ServerHandle, StartError> {
    let shared = Shared::open(&cfg).await?;
    start_with(cfg, listener, shared)
}

pub fn start_with(
    cfg: Config,
    listener: TcpListener,
    shared: Shared,
) -> Result<ServerHandle, StartError> {
    let addr = listener.local_addr()?;
    let state = state(cfg, &shared, None)?;
    let server = state.cfg.server.clone();
    let handle = shared.reloader.clone();
    let reloader = Arc::new(Reloader::new(state.clone(), shared, addr));
    let _ = handle.set(Arc::downgrade(&reloader));
    let (tx, rx) = watch::channel(false);
    let (mut metrics_addr, mut metrics_task) = (None, None);
    if let (Some(m), Some(at)) = (&state.metrics, state.cfg.metrics.listen) {
        let l = std::net::TcpListener::bind(at).map_err(|e| StartError::MetricsListen(at, e))?;
        let (a, t) = scrape::spawn_listener(l, m.clone(), rx.clone())?;
        (metrics_addr, metrics_task) = (Some(a), Some(t));
    }
    let task = tokio::spawn(serve(listener, server, reloader.clone(), rx));
    Ok(ServerHandle {
        addr,
        state,
        metrics_addr,
        shutdown: tx,
        task,
        metrics_task,
        reloader,
    })
}

/// After the shutdown's grace, how long cut streams have to deliver their error event
/// before their connections are closed.
const CUT_WINDOW: Duration = Duration::from_secs(1);

/// HTTP/1.1 only: every Anthropic client speaks it, and hyper's header-read timeout then
/// covers a connection from its first byte (hyper-util's auto-detection of HTTP/2 waits
/// for the protocol preface with no timer, so a silent client would hold a socket forever).
async fn serve(
    listener: TcpListener,
    server: ServerConfig,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    let grace = server.shutdown_grace;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(headers::read_cap(server.max_header_bytes))
        .header_read_timeout(server.header_timeout)
        .keep_alive(true);
    // Bounds open connections: past it, new ones wait in the kernel's backlog.
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let (ledger, keys, stream_cut) = (
        reloader.shared().ledger.clone(),
        reloader.shared().keys.clone(),
        reloader.shared().stream_cut.clone(),
    );
    // Closes the connections still open after the cut (their clients do not read).
    let (close_all, closing) = watch::channel(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Each request goes to the app current when it arrives (config reload).
                let reloader = reloader.clone();
                // Metrics outlive reloads: one handle serves the whole connection.
                let metrics = reloader.shared().metrics.clone();
                // The request's future is boxed: hyper keeps a slot sized for it for the
                // connection's whole life (empty between requests and while a response
                // streams), so an unboxed one costs its size, about 1.3 KiB, per open
                // connection; boxed, the slot is a pointer and the future lives only as
                // long as the request is being handled.
                let svc = hyper::service::service_fn(move |req| {
                    let live = reloader.live();
                    let metrics = metrics.clone();
                    Box::pin(async move { handle(&live, metrics.as_deref(), req).await })
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                let mut closing = closing.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        _ = closing.wait_for(|c| *c) => {}
                    }
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(grace, &mut drained).await.is_err() {
        // Streams still open end with an error event in their door's format, and are
        // recorded; connections whose clients do not read it in time are closed (their
        // streams recorded as they are dropped). Other requests in flight are recorded as
        // their clients' (client_closed) when closed.
        tracing::warn!(
            "shutdown grace of {grace:?} elapsed with requests still in flight: cutting them"
        );
        let _ = stream_cut.send(true);
        if tokio::time::timeout(CUT_WINDOW, &mut drained)
            .await
            .is_err()
        {
            let _ = close_all.send(true);
            let _ = tokio::time::timeout(CUT_WINDOW, &mut drained).await;
        }
    }
    if let Some(k) = keys {
        k.stop();
    }
    // Every request has ended (or the grace ran out): write what the ledger holds.
    if let Some(l) = ledger {
        l.shutdown(grace).await;
    }
}

/// A request refused before planning (auth, body, validation): one record for the log and
/// the metrics (no key name, no model: neither was accepted), no ledger row.
pub(crate) fn refused_early(
    st: &AppState,
    rid: &RequestId,
    api: crate::observe::Api,
    arrived: tokio::time::Instant,
    e: &ApiError,
) {
    let mut meta = crate::router::executor::RequestMeta::new(
        rid.0.to_str().unwrap_or_default().to_owned(),
        api,
        None,
        false,
    );
    meta.arrived = arrived;
    meta.reject(st.early_observer.as_ref(), None, e);
}

/// Admission by the key's rate limits and budgets, after planning, for either door. On a
/// refusal the request is reported (one ledger record) and the refusal returned for the
/// door to render; otherwise the reservation is settled when the request ends.
pub(crate) async fn admit(
    st: &AppState,
    key: Option<&crate::config::ClientKey>,
    plan: &crate::router::Plan,
    (max_tokens, est_input): (u64, u64),
    mut meta: crate::router::executor::RequestMeta,
) -> Result<
    (
        crate::limits::Admission,
        crate::router::executor::RequestMeta,
    ),
    crate::limits::Rejected,
> {
    // A request that may be hedged reserves for its hedges too, or is not hedged.
    if meta.hedge && crate::router::hedge::may_hedge(plan) {
        let hedges = st.cfg.routing.hedge.max_in_flight;
        match st
            .limits
            .admit_hedged(key, plan, (max_tokens, est_input), hedges)
            .await
        {
            Some(mut a) => {
                meta.on_end.extend(a.on_end());
                return Ok((a, meta));
            }
            None => meta.hedge = false,
        }
    }
    match st.limits.admit(key, plan, max_tokens, est_input).await {
        Ok(mut a) => {
            meta.on_end.extend(a.on_end());
            Ok((a, meta))
        }
        Err(rejected) => {
            meta.reject(
                st.executor.observer.as_ref(),
                Some(&plan.model),
                &rejected.error,
            );
            Err(rejected)
        }
    }
}

impl IntoResponse for crate::router::RouteError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl From<crate::router::RouteError> for ApiError {
    fn from(e: crate::router::RouteError) -> Self {
        e.api_error()
    }
}
