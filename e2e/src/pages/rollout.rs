//! The rollout page: wave columns of host cells, actions, the live event log.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::Locator;
use fantoccini::elements::Element;

use super::WAIT;
use crate::Session;

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
    pub async fn log_len(&self) -> anyhow::Result<usize> {
        Ok(self.all("#event-log .log-entry").await?.len())
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
    pub async fn approve(&self, wave: u32, within: Duration) -> anyhow::Result<()> {
        let button = Find { session: self.session }.css(&format!("#approve-{wave}"), within).await?;
        button.click().await.context("cannot click approve")
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
        loop {
            if cond().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not within {within:?}: {what}");
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
