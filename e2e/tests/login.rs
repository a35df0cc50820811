//! Signing in: the demo's login link trades the token for a session and removes it from the
//! address bar.
#![allow(clippy::unwrap_used)]

use backend::db::auth::Role;
use e2e::browser_test;
use e2e::pages::shell::Shell;

#[tokio::test]
async fn the_login_link_signs_in_and_hides_the_token() -> anyhow::Result<()> {
    browser_test("the_login_link_signs_in_and_hides_the_token", |session| async move {
        let token = session.add_operator("olive", Role::Operator).await?;
        let shell = Shell::new(&session);
        shell.act().open(&format!("/login?token={token}")).await?;
        shell.check().signed_in_as("olive").await?;
        shell.check().on_page("page-fleet", "/").await?;
        let url = session.client.current_url().await?;
        anyhow::ensure!(!url.as_str().contains(&token), "the token is still in the address bar: {url}");
        Ok(())
    })
    .await
}
