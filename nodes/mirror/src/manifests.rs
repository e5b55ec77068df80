//! Manifests: by digest they are immutable (fetched once, verified, kept); by tag they map to
//! a digest that is served without asking the upstream for `tag_ttl`, then revalidated with a
//! `HEAD` (free against Docker Hub's pull limit), with concurrent revalidations coalesced into
//! one upstream request. When the upstream is down or rate limiting, the last known digest of a
//! tag is served (stale) rather than an error.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wharf_core::{Digest, OciCode, RepoName, Tag};
use wharf_storage::{BlobStore, ObjectKey};
use wharf_upstream::UpstreamClient;

use crate::coalesce::Coalescer;
use crate::error::MirrorError;
use crate::negative::NegativeCache;
use crate::stats::CacheResult;
use crate::stats::Stats;

/// A manifest as served: the upstream's exact bytes and media type.
#[derive(Debug)]
pub struct CachedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    /// Its response header values, made (and checked) once: every request of a warm
    /// manifest shares them.
    pub headers: HeaderValues,
}

/// A cached manifest's `Docker-Content-Digest`, `ETag` and `Content-Type` values; `None` for a
/// media type that is no valid header value (the header is then left out).
#[derive(Debug)]
pub struct HeaderValues {
    pub digest: Option<HeaderValue>,
    /// The digest in quotes.
    pub etag: Option<HeaderValue>,
    pub media_type: Option<HeaderValue>,
}

impl CachedManifest {
    pub fn new(digest: Digest, media_type: String, body: Bytes) -> CachedManifest {
        let value = |text: String| HeaderValue::from_maybe_shared(Bytes::from(text)).ok();
        let headers = HeaderValues {
            digest: value(digest.to_string()),
            etag: value(format!("\"{digest}\"")),
            media_type: value(media_type.clone()),
        };
        CachedManifest {
            digest,
            media_type,
            body,
            headers,
        }
    }

    /// Stored form: `<media type>\n<bytes>`, one object so type and body can never disagree.
    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.media_type.len() + 1 + self.body.len());
        out.put_slice(self.media_type.as_bytes());
        out.put_u8(b'\n');
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(digest: Digest, stored: Bytes) -> Option<CachedManifest> {
        let newline = stored.iter().position(|b| *b == b'\n')?;
        let media_type = std::str::from_utf8(&stored[..newline]).ok()?.to_string();
        Some(CachedManifest::new(
            digest,
            media_type,
            stored.slice(newline + 1..),
        ))
    }
}

/// A manifest by tag, and how long the tag may be trusted before it is asked again.
pub struct TaggedManifest {
    pub manifest: Arc<CachedManifest>,
    pub cache: CacheResult,
    /// Seconds left of the tag TTL (0 when served stale): a CDN's `max-age`.
    pub fresh_for: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagKey {
    /// Shared with the upstream's client: a lookup copies no name.
    pub upstream: Arc<str>,
    pub repo: RepoName,
    pub tag: Tag,
}

impl TagKey {
    fn object_key(&self) -> ObjectKey {
        ObjectKey::Tag {
            upstream: self.upstream.to_string(),
            repo: self.repo.clone(),
            tag: self.tag.clone(),
        }
    }
}

/// What a tag pointed at when last asked; persisted so a restarted node can serve it stale.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TagRecord {
    digest: String,
    media_type: String,
    /// Seconds since the Unix epoch.
    fetched_at: u64,
}

/// A tag record in memory, with what answering it needs ready: its digest parsed, and (once
/// looked up) the manifest it names, held weakly — the manifest cache alone decides how long a
/// manifest stays in memory; while it does, a warm tag hit is one lookup, not two.
struct KnownTag {
    record: TagRecord,
    digest: Option<Digest>,
    manifest: Mutex<Weak<CachedManifest>>,
    /// Hits answered through `manifest`: every [`TOUCH_EVERY`]th goes through the manifest
    /// cache too, so its eviction order sees that the manifest is in use.
    hits: AtomicU32,
}

/// How often a tag hit also reads its manifest through the manifest cache.
const TOUCH_EVERY: u32 = 16;

impl KnownTag {
    fn new(record: TagRecord) -> KnownTag {
        KnownTag {
            digest: record.digest.parse().ok(),
            record,
            manifest: Mutex::new(Weak::new()),
            hits: AtomicU32::new(0),
        }
    }

    /// The manifest, while the manifest cache holds it, unless this hit is one to touch it.
    fn held(&self) -> Option<Arc<CachedManifest>> {
        let hit = self.hits.fetch_add(1, Ordering::Relaxed);
        if hit % TOUCH_EVERY == TOUCH_EVERY - 1 {
            return None;
        }
        self.manifest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }

    fn hold(&self, manifest: &Arc<CachedManifest>) {
        *self.manifest.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(manifest);
    }
}

/// Memory for tag records (tag → digest), by their bytes: some 200,000 tags.
const TAG_RECORD_BYTES: u64 = 48 * 1024 * 1024;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct ManifestService {
    store: Arc<dyn BlobStore>,
    by_digest: Cache<Digest, Arc<CachedManifest>>,
    /// Shared records: a hit clones a pointer, not the record's strings.
    tags: Cache<TagKey, Arc<KnownTag>>,
    /// Keyed by where it is fetched from too: one repository's refusal is not another's.
    digest_flights: Coalescer<(Digest, String, RepoName), Arc<CachedManifest>>,
    tag_flights: Coalescer<TagKey, TagRecord>,
    tag_ttl: Duration,
    stats: Arc<Stats>,
    negative: Arc<NegativeCache>,
}

impl ManifestService {
    pub fn new(
        store: Arc<dyn BlobStore>,
        memory_bytes: u64,
        tag_ttl: Duration,
        stats: Arc<Stats>,
        negative: Arc<NegativeCache>,
        fetches: Arc<crate::slots::DownloadSlots>,
    ) -> ManifestService {
        let by_digest = Cache::builder()
            .max_capacity(memory_bytes)
            .weigher(|_: &Digest, m: &Arc<CachedManifest>| {
                // The body, the type twice (as a string and a header value), two digests' text.
                u32::try_from(m.body.len() + 2 * m.media_type.len() + 320).unwrap_or(u32::MAX)
            })
            .build();
        ManifestService {
            store,
            by_digest,
            tags: Cache::builder()
                .max_capacity(TAG_RECORD_BYTES)
                .weigher(|key: &TagKey, known: &Arc<KnownTag>| {
                    let bytes = key.upstream.len()
                        + key.repo.as_str().len()
                        + key.tag.as_str().len()
                        + 2 * known.record.digest.len()
                        + known.record.media_type.len()
                        + 128;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
            digest_flights: Coalescer::bounded(fetches.clone()),
            tag_flights: Coalescer::bounded(fetches),
            tag_ttl,
            stats,
            negative,
        }
    }

    /// A manifest by digest: cached, or fetched once and verified.
    pub async fn by_digest(
        self: &Arc<Self>,
        upstream: &Arc<UpstreamClient>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(Arc<CachedManifest>, CacheResult), MirrorError> {
        if let Some(m) = self.cached(digest).await {
            return Ok((m, CacheResult::Hit));
        }
        let what = format!("manifest:{digest}");
        if let Some(missing) = self.negative.get(upstream.name(), repo, &what).await {
            return Err(missing);
        }
        let this = self.clone();
        let key = (digest.clone(), upstream.name().to_string(), repo.clone());
        let (upstream_c, repo_c, wanted) = (upstream.clone(), repo.clone(), digest.clone());
        let (result, joined) = self
            .digest_flights
            .run(key, move || async move {
                let (upstream, repo) = (upstream_c, repo_c);
                this.stats
                    .upstream_manifest_fetches
                    .fetch_add(1, Ordering::Relaxed);
                let response = upstream
                    .get_manifest(&repo, &wanted.to_string())
                    .await
                    .map_err(|e| {
                        MirrorError::upstream(upstream.name(), e, OciCode::ManifestUnknown)
                    })?;
                if !wanted.matches(&response.body) {
                    this.stats.digest_mismatches.fetch_add(1, Ordering::Relaxed);
                    warn!(digest = %wanted, upstream = upstream.name(), "manifest failed verification; not cached");
                    return Err(MirrorError::DigestMismatch {
                        upstream: upstream.name().to_string(),
                        what: "a manifest".to_string(),
                    });
                }
                Ok(this
                    .keep(CachedManifest::new(
                        wanted,
                        response.media_type,
                        response.body,
                    ))
                    .await)
            })
            .await;
        if let Err(e) = &result {
            self.negative
                .remember(upstream.name(), repo, &what, e)
                .await;
        }
        let cache = if joined {
            CacheResult::Coalesced
        } else {
            CacheResult::Miss
        };
        result.map(|m| (m, cache))
    }

    /// A manifest by tag, revalidated after the TTL, stale when the upstream cannot answer.
    /// Takes the names by value: a warm hit makes no copy of them.
    pub async fn by_tag(
        self: &Arc<Self>,
        upstream: &Arc<UpstreamClient>,
        repo: RepoName,
        tag: Tag,
    ) -> Result<TaggedManifest, MirrorError> {
        let key = TagKey {
            upstream: upstream.shared_name(),
            repo,
            tag,
        };
        let (repo, tag) = (&key.repo, &key.tag);
        let known = self.known_tag(&key).await;
        let what = || format!("tag:{tag}");
        if known.is_none()
            && let Some(missing) = self.negative.get(upstream.name(), repo, &what()).await
        {
            return Err(missing);
        }
        if let Some(entry) = &known
            && now_secs().saturating_sub(entry.record.fetched_at) < self.tag_ttl.as_secs()
            && let Some(m) = self.cached_entry(entry).await
        {
            return Ok(self.tagged(m, CacheResult::Hit, &entry.record));
        }
        let known = known.map(|entry| Arc::new(entry.record.clone()));
        let this = self.clone();
        let (upstream_c, known_c) = (upstream.clone(), known.as_deref().cloned());
        let key_c = key.clone();
        let (result, joined) = self
            .tag_flights
            .run(key.clone(), move || async move {
                this.revalidate(upstream_c, key_c, known_c).await
            })
            .await;
        // Revalidated with the same digest: still a hit; a new digest: a miss.
        let mut cache = match (&result, &known) {
            _ if joined => CacheResult::Coalesced,
            (Ok(fresh), Some(old)) if fresh.digest == old.digest => CacheResult::Hit,
            _ => CacheResult::Miss,
        };
        let record = match result {
            Ok(record) => Arc::new(record),
            Err(e) if is_outage(&e) && known.is_some() => {
                let Some(record) = known else {
                    return Err(e);
                };
                self.stats.stale_tags_served.fetch_add(1, Ordering::Relaxed);
                cache = CacheResult::Stale;
                warn!(%repo, %tag, error = %e, "upstream unavailable; serving cached tag");
                record
            }
            Err(e) => {
                if known.is_none() {
                    self.negative
                        .remember(upstream.name(), repo, &what(), &e)
                        .await;
                }
                return Err(e);
            }
        };
        match self.cached_record(&record).await {
            Some(m) => Ok(self.tagged(m, cache, &record)),
            None => {
                let digest: Digest = record
                    .digest
                    .parse()
                    .map_err(|_| MirrorError::internal("tag record holds a malformed digest"))?;
                let (m, cache) = self.by_digest(upstream, repo, &digest).await?;
                Ok(self.tagged(m, cache, &record))
            }
        }
    }

    fn tagged(
        &self,
        manifest: Arc<CachedManifest>,
        cache: CacheResult,
        record: &TagRecord,
    ) -> TaggedManifest {
        let age = now_secs().saturating_sub(record.fetched_at);
        TaggedManifest {
            manifest,
            cache,
            fresh_for: self.tag_ttl.as_secs().saturating_sub(age),
        }
    }

    async fn revalidate(
        &self,
        upstream: Arc<UpstreamClient>,
        key: TagKey,
        known: Option<TagRecord>,
    ) -> Result<TagRecord, MirrorError> {
        let map_err = |e| MirrorError::upstream(upstream.name(), e, OciCode::ManifestUnknown);
        if let Some(record) = known {
            self.stats.tag_revalidations.fetch_add(1, Ordering::Relaxed);
            let head = upstream
                .head_manifest(&key.repo, key.tag.as_str())
                .await
                .map_err(map_err)?;
            let unchanged = head.digest.is_some_and(|d| d.to_string() == record.digest);
            if unchanged && self.cached_record(&record).await.is_some() {
                let fresh = TagRecord {
                    fetched_at: now_secs(),
                    ..record
                };
                self.remember_tag(&key, fresh.clone()).await;
                return Ok(fresh);
            }
        }
        self.stats
            .upstream_manifest_fetches
            .fetch_add(1, Ordering::Relaxed);
        let response = upstream
            .get_manifest(&key.repo, key.tag.as_str())
            .await
            .map_err(map_err)?;
        let digest = match response.digest {
            Some(claimed) if claimed.matches(&response.body) => claimed,
            Some(claimed) => {
                self.stats.digest_mismatches.fetch_add(1, Ordering::Relaxed);
                warn!(%claimed, repo = %key.repo, tag = %key.tag, "manifest does not match the upstream's own digest header; not cached");
                return Err(MirrorError::DigestMismatch {
                    upstream: upstream.name().to_string(),
                    what: "a manifest".to_string(),
                });
            }
            None => Digest::sha256_of(&response.body),
        };
        let manifest = self
            .keep(CachedManifest::new(
                digest,
                response.media_type,
                response.body,
            ))
            .await;
        let record = TagRecord {
            digest: manifest.digest.to_string(),
            media_type: manifest.media_type.clone(),
            fetched_at: now_secs(),
        };
        info!(repo = %key.repo, tag = %key.tag, digest = %record.digest, "tag resolved upstream");
        self.remember_tag(&key, record.clone()).await;
        Ok(record)
    }

    async fn known_tag(&self, key: &TagKey) -> Option<Arc<KnownTag>> {
        if let Some(known) = self.tags.get(key).await {
            return Some(known);
        }
        let stored = match self.store.read_small(&key.object_key()).await {
            Ok(stored) => stored?,
            Err(e) => {
                warn!(error = %e, "reading a tag record failed");
                return None;
            }
        };
        let known = Arc::new(KnownTag::new(serde_json::from_slice(&stored).ok()?));
        self.tags.insert(key.clone(), known.clone()).await;
        Some(known)
    }

    async fn remember_tag(&self, key: &TagKey, record: TagRecord) {
        match serde_json::to_vec(&record) {
            Ok(json) => {
                if let Err(e) = self.store.put_small(&key.object_key(), json.into()).await {
                    warn!(error = %e, "persisting a tag record failed");
                }
            }
            Err(e) => warn!(error = %e, "encoding a tag record failed"),
        }
        self.tags
            .insert(key.clone(), Arc::new(KnownTag::new(record)))
            .await;
    }

    async fn cached_record(&self, record: &TagRecord) -> Option<Arc<CachedManifest>> {
        self.cached(&record.digest.parse().ok()?).await
    }

    /// The manifest a tag in memory names: through the tag's own pointer while the manifest
    /// cache holds it, else from that cache or the store (and the pointer set).
    async fn cached_entry(&self, known: &KnownTag) -> Option<Arc<CachedManifest>> {
        if let Some(m) = known.held() {
            return Some(m);
        }
        let m = self.cached(known.digest.as_ref()?).await?;
        known.hold(&m);
        Some(m)
    }

    /// From memory, else from the store (then kept in memory).
    async fn cached(&self, digest: &Digest) -> Option<Arc<CachedManifest>> {
        if let Some(m) = self.by_digest.get(digest).await {
            return Some(m);
        }
        let stored = match self
            .store
            .read_small(&ObjectKey::Manifest(digest.clone()))
            .await
        {
            Ok(stored) => stored?,
            Err(e) => {
                warn!(%digest, error = %e, "reading a cached manifest failed");
                return None;
            }
        };
        let manifest = Arc::new(CachedManifest::decode(digest.clone(), stored)?);
        self.by_digest
            .insert(digest.clone(), manifest.clone())
            .await;
        Some(manifest)
    }

    /// Store a verified manifest and keep it in memory; a store failure only costs caching.
    async fn keep(&self, manifest: CachedManifest) -> Arc<CachedManifest> {
        let key = ObjectKey::Manifest(manifest.digest.clone());
        if let Err(e) = self.store.put_small(&key, manifest.encode()).await {
            warn!(digest = %manifest.digest, error = %e, "storing a manifest failed; served uncached");
        }
        let manifest = Arc::new(manifest);
        self.by_digest
            .insert(manifest.digest.clone(), manifest.clone())
            .await;
        manifest
    }
}

/// The upstream could not answer (down, failing, rate limiting): stale content beats an error.
pub fn is_outage(e: &MirrorError) -> bool {
    e.upstream_unavailable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let m = CachedManifest::new(
            Digest::sha256_of(b"{}"),
            wharf_core::media::OCI_INDEX.into(),
            Bytes::from_static(b"{\n}"),
        );
        let back = CachedManifest::decode(m.digest.clone(), m.encode()).unwrap();
        assert_eq!(back.media_type, m.media_type);
        assert_eq!(back.body, m.body);
    }

    #[test]
    fn a_tag_holds_its_manifest_only_while_the_cache_does_and_sends_every_16th_hit_through_it() {
        let digest = Digest::sha256_of(b"{}");
        let known = KnownTag::new(TagRecord {
            digest: digest.to_string(),
            media_type: wharf_core::media::OCI_INDEX.into(),
            fetched_at: 0,
        });
        assert_eq!(known.digest.as_ref(), Some(&digest));
        assert!(known.held().is_none(), "nothing held yet");
        let manifest = Arc::new(CachedManifest::new(
            digest,
            wharf_core::media::OCI_INDEX.into(),
            Bytes::from_static(b"{}"),
        ));
        known.hold(&manifest);
        let through = (0..32).filter(|_| known.held().is_none()).count();
        assert_eq!(
            through, 2,
            "every 16th hit reads through the manifest cache"
        );
        drop(manifest);
        assert!(
            (0..16).all(|_| known.held().is_none()),
            "a weak pointer: only the manifest cache keeps a manifest in memory"
        );
    }
}
