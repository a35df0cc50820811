//! The verified fleet document with the indexes the planner needs (host → wave, gating
//! hosts, channel predecessors, budget membership), built once per fleet so a plan pass
//! never scans the document.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use shared::manifest::{FleetDocument, HealthFailurePolicy, MaxFailures, RolloutPolicy};
use shared::policy::{Freeze, FreezeSource};
use shared::{Channel, Hostname};

use crate::crypto::decode_public_key;
use crate::window::Window;

/// The schema version that introduced freezes, maintenance windows and failure budgets.
pub const POLICIES_SCHEMA_VERSION: u32 = 2;
/// Most freezes and most maintenance windows a fleet may declare (each).
pub const MAX_FLEET_POLICIES: usize = 1000;

/// Where a host sits in its channel's waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Wave(u32),
    /// The channel has waves and this host is in none of them.
    Unstaged,
}

/// One wave of a channel, with its policy applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveSpec {
    pub soak_seconds: u64,
    pub requires_approval: bool,
    pub max_failures: Option<FailureBudget>,
}

/// How many hosts of a wave may fail without halting its rollout (SPEC §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureBudget {
    Count(u64),
    /// Percent of the wave's hosts, rounded down.
    Percent(u8),
}

impl FailureBudget {
    /// The failures a wave of `hosts` hosts tolerates.
    pub fn allowed(self, hosts: u64) -> u64 {
        match self {
            FailureBudget::Count(n) => n,
            FailureBudget::Percent(p) => hosts.saturating_mul(u64::from(p)) / 100,
        }
    }

    fn parse(written: &MaxFailures, field: &str) -> Result<FailureBudget, String> {
        let refused = |shown: String| format!("{field}: {shown} is neither a count nor a percentage such as \"10%\"");
        match written {
            MaxFailures::Count(n) => u64::try_from(*n).map(FailureBudget::Count).map_err(|_| refused(n.to_string())),
            MaxFailures::Other(value) => Err(refused(value.to_string())),
            MaxFailures::Text(text) => text
                .strip_suffix('%')
                .filter(|digits| !digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u8>().ok())
                .filter(|p| *p <= 100)
                .map(FailureBudget::Percent)
                .ok_or_else(|| refused(format!("`{text}`"))),
        }
    }
}

/// What a plan pass needs to know about one host (placement, gating hosts, budgets).
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub placement: Placement,
    /// Hosts that must be Converged or Deferred before this one is dispatched.
    pub gating: Vec<Hostname>,
    /// Indexes into `doc.disruption_budgets` of the budgets whose selector matches.
    pub budgets: Vec<usize>,
}

/// For each host id, a short list of indexes (the fleet's freezes or maintenance windows that
/// cover it, SPEC §17), stored flat: one array of where each host's list starts and one of
/// every list in id order. Kept apart from [`HostFacts`] (every byte more per host there costs
/// every pass) and without a heap allocation per host (following one pointer per host was a
/// cache miss per host: a quarter of a pass at 50,000 hosts).
#[derive(Debug, Clone, Default)]
pub struct PerHost {
    /// `starts[id]..starts[id + 1]` is the host's range in `items` (empty: no host has any).
    starts: Vec<u32>,
    items: Vec<u16>,
}

impl PerHost {
    fn push(&mut self, list: &[u16]) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.items.extend_from_slice(list);
        self.starts.push(self.items.len() as u32);
    }

    /// The list of host `id`.
    pub fn get(&self, id: u32) -> &[u16] {
        let id = id as usize;
        match (self.starts.get(id), self.starts.get(id + 1)) {
            (Some(&start), Some(&end)) => self.items.get(start as usize..end as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// A hash map with a fixed-seed fast hash (the engine draws no randomness).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

#[derive(Debug, Clone)]
pub struct VerifiedFleet {
    pub doc: FleetDocument,
    /// Lower hex SHA-256 of the document's JCS bytes.
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    /// Every host's facts, ordered by channel and then hostname, so that a channel's hosts are
    /// one sorted run: a plan pass walks it alongside a rollout's records (sorted by hostname
    /// too) instead of looking every host up at a random place in memory.
    facts: Vec<(Hostname, HostFacts)>,
    /// Each host's decoded key, at its index in `facts` (kept apart: a pass never reads them,
    /// and at 192 bytes each they would triple the memory it walks).
    pubkeys: Vec<VerifyingKey>,
    /// Each host's fleet freezes and maintenance windows, by host id (empty when the fleet
    /// has none).
    host_freezes: PerHost,
    host_windows: PerHost,
    /// Hostname → index into `facts` and `pubkeys`.
    by_name: FastMap<Hostname, u32>,
    /// Channel → its run in `facts`.
    runs: BTreeMap<Channel, Range<usize>>,
    /// Where each channel's run starts, in channel order: a channel's id is its position here
    /// (a host's channel id is found from its index in `facts`, without a field per host).
    run_starts: Vec<usize>,
    /// For each of the fleet's freezes, the ids of the channels with a host it covers (sorted).
    freeze_channels: Vec<Vec<u32>>,
    waves: BTreeMap<Channel, Vec<WaveSpec>>,
    predecessors: BTreeMap<Channel, Vec<Channel>>,
    /// The fleet's own freezes (SPEC §17), as the planner and the API read them.
    pub freezes: Vec<Freeze>,
    /// The fleet's maintenance windows, parsed.
    pub windows: Vec<Window>,
}

impl VerifiedFleet {
    /// The facts of `host`; `None` for a host the fleet does not name.
    pub fn host(&self, host: &Hostname) -> Option<&HostFacts> {
        self.host_with_id(host).map(|(_, facts)| facts)
    }

    /// The id of `host` (its index in the fleet) and its facts.
    pub fn host_with_id(&self, host: &Hostname) -> Option<(u32, &HostFacts)> {
        self.by_name.get(host).map(|&i| (i, &self.facts[i as usize].1))
    }

    /// The indexes into [`Self::freezes`] of the fleet freezes covering host `id`.
    pub fn host_freezes(&self, id: u32) -> &[u16] {
        self.host_freezes.get(id)
    }

    /// The indexes into [`Self::windows`] of the maintenance windows covering host `id`.
    pub fn host_windows(&self, id: u32) -> &[u16] {
        self.host_windows.get(id)
    }

    /// The facts of `channel`'s hosts, for reading alongside a rollout's records.
    pub fn channel_facts(&self, channel: &Channel) -> ChannelFacts<'_> {
        let run = self.runs.get(channel).cloned().unwrap_or(0..0);
        ChannelFacts { fleet: self, start: run.start as u32, run: &self.facts[run] }
    }

    pub fn placement(&self, host: &Hostname) -> Placement {
        self.host(host).map_or(Placement::Unstaged, |h| h.placement)
    }

    /// The waves of `channel` (one implicit wave for a channel without waves).
    pub fn waves(&self, channel: &Channel) -> &[WaveSpec] {
        self.waves.get(channel).map_or(&[], Vec::as_slice)
    }

    pub fn policy(&self, channel: &Channel) -> Option<&RolloutPolicy> {
        let name = &self.doc.channels.get(channel)?.rollout_policy;
        self.doc.rollout_policies.get(name)
    }

    pub fn on_health_failure(&self, channel: &Channel) -> HealthFailurePolicy {
        self.policy(channel).map_or(HealthFailurePolicy::Halt, |p| p.on_health_failure)
    }

    /// How long a record may make no progress before it is flagged stuck (a policy's
    /// `stuckAfterMinutes`, saturated at the largest span chrono can represent).
    pub fn stuck_after(&self, channel: &Channel) -> chrono::Duration {
        let minutes = self.policy(channel).map_or(30, |p| p.stuck_after_minutes);
        i64::try_from(minutes).ok().and_then(chrono::Duration::try_minutes).unwrap_or(chrono::Duration::MAX)
    }

    /// Channels whose rollout must complete before `channel` dispatches.
    pub fn predecessors(&self, channel: &Channel) -> &[Channel] {
        self.predecessors.get(channel).map_or(&[], Vec::as_slice)
    }

    /// A channel's id: its position among the fleet's channels that have hosts.
    pub fn channel_id(&self, channel: &Channel) -> Option<u32> {
        let start = self.runs.get(channel)?.start;
        self.run_starts.binary_search(&start).ok().map(|i| i as u32)
    }

    /// The name of the host of id `id`.
    pub fn host_name(&self, id: u32) -> Option<&Hostname> {
        self.facts.get(id as usize).map(|(name, _)| name)
    }

    /// The host's id (its index in the fleet) and the id of its channel.
    pub fn host_ids(&self, host: &Hostname) -> Option<(u32, u32)> {
        let index = *self.by_name.get(host)?;
        let channel = self.run_starts.partition_point(|start| *start <= index as usize).checked_sub(1)? as u32;
        Some((index, channel))
    }

    /// Whether the fleet's freeze `index` covers a host of channel `channel_id`.
    pub fn freeze_covers_channel(&self, index: usize, channel_id: u32) -> bool {
        self.freeze_channels.get(index).is_some_and(|c| c.binary_search(&channel_id).is_ok())
    }

    pub fn pubkey(&self, host: &Hostname) -> Option<&VerifyingKey> {
        self.by_name.get(host).map(|&i| &self.pubkeys[i as usize])
    }
}

/// The facts of one channel's hosts, read alongside a rollout's records. A rollout's records
/// are usually its channel's hosts, and both are sorted by hostname, so the facts of the record
/// at position `i` are usually at position `i` of the channel's run: a pass reads both arrays
/// in order, where a hash lookup per host was a cache miss per host at fleet sizes beyond the
/// caches.
pub struct ChannelFacts<'a> {
    fleet: &'a VerifiedFleet,
    /// The id of the run's first host.
    start: u32,
    /// The channel's hosts, sorted by hostname.
    run: &'a [(Hostname, HostFacts)],
}

impl<'a> ChannelFacts<'a> {
    /// The facts of `host`, the record at `position` in its rollout. Otherwise (a hostSet that
    /// is not the whole channel, records in another order) found by binary search in the run,
    /// and a host outside the run (one the fleet now places on another channel, or does not
    /// name) in the whole fleet.
    #[inline]
    pub fn get(&self, position: usize, host: &Hostname) -> Option<&'a HostFacts> {
        self.get_with_id(position, host).map(|(_, facts)| facts)
    }

    /// [`Self::get`] with the host's id.
    #[inline]
    pub fn get_with_id(&self, position: usize, host: &Hostname) -> Option<(u32, &'a HostFacts)> {
        match self.run.get(position) {
            Some((name, facts)) if name == host => Some((self.start + position as u32, facts)),
            _ => match self.run.binary_search_by(|(name, _)| name.cmp(host)) {
                Ok(i) => Some((self.start + i as u32, &self.run[i].1)),
                Err(_) => self.fleet.host_with_id(host),
            },
        }
    }

    pub fn placement(&self, position: usize, host: &Hostname) -> Placement {
        self.get(position, host).map_or(Placement::Unstaged, |f| f.placement)
    }
}

/// Checks the consistency rules of SPEC §2.3 and builds the indexes. Errors name the field.
pub(crate) fn index(doc: FleetDocument, hash: String, signed_at: DateTime<Utc>) -> Result<VerifiedFleet, String> {
    if doc.schema_version < POLICIES_SCHEMA_VERSION {
        let budget = doc.rollout_policies.iter().find_map(|(name, policy)| {
            let i = policy.waves.iter().position(|w| w.max_failures.is_some())?;
            Some(format!("rolloutPolicies.{name}.waves[{i}].maxFailures"))
        });
        let used = [
            (!doc.freezes.is_empty()).then(|| "freezes".to_owned()),
            (!doc.maintenance_windows.is_empty()).then(|| "maintenanceWindows".to_owned()),
            budget,
        ];
        if let Some(field) = used.into_iter().flatten().next() {
            return Err(format!("{field}: needs schemaVersion {POLICIES_SCHEMA_VERSION}"));
        }
    }
    let mut pubkeys = Vec::with_capacity(doc.hosts.len());
    // A key is one host's identity: two hosts sharing one could each sign as the other.
    let mut holders: std::collections::HashMap<[u8; 32], &Hostname> = std::collections::HashMap::new();
    for (name, host) in &doc.hosts {
        if !doc.channels.contains_key(&host.channel) {
            return Err(format!("hosts.{name}.channel: unknown channel `{}`", host.channel));
        }
        let key = decode_public_key(&host.pubkey).map_err(|e| format!("hosts.{name}.pubkey: {e}"))?;
        if let Some(first) = holders.insert(key.to_bytes(), name) {
            return Err(format!("hosts.{name}.pubkey: the same key as hosts.{first}.pubkey"));
        }
        pubkeys.push((&host.channel, name.clone(), key));
    }
    for (name, channel) in &doc.channels {
        if !doc.rollout_policies.contains_key(&channel.rollout_policy) {
            return Err(format!("channels.{name}.rolloutPolicy: unknown policy `{}`", channel.rollout_policy));
        }
    }

    let mut placement = HashMap::with_capacity(doc.hosts.len());
    let mut seen_in: HashMap<&Hostname, (String, usize)> = HashMap::new();
    for (channel, waves) in &doc.waves {
        if !doc.channels.contains_key(channel) {
            return Err(format!("waves.{channel}: unknown channel"));
        }
        for (i, wave) in waves.iter().enumerate() {
            for host in &wave.hosts {
                match doc.hosts.get(host) {
                    None => {
                        return Err(format!("waves.{channel}[{i}].hosts: unknown host `{host}`"));
                    }
                    Some(entry) if &entry.channel != channel => {
                        return Err(format!(
                            "waves.{channel}[{i}].hosts: host `{host}` is on channel `{}`",
                            entry.channel
                        ));
                    }
                    Some(_) => {}
                }
                if let Some((other_channel, other)) = seen_in.insert(host, (channel.to_string(), i)) {
                    return Err(format!(
                        "waves.{channel}[{i}].hosts: host `{host}` is already in waves.{other_channel}[{other}]"
                    ));
                }
                placement.insert(host.clone(), Placement::Wave(i as u32));
            }
        }
    }

    let mut waves = BTreeMap::new();
    for (name, channel) in &doc.channels {
        let policy = &doc.rollout_policies[&channel.rollout_policy];
        let fleet_waves = doc.waves.get(name).map_or(0, Vec::len);
        let specs = if fleet_waves == 0 {
            // All at once: one implicit wave, soak 0, no approval (SPEC §2.3).
            for (host, entry) in &doc.hosts {
                if &entry.channel == name {
                    placement.insert(host.clone(), Placement::Wave(0));
                }
            }
            vec![WaveSpec { soak_seconds: 0, requires_approval: false, max_failures: None }]
        } else {
            if policy.waves.len() < fleet_waves {
                return Err(format!(
                    "waves.{name}: {fleet_waves} waves but policy `{}` defines only {}",
                    channel.rollout_policy,
                    policy.waves.len()
                ));
            }
            policy.waves[..fleet_waves]
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let field = format!("rolloutPolicies.{}.waves[{i}].maxFailures", channel.rollout_policy);
                    Ok(WaveSpec {
                        soak_seconds: w.soak_minutes.saturating_mul(60),
                        requires_approval: w.requires_approval,
                        max_failures: w.max_failures.as_ref().map(|m| FailureBudget::parse(m, &field)).transpose()?,
                    })
                })
                .collect::<Result<_, String>>()?
        };
        waves.insert(name.clone(), specs);
    }

    let mut gating_hosts: HashMap<Hostname, Vec<Hostname>> = HashMap::new();
    for (i, edge) in doc.edges.iter().enumerate() {
        let channel_of = |h: &Hostname, field: &str| {
            doc.hosts.get(h).map(|e| &e.channel).ok_or_else(|| format!("edges[{i}].{field}: unknown host `{h}`"))
        };
        let (a, b) = (channel_of(&edge.gates, "gates")?, channel_of(&edge.gated, "gated")?);
        if a != b {
            return Err(format!(
                "edges[{i}]: `{}` (channel {a}) and `{}` (channel {b}) are on different channels",
                edge.gates, edge.gated
            ));
        }
        gating_hosts.entry(edge.gated.clone()).or_default().push(edge.gates.clone());
    }
    if let Some(cycle) = find_cycle(&gating_hosts) {
        return Err(format!("edges: cycle {}", join_cycle(&cycle)));
    }

    let mut predecessors: BTreeMap<Channel, Vec<Channel>> = BTreeMap::new();
    for (i, edge) in doc.channel_edges.iter().enumerate() {
        for (field, c) in [("gates", &edge.gates), ("gated", &edge.gated)] {
            if !doc.channels.contains_key(c) {
                return Err(format!("channelEdges[{i}].{field}: unknown channel `{c}`"));
            }
        }
        predecessors.entry(edge.gated.clone()).or_default().push(edge.gates.clone());
    }
    if let Some(cycle) = find_cycle(&predecessors) {
        return Err(format!("channelEdges: cycle {}", join_cycle(&cycle)));
    }

    let mut names = BTreeSet::new();
    let mut budgets_of_host: HashMap<Hostname, Vec<usize>> = HashMap::new();
    for (i, budget) in doc.disruption_budgets.iter().enumerate() {
        if !names.insert(budget.name.as_str()) {
            return Err(format!("disruptionBudgets[{i}].name: duplicate budget `{}`", budget.name));
        }
        if budget.max_in_flight == 0 {
            return Err(format!("disruptionBudgets[{i}].maxInFlight: must be at least 1"));
        }
        for (name, host) in &doc.hosts {
            if budget.selector.matches(name, host) {
                budgets_of_host.entry(name.clone()).or_default().push(i);
            }
        }
    }

    let (freezes, freezes_of_host) = index_freezes(&doc)?;
    let (windows, windows_of_host) = index_windows(&doc)?;

    pubkeys.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut runs: BTreeMap<Channel, Range<usize>> = BTreeMap::new();
    let mut by_name = FastMap::with_capacity_and_hasher(pubkeys.len(), foldhash::fast::FixedState::default());
    let mut facts = Vec::with_capacity(pubkeys.len());
    let mut keys = Vec::with_capacity(pubkeys.len());
    let (mut host_freezes, mut host_windows) = (PerHost::default(), PerHost::default());
    for (i, (channel, name, pubkey)) in pubkeys.into_iter().enumerate() {
        runs.entry(channel.clone()).or_insert(i..i).end = i + 1;
        by_name.insert(name.clone(), i as u32);
        let host_facts = HostFacts {
            placement: placement.get(&name).copied().unwrap_or(Placement::Unstaged),
            gating: gating_hosts.remove(&name).unwrap_or_default(),
            budgets: budgets_of_host.remove(&name).unwrap_or_default(),
        };
        if !doc.freezes.is_empty() {
            host_freezes.push(freezes_of_host.get(&name).map_or(&[][..], Vec::as_slice));
        }
        if !doc.maintenance_windows.is_empty() {
            host_windows.push(windows_of_host.get(&name).map_or(&[][..], Vec::as_slice));
        }
        facts.push((name, host_facts));
        keys.push(pubkey);
    }
    let run_starts: Vec<usize> = runs.values().map(|r| r.start).collect();
    let channel_ids: BTreeMap<&Channel, u32> = runs.keys().enumerate().map(|(i, c)| (c, i as u32)).collect();
    let mut freeze_channels = vec![Vec::new(); freezes.len()];
    for (hostname, indexes) in &freezes_of_host {
        let Some(id) = doc.hosts.get(*hostname).and_then(|h| channel_ids.get(&h.channel)) else { continue };
        for &i in indexes {
            freeze_channels[i as usize].push(*id);
        }
    }
    for channels in &mut freeze_channels {
        channels.sort_unstable();
        channels.dedup();
    }
    drop(channel_ids);
    Ok(VerifiedFleet {
        doc,
        hash,
        signed_at,
        facts,
        pubkeys: keys,
        host_freezes,
        host_windows,
        by_name,
        runs,
        waves,
        predecessors,
        run_starts,
        freeze_channels,
        freezes,
        windows,
    })
}

/// Which hosts each of `items` covers (by index), checking that names are unique and that
/// there are not too many.
fn covered_hosts<'d, T>(
    doc: &'d FleetDocument,
    field: &str,
    items: &'d [T],
    name_and_selector: impl Fn(&'d T) -> (&'d str, &'d shared::manifest::Selector),
) -> Result<Covered<'d>, String> {
    if items.len() > MAX_FLEET_POLICIES {
        return Err(format!("{field}: {} entries, at most {MAX_FLEET_POLICIES}", items.len()));
    }
    let mut names = BTreeSet::new();
    let mut of_host: HashMap<&Hostname, Vec<u16>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let (name, selector) = name_and_selector(item);
        if name.is_empty() {
            return Err(format!("{field}[{i}].name: is empty"));
        }
        if !names.insert(name) {
            return Err(format!("{field}[{i}].name: duplicate name `{name}`"));
        }
        for (hostname, host) in &doc.hosts {
            if selector.matches(hostname, host) {
                of_host.entry(hostname).or_default().push(i as u16);
            }
        }
    }
    Ok(of_host)
}

/// Host → the indexes of the freezes or windows that cover it.
type Covered<'d> = HashMap<&'d Hostname, Vec<u16>>;

fn index_freezes(doc: &FleetDocument) -> Result<(Vec<Freeze>, Covered<'_>), String> {
    let of_host = covered_hosts(doc, "freezes", &doc.freezes, |f| (f.name.as_str(), &f.selector))?;
    let mut freezes = Vec::with_capacity(doc.freezes.len());
    for (i, f) in doc.freezes.iter().enumerate() {
        if f.to <= f.from {
            return Err(format!("freezes[{i}].to: {} is not after from {}", f.to, f.from));
        }
        freezes.push(Freeze {
            name: f.name.clone(),
            source: FreezeSource::Fleet,
            selector: Some(f.selector.clone()),
            from: f.from,
            until: Some(f.to),
            reason: f.reason.clone(),
            by: None,
        });
    }
    Ok((freezes, of_host))
}

fn index_windows(doc: &FleetDocument) -> Result<(Vec<Window>, Covered<'_>), String> {
    let of_host =
        covered_hosts(doc, "maintenanceWindows", &doc.maintenance_windows, |w| (w.name.as_str(), &w.selector))?;
    let windows = doc
        .maintenance_windows
        .iter()
        .enumerate()
        .map(|(i, w)| Window::parse(w, &format!("maintenanceWindows[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok((windows, of_host))
}

/// A cycle in a "node → nodes it waits for" graph, if any, as the list of nodes on it
/// (first node repeated at the end). Deterministic: nodes are visited in sorted order.
fn find_cycle<K: Ord + Clone + std::hash::Hash, M>(graph: &M) -> Option<Vec<K>>
where
    for<'a> &'a M: IntoIterator<Item = (&'a K, &'a Vec<K>)>,
{
    let mut adjacency: BTreeMap<&K, Vec<&K>> = BTreeMap::new();
    for (node, deps) in graph {
        let mut deps: Vec<&K> = deps.iter().collect();
        deps.sort();
        adjacency.insert(node, deps);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<&K, Mark> = BTreeMap::new();
    let nodes: Vec<&K> = adjacency.keys().copied().collect();
    for start in nodes {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative DFS: (node, index of the next dependency to visit).
        let mut stack: Vec<(&K, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Visiting);
        while let Some((node, next)) = stack.last_mut() {
            let deps = adjacency.get(*node).map_or(&[][..], Vec::as_slice);
            if let Some(&dep) = deps.get(*next) {
                *next += 1;
                match marks.get(dep) {
                    Some(Mark::Visiting) => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<K> = stack[from..].iter().map(|(n, _)| (*n).clone()).collect();
                        cycle.push(dep.clone());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(dep, Mark::Visiting);
                        stack.push((dep, 0));
                    }
                }
            } else {
                marks.insert(*node, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

fn join_cycle<K: std::fmt::Display>(cycle: &[K]) -> String {
    cycle.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ")
}
