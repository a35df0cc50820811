use leptos::prelude::*;
use leptos_router::components::A;

use shared::api::RolloutSummary;
use shared::log::LogKind;

use crate::api;
use crate::components::{CallErrorNotice, RolloutBadge, StateBar, counts_text};

/// Fleet overview: each channel with its current rollout, hosts online, anything in trouble.
#[component]
pub fn FleetPage() -> impl IntoView {
    let fleet = LocalResource::new(api::fleet);
    let rollouts = LocalResource::new(api::rollouts);
    let quarantines = LocalResource::new(api::quarantines);
    let status = RwSignal::new(crate::feed::FeedStatus::Connecting);
    crate::feed::refresh_on(
        &[
            LogKind::RolloutOpened,
            LogKind::RolloutStateChanged,
            LogKind::WaveAdvanced,
            LogKind::HostEvent,
            LogKind::QuarantineAdded,
            LogKind::QuarantineReleased,
            LogKind::HostOnline,
            LogKind::HostOffline,
            LogKind::ManifestSetUpdated,
        ],
        status,
        move || {
            fleet.refetch();
            rollouts.refetch();
            quarantines.refetch();
        },
    );
    view! {
        <section class="page" id="page-fleet">
            <h1>"Fleet" <crate::feed::FeedIndicator status=status /></h1>
            <p class="lede">"Every channel, its current rollout and how far it has converged."</p>
            {move || match (fleet.get(), rollouts.get()) {
                (Some(Err(err)), _) | (_, Some(Err(err))) => view! { <CallErrorNotice err=err /> }.into_any(),
                (Some(Ok(f)), Some(Ok(list))) if f.fleet_hash.is_some() => {
                    let online = f.hosts.iter().filter(|h| h.online).count();
                    let quarantined = quarantines.get().and_then(Result::ok).map_or(0, |q| q.active.len());
                    let suspended = f.hosts.iter().filter(|h| h.suspended.is_some()).count();
                    view! {
                        <div class="stats">
                            <div class="stat"><span class="stat-n">{f.hosts.len()}</span><span class="muted">"hosts"</span></div>
                            <div class="stat"><span class="stat-n">{online}</span><span class="muted">"online"</span></div>
                            <div class={if f.hosts.len() > online { "stat stat-warn" } else { "stat" }}><span class="stat-n">{f.hosts.len() - online}</span><span class="muted">"offline"</span></div>
                            <div class={if quarantined > 0 { "stat stat-bad" } else { "stat" }}><span class="stat-n">{quarantined}</span><span class="muted">"quarantined"</span></div>
                            <div class={if suspended > 0 { "stat stat-warn" } else { "stat" }} id="stat-suspended"><span class="stat-n">{suspended}</span><span class="muted">"suspended"</span></div>
                        </div>
                        <div class="channels" id="channels">
                            {f.channels.into_iter().map(|c| {
                                let channel_href = format!("/channels/{}", c.name);
                                let channel_label = c.name.to_string();
                                let current = c.current_rollout.as_ref().and_then(|id| list.iter().find(|r| &r.header.rollout_id == id)).cloned();
                                view! {
                                    <div class="card channel" data-channel=c.name.to_string()>
                                        <h2><A href=channel_href.clone() attr:class="channel-link">{channel_label.clone()}</A></h2>
                                        <p class="muted small">{format!("{} hosts · policy {}", c.hosts, c.rollout_policy)}</p>
                                        {match current {
                                            Some(r) => {
                                                let id = r.header.rollout_id.to_string();
                                                let trouble = matches!(r.header.state, shared::state::RolloutState::Halted) || r.counts.keys().any(|s| matches!(s, shared::state::HostState::Failed));
                                                view! {
                                                    <p><A href=format!("/rollouts/{id}")>{id.clone()}</A>" "<RolloutBadge state=r.header.state /></p>
                                                    <p class={if trouble { "small error-text" } else { "small muted" }}>{format!("{}% converged · wave {} · {}", r.converged_percent, r.header.current_wave, counts_text(&r.counts))}</p>
                                                    <WaveBars summary=r />
                                                }.into_any()
                                            }
                                            None => view! { <p class="muted">"No rollout yet."</p> }.into_any(),
                                        }}
                                    </div>
                                }
                            }).collect_view()}
                        </div>
                    }.into_any()
                }
                (Some(Ok(_)), Some(Ok(_))) => view! {
                    <div class="empty">
                        <h2>"No fleet yet"</h2>
                        <p>"The control plane has not received a signed fleet document. Once CI uploads one, its channels and hosts appear here."</p>
                    </div>
                }.into_any(),
                _ => view! { <p class="muted">"Loading…"</p> }.into_any(),
            }}
        </section>
    }
}

/// One progress bar per wave of a rollout (converged / total), and stuck hosts in red, drawn
/// from the rollout's summary (no request per card).
#[component]
fn WaveBars(summary: RolloutSummary) -> impl IntoView {
    let current = summary.header.current_wave;
    let stuck: Vec<String> = summary.stuck.iter().map(|h| h.to_string()).collect();
    view! {
        <div class="wave-bars">
            {summary.waves.into_iter().map(|w| {
                let total: u64 = w.counts.values().sum();
                let converged = w.counts.get(&shared::state::HostState::Converged).copied().unwrap_or(0);
                let label = w.index.map_or("unstaged".to_owned(), |i| format!("wave {i}"));
                let is_current = w.index == Some(current);
                view! {
                    <div class={if is_current { "wave-bar current" } else { "wave-bar" }}>
                        <span class="small muted">{label}</span>
                        <StateBar counts=w.counts.clone() />
                        <span class="small">{format!("{converged}/{total}")}</span>
                    </div>
                }
            }).collect_view()}
            {(!stuck.is_empty()).then(|| view! { <p class="small error-text stuck-hosts">{format!("stuck: {}", stuck.join(", "))}</p> })}
        </div>
    }
}
