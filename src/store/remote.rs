//! A segment store in an object store: `[store] folder = "s3://bucket/prefix"`.
//!
//! The layout is the one of a local store, as objects under the prefix.
//! What a local store gets from its file system, this one gets from the
//! object store's conditional puts (`If-None-Match` / `If-Match`, which
//! S3 and S3-compatible servers support):
//!
//! - **Delta commits.** Each table's log entries are written with "create
//!   if absent" (Delta Lake's default log store), so two writers of one
//!   table version cannot both win.
//! - **The write lock.** `_lock.json` is created only if absent; it names
//!   its holder and when its lease ends. The holder renews the lease every
//!   [`RENEW_EVERY`] (a put that succeeds only if the object is still the
//!   one it wrote), and removes the object when done. A process that died
//!   leaves a lease that runs out after [`LEASE`]; the next writer then
//!   replaces it, again only if it is still that object. A change renews
//!   the lease once more right before its commit point and does not commit
//!   if that fails (or any renewal before it did).
//! - **No rename.** An object appears whole when its upload completes, so
//!   what a local store writes aside and renames is written in place.
//!
//! Metadata calls (the marker, the lock, listings) run on a small runtime
//! of their own, so the synchronous parts of the store can wait for them.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use url::Url;

use crate::storage::NodeStores;

/// How long a lock's lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);
/// The lock object's name in the store.
pub const LOCK: &str = "_lock.json";

/// The runtime metadata calls run on (one worker: they are small).
static IO: LazyLock<Result<tokio::runtime::Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("segql-store-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the segment store's I/O runtime: {e}"))
});

/// Runs `work` on the store's runtime and waits for it (from synchronous
/// code, or from async code that must not be suspended midway).
pub fn blocking<T: Send + 'static>(
    work: impl Future<Output = io::Result<T>> + Send + 'static,
) -> io::Result<T> {
    let runtime = IO.as_ref().map_err(|e| io::Error::other(e.clone()))?;
    let task = runtime.spawn(work);
    futures::executor::block_on(task).map_err(io::Error::other)?
}

/// A store's place in an object store.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `scheme://bucket/prefix/`, always with the final slash.
    url: Url,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The lock's lease and how often it is renewed ([`LEASE`],
    /// [`RENEW_EVERY`]; shorter in tests).
    lease: Duration,
    renew_every: Duration,
}

impl Remote {
    /// The store at `url` (`s3://bucket/prefix`), reached through `store`
    /// (an object store serving its bucket, used only on the store's own
    /// runtime: not the session's, see [`remember`]).
    pub fn new(url: &Url, store: Arc<dyn ObjectStore>) -> Self {
        let mut url = url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let prefix = ObjectPath::from(url.path().trim_matches('/'));
        register_with_delta_lake();
        OPENED_FOR_IO.register_store(&bucket_of(&url), Arc::clone(&store));
        Self {
            url,
            store,
            prefix,
            lease: LEASE,
            renew_every: RENEW_EVERY,
        }
    }

    /// The same place with another lease and renewal period.
    #[cfg(test)]
    fn with_lease(mut self, lease: Duration, renew_every: Duration) -> Self {
        self.lease = lease;
        self.renew_every = renew_every;
        self
    }

    /// The store's URL, with the final slash.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of `relative` (a path inside the store, `/`-separated).
    pub fn location(&self, relative: &str) -> String {
        format!("{}{}", self.url, relative.trim_start_matches('/'))
    }

    fn path(&self, relative: &str) -> ObjectPath {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// The object `relative`, and its version tag; `None` when missing.
    pub fn get(&self, relative: &str) -> io::Result<Option<(Bytes, Option<String>)>> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        blocking(async move {
            match store.get(&path).await {
                Ok(result) => {
                    let tag = result.meta.e_tag.clone();
                    Ok(Some((result.bytes().await.map_err(io::Error::other)?, tag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    /// Writes `bytes` as `relative` under `mode`; returns the new version
    /// tag. A put refused by its condition is `ErrorKind::AlreadyExists`.
    pub fn put(&self, relative: &str, bytes: Bytes, mode: PutMode) -> io::Result<Option<String>> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        blocking(async move {
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match store
                .put_opts(&path, PutPayload::from(bytes), options)
                .await
            {
                Ok(done) => Ok(done.e_tag),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "changed by another process",
                )),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    /// The size of `relative`; `None` when missing.
    pub fn size(&self, relative: &str) -> io::Result<Option<u64>> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        blocking(async move {
            match store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    /// Every object under `relative` (a folder inside the store), by its
    /// path inside the store, with its size.
    pub fn list(&self, relative: &str) -> io::Result<Vec<(String, u64)>> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        let prefix = self.prefix.clone();
        blocking(async move {
            let found: Vec<_> = store
                .list(Some(&path))
                .try_collect()
                .await
                .map_err(io::Error::other)?;
            Ok(found
                .into_iter()
                .map(|meta| {
                    let inside = meta
                        .location
                        .prefix_match(&prefix)
                        .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
                        .unwrap_or_default()
                        .join("/");
                    (inside, meta.size)
                })
                .collect())
        })
    }

    /// The folders directly in `relative` (a folder inside the store), by
    /// name.
    pub fn folders(&self, relative: &str) -> io::Result<Vec<String>> {
        Ok(self.children(relative)?.0)
    }

    /// The objects directly in `relative` (a folder inside the store), by
    /// name.
    pub fn files(&self, relative: &str) -> io::Result<Vec<String>> {
        Ok(self.children(relative)?.1)
    }

    fn children(&self, relative: &str) -> io::Result<(Vec<String>, Vec<String>)> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        blocking(async move {
            let listed = store
                .list_with_delimiter(Some(&path))
                .await
                .map_err(io::Error::other)?;
            let name = |p: &ObjectPath| p.filename().unwrap_or_default().to_string();
            Ok((
                listed.common_prefixes.iter().map(name).collect(),
                listed.objects.iter().map(|m| name(&m.location)).collect(),
            ))
        })
    }

    /// Removes `relative`; a missing object is no error.
    pub fn delete(&self, relative: &str) -> io::Result<()> {
        let (store, path) = (Arc::clone(&self.store), self.path(relative));
        blocking(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    /// Removes every object under `relative` (a folder inside the store).
    pub fn delete_all(&self, relative: &str) -> io::Result<()> {
        for (object, _) in self.list(relative)? {
            self.delete(&object)?;
        }
        Ok(())
    }

    /// Takes the store's write lock for `holder`; with `wait`, waits for
    /// another holder to finish (or its lease to run out). `Ok(Err(who))`
    /// when another process holds it and `wait` is off.
    pub fn lock(&self, holder: &str, wait: bool) -> io::Result<Result<RemoteLock, String>> {
        loop {
            let text = lease_text(holder, self.lease);
            match self.put(LOCK, text, PutMode::Create) {
                Ok(tag) => return Ok(Ok(RemoteLock::hold(self.clone(), holder, tag))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // Held: by whom, and until when?
            let Some((bytes, tag)) = self.get(LOCK)? else {
                continue;
            };
            let lease: Lease = serde_json::from_slice(&bytes).unwrap_or(Lease {
                holder: "an unreadable lock".into(),
                expires_micros: 0,
            });
            if lease.expires_micros < crate::time::now_micros() {
                // Its holder stopped renewing it: replace it, unless someone
                // else did first.
                let mode = PutMode::Update(UpdateVersion {
                    e_tag: tag,
                    version: None,
                });
                match self.put(LOCK, lease_text(holder, self.lease), mode) {
                    Ok(tag) => return Ok(Ok(RemoteLock::hold(self.clone(), holder, tag))),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            if !wait {
                return Ok(Err(lease.holder));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// What the lock object holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    expires_micros: i64,
}

fn lease_text(holder: &str, lasting: Duration) -> Bytes {
    let lease = Lease {
        holder: holder.to_string(),
        expires_micros: crate::time::now_micros() + lasting.as_micros() as i64,
    };
    Bytes::from(serde_json::to_vec(&lease).unwrap_or_default())
}

/// The write lock of a store in an object store, renewed while held and
/// removed when dropped.
#[derive(Debug)]
pub struct RemoteLock {
    lease: Arc<HeldLease>,
    /// Tells the renewing thread to stop.
    done: Arc<AtomicBool>,
}

/// A held lease: whose, the tag of the object last written, and whether a
/// renewal failed (the lease may be someone else's now).
#[derive(Debug)]
struct HeldLease {
    remote: Remote,
    holder: String,
    tag: Mutex<Option<String>>,
    lost: AtomicBool,
}

impl HeldLease {
    /// Renews the lease if the object is still the one last written;
    /// whether it is still held.
    fn renew(&self) -> bool {
        let Ok(mut tag) = self.tag.lock() else {
            return false;
        };
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let mode = PutMode::Update(UpdateVersion {
            e_tag: tag.clone(),
            version: None,
        });
        match self
            .remote
            .put(LOCK, lease_text(&self.holder, self.remote.lease), mode)
        {
            Ok(new) => {
                *tag = new;
                true
            }
            Err(_) => {
                self.lost.store(true, Ordering::SeqCst);
                false
            }
        }
    }
}

impl RemoteLock {
    fn hold(remote: Remote, holder: &str, tag: Option<String>) -> Self {
        let lock = Self {
            lease: Arc::new(HeldLease {
                remote,
                holder: holder.to_string(),
                tag: Mutex::new(tag),
                lost: AtomicBool::new(false),
            }),
            done: Arc::default(),
        };
        let (lease, done) = (Arc::clone(&lock.lease), Arc::clone(&lock.done));
        std::thread::spawn(move || {
            let every = lease.remote.renew_every;
            let step = Duration::from_millis(50).min(every);
            let mut waited = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(step);
                waited += step;
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                if !done.load(Ordering::SeqCst) && !lease.renew() {
                    return;
                }
            }
        });
        lock
    }

    /// Whether no renewal has failed so far.
    pub fn held(&self) -> bool {
        !self.lease.lost.load(Ordering::SeqCst)
    }

    /// Renews the lease now: whether it is still this process's (what a
    /// change asks right before its commit point).
    pub fn confirm(&self) -> bool {
        self.lease.renew()
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // Under the tag's lock, so no renewal runs meanwhile.
        let _guard = self.lease.tag.lock();
        if self.held() {
            let _ = self.lease.remote.delete(LOCK);
        }
    }
}

/// Object stores by bucket. Two registries: one used only on the store's
/// own runtime ([`blocking`]), one by the session's (Delta Lake's reads
/// and writes). An HTTP client keeps each connection's task on the runtime
/// that opened it, so a client shared by both could leave a blocked
/// session thread waiting on a connection only that thread would drive.
/// A bucket no store registered is set up from the environment (`AWS_*`),
/// as on a cluster node.
static OPENED: LazyLock<NodeStores> = LazyLock::new(NodeStores::default);
static OPENED_FOR_IO: LazyLock<NodeStores> = LazyLock::new(NodeStores::default);

fn bucket_of(url: &Url) -> Url {
    crate::storage::store_base(url).unwrap_or_else(|_| url.clone())
}

/// Makes `store` the one Delta Lake reaches `url`'s bucket through (the
/// session's store for it, with the project's `[storage]` options).
pub fn remember(url: &Url, store: &Arc<dyn ObjectStore>) {
    OPENED.register_store(&bucket_of(url), Arc::clone(store));
}

/// The whole object at `url` (a file of a store in an object store).
pub fn read_url(url: &str) -> io::Result<Bytes> {
    let parsed = Url::parse(url).map_err(io::Error::other)?;
    let store = OPENED_FOR_IO.get_store(&parsed).map_err(io::Error::other)?;
    let path = ObjectPath::from_url_path(parsed.path()).map_err(io::Error::other)?;
    blocking(async move {
        let got = store.get(&path).await.map_err(io::Error::other)?;
        got.bytes().await.map_err(io::Error::other)
    })
}

/// Delta Lake's way to an S3 bucket: the store opened for it, or one set
/// up from the environment (on a cluster node).
struct S3Stores;

impl deltalake::logstore::ObjectStoreFactory for S3Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<(deltalake::logstore::ObjectStoreRef, deltalake::Path)> {
        let store = OPENED
            .get_store(url)
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        Ok((store, deltalake::Path::from(url.path().trim_matches('/'))))
    }
}

/// Delta Lake's log store for S3: its default one, which commits with
/// conditional puts.
struct S3Logs;

impl deltalake::logstore::LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Teaches Delta Lake `s3://` and `s3a://` (once per process).
pub fn register_with_delta_lake() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                deltalake::logstore::object_store_factories()
                    .insert(url.clone(), Arc::new(S3Stores));
                deltalake::logstore::logstore_factories().insert(url, Arc::new(S3Logs));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn remote() -> Remote {
        let url = Url::parse("s3://bucket/shop/store").unwrap();
        Remote::new(&url, Arc::new(InMemory::new()))
    }

    #[test]
    fn paths_and_urls() {
        let r = remote();
        assert_eq!(r.url().as_str(), "s3://bucket/shop/store/");
        assert_eq!(
            r.location("segments/x.parquet"),
            "s3://bucket/shop/store/segments/x.parquet"
        );
        assert_eq!(r.path("a/b").as_ref(), "shop/store/a/b");
    }

    #[test]
    fn objects_put_get_list_delete() {
        let r = remote();
        assert!(r.get("m.json").unwrap().is_none());
        r.put("m.json", Bytes::from("1"), PutMode::Create).unwrap();
        let again = r
            .put("m.json", Bytes::from("2"), PutMode::Create)
            .unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(r.get("m.json").unwrap().unwrap().0, Bytes::from("1"));
        r.put("w/a", Bytes::from("aa"), PutMode::Overwrite).unwrap();
        r.put("w/b", Bytes::from("b"), PutMode::Overwrite).unwrap();
        let mut listed = r.list("w").unwrap();
        listed.sort();
        assert_eq!(listed, vec![("w/a".to_string(), 2), ("w/b".to_string(), 1)]);
        assert_eq!(r.size("w/a").unwrap(), Some(2));
        assert_eq!(r.files("w").unwrap().len(), 2);
        assert_eq!(r.folders("").unwrap(), vec!["w".to_string()]);
        assert_eq!(r.files("").unwrap(), vec!["m.json".to_string()]);
        r.delete_all("w").unwrap();
        assert!(r.list("w").unwrap().is_empty());
        r.delete("gone").unwrap();
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let r = remote();
        let first = r.lock("process 1", false).unwrap().unwrap();
        assert_eq!(
            r.lock("process 2", false).unwrap().unwrap_err(),
            "process 1"
        );
        drop(first);
        let second = r.lock("process 2", false).unwrap().unwrap();
        assert!(second.held());
        // Confirmed at once, without waiting for the next renewal; lost
        // as soon as the object is not the one it wrote.
        assert!(second.confirm());
        r.put(LOCK, lease_text("process 3", LEASE), PutMode::Overwrite)
            .unwrap();
        assert!(!second.confirm());
        assert!(!second.held());
    }

    #[test]
    fn the_holder_renews_its_lease_and_notices_losing_it() {
        let r = remote().with_lease(Duration::from_millis(1500), Duration::from_millis(100));
        let held = r.lock("process 1", false).unwrap().unwrap();
        // Well past the first lease: renewed, so still refused.
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            r.lock("process 2", false).unwrap().unwrap_err(),
            "process 1"
        );
        assert!(held.held());
        // Someone replaces the object (as after a lease ran out): the next
        // renewal fails, and the holder knows.
        r.put(LOCK, lease_text("process 3", LEASE), PutMode::Overwrite)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!held.held());
        assert!(!held.confirm());
        // Dropped, it leaves the other's lock alone.
        drop(held);
        assert_eq!(
            r.lock("process 4", false).unwrap().unwrap_err(),
            "process 3"
        );
    }

    #[test]
    fn a_lease_that_ran_out_is_taken_over() {
        let r = remote();
        let stale = Lease {
            holder: "process 9 (died)".into(),
            expires_micros: crate::time::now_micros() - 1,
        };
        r.put(
            LOCK,
            Bytes::from(serde_json::to_vec(&stale).unwrap()),
            PutMode::Create,
        )
        .unwrap();
        let taken = r.lock("process 2", false).unwrap().unwrap();
        assert!(taken.held());
        let (bytes, _) = r.get(LOCK).unwrap().unwrap();
        let lease: Lease = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(lease.holder, "process 2");
    }
}
