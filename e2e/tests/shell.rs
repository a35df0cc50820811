//! The dashboard shell in a real browser against the real server.
#![allow(clippy::unwrap_used)]

use e2e::pages::shell::Shell;
use e2e::{browser_test, cluster_browser_test};

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

#[tokio::test]
async fn the_header_names_the_replica_it_talks_to_and_the_leader_through_a_takeover() -> anyhow::Result<()> {
    let name = "the_header_names_the_replica_it_talks_to_and_the_leader_through_a_takeover";
    cluster_browser_test(name, 2, |session, mut replicas| async move {
        let token = session.add_operator("olive", backend::db::auth::Role::Operator).await?;
        let shell = Shell::new(&session);
        shell.act().open(&format!("/login?token={token}")).await?;
        shell.check().signed_in_as("olive").await?;
        let leader = replicas.leader().unwrap();
        let follower = 1 - leader;
        let (this, leads) = (replicas.addrs[follower].to_string(), replicas.addrs[leader].to_string());
        shell.check().cluster_shows(&format!("{this} · follower · leader {leads}")).await?;
        println!("screenshot: {}", shell.act().screenshot("cluster-follower").await?.display());
        // The leader stops; the replica the browser talks to takes over.
        replicas.stop(leader).await?;
        shell.check().cluster_shows(&format!("{this} · leader · 2 replicas")).await?;
        Ok(())
    })
    .await
}
