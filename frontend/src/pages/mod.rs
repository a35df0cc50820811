//! One module per page of the dashboard (SPEC §11).

mod channel;
mod fleet;
mod host;
mod hosts;
mod login;
mod not_found;
mod quarantines;
mod rollout;
mod rollouts;
mod webhooks;

pub use channel::ChannelPage;
pub use fleet::FleetPage;
pub use host::HostPage;
pub use hosts::HostsPage;
pub use login::LoginPage;
pub use not_found::NotFoundPage;
pub use quarantines::QuarantinesPage;
pub use rollout::RolloutPage;
pub use rollouts::RolloutsPage;
pub use webhooks::WebhooksPage;
