//! The fleet overview: stats and one card per channel.

use std::time::{Duration, Instant};

use anyhow::bail;
use fantoccini::Locator;

use crate::Session;

pub struct FleetPage<'a> {
    session: &'a Session,
}

impl<'a> FleetPage<'a> {
    pub fn new(session: &'a Session) -> Self {
        FleetPage { session }
    }

    // find
    async fn channel_text(&self, channel: &str) -> anyhow::Result<Option<String>> {
        let cards = self.session.client.find_all(Locator::Css(&format!(".channel[data-channel='{channel}']"))).await?;
        match cards.first() {
            Some(card) => Ok(Some(card.text().await?)),
            None => Ok(None),
        }
    }

    // act
    pub async fn open(&self) -> anyhow::Result<()> {
        self.session.client.goto(&self.session.url("/")).await?;
        Ok(())
    }

    // check
    /// Waits (the page updates itself from the feed) until the channel's card mentions `text`.
    pub async fn channel_shows(&self, channel: &str, text: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            // A card replaced while being read counts as "not yet".
            if let Ok(Some(card)) = self.channel_text(channel).await
                && card.contains(text)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {channel} card did not show `{text}` within {within:?}: {:?}",
                    self.channel_text(channel).await.ok().flatten()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
