//! The app shell: header with navigation, the routed page, and a footer naming the
//! control plane's version (read from `/api/v1/version`).

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::api;
use crate::pages::{
    ChannelPage, FleetPage, HostPage, HostsPage, LoginPage, NotFoundPage, QuarantinesPage, RolloutPage, RolloutsPage,
    WebhooksPage,
};
use crate::session::Session;

#[component]
pub fn App() -> impl IntoView {
    provide_context(Session::fetch());
    crate::policies::FreezeList::provide();
    crate::feed::reload_when_restored();
    view! {
        <Router>
            <div class="shell">
                <Header />
                <crate::policies::FreezeBanner />
                <main class="content">
                    <Routes fallback=NotFoundPage>
                        <Route path=path!("/") view=FleetPage />
                        <Route path=path!("/rollouts") view=RolloutsPage />
                        <Route path=path!("/rollouts/:id") view=RolloutPage />
                        <Route path=path!("/channels/:name") view=ChannelPage />
                        <Route path=path!("/hosts") view=HostsPage />
                        <Route path=path!("/hosts/:name") view=HostPage />
                        <Route path=path!("/quarantines") view=QuarantinesPage />
                        <Route path=path!("/webhooks") view=WebhooksPage />
                        <Route path=path!("/login") view=LoginPage />
                    </Routes>
                </main>
            </div>
        </Router>
    }
}

#[component]
fn Header() -> impl IntoView {
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                <span class="brand-mark" aria-hidden="true"></span>
                <span class="brand-name">"Fleetwave"</span>
            </A>
            <nav class="nav" aria-label="Main">
                <A href="/" exact=true>"Fleet"</A>
                <A href="/rollouts">"Rollouts"</A>
                <A href="/quarantines">"Quarantines"</A>
                <A href="/webhooks">"Webhooks"</A>
            </nav>
            <crate::search::HostSearch />
            <div class="topbar-end">
                <crate::policies::StopTheLine />
                <ClusterBadge />
                <VersionBadge />
                <Identity />
            </div>
        </header>
    }
}

/// Who is signed in, or a link to sign in.
#[component]
fn Identity() -> impl IntoView {
    let session = Session::current();
    view! {
        {move || match session.and_then(|s| s.whoami()) {
            Some(me) => view! { <span class="identity" id="identity" title="Signed in">{format!("{} · {}", me.name, me.role)}</span> }.into_any(),
            _ => view! { <A href="/login" attr:class="button button-quiet">"Sign in"</A> }.into_any(),
        }}
    }
}

/// How often the header asks which replica it talks to and which leads.
const CLUSTER_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The replica this dashboard talks to and the one that leads (SPEC §15): a cluster of one on
/// SQLite, "no leader" during a takeover. Shown once signed in.
#[component]
fn ClusterBadge() -> impl IntoView {
    let cluster = LocalResource::new(api::cluster);
    if let Ok(handle) = set_interval_with_handle(move || cluster.refetch(), CLUSTER_EVERY) {
        on_cleanup(move || handle.clear());
    }
    let short = |url: &str| url.trim_start_matches("http://").trim_start_matches("https://").to_owned();
    view! {
        {move || match cluster.get() {
            Some(Ok(view)) => {
                let this = short(&view.this.url);
                let (text, title, class) = match (&view.leader, view.this.role) {
                    (_, shared::api::ReplicaRole::Leader) if view.replicas.len() <= 1 => (
                        format!("{this} · leader"),
                        format!("{} replica at {this}, leading at epoch {}", database(view.database), view.this.epoch),
                        "cluster",
                    ),
                    (_, shared::api::ReplicaRole::Leader) => (
                        format!("{this} · leader · {} replicas", view.replicas.len()),
                        format!("this replica ({this}) leads at epoch {}", view.this.epoch),
                        "cluster",
                    ),
                    (Some(leader), shared::api::ReplicaRole::Follower) => (
                        format!("{this} · follower · leader {}", short(&leader.url)),
                        format!("this replica ({this}) follows; {} leads at epoch {}", short(&leader.url), leader.epoch),
                        "cluster",
                    ),
                    (None, shared::api::ReplicaRole::Follower) => (
                        format!("{this} · no leader"),
                        "no replica leads at the moment: a takeover is under way; changes wait".to_owned(),
                        "cluster cluster-warn",
                    ),
                };
                view! { <span class=class id="cluster" title=title>{text}</span> }.into_any()
            }
            _ => ().into_any(),
        }}
    }
}

fn database(kind: shared::api::DatabaseKind) -> &'static str {
    match kind {
        shared::api::DatabaseKind::Sqlite => "the one (SQLite)",
        shared::api::DatabaseKind::Postgres => "a PostgreSQL",
    }
}

/// The control plane's version, or why it cannot be shown.
#[component]
fn VersionBadge() -> impl IntoView {
    let version = LocalResource::new(api::version);
    view! {
        <span class="version" id="server-version">
            {move || match version.get() {
                None => view! { <span class="muted">"connecting…"</span> }.into_any(),
                Some(Ok(info)) => {
                    view! {
                        <span title="Control plane version">
                            {format!("{} {} · API {}", info.name, info.version, info.api)}
                        </span>
                    }
                        .into_any()
                }
                Some(Err(err)) => {
                    view! { <span class="error-text" title=err.to_string()>"control plane unreachable"</span> }
                        .into_any()
                }
            }}
        </span>
    }
}
