//! The engine against an in-memory bucket and checkpoint store. "Killing" the process is
//! dropping the engine's future at a checkpoint write, exactly where SIGKILL can land: spawned
//! deletions are aborted, and what was written stays written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::cloud::{DeleteFailure, ListedVersion};
use crate::purge::state::{Counts, State};

#[derive(Clone, Debug)]
struct FakeVersion {
    id: String,
    marker: bool,
    size: u64,
    lock: VersionLock,
}

/// A versioned bucket. Listing follows ministack: asked to resume after a version that no
/// longer exists, it skips the rest of that key. Incomplete multipart uploads are listed, like
/// AWS and ministack, in `(key, uploadId)` order strictly after both markers.
#[derive(Default)]
struct FakeBucket {
    /// Key -> versions, newest first.
    keys: Mutex<BTreeMap<String, Vec<FakeVersion>>>,
    /// Versions whose next deletion attempt fails with SlowDown.
    slow_once: Mutex<HashSet<(String, String)>>,
    deletions: AtomicUsize,
    /// Incomplete multipart uploads, `(key, uploadId)`.
    uploads: Mutex<BTreeSet<(String, String)>>,
    /// Uploads whose next abort fails with SlowDown.
    abort_slow_once: Mutex<HashSet<(String, String)>>,
    /// Uploads an abort answers for but leaves in place (a broken server).
    sticky: Mutex<HashSet<(String, String)>>,
    /// Aborts that removed an upload (not those answered NoSuchUpload).
    aborts: AtomicUsize,
    /// Lists every upload of the marker key again, as if `upload-id-marker` were ignored
    /// (ministack does that with `key-marker` alone).
    relist_marker_key: AtomicBool,
}

fn lock<'a, T>(m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeBucket {
    fn put(&self, key: &str, marker: bool, size: u64, lock_: VersionLock) -> String {
        let mut keys = lock(&self.keys);
        let versions = keys.entry(key.to_owned()).or_default();
        let id = format!("v{:03}-{}", versions.len(), key.len());
        versions.insert(
            0,
            FakeVersion {
                id: id.clone(),
                marker,
                size,
                lock: lock_,
            },
        );
        id
    }

    fn start_upload(&self, key: &str) -> String {
        let mut uploads = lock(&self.uploads);
        // Ids in another order than the uploads were started.
        let id = format!("up-{:03}", (uploads.len() * 37) % 1000);
        uploads.insert((key.to_owned(), id.clone()));
        id
    }

    fn uploads(&self) -> BTreeSet<(String, String)> {
        lock(&self.uploads).clone()
    }

    fn uploads_under(&self, prefixes: &[&str]) -> Vec<Entry> {
        lock(&self.uploads)
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, id)| Entry::upload(k.clone(), id.clone()))
            .collect()
    }

    fn all(&self) -> BTreeSet<(String, String)> {
        lock(&self.keys)
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.id.clone())))
            .collect()
    }

    fn entries_under(&self, prefixes: &[&str]) -> Vec<Entry> {
        lock(&self.keys)
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .flat_map(|(k, vs)| {
                vs.iter().map(move |v| Entry {
                    key: k.clone(),
                    version_id: v.id.clone(),
                    kind: if v.marker {
                        Kind::DeleteMarker
                    } else {
                        Kind::Version
                    },
                    size: v.size,
                })
            })
            .collect()
    }
}

impl Objects for Arc<FakeBucket> {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        // Listing is slower than deleting: the previous page's batch lands first, which is
        // when resuming after a deleted version would lose the rest of its key.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let keys = lock(&self.keys);
        let max = usize::try_from(max_keys).unwrap_or(0);
        let mut versions = Vec::new();
        let mut truncated = false;
        'keys: for (key, vs) in keys.iter() {
            if !key.starts_with(prefix) || after.is_some_and(|a| key.as_str() < a.key.as_str()) {
                continue;
            }
            let mut skipping = after.is_some_and(|a| a.key == *key);
            for v in vs {
                if skipping {
                    if after.is_some_and(|a| a.version_id == v.id) {
                        skipping = false;
                    }
                    continue;
                }
                if versions.len() >= max {
                    truncated = true;
                    break 'keys;
                }
                versions.push(ListedVersion {
                    key: key.clone(),
                    version_id: v.id.clone(),
                    delete_marker: v.marker,
                    size: v.size,
                    is_latest: false,
                    last_modified: 0,
                });
            }
        }
        let next = if truncated {
            versions
                .last()
                .map(|v: &ListedVersion| (v.key.clone(), v.version_id.clone()))
        } else {
            None
        };
        Ok(VersionPage { versions, next })
    }

    async fn delete(&self, ids: &[(String, String)]) -> Result<DeleteReport, CloudError> {
        let mut keys = lock(&self.keys);
        let mut slow = lock(&self.slow_once);
        let mut report = DeleteReport::default();
        for (key, id) in ids {
            let fail = |code: &str| DeleteFailure {
                key: key.clone(),
                version_id: Some(id.clone()),
                code: code.to_owned(),
                message: String::new(),
            };
            if slow.remove(&(key.clone(), id.clone())) {
                report.failed.push(fail("SlowDown"));
                continue;
            }
            if let Some(versions) = keys.get_mut(key)
                && let Some(pos) = versions.iter().position(|v| &v.id == id)
            {
                let l = &versions[pos].lock;
                if l.legal_hold || l.retention.is_some() {
                    report.failed.push(fail("AccessDenied"));
                    continue;
                }
                versions.remove(pos);
                if versions.is_empty() {
                    keys.remove(key);
                }
                self.deletions.fetch_add(1, Ordering::Relaxed);
            }
            // Deleting a version id that is gone succeeds, as in S3.
            report.deleted.push((key.clone(), Some(id.clone())));
        }
        Ok(report)
    }

    async fn lock(&self, key: &str, version_id: &str) -> Result<VersionLock, CloudError> {
        Ok(lock(&self.keys)
            .get(key)
            .and_then(|vs| vs.iter().find(|v| v.id == version_id))
            .map(|v| v.lock.clone())
            .unwrap_or_default())
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_uploads: i32,
    ) -> Result<UploadPage, CloudError> {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let relist = self.relist_marker_key.load(Ordering::SeqCst);
        let max = usize::try_from(max_uploads).unwrap_or(0);
        let listed: Vec<(String, String)> = lock(&self.uploads)
            .iter()
            .filter(|(key, id)| {
                key.starts_with(prefix)
                    && after.is_none_or(|m| {
                        key.as_str() > m.key.as_str()
                            || (key == &m.key && (relist || id.as_str() > m.version_id.as_str()))
                    })
            })
            .take(max + 1)
            .cloned()
            .collect();
        let truncated = listed.len() > max;
        let uploads: Vec<(String, String)> = listed.into_iter().take(max).collect();
        let next = if truncated {
            uploads.last().cloned()
        } else {
            None
        };
        Ok(UploadPage { uploads, next })
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<bool, CloudError> {
        // Slower than listing: a listing that resumes while a re-sent batch is in flight sees
        // its uploads still there.
        for _ in 0..60 {
            tokio::task::yield_now().await;
        }
        let id = (key.to_owned(), upload_id.to_owned());
        if lock(&self.abort_slow_once).remove(&id) {
            return Err(CloudError::Api {
                service: "s3",
                operation: "AbortMultipartUpload",
                code: "SlowDown".into(),
                message: String::new(),
                status: Some(503),
            });
        }
        if lock(&self.sticky).contains(&id) {
            return Ok(true);
        }
        let removed = lock(&self.uploads).remove(&id);
        if removed {
            self.aborts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(removed)
    }
}

/// Checkpoints in memory; can "die" (never return) at its N-th write.
#[derive(Clone, Default)]
struct MemStore {
    data: Arc<Mutex<BTreeMap<String, String>>>,
    writes: Arc<AtomicUsize>,
    die_at: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
}

impl MemStore {
    fn new() -> MemStore {
        let s = MemStore::default();
        s.die_at.store(usize::MAX, Ordering::SeqCst);
        s
    }

    /// Dies at the `n`-th write from now.
    fn die_after(&self, n: usize) {
        self.dead.store(false, Ordering::SeqCst);
        self.die_at
            .store(self.writes.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    fn live(&self) {
        self.dead.store(false, Ordering::SeqCst);
        self.die_at.store(usize::MAX, Ordering::SeqCst);
    }

    async fn write(&self, name: String, value: String) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.die_at.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        lock(&self.data).insert(name, value);
    }

    async fn died(&self) {
        while !self.dead.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        lock(&self.data).get(name).cloned()
    }

    fn chunk(kind: JournalKind, index: u32) -> String {
        format!("{kind:?}-{index}")
    }
}

impl Store for MemStore {
    async fn load_state(&self) -> Result<Option<State>, StoreError> {
        Ok(self
            .get("state")
            .map(|s| serde_json::from_str(&s).expect("state json")))
    }
    async fn save_state(&self, state: &State) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).expect("state json");
        self.write("state".into(), json).await;
        Ok(())
    }
    async fn progress(&self, _state: &State) -> Result<(), StoreError> {
        Ok(())
    }
    async fn write_batch(&self, slot: u32, id: u64, lines: &str) -> Result<(), StoreError> {
        self.write(format!("batch-{slot}"), format!("{id}\n{lines}"))
            .await;
        Ok(())
    }
    async fn read_batch(&self, slot: u32) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.get(&format!("batch-{slot}")).map(|s| {
            let (id, lines) = s.split_once('\n').expect("batch record");
            (id.parse().expect("id"), lines.to_owned())
        }))
    }
    async fn write_chunk(
        &self,
        kind: JournalKind,
        index: u32,
        text: &str,
    ) -> Result<(), StoreError> {
        self.write(Self::chunk(kind, index), text.to_owned()).await;
        Ok(())
    }
    async fn read_chunk(
        &self,
        kind: JournalKind,
        index: u32,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.get(&Self::chunk(kind, index)))
    }
    async fn chunk_indices(&self, kind: JournalKind) -> Result<Vec<u32>, StoreError> {
        let prefix = format!("{kind:?}-");
        Ok(lock(&self.data)
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
            .collect())
    }
    async fn delete_chunk(&self, kind: JournalKind, index: u32) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.die_at.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        lock(&self.data).remove(&Self::chunk(kind, index));
        Ok(())
    }
    async fn discard(&self) -> Result<(), StoreError> {
        lock(&self.data).retain(|name, _| name == "state");
        Ok(())
    }
}

const PAGE: i32 = 7;

/// Three prefixes; keys with several versions, some ending in a delete marker; a key with
/// more versions than a page; incomplete uploads, several of one key, more than a page per
/// prefix, one on a key that has versions.
fn filled() -> Arc<FakeBucket> {
    let b = Arc::new(FakeBucket::default());
    for prefix in ["a/", "b/", "c/"] {
        for k in 0..9 {
            let key = format!("{prefix}{k}");
            for v in 0..=(k % 3) {
                b.put(&key, false, 10 + v, VersionLock::default());
            }
            if k % 4 == 1 {
                b.put(&key, true, 0, VersionLock::default());
            }
        }
    }
    for v in 0..20 {
        b.put("a/many", false, v, VersionLock::default());
    }
    for prefix in ["a/", "b/", "c/"] {
        for k in 0..4 {
            for _ in 0..=k {
                b.start_upload(&format!("{prefix}up{k}"));
            }
        }
        b.start_upload(&format!("{prefix}1"));
    }
    b
}

/// What a purge of `prefixes` must count, and the lines of its manifest, sorted.
fn expected(b: &FakeBucket, prefixes: &[&str]) -> (Counts, Vec<String>) {
    let mut entries = b.entries_under(prefixes);
    entries.extend(b.uploads_under(prefixes));
    let mut counts = Counts::default();
    for e in &entries {
        add(&mut counts, e);
    }
    let mut lines: Vec<String> = entries.iter().map(Entry::line).collect();
    lines.sort();
    (counts, lines)
}

fn fresh(prefixes: &[&str], dry_run: bool) -> State {
    let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
    State::new("uid", &prefixes, dry_run, "t0".into())
}

fn engine(b: &Arc<FakeBucket>, store: &MemStore) -> Engine<Arc<FakeBucket>, MemStore> {
    let mut e = Engine::new(Arc::clone(b), store.clone(), 3);
    e.page_size = PAGE;
    e
}

/// Runs once; `None` if the store died first.
async fn run_once(b: &Arc<FakeBucket>, store: &MemStore, initial: &State) -> Option<State> {
    let mut state = store
        .load_state()
        .await
        .expect("load")
        .unwrap_or_else(|| initial.clone());
    let e = engine(b, store);
    tokio::select! {
        r = e.run(&mut state) => {
            r.expect("engine run");
            Some(state)
        }
        () = store.died() => None,
    }
}

async fn check_done(
    b: &Arc<FakeBucket>,
    store: &MemStore,
    state: &State,
    counts: &Counts,
    lines: &[String],
) {
    assert_eq!(&state.counts, counts);
    let e = engine(b, store);
    let mut manifest = Vec::new();
    let mut chunks = std::pin::pin!(e.manifest_chunks(state));
    while let Some(text) = chunks.next().await {
        manifest.extend(text.expect("chunk").lines().map(str::to_owned));
    }
    let got = manifest::digests(manifest.iter().map(String::as_str));
    manifest.sort();
    assert_eq!(manifest, lines, "every entry in the manifest, once");
    assert_eq!(got.versions.1, counts.versions + counts.delete_markers);
    assert_eq!(got.uploads.1, counts.multipart_uploads);
    assert!(state.in_flight.is_empty());
    assert!(state.purged.is_some());
    let stale = store
        .chunk_indices(JournalKind::Manifest)
        .await
        .expect("indices");
    assert_eq!(stale.len() as u32, state.manifest.chunks, "no stale chunks");
}

#[tokio::test]
async fn purges_exactly_the_scope() {
    let b = filled();
    let untouched: BTreeSet<_> = b
        .all()
        .into_iter()
        .filter(|(k, _)| k.starts_with("b/"))
        .collect();
    let untouched_uploads: BTreeSet<_> = b
        .uploads()
        .into_iter()
        .filter(|(k, _)| k.starts_with("b/"))
        .collect();
    assert_eq!(untouched_uploads.len(), 11);
    let (counts, digests) = expected(&b, &["a/", "c/"]);
    let store = MemStore::new();
    let state = run_once(&b, &store, &fresh(&["c/", "a/"], false))
        .await
        .expect("finished");
    check_done(&b, &store, &state, &counts, &digests).await;
    assert_eq!(b.all(), untouched, "only b/ is left");
    assert_eq!(b.uploads(), untouched_uploads, "only b/ uploads are left");
    let v = state.verification.expect("verified");
    assert_eq!((v.remaining, v.passes), (0, 2));
    assert!(counts.delete_markers > 0 && counts.versions > 20);
    assert_eq!(counts.multipart_uploads, 22);
    // Each version deleted once, each upload aborted once: no batch was sent twice without a
    // crash.
    assert_eq!(
        b.deletions.load(Ordering::Relaxed) as u64,
        counts.versions + counts.delete_markers
    );
    assert_eq!(
        b.aborts.load(Ordering::Relaxed) as u64,
        counts.multipart_uploads
    );
}

#[tokio::test]
async fn whole_bucket_and_empty_bucket() {
    let b = filled();
    let (counts, digests) = expected(&b, &[""]);
    let store = MemStore::new();
    let state = run_once(&b, &store, &fresh(&[""], false))
        .await
        .expect("finished");
    check_done(&b, &store, &state, &counts, &digests).await;
    assert!(b.all().is_empty());
    assert!(b.uploads().is_empty());

    let empty = Arc::new(FakeBucket::default());
    let store = MemStore::new();
    let state = run_once(&empty, &store, &fresh(&[""], false))
        .await
        .expect("finished");
    assert_eq!(state.counts, Counts::default());
    assert_eq!(state.verification.map(|v| v.passes), Some(1));
}

/// Killed at every single checkpoint write in turn, then rerun: always exact, uploads
/// included; also against a server that lists the marker key's uploads again.
#[tokio::test]
async fn exact_when_killed_at_any_write() {
    for relist in [false, true] {
        let mut k = 0;
        loop {
            let b = filled();
            b.relist_marker_key.store(relist, Ordering::SeqCst);
            let (counts, digests) = expected(&b, &["a/", "c/"]);
            let initial = fresh(&["a/", "c/"], false);
            let store = MemStore::new();
            store.die_after(k);
            let first = run_once(&b, &store, &initial).await;
            if let Some(state) = first {
                // Finished before the k-th write: every crash point has been covered.
                check_done(&b, &store, &state, &counts, &digests).await;
                assert!(k > 30, "only {k} writes?");
                break;
            }
            store.live();
            let state = run_once(&b, &store, &initial).await.expect("finished");
            check_done(&b, &store, &state, &counts, &digests).await;
            assert!(
                b.all().iter().all(|(key, _)| key.starts_with("b/")),
                "crash at write {k}"
            );
            assert!(
                b.uploads().iter().all(|(key, _)| key.starts_with("b/")),
                "crash at write {k}: uploads left in scope"
            );
            k += 1;
        }
    }
}

/// Killed again and again, a few writes after each restart.
#[tokio::test]
async fn exact_when_killed_repeatedly() {
    // A run needs a few writes to get anywhere (a batch record, then the checkpoint).
    for every in [3, 4, 7] {
        let b = filled();
        let (counts, digests) = expected(&b, &[""]);
        let initial = fresh(&[""], false);
        let store = MemStore::new();
        let mut restarts = 0;
        let state = loop {
            store.die_after(every);
            if let Some(state) = run_once(&b, &store, &initial).await {
                break state;
            }
            restarts += 1;
            assert!(restarts < 10_000, "no progress");
        };
        check_done(&b, &store, &state, &counts, &digests).await;
        assert!(b.all().is_empty());
        assert!(b.uploads().is_empty());
        assert!(restarts > 5);
    }
}

#[tokio::test]
async fn throttled_keys_are_retried() {
    let b = filled();
    {
        let mut slow = lock(&b.slow_once);
        for (i, id) in b.all().into_iter().enumerate() {
            if i % 4 == 0 {
                slow.insert(id);
            }
        }
        let mut slow = lock(&b.abort_slow_once);
        for (i, id) in b.uploads().into_iter().enumerate() {
            if i % 4 == 0 {
                slow.insert(id);
            }
        }
    }
    let (counts, digests) = expected(&b, &[""]);
    let store = MemStore::new();
    let state = run_once(&b, &store, &fresh(&[""], false))
        .await
        .expect("finished");
    check_done(&b, &store, &state, &counts, &digests).await;
    assert!(b.all().is_empty());
    assert!(b.uploads().is_empty());
    assert_eq!(state.verification.map(|v| v.passes), Some(2));
}

#[tokio::test]
async fn object_lock_is_never_bypassed() {
    let b = filled();
    let until = Some("2030-01-01T00:00:00Z".to_owned());
    let gov = b.put(
        "a/gov",
        false,
        5,
        VersionLock {
            retention: Some(("GOVERNANCE".into(), until.clone())),
            legal_hold: false,
        },
    );
    let comp = b.put(
        "c/comp",
        false,
        6,
        VersionLock {
            retention: Some(("COMPLIANCE".into(), until.clone())),
            legal_hold: false,
        },
    );
    let hold = b.put(
        "a/many",
        false,
        7,
        VersionLock {
            retention: None,
            legal_hold: true,
        },
    );
    let locked: BTreeSet<(String, String)> = [
        ("a/gov".to_owned(), gov),
        ("c/comp".to_owned(), comp),
        ("a/many".to_owned(), hold),
    ]
    .into();
    let (mut counts, _) = expected(&b, &["a/", "c/"]);
    counts.versions -= 3;
    counts.bytes -= 18;
    counts.locked = 3;
    let store = MemStore::new();
    let state = run_once(&b, &store, &fresh(&["a/", "c/"], false))
        .await
        .expect("finished");
    assert_eq!(state.counts, counts);
    let left: BTreeSet<_> = b
        .all()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("b/"))
        .collect();
    assert_eq!(left, locked);
    assert_eq!(state.verification.as_ref().map(|v| v.remaining), Some(3));
    let e = engine(&b, &store);
    let mut listed = e.locked_versions(&state).await.expect("locked");
    listed.sort_by(|x, y| x.key.cmp(&y.key));
    let modes: Vec<(&str, &str, Option<&str>)> = listed
        .iter()
        .map(|l| (l.key.as_str(), l.mode.as_str(), l.retain_until.as_deref()))
        .collect();
    assert_eq!(
        modes,
        vec![
            ("a/gov", "GOVERNANCE", until.as_deref()),
            ("a/many", "LegalHold", None),
            ("c/comp", "COMPLIANCE", until.as_deref()),
        ]
    );
}

#[tokio::test]
async fn dry_run_counts_what_a_real_run_deletes() {
    let b = filled();
    let before = b.all();
    let uploads_before = b.uploads();
    let store = MemStore::new();
    let dry = run_once(&b, &store, &fresh(&["a/", "b/"], true))
        .await
        .expect("finished");
    assert_eq!(b.all(), before, "nothing deleted");
    assert_eq!(b.uploads(), uploads_before, "nothing aborted");
    assert_eq!(dry.counts.multipart_uploads, 22);
    assert_eq!(dry.manifest, JournalState::default(), "no manifest entries");
    assert!(dry.verification.is_none());
    let store = MemStore::new();
    let real = run_once(&b, &store, &fresh(&["a/", "b/"], false))
        .await
        .expect("finished");
    assert_eq!(dry.counts, real.counts);
}

#[test]
fn batches_respect_count_and_size() {
    let entry = |key: String| Entry {
        key,
        version_id: "v".into(),
        kind: Kind::Version,
        size: 1,
    };
    let batches = split((0..2500).map(|i| entry(format!("k{i}"))).collect());
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1000, 1000, 500]
    );
    let batches = split(
        (0..1000)
            .map(|i| entry(format!("{i}{}", "x".repeat(1020))))
            .collect(),
    );
    assert!(batches.len() >= 2);
    assert!(
        batches
            .iter()
            .all(|b| { b.iter().map(|e| e.line().len() + 1).sum::<usize>() <= BATCH_MAX_BYTES })
    );
}

#[test]
fn locks_are_described_by_what_binds() {
    let e = Entry {
        key: "k".into(),
        version_id: "v".into(),
        kind: Kind::Version,
        size: 1,
    };
    let until = Some("2030-01-01T00:00:00Z".to_owned());
    assert_eq!(locked_version(&e, &VersionLock::default()), None);
    let both = VersionLock {
        retention: Some(("GOVERNANCE".into(), until.clone())),
        legal_hold: true,
    };
    let l = locked_version(&e, &both).expect("locked");
    assert_eq!((l.mode.as_str(), l.retain_until), ("LegalHold", until));
}

/// A server that lists the marker key's uploads again: each upload is still aborted, counted
/// and recorded once.
#[tokio::test]
async fn uploads_listed_again_are_aborted_once() {
    let b = filled();
    b.relist_marker_key.store(true, Ordering::SeqCst);
    for _ in 0..(2 * PAGE) {
        b.start_upload("c/crowded");
    }
    let (counts, digests) = expected(&b, &["c/"]);
    let store = MemStore::new();
    let state = run_once(&b, &store, &fresh(&["c/"], false))
        .await
        .expect("finished");
    check_done(&b, &store, &state, &counts, &digests).await;
    assert_eq!(
        b.aborts.load(Ordering::Relaxed) as u64,
        counts.multipart_uploads
    );
    assert!(b.uploads().iter().all(|(k, _)| !k.starts_with("c/")));
}

/// An upload that an abort does not remove (a misbehaving server, or one restarted under the
/// same id) is found by every verification listing: the purge never reports it verified.
#[tokio::test]
async fn an_upload_that_stays_is_never_verified() {
    let b = filled();
    let id = b.start_upload("a/stays");
    lock(&b.sticky).insert(("a/stays".to_owned(), id));
    let store = MemStore::new();
    let mut state = fresh(&["a/"], false);
    let err = engine(&b, &store)
        .run(&mut state)
        .await
        .expect_err("not verified");
    assert!(
        matches!(err, PurgeError::NotConverged { passes, attempted: 1, .. } if passes == MAX_PASSES),
        "{err}"
    );
    assert!(state.verification.is_none() && state.purged.is_none());
    assert!(b.all().iter().all(|(k, _)| !k.starts_with("a/")));
}

#[test]
fn seen_uploads_skip_what_is_taken_or_before_the_marker() {
    let up = |k: &str, id: &str| (k.to_owned(), id.to_owned());
    let mut seen = SeenUploads {
        taken: [up("k", "resent")].into(),
        key: String::new(),
        ids: HashSet::new(),
    };
    let marker = Marker {
        key: "k".into(),
        version_id: "u2".into(),
    };
    let page = vec![
        up("j", "u9"),
        up("k", "u2"),
        up("k", "resent"),
        up("k", "u1"),
        up("k", "u3"),
        up("l", "u0"),
    ];
    let ids = |entries: Vec<Entry>| -> Vec<(String, String)> {
        assert!(entries.iter().all(|e| e.kind == Kind::MultipartUpload));
        entries.iter().map(Entry::id).collect()
    };
    // Before the marker's key, the marker itself, and a re-sent upload are not taken again; an
    // upload id below the marker's is (only the server knows its order within a key).
    assert_eq!(
        ids(seen.fresh(page, Some(&marker))),
        vec![up("k", "u1"), up("k", "u3"), up("l", "u0")]
    );
    // The next page lists the last key again: only what is new is taken.
    let marker = Marker {
        key: "l".into(),
        version_id: "u0".into(),
    };
    assert_eq!(
        ids(seen.fresh(
            vec![up("l", "u0"), up("l", "u5"), up("m", "u0")],
            Some(&marker)
        )),
        vec![up("l", "u5"), up("m", "u0")]
    );
}
