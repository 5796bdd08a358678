//! The engine on an in-memory bucket, export bucket and journal, killed before and after every
//! write it makes: each rerun must produce the clean run's archive and manifest, byte for byte.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::stream;
use sha2::{Digest, Sha256};

use super::engine::{Chunks, Engine, ExportError, Journal, Layout, Source, Target, hex};
use super::state::State;
use crate::cloud::{CloudError, ListedVersion, VersionPage};
use crate::purge::Marker;

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[derive(Clone)]
struct Version {
    id: String,
    body: Vec<u8>,
    marker: bool,
    latest: bool,
}

/// A versioned bucket: keys in order, each key's versions newest first. Clones share it.
#[derive(Clone, Default)]
struct Bucket {
    keys: std::sync::Arc<Mutex<BTreeMap<String, Vec<Version>>>>,
    /// Bytes per chunk a read returns.
    chunk: usize,
}

impl Bucket {
    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Version>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        self.push(key, body, false);
    }

    fn delete(&self, key: &str) {
        self.push(key, Vec::new(), true);
    }

    /// A new current version (`v<n>`) or delete marker (`m<n>`) of `key`.
    fn push(&self, key: &str, body: Vec<u8>, marker: bool) {
        let mut keys = self.keys();
        let versions = keys.entry(key.to_owned()).or_default();
        for v in versions.iter_mut() {
            v.latest = false;
        }
        let id = format!("{}{}", if marker { "m" } else { "v" }, versions.len() + 1);
        versions.insert(
            0,
            Version {
                id,
                body,
                marker,
                latest: true,
            },
        );
    }
}

impl Source for Bucket {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        let keys = self.keys();
        let all: Vec<(&String, &Version)> = keys
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k, v)))
            .collect();
        let start = after.map_or(0, |m| {
            if m.version_id.is_empty() {
                return all
                    .iter()
                    .position(|(k, _)| **k > m.key)
                    .unwrap_or(all.len());
            }
            all.iter()
                .position(|(k, v)| **k == m.key && v.id == m.version_id)
                .map_or(all.len(), |i| i + 1)
        });
        let max = usize::try_from(max_keys).unwrap_or(1);
        let page: Vec<_> = all.iter().skip(start).take(max).collect();
        let next = (start + page.len() < all.len())
            .then(|| page.last().map(|(k, v)| ((*k).clone(), v.id.clone())))
            .flatten();
        // Like the S3 adapter: versions first, then delete markers.
        let listed = |(k, v): &&(&String, &Version)| ListedVersion {
            key: (*k).clone(),
            version_id: v.id.clone(),
            delete_marker: v.marker,
            size: v.body.len() as u64,
            is_latest: v.latest,
            last_modified: 1_700_000_000,
        };
        let mut versions: Vec<ListedVersion> =
            page.iter().filter(|(_, v)| !v.marker).map(listed).collect();
        versions.extend(page.iter().filter(|(_, v)| v.marker).map(listed));
        Ok(VersionPage { versions, next })
    }

    async fn read(&self, key: &str, version_id: &str, from: u64) -> Result<Chunks, CloudError> {
        let body = self
            .keys()
            .get(key)
            .and_then(|vs| vs.iter().find(|v| v.id == version_id))
            .map(|v| v.body.clone())
            .unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(body.len()).min(body.len());
        let chunks: Vec<Result<Vec<u8>, CloudError>> = body[from..]
            .chunks(self.chunk.max(1))
            .map(|c| Ok(c.to_vec()))
            .collect();
        Ok(Box::pin(stream::iter(chunks)))
    }
}

/// Where a run is killed: before or after its n-th write (counting from 1).
#[derive(Clone, Copy, Debug)]
enum Kill {
    Never,
    Before(u32),
    After(u32),
}

#[derive(Default)]
struct Exports {
    uploads: BTreeMap<String, (String, BTreeMap<i32, Vec<u8>>)>,
    objects: BTreeMap<String, Vec<u8>>,
    journal: BTreeMap<String, String>,
    writes: u32,
    next_id: u32,
}

/// The export bucket and the journal, with a kill at one write.
struct Fake {
    inner: Mutex<Exports>,
    kill: Mutex<Kill>,
}

fn killed() -> CloudError {
    CloudError::Api {
        service: "s3",
        operation: "test",
        code: "Killed".into(),
        message: "the process was killed".into(),
        status: None,
    }
}

impl Fake {
    fn new() -> Self {
        Fake {
            inner: Mutex::new(Exports::default()),
            kill: Mutex::new(Kill::Never),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Exports> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a write and applies it unless the kill comes before it; an error if killed.
    fn write<T>(&self, apply: impl FnOnce(&mut Exports) -> T) -> Result<T, CloudError> {
        let mut inner = self.lock();
        inner.writes += 1;
        let n = inner.writes;
        let kill = *self.kill.lock().unwrap_or_else(|e| e.into_inner());
        match kill {
            Kill::Before(k) if k == n => Err(killed()),
            Kill::After(k) if k == n => {
                apply(&mut inner);
                Err(killed())
            }
            _ => Ok(apply(&mut inner)),
        }
    }
}

impl Target for &Fake {
    async fn start_upload(&self, key: &str) -> Result<String, CloudError> {
        self.write(|e| {
            e.next_id += 1;
            let id = format!("u{}", e.next_id);
            e.uploads
                .insert(id.clone(), (key.to_owned(), BTreeMap::new()));
            id
        })
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, CloudError> {
        let etag = sha(&body);
        let known = self.write(|e| match e.uploads.get_mut(upload_id) {
            Some((_, parts)) => {
                parts.insert(number, body);
                true
            }
            None => false,
        })?;
        if !known {
            return Err(CloudError::Api {
                service: "s3",
                operation: "UploadPart",
                code: "NoSuchUpload".into(),
                message: String::new(),
                status: Some(404),
            });
        }
        Ok(etag)
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), CloudError> {
        let result = self.write(|e| {
            let Some((_, uploaded)) = e.uploads.remove(upload_id) else {
                return Err("NoSuchUpload");
            };
            let mut whole = Vec::new();
            for (n, etag) in parts {
                let part = uploaded.get(n).ok_or("InvalidPart")?;
                if sha(part) != *etag {
                    return Err("InvalidPart");
                }
                whole.extend_from_slice(part);
            }
            e.objects.insert(key.to_owned(), whole);
            Ok(())
        })?;
        result.map_err(|code| CloudError::Api {
            service: "s3",
            operation: "CompleteMultipartUpload",
            code: code.into(),
            message: String::new(),
            status: Some(404),
        })
    }

    async fn uploads(&self, key: &str) -> Result<Vec<String>, CloudError> {
        Ok(self
            .lock()
            .uploads
            .iter()
            .filter(|(_, (k, _))| k == key)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), CloudError> {
        self.write(|e| {
            e.uploads.remove(upload_id);
        })
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, CloudError> {
        Ok(self.lock().objects.get(key).map(|o| o.len() as u64))
    }
}

impl Journal for &Fake {
    async fn load(&self) -> Result<Option<State>, ExportError> {
        let text = self.lock().journal.get("state").cloned();
        text.map(|t| serde_json::from_str(&t).map_err(|e| ExportError::Journal(e.to_string())))
            .transpose()
    }

    async fn save(&self, state: &State) -> Result<(), ExportError> {
        let text = serde_json::to_string(state).map_err(|e| ExportError::Journal(e.to_string()))?;
        self.write(|e| e.journal.insert("state".into(), text))?;
        Ok(())
    }

    async fn put_chunk(&self, n: u32, lines: &str) -> Result<(), ExportError> {
        self.write(|e| e.journal.insert(format!("chunk{n}"), lines.to_owned()))?;
        Ok(())
    }

    async fn chunk(&self, n: u32) -> Result<String, ExportError> {
        self.lock()
            .journal
            .get(&format!("chunk{n}"))
            .cloned()
            .ok_or_else(|| ExportError::Journal(format!("chunk {n} is missing")))
    }

    async fn progress(&self, _state: &State) -> Result<(), ExportError> {
        Ok(())
    }
}

fn layout() -> Layout {
    Layout {
        archive: "exports/t/archive.tar".into(),
        manifest: "exports/t/manifest.jsonl".into(),
    }
}

fn header(state: &State, sha: &str) -> String {
    format!(
        "{{\"objects\":{},\"archiveSha256\":\"{sha}\"}}",
        state.objects
    )
}

/// Objects of every size around the part size, some keys overwritten or deleted, others out of
/// scope.
fn bucket(chunk: usize) -> Bucket {
    let b = Bucket {
        chunk,
        ..Bucket::default()
    };
    let sizes = [0usize, 1, 511, 512, 513, 1000, 1536, 3000, 5000];
    for (i, size) in sizes.iter().enumerate() {
        let body: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
        b.put(&format!("users/1/f{i}"), body);
    }
    b.put("users/1/f3", b"overwritten".to_vec());
    b.put("users/1/gone", b"deleted later".to_vec());
    b.delete("users/1/gone");
    b.put("users/10/other", b"not in users/1/".to_vec());
    b.put("../escape", b"x".to_vec());
    b
}

async fn run_once(
    source: &Bucket,
    fake: &Fake,
    prefixes: &[&str],
    all: bool,
    part: usize,
) -> Result<(), ExportError> {
    let engine = Engine::new(source.clone(), fake, fake, part);
    let mut state = match engine.journal().load().await? {
        Some(state) => state,
        None => {
            let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
            State::new("uid", &prefixes, all, "t0".into())
        }
    };
    engine.run(&mut state, &layout(), header).await
}

/// A reader of what the engine writes (pax path and size, content), to check the archive's
/// members. tests/e2e reads real exports with Python's `tarfile`.
fn members(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut path = None;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        let h = &tar[at..at + 512];
        let size_text = std::str::from_utf8(&h[124..135]).expect("octal size");
        let size = usize::from_str_radix(size_text, 8).expect("octal size");
        let body = tar[at + 512..at + 512 + size].to_vec();
        at += 512 + size.div_ceil(512) * 512;
        if h[156] == b'x' {
            let records = String::from_utf8(body).expect("pax records");
            path = records
                .lines()
                .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_owned()));
        } else {
            out.push((path.take().expect("a pax path"), body));
        }
    }
    assert_eq!(tar.len(), at + 1024, "two zero blocks end the archive");
    out
}

fn outputs(fake: &Fake) -> (Vec<u8>, String) {
    let e = fake.lock();
    let l = layout();
    let archive = e.objects.get(&l.archive).cloned().expect("archive");
    let manifest =
        String::from_utf8(e.objects.get(&l.manifest).cloned().expect("manifest")).expect("utf-8");
    (archive, manifest)
}

#[tokio::test]
async fn the_archive_holds_exactly_the_current_versions_in_scope() {
    let source = bucket(700);
    let fake = Fake::new();
    run_once(&source, &fake, &["users/1/"], false, 1024)
        .await
        .expect("export");
    let (archive, manifest) = outputs(&fake);
    let got = members(&archive);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    let expected: Vec<String> = (0..9).map(|i| format!("objects/users/1/f{i}")).collect();
    assert_eq!(
        paths, expected,
        "users/10/ and the deleted key are not exported"
    );
    assert_eq!(got[3].1, b"overwritten", "the current version only");
    let lines: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["objects"], 9);
    assert_eq!(lines[0]["archiveSha256"], sha(&archive));
    for ((path, body), line) in got.iter().zip(&lines[1..]) {
        assert_eq!(line["path"], path.as_str());
        assert_eq!(line["sha256"], sha(body));
        assert_eq!(line["size"], body.len());
    }
    assert_eq!(lines.len(), 10);
    assert!(fake.lock().uploads.is_empty(), "no upload left open");
}

#[tokio::test]
async fn every_version_when_asked_and_keys_never_escape() {
    let source = bucket(4096);
    let fake = Fake::new();
    run_once(&source, &fake, &[""], true, 2048)
        .await
        .expect("export");
    let (archive, manifest) = outputs(&fake);
    let got = members(&archive);
    assert!(
        got.iter()
            .any(|(p, b)| p == "versions/v1/users/1/f3" && b.len() == 512)
    );
    assert!(
        got.iter()
            .any(|(p, b)| p == "versions/v2/users/1/f3" && b == b"overwritten")
    );
    assert!(got.iter().any(|(p, _)| p == "versions/v1/%2E%2E/escape"));
    assert_eq!(got.len(), 13);
    assert!(
        !manifest.contains(r#""versionId":"m"#),
        "delete markers are not data: {manifest}"
    );
}

/// A kill before and after every write, each followed by a clean rerun: the same archive and
/// manifest as a run never killed, no upload left open.
#[tokio::test]
async fn a_kill_at_any_write_resumes_to_the_same_bytes() {
    let source = bucket(300);
    let clean = Fake::new();
    run_once(&source, &clean, &["users/", "../"], false, 1024)
        .await
        .expect("clean export");
    let expected = outputs(&clean);
    let writes = clean.lock().writes;
    assert!(writes > 20, "{writes} writes");
    for n in 1..=writes {
        for kill in [Kill::Before(n), Kill::After(n)] {
            let fake = Fake::new();
            *fake.kill.lock().expect("kill") = kill;
            let first = run_once(&source, &fake, &["users/", "../"], false, 1024).await;
            assert!(first.is_err(), "{kill:?}: the run was killed");
            *fake.kill.lock().expect("kill") = Kill::Never;
            run_once(&source, &fake, &["users/", "../"], false, 1024)
                .await
                .unwrap_or_else(|e| panic!("{kill:?}: rerun: {e}"));
            assert_eq!(outputs(&fake), expected, "{kill:?}");
            assert!(
                fake.lock().uploads.is_empty(),
                "{kill:?}: an upload left open"
            );
        }
    }
}

/// A version whose bytes differ from its listing (not the version listed) stops the export.
#[tokio::test]
async fn a_version_that_is_not_what_was_listed_is_refused() {
    #[derive(Clone)]
    struct Lying(Bucket);
    impl Source for Lying {
        async fn list(
            &self,
            prefix: &str,
            after: Option<&Marker>,
            max_keys: i32,
        ) -> Result<VersionPage, CloudError> {
            let mut page = self.0.list(prefix, after, max_keys).await?;
            for v in &mut page.versions {
                v.size += 1;
            }
            Ok(page)
        }
        async fn read(&self, key: &str, v: &str, from: u64) -> Result<Chunks, CloudError> {
            self.0.read(key, v, from).await
        }
    }
    let fake = Fake::new();
    let engine = Engine::new(Lying(bucket(64)), &fake, &fake, 1024);
    let mut state = State::new("uid", &["users/1/".into()], false, "t0".into());
    let err = engine.run(&mut state, &layout(), header).await;
    assert!(
        matches!(err, Err(ExportError::Changed { ref why, .. }) if why.contains("listed as")),
        "{err:?}"
    );
}

/// Writes between a kill and the rerun (an earlier key overwritten, a key added before the
/// resume point, the current key given a newer version) neither repeat nor skip an object:
/// the rerun continues after the last key it finished, by name.
#[tokio::test]
async fn a_bucket_changed_between_runs_gives_no_object_twice_or_missing() {
    let clean = Fake::new();
    run_once(&bucket(300), &clean, &["users/"], false, 1024)
        .await
        .expect("clean export");
    let writes = clean.lock().writes;
    for n in (writes / 4)..(3 * writes / 4) {
        let source = bucket(300);
        let fake = Fake::new();
        *fake.kill.lock().expect("kill") = Kill::After(n);
        let first = run_once(&source, &fake, &["users/"], false, 1024).await;
        assert!(first.is_err(), "killed at {n}");
        source.put("users/1/f0", b"newer, after the kill".to_vec());
        source.put("users/1/a-new", b"added before the resume point".to_vec());
        let current = fake
            .lock()
            .journal
            .get("state")
            .and_then(|t| serde_json::from_str::<State>(t).ok())
            .and_then(|s| s.current.map(|c| c.key));
        if let Some(key) = &current {
            source.put(key, b"a newer version of the member being written".to_vec());
        }
        *fake.kill.lock().expect("kill") = Kill::Never;
        run_once(&source, &fake, &["users/"], false, 1024)
            .await
            .unwrap_or_else(|e| panic!("rerun after {n}: {e}"));
        let (archive, _) = outputs(&fake);
        let paths: Vec<String> = members(&archive).into_iter().map(|(p, _)| p).collect();
        let unique: std::collections::BTreeSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len(), "killed at {n}: {paths:?}");
        for i in 0..9 {
            let path = format!("objects/users/1/f{i}");
            assert!(paths.contains(&path), "killed at {n}: {path} missing");
        }
        assert!(paths.contains(&"objects/users/10/other".to_owned()));
    }
}

#[test]
fn parts_grow_by_the_thousand_so_ten_thousand_hold_440_gb() {
    use super::engine::part_size;
    let mib = 1024 * 1024;
    assert_eq!(part_size(8 * mib, 1), 8 * mib);
    assert_eq!(part_size(8 * mib, 1000), 8 * mib);
    assert_eq!(part_size(8 * mib, 1001), 16 * mib);
    assert_eq!(part_size(8 * mib, 10_000), 80 * mib);
    let total: u64 = (1..=10_000).map(|n| part_size(8 * mib, n) as u64).sum();
    assert!(total > 440_000_000_000, "{total}");
}

/// An upload aborted behind the Job's back (the lifecycle rule, after a long pause): the run
/// that finds it gone starts over from a fresh checkpoint, and the next one writes the very
/// archive a run never interrupted writes.
#[tokio::test]
async fn an_upload_aborted_meanwhile_is_started_over() {
    let source = bucket(300);
    let clean = Fake::new();
    run_once(&source, &clean, &["users/"], false, 1024)
        .await
        .expect("clean export");
    let fake = Fake::new();
    *fake.kill.lock().expect("kill") = Kill::After(6);
    assert!(
        run_once(&source, &fake, &["users/"], false, 1024)
            .await
            .is_err()
    );
    *fake.kill.lock().expect("kill") = Kill::Never;
    fake.lock().uploads.clear();
    let err = run_once(&source, &fake, &["users/"], false, 1024).await;
    assert!(
        matches!(&err, Err(ExportError::State(why)) if why.contains("starts the export over")),
        "{err:?}"
    );
    run_once(&source, &fake, &["users/"], false, 1024)
        .await
        .expect("started over");
    assert_eq!(outputs(&fake), outputs(&clean));
}

/// A bucket that answers each read after a delay (S3's first-byte latency), counting reads in
/// flight at once.
#[derive(Clone)]
struct Slow {
    bucket: Bucket,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Source for Slow {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        self.bucket.list(prefix, after, max_keys).await
    }

    async fn read(&self, key: &str, version_id: &str, from: u64) -> Result<Chunks, CloudError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.bucket.read(key, version_id, from).await
    }
}

/// Small versions are read ahead, several at once, while the archive is written: the same
/// bytes as reading one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_versions_are_read_ahead_concurrently_to_the_same_bytes() {
    let source = bucket(300);
    let clean = Fake::new();
    run_once(&source, &clean, &["users/"], false, 1024)
        .await
        .expect("export");
    let slow = Slow {
        bucket: bucket(300),
        in_flight: std::sync::Arc::default(),
        most: std::sync::Arc::default(),
    };
    let fake = Fake::new();
    let engine = Engine::new(slow.clone(), &fake, &fake, 1024);
    let mut state = State::new("uid", &["users/".into()], false, "t0".into());
    engine
        .run(&mut state, &layout(), header)
        .await
        .expect("export");
    assert_eq!(outputs(&fake), outputs(&clean));
    let most = slow.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most >= 4, "{most} reads at once");
}
