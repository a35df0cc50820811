//! Freezes as every page shows them (SPEC §17): the header's stop-the-line button, the reason
//! dialog, the banner with each freeze in force and its release.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::Locator;

use super::WAIT;
use crate::Session;

pub struct Freezes<'a> {
    session: &'a Session,
}

impl<'a> Freezes<'a> {
    pub fn new(session: &'a Session) -> Self {
        Freezes { session }
    }

    // find
    async fn css(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.session
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("`{css}` did not appear within {WAIT:?}"))
    }

    /// The banner's text, or `None` while there is no banner (one removed while it was read
    /// is read again).
    pub async fn banner_text(&self) -> anyhow::Result<Option<String>> {
        let mut last = None;
        for _ in 0..10 {
            match self.session.client.find_all(Locator::Css("#freeze-banner")).await?.first() {
                Some(banner) => match banner.text().await {
                    Ok(text) => return Ok(Some(text)),
                    Err(err) => last = Some(err),
                },
                None => return Ok(None),
            }
        }
        Err(anyhow::anyhow!("the banner kept changing while read: {last:?}"))
    }

    // act
    /// Clicks "Stop the line", checks that the dialog will not confirm without a reason,
    /// gives `reason` and the duration `until` (an option's label), and confirms.
    pub async fn stop_the_line(&self, reason: &str, until: &str) -> anyhow::Result<()> {
        self.css("#stop-the-line").await?.click().await.context("cannot click Stop the line")?;
        self.confirm_in_dialog(reason, Some(until)).await
    }

    /// Releases the freeze named `name` from the banner, giving `reason`.
    pub async fn release(&self, name: &str, reason: &str) -> anyhow::Result<()> {
        let freeze = self.css(&format!("#freeze-banner .freeze[data-freeze='{name}']")).await?;
        freeze.find(Locator::Css("button.release-freeze")).await?.click().await.context("cannot click Release")?;
        self.confirm_in_dialog(reason, None).await
    }

    /// Suspends the host selected on the rollout page from its panel, giving `reason`.
    pub async fn suspend_selected_host(&self, reason: &str) -> anyhow::Result<()> {
        self.css("#suspend-host").await?.click().await.context("cannot click Suspend host")?;
        self.confirm_in_dialog(reason, None).await
    }

    /// Fills the open reason dialog (checking it will not confirm without a reason) and
    /// confirms.
    pub async fn confirm_in_dialog(&self, reason: &str, until: Option<&str>) -> anyhow::Result<()> {
        self.css("#dialog").await?;
        let confirm = self.css("#dialog-confirm").await?;
        ensure!(confirm.attr("disabled").await?.is_some(), "the dialog offers to confirm without a reason");
        self.css("#dialog-reason").await?.send_keys(reason).await?;
        if let Some(label) = until {
            let select = self.css("#dialog-until").await?;
            select.select_by_label(label).await.with_context(|| format!("no duration `{label}`"))?;
        }
        let confirm = self.css("#dialog-confirm").await?;
        ensure!(confirm.attr("disabled").await?.is_none(), "a reason was given, yet confirming is disabled");
        confirm.click().await.context("cannot confirm")?;
        Ok(())
    }

    // check
    /// Waits until the banner shows a freeze whose line contains every one of `parts`;
    /// answers the freeze's name.
    pub async fn banner_shows(&self, parts: &[&str], within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            for freeze in self.session.client.find_all(Locator::Css("#freeze-banner .freeze")).await? {
                let (Ok(text), Ok(name)) = (freeze.text().await, freeze.attr("data-freeze").await) else { continue };
                if parts.iter().all(|p| text.contains(p)) {
                    return Ok(name.unwrap_or_default());
                }
            }
            if Instant::now() > deadline {
                bail!("no freeze in the banner shows {parts:?} within {within:?}: {:?}", self.banner_text().await?);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn banner_gone(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while let Some(text) = self.banner_text().await? {
            if Instant::now() > deadline {
                bail!("the banner is still there after {within:?}: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
