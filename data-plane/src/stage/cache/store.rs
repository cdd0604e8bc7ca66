//! The node's response store, shared by every route and bounded in bytes
//! (moka, weighed by what each entry holds, least recently used out
//! first). An entry is a *resource*: every stored variant (by `Vary`) of
//! one key, so a purge of a URL removes them all at once. Entries live as
//! long as they can be of use ([`Freshness::useful_for`]) and are carried
//! across config versions while their route's scope (route and cache
//! policy) stays; a changed scope's entries are dropped at the swap.
//!
//! Bodies being copied for storing count against a budget of their own, a
//! quarter of the store's, so a burst of large misses cannot hold more
//! than that beyond the store. A store that started before a purge is
//! dropped (the purge may have been meant for it), and so is a refresh.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName};
use moka::notification::RemovalCause;
use portico_shared::model::policy::cache::{CachePurge, PurgeTarget, QueryKey};

use super::flight::Flights;
use super::freshness::Freshness;
use super::key::{Key, normalize_query};

/// A URL of a route's scope (scope, host, path, query as keyed), to find
/// every stored resource of it when an unsafe method changes it.
pub type UrlId = [u8; 32];
use super::metrics::CacheMetrics;

/// Most `Vary` variants kept of one resource; the oldest goes first.
const MAX_VARIANTS: usize = 32;
/// What an entry costs beyond its body and headers.
const ENTRY_OVERHEAD: usize = 256;

/// Every route's stored responses on this node.
pub struct ResponseCache {
    entries: moka::sync::Cache<Key, Arc<Resource>>,
    capacity: u64,
    /// Bytes held, counted at once (moka's own count lags until its
    /// maintenance runs).
    held: Arc<AtomicU64>,
    /// Bytes of bodies being copied for storing.
    copying: AtomicU64,
    /// The keys stored for each URL.
    urls: Arc<Mutex<HashMap<UrlId, Vec<Key>>>>,
    /// Purges applied so far: a store or refresh that began before one is dropped.
    generation: AtomicU64,
    pub(super) flights: Flights,
    /// The purge cursor plus one (the last purge applied, or the control
    /// plane's last [`ResponseCache::purge_cursor`]); 0 while there is none.
    last_purge: AtomicU64,
    /// Scopes of the config being served (entries of others are dropped).
    scopes: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("capacity", &self.capacity).field("entries", &self.entries.entry_count()).finish()
    }
}

/// The stored variants of one key, with what purges match on.
#[derive(Debug)]
pub struct Resource {
    pub scope: [u8; 32],
    pub url: UrlId,
    /// The client's host (as routes see it), path and query (as the key took it).
    pub host: Box<str>,
    pub path: Box<str>,
    pub query: Option<Box<str>>,
    /// How the route's key takes a query (to compare a purged URL's).
    pub query_rule: Arc<QueryKey>,
    pub metrics: Arc<CacheMetrics>,
    pub variants: Vec<Arc<Variant>>,
}

/// One stored response.
#[derive(Debug)]
pub struct Variant {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request's value (every line, normalized) of each header the
    /// response varies on; `None` where the request had none.
    pub vary: VaryValues,
    /// From the policy's tag header.
    pub tags: Box<[Box<str>]>,
    pub freshness: Freshness,
    pub stored_at: Instant,
}

impl Variant {
    /// Its age now (RFC 9111 §4.2.3's `current_age`).
    pub fn age(&self, now: Instant) -> Duration {
        self.freshness.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub fn validators(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// Whether it answers a request with `headers` by its `Vary` values.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| vary_value(headers, name).as_deref() == value.as_deref())
    }

    fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
        self.body.len() + headers + ENTRY_OVERHEAD
    }

    fn same_variant(&self, other: &Variant) -> bool {
        self.vary == other.vary
    }

    fn useful_until(&self) -> Instant {
        self.stored_at + self.freshness.useful_for(self.validators())
    }
}

impl Resource {
    /// The same resource holding `variants`.
    fn with_variants(&self, variants: Vec<Arc<Variant>>) -> Self {
        Self {
            scope: self.scope,
            url: self.url,
            host: self.host.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            query_rule: self.query_rule.clone(),
            metrics: self.metrics.clone(),
            variants,
        }
    }

    fn weight(&self) -> u32 {
        let total: usize = self.variants.iter().map(|v| v.weight()).sum::<usize>() + self.path.len() + self.host.len();
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// Whether a purge of a URL or prefix `target` reaches it.
    fn targeted_by(&self, target: &PurgeTarget, whole_url: bool) -> bool {
        if target.host.as_deref().is_some_and(|host| host != &*self.host) {
            return false;
        }
        if whole_url {
            return *self.path == target.path
                && normalize_query(&self.query_rule, target.query.as_deref()).as_deref() == self.query.as_deref();
        }
        // `/users` and `/users/` both take `/users` and what is under it, never `/usersx`.
        let prefix = target.path.trim_end_matches('/');
        self.path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// The request's value of a header a response varies on, as bytes: every
/// line, split at commas and trimmed, joined again with `,` (so `a, b` on
/// one line and `a` then `b` on two are the same value, §4.1).
pub fn vary_value(headers: &HeaderMap, name: &HeaderName) -> Option<Box<[u8]>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let parts: Vec<&[u8]> =
        lines.flat_map(|line| line.as_bytes().split(|&b| b == b',')).map(<[u8]>::trim_ascii).filter(|part| !part.is_empty()).collect();
    Some(parts.join(&b","[..]).into())
}

/// A `Vary` of `*`, or naming something that is not a header: the
/// response varies on more than the cache can match.
#[derive(Debug)]
pub struct VaryStar;

/// The `Vary` values a variant answers: each header's name and the
/// request's value of it.
pub type VaryValues = Box<[(HeaderName, Option<Box<[u8]>>)]>;

/// The header names a response varies on, from every `Vary` line
/// (lowercase, sorted, once each).
pub fn vary_names(headers: &HeaderMap) -> Result<Vec<HeaderName>, VaryStar> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        for name in line.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|n| !n.is_empty()) {
            if name == b"*" {
                return Err(VaryStar);
            }
            names.push(HeaderName::from_bytes(&name.to_ascii_lowercase()).map_err(|_| VaryStar)?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// What a lookup found under a key.
pub enum Found {
    /// A variant that answers the request.
    Variant(Arc<Variant>),
    /// Variants, none for this request's `Vary` values.
    VaryMiss,
    /// A variant the request may not use (it carries `Authorization`).
    NotForRequest,
    /// Nothing under the key.
    UriMiss,
}

/// Ages entries by their variants' usefulness.
struct UsefulLife;

impl moka::Expiry<Key, Arc<Resource>> for UsefulLife {
    fn expire_after_create(&self, _: &Key, resource: &Arc<Resource>, created_at: Instant) -> Option<Duration> {
        resource.variants.iter().map(|v| v.useful_until().saturating_duration_since(created_at)).max()
    }

    fn expire_after_update(&self, key: &Key, resource: &Arc<Resource>, updated_at: Instant, _: Option<Duration>) -> Option<Duration> {
        self.expire_after_create(key, resource, updated_at)
    }
}

impl ResponseCache {
    /// A store of at most `capacity` bytes (0: nothing is stored).
    pub fn new(capacity: u64) -> Self {
        let held = Arc::new(AtomicU64::new(0));
        let urls: Arc<Mutex<HashMap<UrlId, Vec<Key>>>> = Arc::default();
        let (released, forgotten) = (held.clone(), urls.clone());
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|_, resource: &Arc<Resource>| resource.weight())
            .expire_after(UsefulLife)
            .support_invalidation_closures()
            .eviction_listener(move |key: Arc<Key>, resource: Arc<Resource>, cause| {
                released.fetch_sub(u64::from(resource.weight()), Ordering::Relaxed);
                resource.metrics.stored_bytes.decrement(f64::from(resource.weight()));
                if cause != RemovalCause::Replaced {
                    let mut urls = forgotten.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(keys) = urls.get_mut(&resource.url) {
                        keys.retain(|k| k != &*key);
                        if keys.is_empty() {
                            urls.remove(&resource.url);
                        }
                    }
                }
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    resource.metrics.evicted(cause == RemovalCause::Size);
                }
            })
            .build();
        Self {
            entries,
            capacity,
            held,
            copying: AtomicU64::new(0),
            urls,
            generation: AtomicU64::new(0),
            flights: Flights::default(),
            last_purge: AtomicU64::new(0),
            scopes: Mutex::default(),
        }
    }

    /// Whether anything can be stored at all (`--cache-memory-mb 0` stores nothing).
    pub fn stores(&self) -> bool {
        self.capacity > 0
    }

    /// The variant of `key` that answers a request with `headers`.
    pub fn find(&self, key: &Key, headers: &HeaderMap, authorized: bool) -> Found {
        let Some(resource) = self.entries.get(key) else { return Found::UriMiss };
        match resource.variants.iter().rev().find(|variant| variant.matches(headers)) {
            Some(variant) if !authorized || variant.freshness.answers_authorized => Found::Variant(variant.clone()),
            Some(_) => Found::NotForRequest,
            None => Found::VaryMiss,
        }
    }

    /// The purges applied so far; a store or refresh begun at one
    /// generation is dropped at another.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores `variant` under `key`, replacing the one with the same
    /// `Vary` values; `resource` brings what purges match on. Nothing is
    /// stored when a purge came since `began` (a [`Self::generation`]).
    pub fn store(&self, key: Key, resource: Resource, variant: Variant, began: u64) {
        if !self.scopes.lock().unwrap_or_else(PoisonError::into_inner).contains(&resource.scope) || self.generation() != began {
            // Stored after its route's config was replaced, or after a purge: of no use.
            return;
        }
        let url = resource.url;
        let variant = Arc::new(variant);
        let mut stored = None;
        self.entries.entry(key).and_compute_with(|existing| {
            let mut variants: Vec<Arc<Variant>> = existing
                .map(|entry| entry.into_value().variants.iter().filter(|v| !v.same_variant(&variant)).cloned().collect())
                .unwrap_or_default();
            if variants.len() >= MAX_VARIANTS {
                variants.remove(0);
            }
            variants.push(variant.clone());
            let resource = Arc::new(Resource { variants, ..resource });
            stored = Some(resource.clone());
            moka::ops::compute::Op::Put(resource)
        });
        if let Some(resource) = stored {
            self.added(&resource);
        }
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = urls.entry(url).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// Puts `resource` in place of `key`'s.
    fn replace(&self, key: Key, resource: Resource) {
        let resource = Arc::new(resource);
        self.entries.insert(key, resource.clone());
        self.added(&resource);
    }

    /// Counts `resource` as held (the old one it replaced, if any, was
    /// counted out by the eviction listener) and evicts now rather than at
    /// some later write, so the bound holds (a round evicts in batches, so
    /// a few may be needed).
    fn added(&self, resource: &Resource) {
        let weight = resource.weight();
        resource.metrics.stored_bytes.increment(f64::from(weight));
        self.held.fetch_add(u64::from(weight), Ordering::Relaxed);
        for _ in 0..8 {
            if self.held.load(Ordering::Relaxed) <= self.capacity {
                break;
            }
            self.entries.run_pending_tasks();
        }
    }

    /// Removes every stored response of `url` (after an unsafe method
    /// changed it, RFC 9111 §4.4); how many resources.
    pub fn invalidate_url(&self, url: &UrlId) -> usize {
        let keys = self.urls.lock().unwrap_or_else(PoisonError::into_inner).remove(url).unwrap_or_default();
        for key in &keys {
            self.entries.invalidate(key);
        }
        keys.len()
    }

    /// Sets `bytes` aside for a body being copied; `false` when the copy
    /// budget (a quarter of the store) is spent.
    pub fn reserve_copy(&self, bytes: u64) -> bool {
        let budget = self.capacity / 4;
        self.copying
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| held.checked_add(bytes).filter(|total| *total <= budget))
            .is_ok()
    }

    /// Gives back bytes set aside with [`Self::reserve_copy`].
    pub fn release_copy(&self, bytes: u64) {
        self.copying.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Replaces `key`'s `variant` by one with `headers` (merged from a
    /// `304`) whose clock restarts with `freshness` (RFC 9111 §4.3.4); the
    /// refreshed variant, `None` when the entry is gone meanwhile or a
    /// purge came since `began`.
    pub fn refresh(&self, key: &Key, variant: &Arc<Variant>, headers: HeaderMap, freshness: Freshness, began: u64) -> Option<Arc<Variant>> {
        if self.generation() != began {
            return None;
        }
        let resource = self.entries.get(key)?;
        let refreshed = Arc::new(Variant {
            status: variant.status,
            headers,
            body: variant.body.clone(),
            vary: variant.vary.clone(),
            tags: variant.tags.clone(),
            freshness,
            stored_at: Instant::now(),
        });
        let variants = resource.variants.iter().map(|v| if Arc::ptr_eq(v, variant) { refreshed.clone() } else { v.clone() }).collect();
        self.replace(*key, resource.with_variants(variants));
        Some(refreshed)
    }

    /// Applies purge `id`: removes every variant it reaches; how many.
    /// The control plane sends each purge once and in order (a node that
    /// reconnects says which it applied last), so every one is applied,
    /// even one whose id is lower than the last (a replaced store counts
    /// from 1 again).
    pub fn purge(&self, id: u64, purge: &CachePurge) -> u64 {
        self.last_purge.store(id.saturating_add(1), Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Checked by the caller, as the admin API checked it.
        let Ok(target) = purge.target() else { return 0 };
        let mut removed = 0;
        for (key, resource) in self.entries.iter() {
            let kept: Vec<Arc<Variant>> = match (&target, purge) {
                (Some(target), CachePurge::Url(_)) if resource.targeted_by(target, true) => Vec::new(),
                (Some(target), CachePurge::Prefix(_)) if resource.targeted_by(target, false) => Vec::new(),
                (None, CachePurge::Tag(tag)) => {
                    resource.variants.iter().filter(|v| !v.tags.iter().any(|t| **t == **tag)).cloned().collect()
                }
                _ => continue,
            };
            removed += (resource.variants.len() - kept.len()) as u64;
            if kept.is_empty() {
                self.entries.invalidate(&*key);
            } else if kept.len() < resource.variants.len() {
                self.replace(*key, resource.with_variants(kept));
            }
        }
        self.entries.run_pending_tasks();
        removed
    }

    /// The purge cursor: the last purge applied or cursor given, `None`
    /// while there is none (the cache is new).
    pub fn last_purge(&self) -> Option<u64> {
        self.last_purge.load(Ordering::SeqCst).checked_sub(1)
    }

    /// The control plane's purge cursor: every purge up to `id` is behind
    /// this node (it will not be sent them); nothing is removed for them.
    /// The first cursor drops what was stored before it, though: responses
    /// fetched before the node connected (served from its config cache)
    /// may predate purges it will never be sent.
    pub fn purge_cursor(&self, id: u64) {
        if self.last_purge.swap(id.saturating_add(1), Ordering::SeqCst) == 0 {
            // As a purge of everything: stores in flight are dropped too.
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.entries.invalidate_all();
            self.entries.run_pending_tasks();
        }
    }

    /// The config now served has these scopes: entries of any other are
    /// of no more use and go.
    pub fn keep_scopes(&self, scopes: HashSet<[u8; 32]>) {
        let mut current = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        let gone = current.iter().any(|scope| !scopes.contains(scope));
        *current = scopes.clone();
        drop(current);
        if gone {
            let dropped = self.entries.invalidate_entries_if(move |_, resource| !scopes.contains(&resource.scope));
            if let Err(error) = dropped {
                tracing::warn!(error = %error, "could not drop the cache entries of replaced policies");
            }
        }
    }
}

/// The tags a response carries in `name` (split at commas and spaces).
pub fn tags(headers: &HeaderMap, name: &HeaderName) -> Box<[Box<str>]> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()).map(Box::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::cache::freshness::{Defaults, assess};
    use http::HeaderValue;
    use sha2::Digest;
    use std::time::SystemTime;

    const SCOPE: [u8; 32] = [3; 32];

    fn cache() -> ResponseCache {
        let cache = ResponseCache::new(1 << 20);
        cache.keep_scopes([SCOPE].into());
        cache
    }

    fn resource(path: &str, query: Option<&str>, rule: QueryKey) -> Resource {
        Resource {
            scope: SCOPE,
            url: sha2::Sha256::digest(path.as_bytes()).into(),
            host: "api.example.com".into(),
            path: path.into(),
            query: query.map(Into::into),
            query_rule: Arc::new(rule),
            metrics: Arc::new(CacheMetrics::new(&Arc::from("r"))),
            variants: Vec::new(),
        }
    }

    fn variant(language: &str, tags: &[&str]) -> Variant {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        let defaults = Defaults { ttl: None, heuristic: false, stale_while_revalidate: Duration::ZERO, stale_if_error: Duration::ZERO };
        let now = SystemTime::now();
        Variant {
            status: StatusCode::OK,
            headers: headers.clone(),
            body: Bytes::from_static(b"body"),
            vary: vec![(header::ACCEPT_LANGUAGE, Some(language.as_bytes().into()))].into(),
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
            freshness: assess(&headers, false, &defaults, now, now).unwrap(),
            stored_at: Instant::now(),
        }
    }

    fn request(language: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(language).unwrap());
        headers
    }

    /// Stores as a fetch begun now would.
    fn put(cache: &ResponseCache, key: Key, resource: Resource, variant: Variant) {
        cache.store(key, resource, variant, cache.generation());
    }

    fn stored(cache: &ResponseCache, key: Key, language: &str) -> bool {
        matches!(cache.find(&key, &request(language), false), Found::Variant(_))
    }

    #[test]
    fn vary_values_are_the_same_over_one_line_or_several() {
        let mut one = HeaderMap::new();
        one.insert(header::ACCEPT, HeaderValue::from_static("a, b"));
        let mut two = HeaderMap::new();
        two.append(header::ACCEPT, HeaderValue::from_static("a"));
        two.append(header::ACCEPT, HeaderValue::from_static(" b"));
        assert_eq!(vary_value(&one, &header::ACCEPT), vary_value(&two, &header::ACCEPT));
        assert_eq!(vary_value(&HeaderMap::new(), &header::ACCEPT), None);
        let mut vary = HeaderMap::new();
        vary.append(header::VARY, HeaderValue::from_static("Accept-Language, accept"));
        vary.append(header::VARY, HeaderValue::from_static("Accept"));
        assert_eq!(vary_names(&vary).unwrap(), [header::ACCEPT, header::ACCEPT_LANGUAGE]);
        vary.append(header::VARY, HeaderValue::from_static("*"));
        assert!(vary_names(&vary).is_err());
    }

    #[test]
    fn a_url_purge_removes_every_variant_and_compares_the_query_as_the_route_keys_it() {
        let cache = cache();
        put(&cache, [1; 32], resource("/users/7", Some("a=1&b=2"), QueryKey::Sorted), variant("de", &[]));
        put(&cache, [1; 32], resource("/users/7", Some("a=1&b=2"), QueryKey::Sorted), variant("fr", &[]));
        put(&cache, [2; 32], resource("/users/7", None, QueryKey::Sorted), variant("de", &[]));
        assert!(stored(&cache, [1; 32], "de") && stored(&cache, [1; 32], "fr"));
        assert_eq!(cache.purge(1, &CachePurge::Url("/users/7?b=2&a=1".into())), 2, "both variants, the query sorted");
        assert!(!stored(&cache, [1; 32], "de") && !stored(&cache, [1; 32], "fr"));
        assert!(stored(&cache, [2; 32], "de"), "another query is another URL");
        assert_eq!(cache.purge(2, &CachePurge::Url("https://other.example.com/users/7".into())), 0, "another host");
        assert_eq!(cache.purge(3, &CachePurge::Url("http://API.example.com/users/7".into())), 1);
    }

    #[test]
    fn a_prefix_purge_stops_at_segment_boundaries() {
        let cache = cache();
        for (i, path) in ["/users", "/users/7", "/users/7/orders", "/usersx"].iter().enumerate() {
            put(&cache, [u8::try_from(i).unwrap(); 32], resource(path, None, QueryKey::All), variant("de", &[]));
        }
        assert_eq!(cache.purge(1, &CachePurge::Prefix("/users/7".into())), 2);
        assert_eq!(cache.purge(2, &CachePurge::Prefix("/users".into())), 1, "not /usersx");
        assert!(stored(&cache, [3; 32], "de"));
        assert_eq!(cache.purge(3, &CachePurge::Prefix("/".into())), 1, "everything");
    }

    #[test]
    fn a_tag_purge_removes_only_the_tagged_variants() {
        let cache = cache();
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &["product-7", "list"]));
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("fr", &["product-8"]));
        assert_eq!(cache.purge(5, &CachePurge::Tag("product-7".into())), 1);
        assert!(!stored(&cache, [1; 32], "de") && stored(&cache, [1; 32], "fr"));
        assert_eq!(cache.purge(2, &CachePurge::Tag("product-9".into())), 0);
        assert_eq!(cache.last_purge(), Some(2), "the last applied, even when a replaced store counts from 1 again");
    }

    #[test]
    fn entries_of_a_scope_no_longer_served_are_dropped_and_never_stored() {
        let cache = cache();
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &[]));
        cache.keep_scopes([[9; 32]].into());
        cache.entries.run_pending_tasks();
        assert!(!stored(&cache, [1; 32], "de"));
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &[]));
        assert!(!stored(&cache, [1; 32], "de"), "a response of a replaced policy is of no use");
    }

    #[test]
    fn a_store_or_refresh_begun_before_a_purge_is_dropped() {
        let cache = cache();
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &[]));
        let Found::Variant(stored_variant) = cache.find(&[1; 32], &request("de"), false) else { panic!("stored") };
        let began = cache.generation();
        cache.purge(1, &CachePurge::Tag("unrelated".into()));
        cache.store([2; 32], resource("/q", None, QueryKey::All), variant("de", &[]), began);
        assert!(!stored(&cache, [2; 32], "de"), "the purge may have been meant for it");
        let refreshed = cache.refresh(&[1; 32], &stored_variant, HeaderMap::new(), stored_variant.freshness.clone(), began);
        assert!(refreshed.is_none());
    }

    #[test]
    fn an_unsafe_method_empties_every_entry_of_its_url() {
        let cache = cache();
        let url = resource("/users/7", None, QueryKey::All).url;
        put(&cache, [1; 32], resource("/users/7", None, QueryKey::All), variant("de", &[]));
        put(&cache, [2; 32], resource("/users/7", None, QueryKey::All), variant("de", &[]));
        put(&cache, [3; 32], resource("/users/8", None, QueryKey::All), variant("de", &[]));
        assert_eq!(cache.invalidate_url(&url), 2, "a HEAD and a GET entry, say, or two consumers'");
        assert!(!stored(&cache, [1; 32], "de") && !stored(&cache, [2; 32], "de") && stored(&cache, [3; 32], "de"));
        assert_eq!(cache.invalidate_url(&url), 0);
    }

    #[test]
    fn bytes_held_follow_replacements_refreshes_and_partial_purges() {
        let cache = cache();
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &["a"]));
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("fr", &["b"]));
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("fr", &["b"]));
        cache.purge(1, &CachePurge::Tag("a".into()));
        let Found::Variant(fr) = cache.find(&[1; 32], &request("fr"), false) else { panic!("fr stays") };
        cache.refresh(&[1; 32], &fr, fr.headers.clone(), fr.freshness.clone(), cache.generation()).unwrap();
        cache.entries.run_pending_tasks();
        let actual: u64 = cache.entries.iter().map(|(_, resource)| u64::from(resource.weight())).sum();
        assert_eq!(cache.held.load(Ordering::Relaxed), actual);
        cache.purge(2, &CachePurge::Prefix("/".into()));
        assert_eq!(cache.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn copies_in_flight_have_a_budget_of_a_quarter_of_the_store() {
        let cache = ResponseCache::new(1_000);
        assert!(cache.reserve_copy(200) && cache.reserve_copy(50));
        assert!(!cache.reserve_copy(1), "250 of 250");
        cache.release_copy(250);
        assert!(cache.reserve_copy(250));
    }

    #[test]
    fn a_vary_naming_no_header_is_as_unusable_as_a_star() {
        let mut vary = HeaderMap::new();
        vary.insert(header::VARY, HeaderValue::from_static("accept, bad header"));
        assert!(vary_names(&vary).is_err());
        let mut a = HeaderMap::new();
        a.insert(header::ACCEPT, HeaderValue::from_bytes(b"\xff").unwrap());
        let mut b = HeaderMap::new();
        b.insert(header::ACCEPT, HeaderValue::from_bytes(b"\xfe").unwrap());
        assert_ne!(vary_value(&a, &header::ACCEPT), vary_value(&b, &header::ACCEPT), "bytes, not lossy text");
    }

    #[test]
    fn the_first_purge_cursor_empties_the_cache_and_later_ones_keep_it() {
        let cache = cache();
        assert_eq!(cache.last_purge(), None, "a new cache has no cursor");
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &[]));
        cache.purge_cursor(7);
        assert_eq!(cache.last_purge(), Some(7));
        assert!(!stored(&cache, [1; 32], "de"), "stored before the node knew which purges were behind it");
        put(&cache, [1; 32], resource("/p", None, QueryKey::All), variant("de", &[]));
        cache.purge_cursor(9);
        assert!(stored(&cache, [1; 32], "de"));
        assert_eq!(cache.last_purge(), Some(9));
    }
}
