//! One `CancellationToken` for the whole process: the signal listener cancels it, and every
//! task (the HTTP server, later the reducer and each feed stream) ends when it fires.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM. Runs until then, or until `token` is
/// cancelled by someone else (tests, a fatal error elsewhere).
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C; stop the process with SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM; stop the process with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        () = token.cancelled() => return,
    }
    token.cancel();
}

/// Calls `reload` on every SIGHUP until `token` is cancelled.
pub async fn on_sighup(token: CancellationToken, reload: impl Fn() + Send + 'static) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; trust.json is re-read on manifest polls only");
        return;
    };
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading trust.json");
                reload();
            }
        }
    }
}
