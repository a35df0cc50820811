//! The app shell every page shares: header, navigation, version badge.

use anyhow::{Context, ensure};
use fantoccini::Locator;
use fantoccini::elements::Element;

use super::WAIT;
use crate::Session;

pub struct Shell<'a> {
    session: &'a Session,
}

impl<'a> Shell<'a> {
    pub fn new(session: &'a Session) -> Self {
        Shell { session }
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
    pub async fn wait_css(&self, css: &str) -> anyhow::Result<Element> {
        // The login page trades its token for a cookie and then navigates; a lookup that
        // lands in that navigation is "aborted by navigation" and is simply tried again.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let found = self.session.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await;
            match found {
                Err(err)
                    if err.to_string().contains("aborted by navigation") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other.with_context(|| format!("`{css}` did not appear within {WAIT:?}")),
            }
        }
    }
    pub async fn header(&self) -> anyhow::Result<Element> {
        self.wait_css("header.topbar").await
    }
    pub async fn nav_link(&self, label: &str) -> anyhow::Result<Element> {
        self.header().await?;
        self.session
            .client
            .find(Locator::LinkText(label))
            .await
            .with_context(|| format!("no navigation link `{label}`"))
    }
    pub async fn page(&self, id: &str) -> anyhow::Result<Element> {
        self.wait_css(&format!("#{id}")).await
    }
    pub async fn cluster_badge(&self) -> anyhow::Result<Element> {
        self.wait_css("#cluster").await
    }
    pub async fn version_badge(&self) -> anyhow::Result<Element> {
        self.wait_css("#server-version").await
    }
}

pub struct Act<'a> {
    session: &'a Session,
}

impl Act<'_> {
    pub async fn open(&self, path: &str) -> anyhow::Result<()> {
        self.session.client.goto(&self.session.url(path)).await.context("navigation failed")
    }
    /// Signs in through the login link of `token` and waits until the header names `name`.
    pub async fn sign_in(&self, token: &str, name: &str) -> anyhow::Result<()> {
        self.open(&format!("/login?token={token}")).await?;
        Check { session: self.session }.signed_in_as(name).await
    }
    /// Saves what the browser shows to `target/e2e-artifacts/<name>.png` (to look at).
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<std::path::PathBuf> {
        self.session.screenshot(name).await
    }
    pub async fn click_nav(&self, label: &str) -> anyhow::Result<()> {
        let link = Find { session: self.session }.nav_link(label).await?;
        link.click().await.with_context(|| format!("cannot click `{label}`"))
    }
}

pub struct Check<'a> {
    session: &'a Session,
}

impl Check<'_> {
    fn find(&self) -> Find<'_> {
        Find { session: self.session }
    }

    /// The WASM app mounted: header with the three sections of the dashboard.
    pub async fn shell_rendered(&self) -> anyhow::Result<()> {
        let brand = self.find().header().await?.text().await?;
        ensure!(brand.contains("Fleetwave"), "header shows `{brand}`, expected the Fleetwave brand");
        for label in ["Fleet", "Rollouts", "Quarantines"] {
            self.find().nav_link(label).await?;
        }
        Ok(())
    }

    /// The badge shows the version the control plane reported, not a placeholder or error.
    pub async fn shows_server_version(&self, version: &str) -> anyhow::Result<()> {
        let expected = format!("fleetwave {version} · API v1");
        let badge = self.find().version_badge().await?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = badge.text().await?;
            if text == expected {
                return Ok(());
            }
            ensure!(std::time::Instant::now() < deadline, "version badge shows `{text}`, expected `{expected}`");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `id` is the page on screen and the address bar ends in `path`.
    pub async fn on_page(&self, id: &str, path: &str) -> anyhow::Result<()> {
        self.find().page(id).await?;
        let url = self.session.client.current_url().await?;
        ensure!(url.path() == path, "address bar shows {url}, expected path {path}");
        Ok(())
    }
}

impl Check<'_> {
    /// The header's cluster badge reads `expected` (it is refreshed every 5 s).
    pub async fn cluster_shows(&self, expected: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = self.find().cluster_badge().await?.text().await?;
            if text == expected {
                return Ok(());
            }
            ensure!(std::time::Instant::now() < deadline, "the cluster badge shows `{text}`, expected `{expected}`");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The header names who is signed in.
    pub async fn signed_in_as(&self, name: &str) -> anyhow::Result<()> {
        let badge = self.find().wait_css("#identity").await?;
        let text = badge.text().await?;
        ensure!(text.starts_with(name), "identity shows `{text}`, expected {name}");
        Ok(())
    }
}
