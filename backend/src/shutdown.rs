//! One `CancellationToken` for the whole process: the signal listener cancels it, and every
//! task (the HTTP server, later the reducer and each feed stream) ends when it fires.

use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
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
        // Supervised as a vital task: ending now would stop the process.
        token.cancelled().await;
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

/// Whether the process can still do its job. A task the control plane depends on (the
/// reducer, the manifests poller, the SIGHUP listener) that ends before shutdown was asked
/// for, or panics at any time, marks it failed: `/readyz` answers 503 from then on and the
/// process stops with a non-zero exit, so its supervisor restarts it rather than a process
/// that answers every write with 503 staying in rotation.
#[derive(Clone, Default)]
pub struct Health {
    failure: Arc<OnceLock<String>>,
}

impl Health {
    /// Records the first failure; later ones are only logged by their callers.
    pub fn fail(&self, why: String) {
        let _ = self.failure.set(why);
    }

    /// Why the process is failing, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }
}

/// Watches a vital task: when it ends before `token` was cancelled, or panics, records why in
/// `health` and cancels `token` (which stops the server; `App::run` then returns the failure).
pub fn supervise(name: &'static str, task: JoinHandle<()>, health: Health, token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let outcome = task.await;
        let why = match outcome {
            Ok(()) if token.is_cancelled() => return,
            Ok(()) => format!("the {name} task stopped although no shutdown was asked for"),
            Err(err) if err.is_panic() => {
                let payload = err.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                format!("the {name} task panicked: {message}")
            }
            Err(_) => format!("the {name} task was cancelled"),
        };
        tracing::error!("{why}; stopping the process");
        health.fail(why);
        token.cancel();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vital_task_that_panics_fails_the_process_and_stops_it() {
        let (health, token) = (Health::default(), CancellationToken::new());
        let task = tokio::spawn(async { panic!("boom") });
        supervise("reducer", task, health.clone(), token.clone()).await.unwrap();
        assert!(token.is_cancelled(), "the process is told to stop");
        assert_eq!(health.failure(), Some("the reducer task panicked: boom"));
    }

    #[tokio::test]
    async fn a_vital_task_that_returns_early_fails_the_process_but_one_that_ends_on_shutdown_does_not() {
        let (health, token) = (Health::default(), CancellationToken::new());
        supervise("poller", tokio::spawn(async {}), health.clone(), token.clone()).await.unwrap();
        assert!(token.is_cancelled());
        assert_eq!(health.failure(), Some("the poller task stopped although no shutdown was asked for"));

        let (health, token) = (Health::default(), CancellationToken::new());
        let stops = token.clone();
        let task = tokio::spawn(async move { stops.cancelled().await });
        let watcher = supervise("poller", task, health.clone(), token.clone());
        token.cancel();
        watcher.await.unwrap();
        assert_eq!(health.failure(), None);
    }
}
