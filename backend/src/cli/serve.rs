//! `fleetwave serve`: the control plane.

use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::{server, shutdown};

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let result = serve(config).await;
    if let Err(err) = &result {
        tracing::error!("{err:#}");
    }
    result
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    tracing::info!(?config, "starting fleetwave serve");
    let token = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(token.clone()));
    let app = server::App::build(&config, token).await?;
    tracing::info!(addr = %app.local_addr(), "listening; dashboard at http://{}/", app.local_addr());
    app.run().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
