//! The Jobs the request controllers create (deletion and export): one hardened pod running this
//! operator's own binary under a dedicated service account, in the operator's namespace; and
//! the rule that a tenant's deletion and export never run at once.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta};

use super::{CaBundleSource, Context, Error, MountedCaBundle};
use crate::api::{DataDeletionRequest, DataExportRequest, DeletionPhase, ExportPhase};

/// Label on deletion and export Jobs: the tenant whose data they touch (`<namespace>.<name>`,
/// or a hash when longer than a label value may be).
pub const TENANT_LABEL: &str = "storage.tenancy.dev/tenant";

/// What differs between the Jobs.
pub struct Pod<'a> {
    pub name: &'a str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: &'a str,
    pub container: &'a str,
    pub args: Vec<String>,
}

pub fn build(ctx: &Context, pod: Pod<'_>) -> Job {
    let jobs = &ctx.settings.jobs;
    let mut labels = pod.labels;
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "tenant-storage-operator".to_owned(),
    );
    let mut env: Vec<EnvVar> = jobs
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .collect();
    // The pod's name identifies it in the request's fence Lease.
    env.push(EnvVar {
        name: "POD_NAME".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    let (volumes, mounts) = jobs.ca_bundle.as_ref().map(ca_bundle_volume).unzip();
    Job {
        metadata: ObjectMeta {
            name: Some(pod.name.to_owned()),
            namespace: Some(jobs.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(pod.annotations),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // Each retry resumes from the checkpoint, so retries are cheap and safe; one pod at
            // a time, and a replacement only once the previous pod has failed for good.
            backoff_limit: Some(6),
            parallelism: Some(1),
            pod_replacement_policy: Some("Failed".to_owned()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(pod.service_account.to_owned()),
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![Container {
                        name: pod.container.to_owned(),
                        image: Some(jobs.image.clone()),
                        command: Some(vec!["tenant-storage-operator".to_owned()]),
                        args: Some(pod.args),
                        env: Some(env),
                        volume_mounts: mounts.map(|m| vec![m]),
                        security_context: Some(hardened()),
                        ..Container::default()
                    }],
                    volumes: volumes.map(|v| vec![v]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn hardened() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Whether a Job has finished (succeeded, or failed for good).
pub fn finished(job: &Job) -> bool {
    job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// The kinds of request that run as Jobs.
pub enum Kind {
    Deletion,
    Export,
}

/// The Jobs of `kind` that touch `tenant` and whose request has not ended. Read from the API
/// server, not a cache, under [`Context::job_gate`]: a deletion and an export of one tenant
/// never run at once, and the one whose Job exists first goes first. A request's own phase
/// says when it ended (its Job writes it), as well as the Job's conditions.
pub async fn running_for_tenant(
    ctx: &Context,
    tenant: &str,
    kind: Kind,
) -> Result<Vec<String>, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let (label, annotation) = match kind {
        Kind::Deletion => (
            crate::plan::naming::DELETION_REQUEST_LABEL,
            super::data_deletion_request::REQUEST_ANNOTATION,
        ),
        Kind::Export => (
            super::data_export_request::EXPORT_REQUEST_LABEL,
            super::data_export_request::REQUEST_ANNOTATION,
        ),
    };
    let selector = format!("{TENANT_LABEL}={tenant},{label}");
    let mut running = Vec::new();
    for job in jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let request = job
            .annotations()
            .get(annotation)
            .and_then(|r| r.split_once('/'));
        let ended = match request {
            _ if finished(&job) => true,
            Some((ns, name)) => request_ended(ctx, &kind, ns, name).await?,
            None => false,
        };
        if !ended {
            running.extend(job.metadata.name.clone());
        }
    }
    Ok(running)
}

/// Whether a request is gone or in a phase it never leaves. `Failed` is not one: the Job
/// writes it after every failed attempt and then retries, so a Job that has not finished
/// (no Complete or Failed condition) still runs whatever its request says.
async fn request_ended(ctx: &Context, kind: &Kind, ns: &str, name: &str) -> Result<bool, Error> {
    let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(match kind {
        Kind::Deletion => {
            let api: Api<DataDeletionRequest> = Api::namespaced(ctx.client.clone(), ns);
            api.list(&by_name).await?.items.first().is_none_or(|r| {
                use DeletionPhase::*;
                let phase = r.status.as_ref().and_then(|s| s.phase);
                matches!(phase, Some(Succeeded | Blocked | Rejected))
            })
        }
        Kind::Export => {
            let api: Api<DataExportRequest> = Api::namespaced(ctx.client.clone(), ns);
            api.list(&by_name).await?.items.first().is_none_or(|r| {
                use ExportPhase::*;
                let phase = r.status.as_ref().and_then(|s| s.phase);
                matches!(phase, Some(Succeeded | Rejected | Expired))
            })
        }
    })
}

/// The operator's CA bundle, read-only at the path it has in the operator's pod.
fn ca_bundle_volume(ca: &MountedCaBundle) -> (Volume, VolumeMount) {
    const NAME: &str = "ca-bundle";
    let volume = match &ca.source {
        CaBundleSource::ConfigMap(name) => Volume {
            name: NAME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        CaBundleSource::Secret(name) => Volume {
            name: NAME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    };
    let mount = VolumeMount {
        name: NAME.to_owned(),
        mount_path: ca.dir.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}
