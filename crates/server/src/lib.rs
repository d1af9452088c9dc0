//! The sandpit control plane.
//!
//! [`Server::start`] opens the registry (`<data_dir>/sandpit.db`), loads or creates the admin
//! key, reconciles what a previous run left behind, binds the listener and spawns the idle
//! reaper. Routes (see `docs/api.md`):
//!
//! * `POST|GET /v1/sandboxes`, `GET|PATCH|DELETE /v1/sandboxes/{id}`,
//!   `POST /v1/sandboxes/{id}/stop`: lifecycle ([`lifecycle`]);
//! * `ANY /v1/sandboxes/{id}/api/*`, `/ws`, `/ws/*`: forwarded to the agent ([`forward`]);
//! * `GET|PUT /v1/sandboxes/{id}/files/*`: raw file bytes, streamed without a size cap;
//! * `POST /v1/sandboxes/{id}/ws-ticket`, `?access_token=`: WebSocket credentials ([`ws_auth`]);
//! * `POST|GET /v1/sandboxes/{id}/ports`, `DELETE /v1/sandboxes/{id}/ports/{port}`: preview
//!   URLs; requests to preview hosts are proxied to the sandbox's port ([`preview`]);
//! * `GET /v1/quota`, `GET|PUT|DELETE /v1/tenants/{tenant}/quota`: per-tenant quotas
//!   ([`quota`]); per-sandbox caps are in [`caps`];
//! * `POST|GET /v1/keys`, `DELETE /v1/keys/{keyId}`, `POST /v1/keys/{keyId}/rotate`: API keys
//!   ([`auth`]);
//! * `GET /v1/audit`: the audit log of control-plane actions ([`audit`]);
//! * `GET /v1/events`: the tenant's sandbox changes as server-sent events ([`events`]);
//! * `GET /console/*`: the web console's static files, no key needed ([`console`]);
//! * `POST|GET|DELETE /mcp`: the MCP server (streamable HTTP, [`sandpit_mcp`]); its tools call
//!   this API on loopback with the request's own key;
//! * `GET /v1/openapi.json`, `GET /healthz`, `GET /readyz`: no key needed; `GET /metrics`: no
//!   key unless `metrics_auth` is set (then the admin key).

mod activity;
pub mod agent_client;
mod audit;
pub mod auth;
pub mod backups;
pub mod caps;
pub mod cluster;
mod config;
mod console;
pub mod drivers;
pub mod egress;
pub mod error;
pub mod events;
mod forward;
mod labels;
pub mod lifecycle;
mod metrics;
pub mod mounts;
pub mod objects;
pub mod openapi;
pub mod preview;
mod process_archive;
pub mod quota;
mod routes;
mod start_error;
#[cfg(feature = "testing")]
pub mod testing;
pub mod ws_auth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn_with_state, map_response_with_state};
use axum::response::Response;
use axum::routing::{any, delete, get, post};
use axum::serve::ListenerExt;
use http::Request;
use sandpit_image::ImageStore;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::Isolation;
use sandpit_runtime::Driver;
use sandpit_store::{DataKey, PostgresStore, SqliteStore, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use config::{ADMIN_KEY_ENV, AGENT_BIN_ENV, ServeConfig, StoreBackend, find_agent_binary};
/// Default of [`ServeConfig::cgroup_root`] (`sandpit serve --cgroup-root`).
pub use sandpit_runtime::local::DEFAULT_CGROUP_ROOT;
/// Default of `sandpit node --first-uid`.
pub use sandpit_runtime::local::DEFAULT_FIRST_UID;
pub use start_error::StartError;

use crate::auth::Auth;
pub use crate::drivers::Drivers;
use crate::error::ApiError;
use crate::lifecycle::Manager;
use crate::metrics::Metrics;

/// File under the data dir holding the key that encrypts secrets and CA keys in the database.
pub const DATA_KEY_FILE: &str = "secrets.key";

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub manager: Arc<Manager>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub backups: Arc<backups::Backups>,
    /// Sleep captures and crash checkpoints of background processes.
    pub processes: Arc<process_archive::ProcessArchive>,
    /// Cluster mode (`serve --cluster-dir`): the CA and the nodes' driver.
    pub cluster: Option<Arc<cluster::ControlPlane>>,
}

async fn route_not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Counts error responses by code (the code rides in a response extension).
async fn count_errors(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    response: Response,
) -> Response {
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics.error(*code);
    }
    response
}

fn router(
    app: Arc<AppState>,
    previews: Arc<preview::Previews>,
    max_control_body: usize,
    metrics_auth: bool,
    mcp: Router<Arc<AppState>>,
    events: Arc<events::Events>,
) -> Router {
    use routes::{files, keys, quota, sandboxes, system};
    let auth = app.auth.clone();
    let forward = any(forward::forward);
    let tickets = Arc::new(ws_auth::Tickets::default());
    let authed = Router::new()
        .route("/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/v1/keys/{keyId}", delete(keys::revoke_key))
        .route("/v1/keys/{keyId}/rotate", post(keys::rotate_key))
        .route("/v1/quota", get(quota::own))
        .route(
            "/v1/tenants/{tenant}/quota",
            get(quota::get).put(quota::set).delete(quota::reset),
        )
        .route("/v1/audit", get(routes::audit::list))
        .route("/v1/nodes", get(routes::nodes::list))
        .route("/v1/events", get(events::stream).with_state(events))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::get)
                .patch(sandboxes::update)
                .delete(sandboxes::destroy),
        )
        .route("/v1/sandboxes/{id}/stop", post(sandboxes::stop))
        .route(
            "/v1/sandboxes/{id}/snapshots",
            post(routes::snapshots::create),
        )
        .route("/v1/sandboxes/{id}/fork", post(routes::snapshots::fork))
        .route("/v1/snapshots", get(routes::snapshots::list))
        .route(
            "/v1/snapshots/{id}",
            get(routes::snapshots::get).delete(routes::snapshots::delete),
        )
        .route("/v1/snapshots/{id}/export", post(routes::snapshots::export))
        .route("/v1/snapshots/import", post(routes::snapshots::import))
        .route("/v1/sandboxes/{id}/env", post(routes::env::set_env))
        .route("/v1/sandboxes/{id}/backups", post(routes::backups::create))
        .route("/v1/sandboxes/{id}/restore", post(routes::backups::restore))
        .route("/v1/backups", get(routes::backups::list))
        .route(
            "/v1/backups/{backupId}",
            get(routes::backups::get).delete(routes::backups::delete),
        )
        .route(
            "/v1/sandboxes/{id}/egress-log",
            get(routes::egress::egress_log),
        )
        .route("/v1/sandboxes/{id}/usage", get(routes::usage::usage))
        .route(
            "/v1/sandboxes/{id}/mounts",
            post(routes::mounts::mount)
                .get(routes::mounts::list)
                .delete(routes::mounts::unmount),
        )
        .route(
            "/v1/sandboxes/{id}/files/{*path}",
            get(files::download).put(files::upload),
        )
        .route("/v1/sandboxes/{id}/api/{*path}", forward.clone())
        .route(
            "/v1/sandboxes/{id}/ws-ticket",
            post(ws_auth::issue).with_state(tickets.clone()),
        )
        .route(
            "/v1/sandboxes/{id}/ports",
            post(preview::api::expose)
                .get(preview::api::list)
                .with_state(previews.clone()),
        )
        .route(
            "/v1/sandboxes/{id}/ports/{port}",
            delete(preview::api::unexpose).with_state(previews.clone()),
        )
        .route("/v1/sandboxes/{id}/ws", forward.clone())
        .route("/v1/sandboxes/{id}/ws/{*path}", forward)
        // Inside the key check: the audit row names the caller's key.
        .route_layer(from_fn_with_state(app.clone(), audit::record))
        .route_layer(from_fn_with_state(auth.clone(), auth::require_key));
    let mut metrics_route = Router::new().route("/metrics", get(system::metrics));
    if metrics_auth {
        metrics_route =
            metrics_route.route_layer(from_fn_with_state(auth, auth::require_admin_key));
    }
    let open = Router::new()
        .route("/healthz", get(system::health))
        .route("/readyz", get(system::ready))
        .route("/v1/cluster/join", post(routes::nodes::join))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/console", get(console::redirect))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file))
        .merge(metrics_route);
    let metrics = app.metrics.clone();
    authed
        .merge(open)
        .merge(mcp)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
        // Applies to extractors (JSON bodies); forwarded bodies have their own cap.
        .layer(DefaultBodyLimit::max(max_control_body))
        // Before the key check: it may supply the key or the tenant.
        .layer(from_fn_with_state(tickets, ws_auth::query_credentials))
        .layer(map_response_with_state(metrics, count_errors))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost: preview hosts skip the API's layers.
        .layer(from_fn_with_state(previews, preview::proxy::route_by_host))
}

/// `/mcp`: the MCP server behind the same API-key check as `/v1`. Its tools call this server's
/// API on loopback with the caller's key, so MCP can do exactly what the key can.
fn mcp_route(
    auth: &Arc<Auth>,
    listening: SocketAddr,
    shutdown: CancellationToken,
) -> Result<Router<Arc<AppState>>, StartError> {
    let ip = match listening.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let api = format!("http://{}", SocketAddr::new(ip, listening.port()));
    let service =
        sandpit_mcp::http_service(&api, shutdown).map_err(|e| StartError::Mcp(Box::new(e)))?;
    Ok(Router::new()
        .route_service("/mcp", service)
        .route_layer(from_fn_with_state(auth.clone(), auth::require_key)))
}

/// A running control plane.
pub struct Server {
    addr: SocketAddr,
    admin_key: String,
    key_file: PathBuf,
    admin_key_configured: bool,
    manager: Arc<Manager>,
    shutdown: watch::Sender<bool>,
    /// `None` once shut down.
    serve: Option<JoinHandle<std::io::Result<()>>>,
    reaper: Option<JoinHandle<()>>,
    grace: Duration,
    /// Ends open MCP sessions and `/v1/events` streams (they would otherwise hold up
    /// shutdown).
    mcp_shutdown: CancellationToken,
    /// Held while the server lives: one server per data dir.
    _data_dir_lock: std::fs::File,
}

/// Dropping a server without [`Server::shutdown`] stops serving at once and leaves its
/// sandboxes running, like a crash; the next server on the data dir reconciles them.
impl Drop for Server {
    fn drop(&mut self) {
        for task in [
            self.reaper.take().map(|t| t.abort_handle()),
            self.serve.take().map(|t| t.abort_handle()),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}

impl Server {
    /// Starts the server with the drivers built into it: the local namespace driver for the
    /// `standard` tier.
    pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
        if config.cluster_dir.is_some() {
            // The nodes run the sandboxes: this process has no local driver.
            return Self::start_inner(config, None).await;
        }
        let mut drivers = Drivers::new(local_driver(&config)?);
        if let Some(runsc) = &config.runsc {
            drivers = drivers.with(Isolation::Gvisor, gvisor_driver(&config, runsc)?);
        }
        Self::start_with_drivers(config, drivers).await
    }

    /// Starts the server with any driver as its `standard` tier (tests use one that runs
    /// agents as host processes).
    pub async fn start_with_driver(
        config: ServeConfig,
        driver: Arc<dyn Driver>,
    ) -> Result<Server, StartError> {
        Self::start_with_drivers(config, Drivers::new(driver)).await
    }

    /// Starts the server with these drivers, one per isolation tier it offers.
    pub async fn start_with_drivers(
        config: ServeConfig,
        drivers: Drivers,
    ) -> Result<Server, StartError> {
        Self::start_inner(config, Some(drivers)).await
    }

    /// `drivers`: `None` in cluster mode (the nodes' driver is made once the store is open).
    async fn start_inner(
        config: ServeConfig,
        drivers: Option<Drivers>,
    ) -> Result<Server, StartError> {
        if let Some(drivers) = &drivers
            && let Err(e) = drivers.get(config.default_isolation)
        {
            return Err(StartError::DefaultIsolation(e));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(StartError::io("creating the data dir", &config.data_dir))?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let db = config.data_dir.join("sandpit.db");
        let data_key = DataKey::load_or_create(&config.data_dir.join(DATA_KEY_FILE))
            .map_err(StartError::DataKey)?;
        let store: Arc<dyn Store> = match &config.store {
            StoreBackend::Sqlite => Arc::new(
                SqliteStore::open(&db, data_key)
                    .map_err(|source| StartError::Store { path: db, source })?,
            ),
            StoreBackend::Postgres { url } => Arc::new(
                PostgresStore::connect(url, data_key)
                    .await
                    .map_err(|source| StartError::Postgres {
                        url: config.store.describe(),
                        source,
                    })?,
            ),
        };
        tracing::info!(store = ?config.store, "store opened");
        let (drivers, cluster) = match (drivers, &config.cluster_dir) {
            (Some(drivers), _) => (drivers, None),
            (None, Some(dir)) => {
                let plane = cluster::ControlPlane::load(dir, store.clone()).map_err(|source| {
                    StartError::Cluster {
                        dir: dir.clone(),
                        source,
                    }
                })?;
                let driver: Arc<dyn Driver> = plane.driver.clone();
                let drivers = Drivers::new(driver);
                if let Err(e) = drivers.get(config.default_isolation) {
                    return Err(StartError::DefaultIsolation(e));
                }
                (drivers, Some(Arc::new(plane)))
            }
            (None, None) => {
                return Err(StartError::DefaultIsolation(ApiError::internal(
                    "no driver",
                )));
            }
        };
        let (admin_key, key_file) =
            auth::load_or_create_admin_key(&config.data_dir, config.admin_key.as_deref())?;
        if config.admin_key.is_none() {
            tracing::info!(path = %key_file.display(), "admin key is stored in this file");
        }
        store
            .ensure_tenant(auth::DEFAULT_TENANT)
            .await
            .map_err(StartError::DefaultTenant)?;
        let images = ImageStore::open(&config.images_dir).map_err(|source| StartError::Images {
            path: config.images_dir.clone(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let host = caps::HostResources::detect(&config.data_dir);
        let caps = caps::resolve(
            &config.max_limits,
            config.max_exposed_ports,
            config.max_processes,
            &host,
            &config.default_limits,
        )?;
        tracing::info!(?caps, "per-sandbox maxima");
        let bounds = lifecycle::Bounds {
            default_limits: config.default_limits.clone(),
            caps,
            default_quota: config.default_quota.clone(),
            default_isolation: config.default_isolation,
            min_host_memory_mb: config.min_host_memory_mb,
        };
        let mut manager = Manager::new(
            store.clone(),
            drivers,
            images,
            bounds,
            metrics.clone(),
            egress::Egress::new(&egress::EgressConfig {
                resolve: config.egress_resolve.clone(),
                blocked: config.egress_blocked.clone(),
                host: sandpit_runtime::network::host_addresses()
                    .into_iter()
                    .map(std::net::IpAddr::V4)
                    .collect(),
                private: config.egress_private.clone(),
                unblocked: config.egress_unblocked.clone(),
                grants: config.egress_grants.clone(),
                extra_roots: config.egress_extra_roots.clone(),
                max_connections_per_sandbox: config.egress_max_connections_per_sandbox,
                max_connections_per_tenant: config.egress_max_connections_per_tenant,
            })
            .map_err(StartError::Egress)?,
        )
        .await
        .map_err(StartError::Manager)?;
        manager.set_cluster(cluster.is_some());
        manager.set_mount_policy(
            mounts::MountPolicy::new(&config.mount_endpoints, config.egress_blocked.clone())
                .map_err(StartError::MountEndpoint)?
                .with_max_per_sandbox(config.max_mounts_per_sandbox),
        );
        // Features that act on starts and stops subscribe here; lifecycle calls none of them.
        let processes = Arc::new(process_archive::ProcessArchive::new(store.clone()));
        manager.subscribe(processes.clone());
        // Ends open MCP sessions and event streams at shutdown.
        let mcp_shutdown = CancellationToken::new();
        let events = Arc::new(events::Events::new(mcp_shutdown.clone()));
        manager.subscribe(events.clone());
        let manager = Arc::new(manager);
        manager
            .reconcile()
            .await
            .map_err(|e| StartError::Reconcile(e.into()))?;

        let objects =
            objects::Objects::open(&config.object_store).map_err(StartError::ObjectStore)?;
        tracing::info!(objects = %objects.describe, "object store");
        let backups = Arc::new(backups::Backups::new(
            store.clone(),
            objects,
            config.backup_limits,
        ));
        let app = Arc::new(AppState {
            manager: manager.clone(),
            auth: Arc::new(Auth::new(&admin_key, store)),
            metrics,
            max_body_bytes: config.max_body_bytes,
            backups: backups.clone(),
            processes: processes.clone(),
            cluster: cluster.clone(),
        });
        let bind = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let preview_config = preview::PreviewConfig {
            domain: config.preview_domain.clone(),
            scheme: config.preview_scheme.clone(),
            port: config.preview_port.unwrap_or(addr.port()),
        };
        let previews = Arc::new(
            preview::Previews::load(preview_config, manager.clone())
                .await
                .map_err(|e| StartError::Previews(e.into()))?,
        );
        let mcp = mcp_route(&app.auth, addr, mcp_shutdown.clone())?;
        let router = router(
            app,
            previews,
            config.max_control_body_bytes,
            config.metrics_auth,
            mcp,
            events,
        );
        let (shutdown, mut stop_serving) = watch::channel(false);
        // No Nagle: SSE events and small answers must leave at once, not wait for an ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = tokio::spawn(async move {
            // The peer address feeds the preview proxy's X-Forwarded-For.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_serving.wait_for(|stop| *stop).await;
            })
            .await
        });
        let reaper = tokio::spawn(reap_forever(
            manager.clone(),
            config.reaper_interval,
            shutdown.subscribe(),
        ));
        tokio::spawn(backups::reap_forever(backups, shutdown.subscribe()));
        if let Some(cluster) = &cluster {
            tokio::spawn(
                cluster
                    .driver
                    .clone()
                    .heartbeat_forever(shutdown.subscribe()),
            );
        }
        if !config.process_checkpoint_every.is_zero() {
            tokio::spawn(process_archive::checkpoint_forever(
                processes,
                manager.clone(),
                config.process_checkpoint_every,
                shutdown.subscribe(),
            ));
        }
        tracing::info!(%addr, "sandpit server listening");
        if !console::built() {
            tracing::info!("web console not built into this binary: /console says how");
        }
        Ok(Server {
            addr,
            admin_key,
            key_file,
            admin_key_configured: config.admin_key.is_some(),
            manager,
            shutdown,
            serve: Some(serve),
            reaper: Some(reaper),
            grace: config.shutdown_grace,
            mcp_shutdown,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin key (tenant `default`).
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// Whether the admin key came from the configuration (`SANDPIT_ADMIN_KEY`); then
    /// [`Server::key_file`] holds nothing of it.
    pub fn admin_key_configured(&self) -> bool {
        self.admin_key_configured
    }

    /// Where a generated admin key is kept (`<data_dir>/admin.key`).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Stops serving (open requests get `shutdown_grace` to finish), then puts every running
    /// sandbox to sleep.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.mcp_shutdown.cancel();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.await;
        }
        if let Some(mut serve) = self.serve.take() {
            let finished = tokio::time::timeout(self.grace, &mut serve).await.is_ok();
            // Sleeping the sandboxes also ends streams still open after the grace period.
            self.manager.sleep_all().await;
            let one_more = Duration::from_secs(1);
            if !finished && tokio::time::timeout(one_more, &mut serve).await.is_err() {
                serve.abort();
            }
        }
        tracing::info!("sandpit server stopped");
        Ok(())
    }

    /// Serves until ctrl-c or SIGTERM, then shuts down.
    pub async fn wait(self) -> std::io::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        tracing::info!("signal received, shutting down");
        self.shutdown().await
    }
}

/// Takes `<data_dir>/server.lock`: two servers on one data dir would fight over its sandboxes.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let path = data_dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StartError::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked {
            data_dir: data_dir.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError::io("locking", path)(e)),
    }
}

async fn reap_forever(manager: Arc<Manager>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                manager.reap().await;
                if manager.is_cluster() {
                    // One replica per round expires sandboxes (PostgreSQL advisory lock).
                    if let Ok(Some(_job)) = manager.store().try_lock_job("ttl-expiry").await {
                        manager.reap_expired().await;
                    }
                } else {
                    manager.reap_expired().await;
                }
            }
            _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return,
        }
    }
}

/// The namespace driver, keeping its per-sandbox dirs and sockets under the data dir.
/// The `gvisor` tier: the same agent and image store under runsc.
fn gvisor_driver(
    config: &ServeConfig,
    runsc: &std::path::Path,
) -> Result<Arc<dyn Driver>, StartError> {
    let data_dir = std::path::absolute(&config.data_dir)
        .map_err(StartError::io("resolving the data dir", &config.data_dir))?;
    let mut driver_config =
        sandpit_runtime::gvisor::GvisorConfig::new(data_dir, config.agent_bin.clone());
    driver_config.images_dir = std::path::absolute(&config.images_dir).map_err(StartError::io(
        "resolving the images dir",
        &config.images_dir,
    ))?;
    driver_config.runsc = runsc.to_path_buf();
    driver_config.cgroup_group = format!("{}-gvisor", config.cgroup_root);
    let driver = sandpit_runtime::gvisor::GvisorDriver::with_config(driver_config)
        .map_err(StartError::GvisorDriver)?;
    tracing::info!(runsc = %runsc.display(), "isolation tier gvisor available");
    Ok(Arc::new(driver))
}

fn local_driver(config: &ServeConfig) -> Result<Arc<dyn Driver>, StartError> {
    let data_dir = std::path::absolute(&config.data_dir)
        .map_err(StartError::io("resolving the data dir", &config.data_dir))?;
    let mut driver_config =
        sandpit_runtime::local::LocalDriverConfig::new(data_dir, config.agent_bin.clone());
    driver_config.images_dir = std::path::absolute(&config.images_dir).map_err(StartError::io(
        "resolving the images dir",
        &config.images_dir,
    ))?;
    driver_config.cgroup_group = config.cgroup_root.clone();
    driver_config.sysfs = config.sandbox_sysfs;
    // The operator's blocks and private ranges hold in `full` mode too (its firewall).
    driver_config.operator = sandpit_runtime::network::OperatorRanges {
        blocked: config.egress_blocked.clone(),
        private: config.egress_private.clone(),
    };
    let driver = sandpit_runtime::local::LocalDriver::with_config(driver_config)
        .map_err(StartError::Driver)?;
    Ok(Arc::new(driver))
}
