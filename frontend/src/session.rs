//! Who is signed in, fetched once by the app shell and provided to every page.

use leptos::prelude::*;

use crate::api;

/// Who is signed in: fetched once for the whole app and provided through context (signing in
/// reloads the app, so it never goes stale).
#[derive(Clone, Copy)]
pub struct Session(LocalResource<Result<shared::api::Whoami, api::CallError>>);

impl Session {
    /// Asks the control plane who is signed in (once, by the app shell).
    pub fn fetch() -> Session {
        Session(LocalResource::new(api::whoami))
    }

    /// The session the app provided (`None` outside the app).
    pub fn current() -> Option<Session> {
        use_context::<Session>()
    }

    pub fn whoami(&self) -> Option<shared::api::Whoami> {
        self.0.get().and_then(Result::ok)
    }

    /// Whether actions are offered: only to the `operator` role.
    pub fn can_act(&self) -> bool {
        self.whoami().is_some_and(|w| w.role == "operator")
    }
}
