//! Every page of the dashboard, as the demo shows it, checked by axe-core against WCAG 2.1 A
//! and AA in headless Chromium: no serious or critical violation; the rest are printed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::demo_browser_test;
use e2e::pages::rollout::RolloutPage;
use e2e::pages::shell::Shell;

#[tokio::test]
async fn every_page_passes_the_accessibility_check() -> anyhow::Result<()> {
    demo_browser_test("every_page_passes_the_accessibility_check", |session, token| async move {
        Shell::new(&session).act().open("/login").await?;
        let mut serious = Vec::new();
        let mut check = async |name: &str| -> anyhow::Result<()> {
            let found = session.accessibility().await?;
            for v in &found {
                println!("{name}: {} ({}) {}: {:?}", v.id, v.impact, v.help, v.nodes);
            }
            serious.extend(found.into_iter().filter(|v| v.serious()).map(|v| format!("{name}: {v:?}")));
            Ok(())
        };
        session.client.wait().at_most(Duration::from_secs(10)).for_element(fantoccini::Locator::Css("#token")).await?;
        check("login").await?;
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let fleet = e2e::pages::fleet::FleetPage::new(&session);
        fleet.open().await?;
        fleet.channel_shows("edge", "Halted", Duration::from_secs(90)).await?;
        check("fleet").await?;

        let page = RolloutPage::new(&session);
        page.act().open("edge@d001").await?;
        page.check().feed_is_live().await?;
        page.act().select_host("edge-01").await?;
        check("rollout, a host selected").await?;
        page.act().timeline_key(fantoccini::key::Key::Home).await?;
        page.check()
            .eventually("the timeline replays", Duration::from_secs(10), || async { page.find().replaying().await })
            .await?;
        check("rollout, replaying").await?;

        // By keyboard: a cell takes the focus, shows it, and Enter opens its host's panel.
        let cell = page.find().css(".cell[data-host='edge-02']", Duration::from_secs(10)).await?;
        cell.send_keys(&fantoccini::key::Key::Enter.to_string()).await?;
        let focus = session
            .client
            .execute(
                "const el = document.activeElement; const style = getComputedStyle(el);
                 return [el.getAttribute('data-host') || '', style.outlineStyle, style.outlineWidth];",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            focus[0] == "edge-02" && focus[1] != "none" && focus[2] != "0px",
            "the focused cell shows its focus: {focus}"
        );
        page.find().css("#host-panel", Duration::from_secs(10)).await?;
        let panel = page.find().css("#host-panel h3", Duration::from_secs(10)).await?.text().await?;
        anyhow::ensure!(panel.starts_with("edge-02"), "Enter on a cell opened its panel: {panel}");

        for (name, path, id) in [
            ("rollout, every state", "/rollouts/stable@d001", "#waves .cell.state-converged"),
            ("host", "/hosts/edge-01", "#host-events .log-entry"),
            ("hosts", "/hosts?q=edge", "#host-results .hit"),
            ("channel", "/channels/edge", "#channel-history .history"),
            ("rollouts", "/rollouts", "#page-rollouts"),
            ("quarantines", "/quarantines", "#page-quarantines"),
            ("webhooks", "/webhooks", "#page-webhooks"),
        ] {
            session.client.goto(&session.url(path)).await?;
            session.client.wait().at_most(Duration::from_secs(10)).for_element(fantoccini::Locator::Css(id)).await?;
            check(name).await?;
        }
        // The search box open with hits.
        let hosts = e2e::pages::hosts::Hosts::new(&session);
        hosts.search("web-1").await?;
        hosts.hits("web-1").await?;
        check("search").await?;
        anyhow::ensure!(serious.is_empty(), "serious accessibility violations:\n{}", serious.join("\n"));
        Ok(())
    })
    .await
}
