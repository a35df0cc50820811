//! A network drop: the rollout page says "reconnecting…" while the control plane is gone, and
//! once it is back it resumes from the last entry it saw, including what was committed while
//! it was away, without a reload — unless what it missed was sealed out of the database
//! meanwhile (SPEC §16): then the feed says `reset` and the page loads afresh.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use backend::db::auth::Role;
use e2e::pages::rollout::RolloutPage;
use e2e::pages::shell::Shell;
use e2e::{fleet_browser_test, release};
use serde_json::json;

fn fleet() -> serde_json::Value {
    // Each host its own key: a fleet in which two hosts share one is inconsistent.
    let pubkey = |seed: u8| engine::sign::public_key_b64(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
    json!({
        "schemaVersion": 1, "meta": {"ciCommit": "abc", "signedAt": chrono::Utc::now().to_rfc3339()},
        "hosts": {
            "a": {"channel": "stable", "pubkey": pubkey(4), "closure": "/nix/store/a-v1"},
            "b": {"channel": "stable", "pubkey": pubkey(5), "closure": "/nix/store/b-v1"}
        },
        "channels": {"stable": {"rolloutPolicy": "p"}},
        "rolloutPolicies": {"p": {"waves": [{"soakMinutes": 5}], "onHealthFailure": "halt", "stuckAfterMinutes": 30}}
    })
}

/// An operator on stable@abc's page, its feed live.
async fn on_the_rollout_page(session: &e2e::Session) -> anyhow::Result<RolloutPage<'_>> {
    let token = session.add_operator("olive", Role::Operator).await?;
    Shell::new(session).act().sign_in(&token, "olive").await?;
    let page = RolloutPage::new(session);
    page.act().open("stable@abc").await?;
    page.check().feed_is_live().await?;
    Ok(page)
}

#[tokio::test]
async fn the_page_shows_reconnecting_and_catches_up_after_a_drop() -> anyhow::Result<()> {
    fleet_browser_test(
        "the_page_shows_reconnecting_and_catches_up_after_a_drop",
        fleet(),
        |session, mut server| async move {
            let page = on_the_rollout_page(&session).await?;
            page.check().shows_waves(1).await?;

            server.stop().await?;
            page.check().feed_says("reconnecting…", Duration::from_secs(10)).await?;

            // Back on the same address; the rollout is paused before the browser reconnects.
            server.restart().await?;
            let by = "olive".to_owned();
            let rollout_id = shared::RolloutId::parse("stable@abc")?;
            server
                .state
                .reducer
                .ask(|reply| backend::reducer::ReducerInput::Operator {
                    action: shared::api::OperatorAction::Pause { rollout_id },
                    by,
                    reason: Some("maintenance window".into()),
                    reply,
                })
                .await?;
            page.check().feed_says("live", Duration::from_secs(20)).await?;
            page.check().rollout_state_is("Paused", Duration::from_secs(10)).await?;
            Ok(())
        },
    )
    .await
}

/// While the page was away a new release superseded its rollout and retention sealed every
/// entry before the new rollout into the archive, the ones the page missed among them: the
/// feed answers its resume with `reset`, and the page reloads and says where the log begins.
#[tokio::test]
async fn a_page_whose_missed_entries_were_sealed_reloads_and_says_so() -> anyhow::Result<()> {
    fleet_browser_test(
        "a_page_whose_missed_entries_were_sealed_reloads_and_says_so",
        fleet(),
        |session, mut server| async move {
            let page = on_the_rollout_page(&session).await?;

            server.stop().await?;
            page.check().feed_says("reconnecting…", Duration::from_secs(10)).await?;
            let archive = tempfile::tempdir()?;
            let mut first = 0;
            server
                .restart_after(|state| {
                    let first = &mut first;
                    let archive = archive.path().to_owned();
                    async move {
                        let mut next = fleet();
                        next["meta"]["ciCommit"] = json!("def");
                        next["hosts"]["a"]["closure"] = json!("/nix/store/a-v2");
                        release(&state, &next).await?;
                        let reducer = state.reducer.get().ok_or_else(|| anyhow::anyhow!("no reducer"))?;
                        let retention = backend::db::retention::Retention {
                            log: chrono::Duration::zero(),
                            observations: chrono::Duration::zero(),
                            dir: archive,
                            every: Duration::from_secs(1),
                        };
                        let seals = backend::sealer::seal_due(
                            &state.store,
                            &reducer,
                            &retention,
                            &state.fleet,
                            chrono::Utc::now(),
                        )
                        .await?;
                        anyhow::ensure!(!seals.is_empty(), "nothing was sealed");
                        *first = backend::db::retention::log_begins(&state.store).await?;
                        Ok(())
                    }
                })
                .await?;
            page.check().says_its_log_was_sealed_before(first, Duration::from_secs(20)).await?;
            // Its log was sealed whole: its host records were replaced by their counts.
            page.check().shows_a_tally(0, "2 Pending", Duration::from_secs(10)).await?;
            page.check().rollout_state_is("Superseded", Duration::from_secs(10)).await?;
            page.check().feed_says("live", Duration::from_secs(10)).await?;
            page.act().screenshot("rollout-log-sealed").await?;
            Ok(())
        },
    )
    .await
}
