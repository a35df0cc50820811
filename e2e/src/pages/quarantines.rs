//! The quarantine page: active and released quarantines, Release buttons.

use anyhow::{Context, ensure};
use fantoccini::Locator;

use super::WAIT;
use crate::Session;

pub struct QuarantinesPage<'a> {
    session: &'a Session,
}

impl<'a> QuarantinesPage<'a> {
    pub fn new(session: &'a Session) -> Self {
        QuarantinesPage { session }
    }

    // find
    async fn active_row(&self, closure_part: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.session
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#active-quarantines"))
            .await
            .context("no active quarantines table")?;
        for row in self.session.client.find_all(Locator::Css("#active-quarantines tbody tr")).await? {
            if row.attr("data-closure").await?.unwrap_or_default().contains(closure_part) {
                return Ok(row);
            }
        }
        anyhow::bail!("no active quarantine of a closure containing `{closure_part}`")
    }

    // act
    pub async fn open(&self) -> anyhow::Result<()> {
        self.session.client.goto(&self.session.url("/quarantines")).await?;
        Ok(())
    }

    pub async fn release(&self, closure_part: &str) -> anyhow::Result<()> {
        let row = self.active_row(closure_part).await?;
        row.find(Locator::Css("button.release")).await?.click().await.context("cannot click Release")
    }

    // check
    pub async fn shows_active(&self, closure_part: &str, by: &str) -> anyhow::Result<()> {
        let text = self.active_row(closure_part).await?.text().await?;
        ensure!(text.contains(by), "the quarantine row `{text}` does not name {by}");
        Ok(())
    }

    pub async fn released(&self) -> anyhow::Result<()> {
        let notice = self.session.client.wait().at_most(WAIT).for_element(Locator::Css("#action-result")).await?;
        let text = notice.text().await?;
        ensure!(text.starts_with("Released"), "release reported `{text}`");
        Ok(())
    }
}
