//! Connections: the accept loop under the router. Every connection is HTTP/1.1 with a timer,
//! so a client that sends half a request head is closed after `header_read_timeout` (the
//! same timer closes keep-alive connections idle that long), and at most `max_connections`
//! are open at once: beyond that the loop stops accepting and new connections wait in the
//! kernel's backlog until one closes. Together with the per-route body
//! limits and the body and request timeouts of the router (`http::router`), this bounds what
//! anonymous clients can make the process hold (ARCHITECTURE.md, "Limits").
//!
//! (`axum::serve` configures no timer, hence no header timeout, and no connection limit.)

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::HttpLimits;

/// Largest read buffer per connection, and so the largest request head (hyper answers 431
/// beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` fires; then stops accepting and gives open
/// connections `drain` to finish (they are closed after it).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // Wait for a free slot first: at the limit, nothing more is accepted.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = permit;
            if let Err(err) = conn.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(timeout = ?drain, "connections still open after the drain timeout; closing them");
        }
    }
}
