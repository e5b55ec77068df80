//! Pre-warming: `[[prefetch]]` rules keep chosen images cached before any client asks.
//!
//! Every rule's interval, the node that runs prefetching (a single node; in a cluster, the Raft
//! leader only, so the cluster syncs once) lists the image's tags at the upstream, selects the
//! matching ones ([`rule`]) and pulls them in-process ([`pull`]) through the same services as a
//! client pull, skipping blobs already cached. It pauses while the upstream's pull allowance is
//! at the reserve kept for clients. Blobs of rules with `pin = true` are written to the pin
//! record, which eviction on every node honours; a rule's pins are replaced by each complete
//! pass, so removing a rule (or a tag leaving it) unpins its blobs.

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
        // Per pinning rule, the blobs of its latest complete pass; what this node last wrote.
        let mut pinned: Vec<Option<BTreeSet<String>>> = vec![None; self.rules.len()];
        let mut written: Option<BTreeSet<String>> = None;
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
            // Until every pinning rule completed a pass, its earlier pins (in the record)
            // stay: a restart must not unpin.
            if pinned
                .iter()
                .zip(&self.rules)
                .any(|(p, r)| r.config.pin && p.is_none())
            {
                continue;
            }
            let pins: BTreeSet<String> = pinned.iter().flatten().flatten().cloned().collect();
            if written.is_none() {
                // Newly running here: what the record holds (nodes without rules write
                // nothing unless a record of removed rules is left to clear).
                written = Pins::read(mirror.store.as_ref())
                    .await
                    .ok()
                    .map(|p| p.digests);
            }
            if written.as_ref() != Some(&pins) {
                let record = Pins { digests: pins };
                match record.write(mirror.store.as_ref()).await {
                    Ok(()) => written = Some(record.digests),
                    Err(e) => warn!(error = %e, "writing the prefetch pins"),
                }
            }
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
        let mut repo: RepoName = rule.image.repository.parse().map_err(|e| {
            not_found(crate::error::ApiError::new(
                wharf_core::OciCode::NameInvalid,
                format!("{e}"),
            ))
        })?;
        if upstream.is_docker_hub() {
            repo = repo.with_docker_hub_library().map_err(|e| {
                not_found(crate::error::ApiError::new(
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
