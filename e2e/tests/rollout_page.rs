//! The rollout page against the demo: waves and hosts render, approving the approval wave
//! makes its hosts move, and the event log grows, all live without a reload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::demo_browser_test;
use e2e::pages::rollout::RolloutPage;
use e2e::pages::shell::Shell;

#[tokio::test]
async fn approving_the_approval_wave_moves_its_hosts_live() -> anyhow::Result<()> {
    demo_browser_test("approving_the_approval_wave_moves_its_hosts_live", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open("stable@d001").await?;
        page.check().shows_waves(3).await?;
        page.check().feed_is_live().await?;

        // Stable reaches wave 1, which waits for approval: its hosts stay Pending.
        page.act().approve(1, Duration::from_secs(60)).await?;
        page.check().action_succeeded().await?;
        let before = page.find().log_len().await?;
        page.check()
            .eventually("wave 1 hosts converge on screen", Duration::from_secs(60), || async {
                let states = page.find().wave_states(1).await?;
                Ok(!states.is_empty() && states.iter().all(|(_, s)| s == "Converged"))
            })
            .await?;
        let after = page.find().log_len().await?;
        anyhow::ensure!(after > before, "the event log grew live ({before} → {after})");
        let url = session.client.current_url().await?;
        anyhow::ensure!(url.path() == "/rollouts/stable@d001", "no navigation happened: {url}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_viewer_sees_the_rollout_but_no_actions() -> anyhow::Result<()> {
    demo_browser_test("a_viewer_sees_the_rollout_but_no_actions", |session, _| async move {
        let token = session.add_operator("vera", backend::db::auth::Role::Viewer).await?;
        Shell::new(&session).act().sign_in(&token, "vera").await?;
        let page = RolloutPage::new(&session);
        page.act().open("stable@d001").await?;
        page.check().shows_waves(3).await?;
        page.check().feed_is_live().await?;
        page.act().select_host("web-05").await?;
        page.check().has_no_actions().await?;
        // The host panel links to the host's own page: its records across rollouts.
        page.act().open_host_details().await?;
        page.check().host_page_lists("stable@d001").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn quarantining_a_closure_holds_its_hosts_and_releasing_lets_them_go() -> anyhow::Result<()> {
    demo_browser_test(
        "quarantining_a_closure_holds_its_hosts_and_releasing_lets_them_go",
        |session, token| async move {
            Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
            let page = RolloutPage::new(&session);
            page.act().open("stable@d001").await?;
            page.check().shows_waves(3).await?;
            // api-06 is in wave 2: Pending for a while. Quarantine its closure from its cell.
            page.act().select_host("api-06").await?;
            page.act().quarantine_selected_closure().await?;
            page.check().action_succeeded().await?;
            page.check().selected_host_waits_on("quarantine").await?;

            let quarantines = e2e::pages::quarantines::QuarantinesPage::new(&session);
            quarantines.open().await?;
            quarantines.shows_active("nixos-system-api", "demo-operator").await?;
            quarantines.release("nixos-system-api").await?;
            quarantines.released().await?;

            page.act().open("stable@d001").await?;
            page.check().shows_waves(3).await?;
            page.act().approve(1, Duration::from_secs(60)).await?;
            page.check()
                .eventually("api-06 is updated once released", Duration::from_secs(90), || async {
                    Ok(page.find().wave_states(2).await?.iter().any(|(h, s)| h == "api-06" && s == "Converged"))
                })
                .await?;
            Ok(())
        },
    )
    .await
}

/// Refreshes the README's screenshot of the rollout page (run explicitly:
/// `cargo nextest run -p e2e --run-ignored only readme_screenshot`).
#[tokio::test]
#[ignore = "writes frontend/screenshots/rollout-page.png; run explicitly"]
async fn readme_screenshot() -> anyhow::Result<()> {
    demo_browser_test("readme_screenshot", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open("stable@d001").await?;
        page.check().feed_is_live().await?;
        page.find().css("#approve-1", Duration::from_secs(60)).await?;
        page.act().select_host("web-05").await?;
        let png = session.client.screenshot().await?;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/screenshots/rollout-page.png");
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, png)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_fleet_overview_follows_the_rollouts_live() -> anyhow::Result<()> {
    demo_browser_test("the_fleet_overview_follows_the_rollouts_live", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let fleet = e2e::pages::fleet::FleetPage::new(&session);
        fleet.open().await?;
        fleet.channel_shows("stable", "stable@d001", Duration::from_secs(10)).await?;
        // A bar per wave, from the rollouts' summaries (stable has three waves).
        fleet.channel_shows("stable", "wave 2", Duration::from_secs(10)).await?;
        // Without a reload: canary completes and edge halts on its broken closure.
        fleet.channel_shows("canary", "Completed", Duration::from_secs(60)).await?;
        fleet.channel_shows("edge", "Halted", Duration::from_secs(60)).await?;
        // Kept as an artifact for a person to look at.
        let dir = e2e::harness::artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("fleet-overview.png"), session.client.screenshot().await?)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_event_log_opens_at_the_newest_entries_and_pages_back_without_a_gap() -> anyhow::Result<()> {
    demo_browser_test(
        "the_event_log_opens_at_the_newest_entries_and_pages_back_without_a_gap",
        |session, token| async move {
            Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
            let page = RolloutPage::new(&session);
            page.act().open("stable@d001").await?;
            page.act().approve(1, Duration::from_secs(60)).await?;
            page.check().action_succeeded().await?;

            // Let stable's log grow past one page (200 entries).
            let rollout = shared::RolloutId::parse("stable@d001")?;
            let logged = || async {
                let entries = backend::db::store::rollout_log(&session.store, &rollout, 0, 100_000).await?;
                anyhow::Ok(entries.iter().map(|e| e.seq).collect::<Vec<i64>>())
            };
            page.check()
                .eventually("stable's log has more than 220 entries", Duration::from_secs(60), || async {
                    Ok(logged().await?.len() > 220)
                })
                .await?;

            // Opened now, the page shows the newest entries (newest at the top), not the oldest.
            let before_open = logged().await?;
            page.act().open("stable@d001").await?;
            page.check().feed_is_live().await?;
            page.check()
                .eventually("the log shows a page of entries", Duration::from_secs(10), || async {
                    Ok(page.find().log_len().await? >= 200)
                })
                .await?;
            let shown = page.find().log_seqs().await?;
            let newest_before = *before_open.last().unwrap();
            anyhow::ensure!(shown[0] >= newest_before, "the top entry {} is older than {newest_before}", shown[0]);
            anyhow::ensure!(!shown.contains(&before_open[0]), "the oldest entry is shown before paging back");

            // Paging back until the start: every entry up to the newest shown, none missing.
            for _ in 0..20 {
                if page.find().all("#log-older").await?.is_empty() {
                    break;
                }
                let had = page.find().log_len().await?;
                page.act().load_older_entries().await?;
                page.check()
                    .eventually("older entries appear", Duration::from_secs(10), || async {
                        Ok(page.find().log_len().await? > had || page.find().all("#log-older").await?.is_empty())
                    })
                    .await?;
            }
            let shown: std::collections::BTreeSet<i64> = page.find().log_seqs().await?.into_iter().collect();
            let newest_shown = *shown.last().unwrap();
            let missing: Vec<i64> =
                logged().await?.into_iter().filter(|s| *s <= newest_shown && !shown.contains(s)).collect();
            anyhow::ensure!(missing.is_empty(), "entries missing from the log on screen: {missing:?}");
            let shot = page.act().screenshot("rollout-log-paged-back").await?;
            println!("screenshot: {}", shot.display());
            Ok(())
        },
    )
    .await
}
