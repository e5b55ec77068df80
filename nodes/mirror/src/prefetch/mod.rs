//! Pre-warming: `[[prefetch]]` rules keep chosen images cached before any client asks.
//!
//! Every rule's interval, the node that runs prefetching (a single node; in a cluster, the Raft
//! leader only, so the cluster syncs once) lists the image's tags at the upstream, selects the
//! matching ones ([`rule`]) and pulls them in-process ([`pull`]) through the same services as a
//! client pull, skipping blobs already cached. It pauses while the upstream's pull allowance is
//! at the reserve kept for clients. Blobs of rules with `pin = true` are written to the pin
//! record, which eviction on every node honours; a rule's pins are replaced by each complete
//! pass (a failing rule keeps its earlier ones), so removing a rule (or a tag leaving it)
//! unpins its blobs.

pub mod pull;
pub mod rule;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};
use wharf_core::config::{Config, ConfigError};
use wharf_core::{RepoName, Tag};

use crate::Mirror;
use crate::evict::Pins;
use pull::{PrefetchError, Pull};
use rule::Rule;

/// How often the runner wakes when no rule is due: to notice a change of leader and write the
/// pins a new leader owes.
const IDLE_WAKE: Duration = Duration::from_secs(30);

/// What the status page shows of one rule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStatus {
    pub image: String,
    pub passes: u64,
    /// Seconds since the Unix epoch of the latest pass this node ran.
    pub last_pass: Option<u64>,
    /// The tags the latest pass selected.
    pub tags: Vec<String>,
    /// Blobs and bytes fetched by this node's passes (cached ones are not counted).
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    /// Why the latest pass stopped short: the allowance reserve, another node leading.
    pub paused: Option<String>,
    pub last_error: Option<String>,
}

pub struct Prefetcher {
    rules: Vec<Rule>,
    /// Upstream name → pulls of its allowance left to clients.
    reserves: HashMap<String, u64>,
    /// In a cluster only the leader runs rules.
    clustered: bool,
    status: Mutex<Vec<RuleStatus>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Prefetcher {
    pub fn from_config(config: &Config) -> Result<Prefetcher, ConfigError> {
        let rules = config
            .prefetch
            .iter()
            .map(Rule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let status = rules
            .iter()
            .map(|r| RuleStatus {
                image: r.config.image.clone(),
                ..RuleStatus::default()
            })
            .collect();
        Ok(Prefetcher {
            rules,
            reserves: config
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.prefetch_reserve))
                .collect(),
            clustered: config.cluster.enabled(),
            status: Mutex::new(status),
        })
    }

    pub fn status(&self) -> Vec<RuleStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, rule: usize, f: impl FnOnce(&mut RuleStatus)) {
        if let Some(s) = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(rule)
        {
            f(s);
        }
    }

    /// Whether this node runs the rules now: alone, or as the cluster's leader.
    fn runs_here(&self, mirror: &Mirror) -> bool {
        if !self.clustered {
            return true;
        }
        mirror.blobs.coordinator().is_some_and(|c| {
            let health = c.health();
            health.leader_id == Some(health.node_id)
        })
    }

    /// Run the rules until the mirror is dropped.
    pub async fn run(self: Arc<Self>, mirror: Weak<Mirror>) {
        let mut due: Vec<Instant> = vec![Instant::now(); self.rules.len()];
        // Per pinning rule, the blobs it pins (from its latest complete pass, else from the
        // record); the record as this node last read or wrote it.
        let mut pinned: Vec<Option<BTreeSet<String>>> = vec![None; self.rules.len()];
        let mut written: Option<Pins> = None;
        loop {
            let wake = due
                .iter()
                .min()
                .copied()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKE)
                .min(Instant::now() + IDLE_WAKE);
            tokio::time::sleep_until(wake).await;
            let Some(mirror) = mirror.upgrade() else {
                return;
            };
            if !self.runs_here(&mirror) {
                written = None;
                let now = Instant::now();
                for (i, rule) in self.rules.iter().enumerate() {
                    if due[i] <= now {
                        due[i] = now + Duration::from_secs(rule.config.interval_secs);
                        self.update(i, |s| {
                            s.paused = Some("another node of the cluster leads".into())
                        });
                    }
                }
                continue;
            }
            if written.is_none() {
                // Newly running here: take up what the record holds, so a rule whose passes
                // fail keeps its pins (and a node without rules only clears removed rules').
                match Pins::read(mirror.store.as_ref()).await {
                    Ok(record) => {
                        self.take_up(&record, &mut pinned);
                        written = Some(record);
                    }
                    // Passes go on; pins are written once the record could be read.
                    Err(e) => warn!(error = %e, "reading the prefetch pins"),
                }
            }
            for (i, rule) in self.rules.iter().enumerate() {
                if due[i] > Instant::now() {
                    continue;
                }
                match self.pass(&mirror, i, rule).await {
                    Ok(blobs) if rule.config.pin => pinned[i] = Some(blobs),
                    Ok(_) => {}
                    Err(e) => warn!(image = %rule.config.image, error = %e, "prefetch pass"),
                }
                due[i] = Instant::now() + Duration::from_secs(rule.config.interval_secs);
            }
            let record = self.pins(&pinned);
            if written.as_ref().is_some_and(|w| *w != record) {
                match record.write(mirror.store.as_ref()).await {
                    Ok(()) => written = Some(record),
                    Err(e) => warn!(error = %e, "writing the prefetch pins"),
                }
            }
        }
    }

    /// Seed the pins of rules that have not completed a pass here from the record.
    fn take_up(&self, record: &Pins, pinned: &mut [Option<BTreeSet<String>>]) {
        for (slot, rule) in pinned.iter_mut().zip(&self.rules) {
            if rule.config.pin && slot.is_none() {
                *slot = record.by_rule.get(&rule.key()).cloned();
            }
        }
    }

    /// The pin record for what the pinning rules pin now.
    fn pins(&self, pinned: &[Option<BTreeSet<String>>]) -> Pins {
        let by_rule: std::collections::BTreeMap<String, BTreeSet<String>> = pinned
            .iter()
            .zip(&self.rules)
            .filter(|(_, rule)| rule.config.pin)
            .filter_map(|(blobs, rule)| Some((rule.key(), blobs.clone()?)))
            .collect();
        Pins {
            digests: by_rule.values().flatten().cloned().collect(),
            by_rule,
        }
    }

    /// One pass of rule `i`: the blobs its images name, once all were pulled.
    async fn pass(
        &self,
        mirror: &Mirror,
        i: usize,
        rule: &Rule,
    ) -> Result<BTreeSet<String>, PrefetchError> {
        let result = self.pull(mirror, i, rule).await;
        self.update(i, |s| {
            s.passes = s.passes.saturating_add(1);
            s.last_pass = Some(now_secs());
            s.paused = None;
            s.last_error = None;
            match &result {
                Err(e @ PrefetchError::Reserve { .. }) => s.paused = Some(e.to_string()),
                Err(e) => s.last_error = Some(e.to_string()),
                Ok(_) => {}
            }
        });
        result
    }

    async fn pull(
        &self,
        mirror: &Mirror,
        i: usize,
        rule: &Rule,
    ) -> Result<BTreeSet<String>, PrefetchError> {
        let not_found = |e| PrefetchError::Pull {
            what: format!("image {}", rule.config.image),
            source: e,
        };
        let upstream = mirror
            .upstreams
            .select(rule.image.registry.as_deref())
            .map_err(not_found)?;
        let upstream = &upstream;
        if upstream.takes_client_logins() {
            // Nobody's login to fetch with: each client's own goes to this upstream.
            return Err(not_found(crate::error::MirrorError::invalid(
                wharf_core::OciCode::Denied,
                format!(
                    "upstream {} takes each client's own login (credentials = \"client\"): nothing is prefetched from it",
                    upstream.name()
                ),
            )));
        }
        let mut repo: RepoName = rule.image.repository.parse().map_err(|e| {
            not_found(crate::error::MirrorError::invalid(
                wharf_core::OciCode::NameInvalid,
                format!("{e}"),
            ))
        })?;
        if upstream.is_docker_hub() {
            repo = repo.with_docker_hub_library().map_err(|e| {
                not_found(crate::error::MirrorError::invalid(
                    wharf_core::OciCode::NameInvalid,
                    format!("{e}"),
                ))
            })?;
        }
        let all = mirror
            .tags_lists
            .current(upstream, &repo)
            .await
            .map_err(PrefetchError::pull("the tag list"))?;
        let tags = rule.select(&all);
        self.update(i, |s| s.tags = tags.clone());
        let reserve = self.reserves.get(upstream.name()).copied().unwrap_or(0);
        let mut pull = Pull::new(mirror, upstream, repo, reserve);
        let result = async {
            for tag in &tags {
                // Tags come from the upstream: one it lists that is no valid tag is skipped.
                let Ok(tag) = tag.parse::<Tag>() else {
                    continue;
                };
                pull.tag(&tag, &rule.config.platforms, rule.config.referrers)
                    .await?;
            }
            Ok(())
        }
        .await;
        let (fetched, bytes) = (pull.fetched, pull.bytes);
        self.update(i, |s| {
            s.blobs_fetched = s.blobs_fetched.saturating_add(fetched);
            s.bytes_fetched = s.bytes_fetched.saturating_add(bytes);
        });
        if fetched > 0 {
            info!(image = %rule.config.image, tags = tags.len(), fetched, bytes, "prefetched");
        }
        result.map(|()| pull.blobs.iter().map(|d| d.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use wharf_core::config::PrefetchRule;

    use super::*;

    fn rule(image: &str, pin: bool) -> PrefetchRule {
        PrefetchRule {
            image: image.into(),
            tags: ".".into(),
            semver: String::new(),
            platforms: vec![],
            interval_secs: 60,
            referrers: false,
            pin,
            max_tags: 5,
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_failing_rule_keeps_its_pins_across_a_restart_and_others_are_replaced() {
        let config = Config {
            prefetch: vec![
                rule("team/a", true),
                rule("team/b", true),
                rule("team/c", false),
            ],
            ..Config::default()
        };
        let prefetcher = Prefetcher::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        // Before the restart: a pinned x, b pinned y; c pins nothing.
        let before = prefetcher.pins(&[Some(set(&["x"])), Some(set(&["y"])), Some(set(&["z"]))]);
        assert_eq!(before.digests, set(&["x", "y"]));
        // After it: a's passes fail, b completes with new content.
        let mut pinned = vec![None, None, None];
        prefetcher.take_up(&before, &mut pinned);
        pinned[1] = Some(set(&["y2"]));
        let after = prefetcher.pins(&pinned);
        assert_eq!(after.digests, set(&["x", "y2"]));
        // A rule removed from the config: its pins go with the next record.
        let fewer = Config {
            prefetch: vec![rule("team/b", true)],
            ..Config::default()
        };
        let prefetcher = Prefetcher::from_config(&fewer).unwrap_or_else(|e| panic!("{e}"));
        let mut pinned = vec![None];
        prefetcher.take_up(&after, &mut pinned);
        assert_eq!(prefetcher.pins(&pinned).digests, set(&["y2"]));
    }
}
