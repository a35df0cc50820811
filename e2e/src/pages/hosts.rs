//! Finding hosts (the header's search box, the results page) and a host's own page.

use anyhow::Context;
use fantoccini::Locator;
use fantoccini::key::Key;

use super::WAIT;
use crate::Session;

pub struct Hosts<'a> {
    session: &'a Session,
}

impl<'a> Hosts<'a> {
    pub fn new(session: &'a Session) -> Self {
        Hosts { session }
    }

    async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in self.session.client.find_all(Locator::Css(css)).await? {
            out.push(e.text().await?);
        }
        Ok(out)
    }

    /// Presses `/` on the page (not in a field) and types `words` into the box it focuses.
    pub async fn search(&self, words: &str) -> anyhow::Result<()> {
        let body = self.session.client.find(Locator::Css("body")).await?;
        body.send_keys("/").await?;
        let active = self.session.client.active_element().await?;
        let id = active.attr("id").await?.unwrap_or_default();
        anyhow::ensure!(id == "host-search", "`/` focused `{id}`, not the search box");
        active.send_keys(words).await?;
        Ok(())
    }

    /// Hostnames listed under the box once they answer `words` (the hits of what was typed
    /// so far show in between).
    pub async fn hits(&self, words: &str) -> anyhow::Result<Vec<String>> {
        let answered = format!("#search-results[data-for='{words}'] :is(.hit-name, #search-empty)");
        self.session
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&answered))
            .await
            .with_context(|| format!("the search box showed no results for `{words}`"))?;
        self.texts("#search-results .hit-name").await
    }

    pub async fn open_hit(&self, host: &str) -> anyhow::Result<()> {
        for hit in self.session.client.find_all(Locator::Css("#search-results .hit")).await? {
            if hit.find(Locator::Css(".hit-name")).await?.text().await? == host {
                hit.click().await?;
                return Ok(());
            }
        }
        anyhow::bail!("{host} is not among the hits")
    }

    /// Enter in the box: the results page.
    pub async fn submit(&self) -> anyhow::Result<Vec<String>> {
        let input = self.session.client.find(Locator::Css("#host-search")).await?;
        input.send_keys(&Key::Enter.to_string()).await?;
        self.results().await
    }

    /// The hostnames the results page lists, once it lists some.
    pub async fn results(&self) -> anyhow::Result<Vec<String>> {
        self.session.client.wait().at_most(WAIT).for_element(Locator::Css("#host-results .hit-name")).await?;
        self.texts("#host-results .hit-name").await
    }

    /// The host page's events, top (newest) first, and the stderr tails it shows.
    pub async fn host_events(&self, host: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let title = self.session.client.wait().at_most(WAIT).for_element(Locator::Css("#host-title")).await?;
        anyhow::ensure!(title.text().await? == host, "the page is not {host}'s");
        self.session.client.wait().at_most(WAIT).for_element(Locator::Css("#host-events .log-entry")).await?;
        Ok((self.texts("#host-events .log-text").await?, self.texts("#host-events .stderr").await?))
    }
}
