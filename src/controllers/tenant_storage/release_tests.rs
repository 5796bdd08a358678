//! Letting go of a deleted tenant's bucket and key, on the in-memory cloud.

use std::collections::BTreeMap;

use super::record::Record;
use super::release::{Departure, KeyFate, Released, release};
use super::storage_tests::{EU, Harness, id, key_behind_alias, ours};
use crate::api::DeletionPolicy;
use crate::cloud::fake::Crash;
use crate::plan::tags;

fn departure(policy: DeletionPolicy, purge: Option<&str>) -> Departure {
    match policy {
        DeletionPolicy::Retain => Departure::Retain,
        DeletionPolicy::Delete => Departure::Delete {
            purge: purge.map(str::to_owned),
            key_window: 7,
        },
    }
}

async fn let_go(h: &Harness, policy: DeletionPolicy, purge: Option<&str>) -> Released {
    match release(&h.cloud, &id(), &h.status, &departure(policy, purge)).await {
        Ok(released) => released,
        Err(e) => panic!("release failed: {e}"),
    }
}

async fn provisioned() -> (Harness, String) {
    let mut h = Harness::new();
    h.provisioned().await;
    let bucket = h.desired(EU).bucket;
    (h, bucket)
}

#[tokio::test]
async fn retain_marks_the_bucket_released_once_and_a_new_tenant_takes_it_back() {
    let (mut h, bucket) = provisioned().await;
    let released = let_go(&h, DeletionPolicy::Retain, None).await;
    assert_eq!(
        released,
        Released::Kept {
            bucket: bucket.clone(),
            tagged_now: true
        }
    );
    let stored = h.world().buckets[&bucket].settings.tags.clone();
    assert_eq!(stored.get(tags::RELEASED).map(String::as_str), Some("true"));
    assert!(id().tags().iter().all(|(k, v)| stored.get(k) == Some(v)));
    let writes = h.writes().len();
    let again = let_go(&h, DeletionPolicy::Retain, None).await;
    assert!(matches!(
        again,
        Released::Kept {
            tagged_now: false,
            ..
        }
    ));
    assert_eq!(h.writes().len(), writes, "released once");
    assert_eq!(
        h.world().keys[0].state,
        "Enabled",
        "the key stays with the data"
    );

    h.status = Record::default();
    let done = h.provisioned().await;
    assert!(done.adopting, "re-created under the name: adopted");
    assert_eq!(h.world().keys.len(), 1, "with its key");
}

#[tokio::test]
async fn retain_of_a_claimed_bucket_never_tagged_adds_the_ownership_tags() {
    let mut h = Harness::new();
    let bucket = h.desired(EU).bucket;
    h.status.bucket_name = Some(bucket.clone());
    h.status.region = Some(EU.into());
    h.world()
        .buckets
        .insert(bucket.clone(), ours(&BTreeMap::new()));
    let_go(&h, DeletionPolicy::Retain, None).await;
    let stored = h.world().buckets[&bucket].settings.tags.clone();
    assert!(
        id().tags().iter().all(|(k, v)| stored.get(k) == Some(v)),
        "{stored:?}"
    );
    assert!(stored.contains_key(tags::RELEASED));
}

#[tokio::test]
async fn a_bucket_that_is_not_the_tenants_is_never_touched() {
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        let (h, bucket) = provisioned().await;
        let mut other = h.desired(EU).tags;
        other.insert(tags::NAME.into(), "someone-else".into());
        if let Some(b) = h.world().buckets.get_mut(&bucket) {
            b.settings.tags = other.clone();
        }
        let writes = h.writes().len();
        let released = let_go(&h, policy, None).await;
        assert!(matches!(released, Released::NotOurs { .. }), "{released:?}");
        assert_eq!(h.writes().len(), writes, "{policy:?}: nothing written");
        assert!(h.world().buckets.contains_key(&bucket));
    }
}

#[tokio::test]
async fn delete_waits_for_data_and_for_a_running_purge() {
    let (h, bucket) = provisioned().await;
    let purging = let_go(&h, DeletionPolicy::Delete, Some("purge-all")).await;
    assert_eq!(
        purging,
        Released::Blocked {
            bucket: bucket.clone(),
            purge: Some("purge-all".into())
        }
    );
    if let Some(b) = h.world().buckets.get_mut(&bucket) {
        b.has_data = true;
    }
    let full = let_go(&h, DeletionPolicy::Delete, None).await;
    assert!(matches!(full, Released::Blocked { purge: None, .. }));
    assert!(h.world().buckets.contains_key(&bucket));
    assert_eq!(h.world().keys[0].state, "Enabled");
}

#[tokio::test]
async fn delete_removes_the_empty_bucket_and_retires_only_the_tenants_key() {
    let (h, bucket) = provisioned().await;
    let released = let_go(&h, DeletionPolicy::Delete, None).await;
    assert_eq!(
        released,
        Released::Deleted {
            bucket: bucket.clone(),
            key: KeyFate::Retired
        }
    );
    {
        let world = h.world();
        assert!(!world.buckets.contains_key(&bucket));
        assert_eq!(world.keys[0].state, "PendingDeletion");
        assert!(world.aliases.is_empty(), "the alias is freed");
    }

    let mut h = Harness::new();
    h.status.bucket_name = Some(bucket.clone());
    h.status.region = Some(EU.into());
    key_behind_alias(
        &mut h,
        "Enabled",
        BTreeMap::from([("owner".into(), "x".into())]),
    );
    let released = let_go(&h, DeletionPolicy::Delete, None).await;
    assert!(
        matches!(
            released,
            Released::Deleted {
                key: KeyFate::NotOurs { .. },
                ..
            }
        ),
        "{released:?}"
    );
    assert_eq!(h.world().keys[0].state, "Enabled", "not ours: left alone");
}

#[tokio::test]
async fn nothing_claimed_means_nothing_to_let_go() {
    let h = Harness::new();
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        assert_eq!(let_go(&h, policy, None).await, Released::NothingClaimed);
    }
    assert!(h.writes().is_empty());
}

#[tokio::test]
async fn a_crash_at_any_write_of_a_deletion_is_finished_by_the_next_attempt() {
    for crash in [
        Crash::Before(0),
        Crash::After(0),
        Crash::Before(1),
        Crash::After(1),
    ] {
        let (h, bucket) = provisioned().await;
        h.cloud.crash(Some(crash));
        let delete = departure(DeletionPolicy::Delete, None);
        let crashed = release(&h.cloud, &id(), &h.status, &delete).await;
        assert!(crashed.is_err(), "{crash:?}");
        h.cloud.crash(None);
        let released = let_go(&h, DeletionPolicy::Delete, None).await;
        assert!(
            matches!(released, Released::Deleted { .. }),
            "{crash:?}: {released:?}"
        );
        let world = h.world();
        assert!(!world.buckets.contains_key(&bucket), "{crash:?}");
        assert_eq!(world.keys[0].state, "PendingDeletion", "{crash:?}");
    }
}
