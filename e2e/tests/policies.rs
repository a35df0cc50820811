//! Stop the line from the dashboard (SPEC §17): the header's button asks why and for how
//! long, a banner on every page says who stopped the line, why and until when, hosts the
//! freeze holds say so, and releasing it from the banner lets them go; a host suspended from
//! the rollout page's host panel says so.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use backend::db::store;
use e2e::demo_browser_test;
use e2e::pages::policies::Freezes;
use e2e::pages::rollout::RolloutPage;
use e2e::pages::shell::Shell;
use shared::log::LogEntry;

#[tokio::test]
async fn stopping_the_line_shows_a_banner_everywhere_and_holds_hosts_until_released() -> anyhow::Result<()> {
    demo_browser_test("stopping_the_line", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open("stable@d001").await?;
        page.check().shows_waves(3).await?;
        page.check().feed_is_live().await?;
        let freezes = Freezes::new(&session);
        anyhow::ensure!(freezes.banner_text().await?.is_none(), "no banner before any freeze");

        freezes.stop_the_line("incident 4711: payments are failing", "1 hour").await?;
        let name = freezes
            .banner_shows(
                &["Frozen", "the whole fleet", "incident 4711: payments are failing", "by demo-operator", "until "],
                Duration::from_secs(10),
            )
            .await?;
        anyhow::ensure!(name.starts_with("stop-the-line-"), "the freeze is named {name}");

        // A host of the approval wave now waits on the freeze (it comes first in the gate order).
        page.act().select_host("api-06").await?;
        page.check().selected_host_waits_on("freeze").await?;
        let shot = session.screenshot("rollout-under-freeze").await?;
        eprintln!("rollout page under a freeze: {}", shot.display());

        // The banner is on every page.
        for path in ["/", "/rollouts", "/quarantines", "/hosts/web-01"] {
            Shell::new(&session).act().open(path).await?;
            freezes.banner_shows(&["Frozen", "incident 4711"], Duration::from_secs(10)).await?;
        }

        freezes.release(&name, "payments are back").await?;
        freezes.banner_gone(Duration::from_secs(10)).await?;

        // Suspending a host from the rollout page's host panel: the panel says so, and the
        // host waits on its suspension.
        page.act().open("stable@d001").await?;
        page.check().shows_waves(3).await?;
        page.act().select_host("api-07").await?;
        freezes.suspend_selected_host("fan replacement").await?;
        page.check().selected_host_waits_on("suspended").await?;
        page.find().css("#suspended-pill", Duration::from_secs(10)).await?;
        session.screenshot("host-suspended").await?;

        // Both are in the log with who and why.
        let log = store::log_after(&session.store, 0, i64::MAX).await?;
        let entries: Vec<LogEntry> = log.iter().map(|e| e.entry()).collect::<Result<_, _>>()?;
        anyhow::ensure!(
            entries.iter().any(|e| matches!(e, LogEntry::FreezeStarted(f) if f.name == name
                && f.by.as_deref().is_some_and(|by| by.starts_with("demo-operator")) && f.until.is_some())),
            "FreezeStarted logged with the operator and its end"
        );
        anyhow::ensure!(
            entries.iter().any(|e| matches!(e, LogEntry::FreezeReleased(f) if f.name == name
                && f.reason == "payments are back")),
            "FreezeReleased logged with its reason"
        );
        Ok(())
    })
    .await
}
