//! Investigating the demo's broken edge release as an operator would: find the hosts, open
//! the failed one and read why, read the rollout's log grouped and filtered, and act on the
//! rollouts (pause, resume, promote with force, clear the failure).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::demo_browser_test;
use e2e::pages::fleet::FleetPage;
use e2e::pages::hosts::Hosts;
use e2e::pages::rollout::RolloutPage;
use e2e::pages::shell::Shell;

const EDGE: &str = "edge@d001";

#[tokio::test]
async fn search_finds_hosts_and_the_failed_host_page_says_why() -> anyhow::Result<()> {
    demo_browser_test("search_finds_hosts_and_the_failed_host_page_says_why", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let fleet = FleetPage::new(&session);
        fleet.open().await?;
        fleet.channel_shows("edge", "Halted", Duration::from_secs(90)).await?;

        let hosts = Hosts::new(&session);
        hosts.search("edge-0").await?;
        let hits = hosts.hits("edge-0").await?;
        anyhow::ensure!(
            hits == ["edge-01", "edge-02", "edge-03", "edge-04", "edge-05", "edge-06"],
            "a hostname prefix finds the edge hosts in name order: {hits:?}"
        );
        Shell::new(&session).act().screenshot("search-results").await?;
        // Enter: every result on a page of its own; filters in words narrow it.
        let listed = hosts.submit().await?;
        anyhow::ensure!(listed.len() == 6, "the results page lists the six: {listed:?}");
        session.client.goto(&session.url("/hosts?q=channel%3Acanary%20tag%3Acanary")).await?;
        let canary = hosts.results().await?;
        anyhow::ensure!(!canary.is_empty() && canary.iter().all(|h| h.starts_with("canary")), "{canary:?}");

        // The failed host's page says what failed: the probe and its reason, the policy.
        session.client.goto(&session.url("/")).await?;
        hosts.search("edge-01").await?;
        anyhow::ensure!(hosts.hits("edge-01").await? == ["edge-01"]);
        hosts.open_hit("edge-01").await?;
        let (events, _) = hosts.host_events("edge-01").await?;
        anyhow::ensure!(
            events.iter().any(|e| e.starts_with("probe ") && e.contains(" failed")),
            "the failing probe is named with its verdict: {events:#?}"
        );
        anyhow::ensure!(
            events.iter().any(|e| e.starts_with("failed (probes ") && e.contains("policy: roll back and halt")),
            "the failure names its probes and the policy applied: {events:#?}"
        );
        let shot = Shell::new(&session).act().screenshot("host-page-failed").await?;
        println!("screenshot: {}", shot.display());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_log_groups_holds_and_filters_by_host_kind_and_gate() -> anyhow::Result<()> {
    demo_browser_test("the_log_groups_holds_and_filters_by_host_kind_and_gate", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open(EDGE).await?;
        page.check().rollout_state_is("Halted", Duration::from_secs(90)).await?;
        page.check().feed_is_live().await?;

        // Edge's second wave was held for the quarantined closure: one row for its hosts.
        page.act().filter_log("", "", "quarantine").await?;
        let rows = page.find().log_rows().await?;
        anyhow::ensure!(!rows.is_empty(), "holds by quarantine are logged");
        anyhow::ensure!(
            rows.iter().all(|(kind, _, text)| kind == "HostHeld" && text.contains("quarantine")),
            "the gate filter leaves holds by quarantine only: {rows:#?}"
        );
        let Some((_, Some(n), text)) = rows.iter().find(|(_, hosts, _)| hosts.is_some_and(|n| n > 1)) else {
            anyhow::bail!("no grouped row among {rows:#?}")
        };
        anyhow::ensure!(text.contains(&format!("{n} hosts held by quarantine")), "{text}");
        anyhow::ensure!(text.contains("…-nixos-system-edge"), "the closure read by its name: {text}");
        let listed = page.act().open_group().await?;
        anyhow::ensure!(listed.len() >= *n && listed.iter().all(|h| h.starts_with("edge-")), "{listed:?}");
        page.act().screenshot("rollout-log-grouped").await?;

        page.act().filter_log("", "HostEvent", "").await?;
        let rows = page.find().log_rows().await?;
        anyhow::ensure!(
            !rows.is_empty() && rows.iter().all(|(kind, hosts, _)| kind == "HostEvent" && hosts.is_none()),
            "the kind filter leaves host events: {rows:#?}"
        );
        page.act().filter_log("edge-01", "", "").await?;
        let rows = page.find().log_rows().await?;
        anyhow::ensure!(
            !rows.is_empty() && rows.iter().all(|(_, _, text)| text.contains("edge-01")),
            "the host filter leaves edge-01's entries: {rows:#?}"
        );
        let shot = page.act().screenshot("rollout-log-filtered").await?;
        println!("screenshot: {}", shot.display());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pause_resume_promote_with_force_and_clear_failure_from_the_page() -> anyhow::Result<()> {
    demo_browser_test("pause_resume_promote_with_force_and_clear_failure_from_the_page", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open("stable@d001").await?;
        page.check().rollout_state_is("Active", Duration::from_secs(30)).await?;

        page.act().head_action("pause").await?;
        page.check().action_succeeded().await?;
        page.check().rollout_state_is("Paused", Duration::from_secs(10)).await?;
        page.act().head_action("resume").await?;
        page.check().rollout_state_is("Active", Duration::from_secs(10)).await?;

        // Promote past the waves' gates: the dialog asks for Force. Wave 1 waits for its
        // approval, so the rollout does not move on by itself meanwhile.
        page.check()
            .eventually("stable reaches its approval wave", Duration::from_secs(60), || async {
                Ok(page.find().current_wave().await? == 1)
            })
            .await?;
        let wave = 1;
        page.act().promote(true).await?;
        page.check().action_succeeded().await?;
        page.check()
            .eventually("the rollout moved to the next wave", Duration::from_secs(10), || async {
                Ok(page.find().current_wave().await? == wave + 1)
            })
            .await?;

        page.act().open(EDGE).await?;
        page.check().rollout_state_is("Halted", Duration::from_secs(90)).await?;
        page.act().head_action("clear-failure").await?;
        page.check().action_succeeded().await?;
        page.check().rollout_state_is("Active", Duration::from_secs(10)).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_timeline_replays_the_edge_failure_and_returns_to_live() -> anyhow::Result<()> {
    demo_browser_test("the_timeline_replays_the_edge_failure_and_returns_to_live", |session, token| async move {
        Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
        let page = RolloutPage::new(&session);
        page.act().open(EDGE).await?;
        page.check().rollout_state_is("Halted", Duration::from_secs(90)).await?;
        page.check().feed_is_live().await?;
        let edge01 = |state: &'static str| {
            let page = &page;
            move || async move { Ok(page.find().wave_states(0).await? == [("edge-01".to_owned(), state.to_owned())]) }
        };
        page.check().eventually("edge-01 shows Reverted live", Duration::from_secs(10), edge01("Reverted")).await?;

        // Home: the rollout as it opened, every host Pending.
        page.act().timeline_key(fantoccini::key::Key::Home).await?;
        page.check().eventually("the opening replayed", Duration::from_secs(10), edge01("Pending")).await?;
        anyhow::ensure!(page.find().replaying().await?, "the columns are marked as the past");
        let label = page.find().timeline_label().await?;
        anyhow::ensure!(label.starts_with("as of entry "), "{label}");
        anyhow::ensure!(page.find().all("#waves .approve").await?.is_empty(), "no acting on the past");
        page.act().screenshot("timeline-opening").await?;

        // To the moment edge-01 failed (its Failed entry, from the log), before its rollback.
        let edge = shared::RolloutId::parse(EDGE)?;
        let log = backend::db::store::rollout_log(&session.store, &edge, 0, 10_000).await?;
        let failed = log
            .iter()
            .find(|e| matches!(e.entry(), Ok(shared::log::LogEntry::HostEvent(h)) if h.to == shared::state::HostState::Failed))
            .map(|e| e.seq)
            .ok_or_else(|| anyhow::anyhow!("edge-01's failure is not in the log"))?;
        page.act().timeline_to(failed).await?;
        page.check().eventually("the failure replayed", Duration::from_secs(10), edge01("Failed")).await?;
        let label = page.find().timeline_label().await?;
        anyhow::ensure!(label.starts_with(&format!("as of entry {failed}")), "{label}");
        page.act().screenshot("timeline-failed").await?;

        page.act().back_to_live().await?;
        page.check().eventually("live again", Duration::from_secs(10), edge01("Reverted")).await?;
        anyhow::ensure!(!page.find().replaying().await? && page.find().timeline_label().await? == "live");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_channel_history_says_who_approved_a_wave_and_how_long_it_waited() -> anyhow::Result<()> {
    demo_browser_test(
        "the_channel_history_says_who_approved_a_wave_and_how_long_it_waited",
        |session, token| async move {
            Shell::new(&session).act().sign_in(&token, "demo-operator").await?;
            let page = RolloutPage::new(&session);
            page.act().open("stable@d001").await?;
            // The approval is to come after wave 1 opened (its button shows before then).
            page.check()
                .eventually("stable reaches its approval wave", Duration::from_secs(60), || async {
                    Ok(page.find().current_wave().await? == 1)
                })
                .await?;
            page.act().approve(1, Duration::from_secs(60)).await?;
            page.check().action_succeeded().await?;
            page.act().open_channel().await?;
            Shell::new(&session).check().on_page("page-channel", "/channels/stable").await?;
            let approval = page.find().history_approval("stable@d001", 1).await?;
            anyhow::ensure!(
                approval.starts_with("demo-operator") && approval.contains(", after "),
                "wave 1's approval: {approval}"
            );
            anyhow::ensure!(page.find().history_approval("stable@d001", 0).await? == "not needed");
            let shot = page.act().screenshot("channel-history").await?;
            println!("screenshot: {}", shot.display());
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_failed_activation_shows_its_exit_code_and_stderr_on_the_host_page() -> anyhow::Result<()> {
    // Each host its own key: a fleet in which two hosts share one is inconsistent.
    let pubkey = |seed: u8| engine::sign::public_key_b64(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
    let fleet = serde_json::json!({
        "schemaVersion": 1, "meta": {"ciCommit": "abc", "signedAt": chrono::Utc::now().to_rfc3339()},
        "hosts": {"a": {"channel": "stable", "pubkey": pubkey(4), "closure": "/nix/store/a-v1"}},
        "channels": {"stable": {"rolloutPolicy": "p"}},
        "rolloutPolicies": {"p": {"waves": [{"soakMinutes": 5}], "onHealthFailure": "halt", "stuckAfterMinutes": 30}}
    });
    e2e::fleet_browser_test(
        "a_failed_activation_shows_its_exit_code_and_stderr_on_the_host_page",
        fleet,
        |session, server| async move {
            let reducer = &server.state.reducer;
            reducer.ask(|reply| backend::reducer::ReducerInput::PlanTick { reply: Some(reply) }).await?;
            let rollout_id = shared::RolloutId::parse("stable@abc")?;
            let host = shared::Hostname::parse("a")?;
            let now = chrono::Utc::now();
            let stderr = "warning: the following units failed: nginx.service\n× nginx.service - Nginx\n  Process: 812 ExitCode=1/FAILURE\n";
            for event in [
                shared::state::HostEvent::DispatchAck {
                    seq: 1,
                    current_closure: shared::Closure::parse("/nix/store/a-v0")?,
                    received_at: now,
                },
                shared::state::HostEvent::ActivationFailed {
                    seq: 2,
                    exit_code: 4,
                    stderr_tail: stderr.into(),
                    failed_at: now,
                },
            ] {
                let (host, rollout_id) = (host.clone(), rollout_id.clone());
                reducer.ask(|reply| backend::reducer::ReducerInput::HostEvent { host, rollout_id, event, reply }).await?;
            }
            let token = session.add_operator("olive", backend::db::auth::Role::Viewer).await?;
            Shell::new(&session).act().sign_in(&token, "olive").await?;
            session.client.goto(&session.url("/hosts/a")).await?;
            let (events, tails) = Hosts::new(&session).host_events("a").await?;
            anyhow::ensure!(
                events.iter().any(|e| e.starts_with("activation failed with exit code 4")),
                "the exit code is told: {events:#?}"
            );
            // Preformatted, as the agent sent it (WebDriver reads the text as rendered).
            anyhow::ensure!(tails == [stderr.trim_end()], "the stderr tail is shown whole: {tails:?}");
            let shot = Shell::new(&session).act().screenshot("host-page-stderr").await?;
            println!("screenshot: {}", shot.display());
            Ok(())
        },
    )
    .await
}
