//! Garbage collection and consistency checks from the command line (`registry gc`,
//! `registry fsck`) and on a schedule inside `registry serve`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use storage::gc::GcReport;
use storage::proxy_cache::EvictReport;
use storage::Store;

use crate::config::Config;

/// Starts the background collection when `gc_interval` is not 0. The task ends when the registry
/// is dropped (the server stopped).
pub fn spawn_gc(registry: &Arc<Store>, config: &Config) {
    if config.gc_interval == 0 {
        return;
    }
    let opts = config.gc_options(false);
    let every = Duration::from_secs(config.gc_interval);
    let weak: Weak<Store> = Arc::downgrade(registry);
    let cache_limit = config.proxy.as_ref().and_then(|p| p.max_cache_bytes);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(reg) = weak.upgrade() else { return };
            let started = std::time::Instant::now();
            if let Some(limit) = cache_limit {
                evict_cache(&reg, limit, false).await;
            }
            let res = reg.collect_garbage(&opts).await;
            crate::metrics::METRICS.gc_run(
                res.as_ref().ok().map(|r| {
                    (
                        r.blobs.len() as u64,
                        r.bytes_freed,
                        r.manifests.len() as u64,
                    )
                }),
                started.elapsed(),
            );
            match res {
                Ok(r) => tracing::info!(
                    blobs_removed = r.blobs.len(),
                    bytes_freed = r.bytes_freed,
                    blobs_kept = r.blobs_kept,
                    tags_removed = r.tags.len(),
                    manifests_removed = r.manifests.len(),
                    layer_links_removed = r.layer_links.len(),
                    uploads_purged = r.uploads.len(),
                    millis = started.elapsed().as_millis() as u64,
                    "garbage collection done"
                ),
                Err(e) => tracing::error!(
                    error = %crate::error::error_chain(&e),
                    "garbage collection failed; retrying at the next interval"
                ),
            }
        }
    });
}

/// Prints a collection report for a person.
pub fn print_gc_report(r: &GcReport, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    for t in &r.tags {
        println!("{verb} tag {t}");
    }
    for m in &r.manifests {
        println!("{verb} manifest {m}");
    }
    for l in &r.layer_links {
        println!("{verb} layer link {l}");
    }
    for (d, size) in &r.blobs {
        println!("{verb} blob {d} ({size} bytes)");
    }
    for u in &r.uploads {
        println!("{verb} upload {u}");
    }
    println!(
        "{verb} {} tags, {} manifests, {} layer links, {} blobs ({} bytes), {} uploads; kept {} blobs",
        r.tags.len(),
        r.manifests.len(),
        r.layer_links.len(),
        r.blobs.len(),
        r.bytes_freed,
        r.uploads.len(),
        r.blobs_kept
    );
}

/// One collection run by hand (`registry gc`, `registry garbage-collect`) on a runtime of its
/// own: the pull-through cache's eviction first, as the scheduled collection does, then the
/// collection; prints what was (or, in a dry run, would be) evicted and removed.
pub fn collect_by_hand(
    reg: &Store,
    config: &Config,
    opts: &storage::gc::GcOptions,
) -> Result<bool, String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let limit = config.proxy.as_ref().and_then(|p| p.max_cache_bytes);
    if let Some(limit) = limit {
        if let Some(r) = rt.block_on(evict_cache(reg, limit, opts.dry_run)) {
            let verb = if opts.dry_run {
                "would evict"
            } else {
                "evicted"
            };
            for e in &r.evicted {
                println!("{verb} cached {e}");
            }
            println!(
                "pull-through cache: {} bytes cached, limit {limit}; {verb} {} bytes",
                r.cached_bytes, r.evicted_bytes
            );
        }
    }
    let report = rt
        .block_on(reg.collect_garbage(opts))
        .map_err(|e| crate::error::error_chain(&e))?;
    print_gc_report(&report, opts.dry_run);
    Ok(true)
}

/// Keeps the pull-through cache under its size limit before a collection: the least recently
/// pulled cached content loses its links, and the collection then removes its blobs.
async fn evict_cache(reg: &Store, limit: u64, dry_run: bool) -> Option<EvictReport> {
    match reg.cache_evict(limit, dry_run).await {
        Ok(r) => {
            if !r.evicted.is_empty() && !dry_run {
                tracing::info!(
                    cached_bytes = r.cached_bytes,
                    evicted_bytes = r.evicted_bytes,
                    evicted = r.evicted.len(),
                    limit,
                    "pull-through cache over its limit: least recently pulled content evicted"
                );
            }
            Some(r)
        }
        Err(e) => {
            tracing::warn!(
                error = %crate::error::error_chain(&e),
                "pull-through cache eviction failed; retrying at the next collection"
            );
            None
        }
    }
}
