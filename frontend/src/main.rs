//! Fleetwave dashboard entry point: mounts the app, nothing else.

mod api;
mod app;
mod components;
mod feed;
mod pages;
mod policies;
mod search;
mod session;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
