//! The rollout page: wave columns of host cells, actions, the live event log.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::Locator;
use fantoccini::elements::Element;

use super::WAIT;
use crate::Session;

/// Every log entry on screen once: rows of one entry, and each host of a grouped row.
const LOG_ENTRIES: &str = "#event-log > .log-entry:not(.log-group), #event-log .log-group-hosts > li";

pub struct RolloutPage<'a> {
    session: &'a Session,
}

impl<'a> RolloutPage<'a> {
    pub fn new(session: &'a Session) -> Self {
        RolloutPage { session }
    }
    pub fn find(&self) -> Find<'a> {
        Find { session: self.session }
    }
    pub fn act(&self) -> Act<'a> {
        Act { session: self.session }
    }
    pub fn check(&self) -> Check<'a> {
        Check { session: self.session }
    }
}

pub struct Find<'a> {
    session: &'a Session,
}

impl Find<'_> {
    pub async fn css(&self, css: &str, within: Duration) -> anyhow::Result<Element> {
        self.session
            .client
            .wait()
            .at_most(within)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("`{css}` did not appear within {within:?}"))
    }
    pub async fn all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.session.client.find_all(Locator::Css(css)).await?)
    }
    /// States of the cells of one wave, by hostname.
    pub async fn wave_states(&self, wave: u32) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for cell in self.all(&format!("[data-wave='{wave}'] .cell")).await? {
            let host = cell.attr("data-host").await?.unwrap_or_default();
            let state = cell.attr("data-state").await?.unwrap_or_default();
            out.push((host, state));
        }
        Ok(out)
    }
    /// The wave the head says is current.
    pub async fn current_wave(&self) -> anyhow::Result<u32> {
        let text = self.css("#current-wave", WAIT).await?.text().await?;
        text.parse().with_context(|| format!("current wave `{text}`"))
    }
    /// Log entries on screen, each once: a row of its own, or a host of a grouped row.
    pub async fn log_len(&self) -> anyhow::Result<usize> {
        Ok(self.all(LOG_ENTRIES).await?.len())
    }
    /// The log's rows: `(data-kind, data-hosts, text)`; `data-hosts` is set on grouped holds.
    pub async fn log_rows(&self) -> anyhow::Result<Vec<(String, Option<usize>, String)>> {
        let mut out = Vec::new();
        for row in self.all("#event-log > .log-entry").await? {
            let kind = row.attr("data-kind").await?.unwrap_or_default();
            let hosts = row.attr("data-hosts").await?.and_then(|n| n.parse().ok());
            out.push((kind, hosts, row.text().await?));
        }
        Ok(out)
    }
}

pub struct Act<'a> {
    session: &'a Session,
}

impl Act<'_> {
    pub async fn open(&self, rollout: &str) -> anyhow::Result<()> {
        self.session.client.goto(&self.session.url(&format!("/rollouts/{rollout}"))).await?;
        Ok(())
    }
    /// Clicks "Approve wave N", waits for the dialog to say what changes (a summary, or that
    /// none is available), and confirms.
    pub async fn approve(&self, wave: u32, within: Duration) -> anyhow::Result<()> {
        self.click(&format!("#approve-{wave}"), within).await?;
        let find = Find { session: self.session };
        find.css("#changes .changes-target", within).await.context("the dialog shows no change summary")?;
        self.click("#dialog-confirm", within).await
    }

    /// Clicks `css`, finding it again when the live page replaced it in between.
    async fn click(&self, css: &str, within: Duration) -> anyhow::Result<()> {
        let find = Find { session: self.session };
        let mut last = None;
        for _ in 0..20 {
            let element = find.css(css, within).await?;
            match element.click().await {
                Ok(()) => return Ok(()),
                Err(err) => last = Some(err),
            }
        }
        Err(anyhow::anyhow!("cannot click `{css}`: {last:?}"))
    }
}

pub struct Check<'a> {
    session: &'a Session,
}

impl Check<'_> {
    fn find(&self) -> Find<'_> {
        Find { session: self.session }
    }

    /// Polls `cond` on the rendered page until it holds (the page changes by itself from
    /// the feed; there is no event to wait on from WebDriver).
    pub async fn eventually<F, Fut>(&self, what: &str, within: Duration, mut cond: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + within;
        let mut last_error = None;
        loop {
            // The live page re-renders under WebDriver's feet; an element that went stale
            // between find and read is "not yet", not a failure.
            match cond().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => last_error = Some(err),
            }
            if Instant::now() > deadline {
                bail!("not within {within:?}: {what} (last error: {last_error:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn shows_waves(&self, count: usize) -> anyhow::Result<()> {
        self.find().css("#waves .wave", WAIT).await?;
        let waves = self.find().all("#waves .wave").await?.len();
        ensure!(waves == count, "{waves} wave columns, expected {count}");
        Ok(())
    }

    pub async fn feed_is_live(&self) -> anyhow::Result<()> {
        self.eventually("the feed status says live", WAIT, || async {
            Ok(self.find().css("#feed-status", WAIT).await?.text().await? == "live")
        })
        .await
    }

    pub async fn action_succeeded(&self) -> anyhow::Result<()> {
        let notice = self.find().css("#action-result", WAIT).await?;
        let text = notice.text().await?;
        ensure!(text.ends_with("done."), "the action reported `{text}`");
        Ok(())
    }
}

impl Act<'_> {
    pub async fn select_host(&self, host: &str) -> anyhow::Result<()> {
        self.click(&format!(".cell[data-host='{host}']"), WAIT).await
    }
    pub async fn quarantine_selected_closure(&self) -> anyhow::Result<()> {
        self.click("#quarantine-closure", WAIT).await
    }
}

impl Check<'_> {
    /// No action button is on the page (a viewer's view).
    pub async fn has_no_actions(&self) -> anyhow::Result<()> {
        for css in ["#pause", "#resume", "#promote", "#clear-failure", ".approve", "#quarantine-closure"] {
            let found = self.find().all(css).await?.len();
            ensure!(found == 0, "a viewer sees `{css}`");
        }
        Ok(())
    }

    pub async fn selected_host_waits_on(&self, gate: &str) -> anyhow::Result<()> {
        self.eventually(&format!("the host panel says it waits on {gate}"), WAIT, || async {
            let text = match self.find().all("#waiting-on").await?.first() {
                Some(e) => e.text().await?,
                None => return Ok(false),
            };
            Ok(text.contains(gate))
        })
        .await
    }
}

impl Act<'_> {
    pub async fn open_host_details(&self) -> anyhow::Result<()> {
        self.click("#host-details", WAIT).await
    }
}

impl Check<'_> {
    pub async fn host_page_lists(&self, rollout: &str) -> anyhow::Result<()> {
        self.eventually(&format!("the host page lists a record of {rollout}"), WAIT, || async {
            let rows = self.find().all("#host-records tbody tr").await?;
            for row in rows {
                if row.text().await?.contains(rollout) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }
}

impl Check<'_> {
    pub async fn feed_says(&self, status: &str, within: Duration) -> anyhow::Result<()> {
        self.eventually(&format!("the feed status says {status}"), within, || async {
            Ok(self.find().css("#feed-status", WAIT).await?.text().await? == status)
        })
        .await
    }

    /// The timeline and the log say the start of the rollout's log was sealed into the
    /// archive, the database's log beginning at `first`.
    pub async fn says_its_log_was_sealed_before(&self, first: i64, within: Duration) -> anyhow::Result<()> {
        let timeline = self.find().css("#timeline-sealed", within).await?.text().await?;
        ensure!(timeline.contains(&format!("seq {first} on")), "the timeline says: {timeline}");
        let log = self.find().css("#log-sealed", WAIT).await?.text().await?;
        ensure!(log.contains(&format!("before seq {first}")), "the event log says: {log}");
        Ok(())
    }

    /// The page says the rollout's host records were tallied, and `wave` shows `counts` (as
    /// "2 Pending") and no host cells.
    pub async fn shows_a_tally(&self, wave: u32, counts: &str, within: Duration) -> anyhow::Result<()> {
        let note = self.find().css("#hosts-tallied", within).await?.text().await?;
        ensure!(note.contains("tallied"), "the note says: {note}");
        let column = format!("[data-wave=\"{wave}\"]");
        let head = self.find().css(&format!("{column} .wave-head"), WAIT).await?.text().await?;
        ensure!(head.contains(counts), "wave {wave} says: {head}");
        let cells = self.find().all(&format!("{column} .cell")).await?.len();
        ensure!(cells == 0, "wave {wave} draws {cells} host cells");
        Ok(())
    }

    pub async fn rollout_state_is(&self, state: &str, within: Duration) -> anyhow::Result<()> {
        self.eventually(&format!("the rollout shows {state}"), within, || async {
            Ok(self.find().css(".rollout-head .badge", WAIT).await?.text().await? == state)
        })
        .await
    }
}

impl Find<'_> {
    /// The seqs of the log entries on screen, top to bottom (newest first).
    pub async fn log_seqs(&self) -> anyhow::Result<Vec<i64>> {
        let mut seqs = Vec::new();
        for entry in self.all(LOG_ENTRIES).await? {
            let seq = entry.attr("data-seq").await?.unwrap_or_default();
            seqs.push(seq.parse().with_context(|| format!("data-seq `{seq}`"))?);
        }
        Ok(seqs)
    }
}

impl Act<'_> {
    pub async fn load_older_entries(&self) -> anyhow::Result<()> {
        self.click("#log-older", WAIT).await
    }

    /// Saves what the browser shows to `target/e2e-artifacts/<name>.png` (to look at).
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<std::path::PathBuf> {
        self.session.screenshot(name).await
    }
}

impl Act<'_> {
    /// Clicks one of the head's actions (`pause`, `resume`, `clear-failure`).
    pub async fn head_action(&self, id: &str) -> anyhow::Result<()> {
        self.click(&format!("#{id}"), WAIT).await
    }

    /// Clicks "Promote to wave N", ticks Force in the dialog when asked, and confirms.
    pub async fn promote(&self, force: bool) -> anyhow::Result<()> {
        self.click("#promote", WAIT).await?;
        let find = Find { session: self.session };
        find.css("#changes .changes-target", WAIT).await.context("the promote dialog shows what changes")?;
        if force {
            self.click("#dialog-force", WAIT).await?;
        }
        self.click("#dialog-confirm", WAIT).await
    }

    /// Sets the log's filters: host text, kind and gate (`""` for any).
    pub async fn filter_log(&self, host: &str, kind: &str, gate: &str) -> anyhow::Result<()> {
        let find = Find { session: self.session };
        let input = find.css("#log-host", WAIT).await?;
        input.clear().await?;
        if !host.is_empty() {
            input.send_keys(host).await?;
        }
        for (css, value) in [("#log-kind", kind), ("#log-gate", gate)] {
            let select = find.css(css, WAIT).await?;
            select.select_by_value(value).await?;
        }
        Ok(())
    }

    /// Opens the newest grouped row; returns the hosts it lists.
    pub async fn open_group(&self) -> anyhow::Result<Vec<String>> {
        let find = Find { session: self.session };
        let group = find.css("#event-log .log-group", WAIT).await?;
        group.find(Locator::Css("summary")).await?.click().await?;
        let mut hosts = Vec::new();
        for a in group.find_all(Locator::Css(".log-group-hosts a")).await? {
            hosts.push(a.text().await?);
        }
        Ok(hosts)
    }
}

impl Act<'_> {
    /// Presses `key` on the timeline slider (Home: the rollout's opening, End: now).
    pub async fn timeline_key(&self, key: fantoccini::key::Key) -> anyhow::Result<()> {
        let find = Find { session: self.session };
        find.css("#timeline", WAIT).await?.send_keys(&key.to_string()).await?;
        Ok(())
    }

    /// Moves the timeline slider to `seq`, as dragging it there does (its value, then the
    /// `input` event the page listens to).
    pub async fn timeline_to(&self, seq: i64) -> anyhow::Result<()> {
        let script = "const el = document.getElementById('timeline'); el.value = arguments[0]; \
                      el.dispatchEvent(new Event('input', { bubbles: true }));";
        self.session.client.execute(script, vec![serde_json::json!(seq.to_string())]).await?;
        Ok(())
    }

    pub async fn back_to_live(&self) -> anyhow::Result<()> {
        self.click("#timeline-live", WAIT).await
    }
}

impl Find<'_> {
    /// What the timeline says it shows ("live", "as of entry N · …").
    pub async fn timeline_label(&self) -> anyhow::Result<String> {
        Ok(self.css("#timeline-at", WAIT).await?.text().await?)
    }
    /// Whether the wave columns show the past.
    pub async fn replaying(&self) -> anyhow::Result<bool> {
        Ok(!self.all("#waves.waves-past").await?.is_empty())
    }
}

impl Act<'_> {
    /// Follows the head's link to the rollout's channel.
    pub async fn open_channel(&self) -> anyhow::Result<()> {
        self.click("#channel-link", WAIT).await
    }
}

impl Find<'_> {
    /// The approval column of `wave` in the channel history's card of `rollout`.
    pub async fn history_approval(&self, rollout: &str, wave: u32) -> anyhow::Result<String> {
        let css = format!("#channel-history [data-rollout='{rollout}'] tr[data-wave='{wave}'] .wave-approval");
        Ok(self.css(&css, WAIT).await?.text().await?)
    }
}
