//! The dashboard shell in a real browser against the real server.
#![allow(clippy::unwrap_used)]

use e2e::browser_test;
use e2e::pages::shell::Shell;

#[tokio::test]
async fn shell_renders_and_shows_the_control_plane_version() -> anyhow::Result<()> {
    browser_test("shell_renders_and_shows_the_control_plane_version", |session| async move {
        let shell = Shell::new(&session);
        shell.act().open("/").await?;
        shell.check().shell_rendered().await?;
        shell.check().on_page("page-fleet", "/").await?;
        shell.check().shows_server_version(env!("CARGO_PKG_VERSION")).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn navigation_and_deep_links_reach_every_section() -> anyhow::Result<()> {
    browser_test("navigation_and_deep_links_reach_every_section", |session| async move {
        let shell = Shell::new(&session);
        shell.act().open("/").await?;
        shell.act().click_nav("Rollouts").await?;
        shell.check().on_page("page-rollouts", "/rollouts").await?;
        shell.act().click_nav("Quarantines").await?;
        shell.check().on_page("page-quarantines", "/quarantines").await?;
        // A deep link is answered by the SPA fallback and routed client-side.
        shell.act().open("/rollouts").await?;
        shell.check().shell_rendered().await?;
        shell.check().on_page("page-rollouts", "/rollouts").await?;
        Ok(())
    })
    .await
}
