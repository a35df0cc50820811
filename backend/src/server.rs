//! Building and running the control plane. The listener is bound in [`App::build`] and the
//! shutdown token is passed to [`App::run`], so tests run the real server on port 0 and stop
//! it whenever they like.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeConfig;
use crate::db::{self, DbError};
use crate::http::{self, AppState};

/// How long in-flight requests get to finish after shutdown was requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A control plane that is bound and has its database open, ready to serve.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    pool: SqlitePool,
    router: axum::Router,
}

impl App {
    pub async fn build(config: &ServeConfig) -> Result<App, ServerError> {
        let pool = db::open(&config.db).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let state = AppState::new(pool.clone());
        let router = http::router(state, &config.dist);
        Ok(App {
            listener,
            local_addr,
            pool,
            router,
        })
    }

    /// The address actually bound (differs from the configured one when it named port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests drain (bounded by
    /// [`DRAIN_TIMEOUT`]) and closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let App {
            listener,
            pool,
            router,
            ..
        } = self;
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result.map_err(ServerError::Serve),
            () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still open after the drain timeout; closing them");
                Ok(())
            }
        };
        pool.close().await;
        result
    }
}
