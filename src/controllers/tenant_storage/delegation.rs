//! Delegated mode: the customer hosts the bucket and grants a role. The operator publishes what
//! the customer must create, verifies it by assuming that role with the tenant's ExternalId,
//! reads (never writes) the bucket's configuration, and gives the tenant's workloads a role
//! that may only assume the customer's role.

mod decide;
mod external_id;
mod verify;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use self::decide::{Assessment, Customer};
pub(super) use self::external_id::forget as forget_external_id;
use super::access;
use super::refusal::Refusal;
use super::report::{Report, refuse};
use super::role::{self, Wanted};
use crate::api::{ConditionStatus, DelegationStatus, ResidencyPolicySpec, TenantStorage};
use crate::controllers::conditions::READY;
use crate::controllers::toolkit::publish;
use crate::controllers::{Context, Error};
use crate::plan::access::{DesiredRole, ObservedRole};
use crate::plan::access::{
    RoleName, chaining_policy, customer_permissions_policy, customer_trust_policy,
};
use crate::plan::{Arn, PolicyDocument, TenantIdentity, tenant_tags};

/// The delegated pipeline: check the customer's side as named, ExternalId, verify, assess,
/// publish what the customer must create, the workload role, status.
pub(super) async fn provision(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    id: &TenantIdentity,
) -> Result<Action, Error> {
    let spec = ts
        .spec
        .delegated
        .as_ref()
        .ok_or(Error::MissingField("spec.delegated"))?;
    let requested = ts.spec.region.as_deref();
    let own_account = &ctx.settings.access.account_id;
    let customer = match decide::customer(spec, requested, policy_name, policy, own_account) {
        Ok(customer) => customer,
        Err(refusal) => return refuse(report, ctx, api, refusal).await,
    };
    let external_id = external_id::external_id(ctx, id).await?;
    let start_region = requested
        .map(str::to_owned)
        .or_else(|| {
            let delegation = report.status.delegation.as_ref();
            delegation.and_then(|d| d.bucket_region.clone())
        })
        .unwrap_or_else(|| policy.default_region.clone());
    let verified = verify::verify(ctx, &customer, &external_id, &start_region).await?;
    let assessment = decide::assess(verified, &customer, requested, policy_name, policy);
    show_findings(ctx, ts, report, &assessment).await;
    report.status.delegation = Some(publication(
        ctx,
        ts,
        id,
        &customer,
        &external_id,
        policy,
        &assessment,
    ));

    // The workload role may assume the customer's role only once the bucket is verified.
    let chaining = assessment.usable().then(|| chaining_policy(&spec.role_arn));
    let wanted = workload_role(ctx, ts, id, &customer, policy_name, policy, chaining).await?;
    let (role, observed_role) = match wanted {
        Ok(wanted) => wanted,
        Err(refusal) => return refuse(report, ctx, api, refusal).await,
    };
    let access = ts.spec.access.as_ref();
    if let Some(refusal) = access::reconcile_role(
        ctx,
        ts,
        report,
        api,
        id,
        role.as_ref(),
        observed_role,
        access,
    )
    .await?
    {
        return refuse(report, ctx, api, refusal).await;
    }
    match &assessment.failure {
        Some(failure) => report.not_ready(failure.reason, &failure.message),
        None => report.set(
            READY,
            ConditionStatus::True,
            "Verified",
            format!("customer bucket {} verified: reachable through {}, region allowed, SSE-KMS, public access blocked", customer.bucket, spec.role_arn),
        ),
    }
    report.status.last_recheck = ts.annotations().get(super::RECHECK).cloned();
    report.save(api).await?;
    // The customer's bucket and role are in their account, where our drift events do not look.
    Ok(ctx.schedule.resync_polled(&super::tenant_key(ts)))
}

/// The workload role `spec.access` asks for (if any), whose only permission is `chaining`.
async fn workload_role(
    ctx: &Context,
    ts: &TenantStorage,
    id: &TenantIdentity,
    customer: &Customer,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    chaining: Option<PolicyDocument>,
) -> Result<Result<(Option<DesiredRole>, Option<ObservedRole>), Refusal>, Error> {
    let Some(access) = &ts.spec.access else {
        return Ok(Ok((None, None)));
    };
    let wanted = Wanted {
        id,
        partition: customer.partition,
        tags: &tenant_tags(id, policy_name, &policy.jurisdiction),
        access,
        inline_policy: chaining,
        permissions_boundary: policy.access.permissions_boundary_arn.clone(),
        fresh: super::reads_fresh(ts),
    };
    let wanted = role::wanted(&access::iam(ctx), wanted).await?;
    Ok(wanted.map(|(role, seen)| (Some(role), seen)))
}

/// Sets the assessment's conditions; a residency violation is announced once.
async fn show_findings(
    ctx: &Context,
    ts: &TenantStorage,
    report: &mut Report<'_>,
    assessment: &Assessment,
) {
    for finding in &assessment.findings {
        let is_new = report.previous_ready_reason() != Some(finding.reason);
        if finding.reason == "ResidencyViolation" && is_new {
            let note = finding.message.clone();
            publish(ctx, ts, EventType::Warning, finding.reason, "Verify", note).await;
        }
        report.set(
            finding.type_,
            finding.status,
            finding.reason,
            finding.message.clone(),
        );
    }
}

/// What the customer must create, shown in status: the trust and permissions policies, and
/// where the ExternalId is kept.
fn publication(
    ctx: &Context,
    ts: &TenantStorage,
    id: &TenantIdentity,
    customer: &Customer,
    external_id: &str,
    policy: &ResidencyPolicySpec,
    assessment: &Assessment,
) -> DelegationStatus {
    let settings = &ctx.settings.access;
    let role_name = RoleName::of(customer.partition, &settings.account_id, id);
    let workloads = ts.spec.access.as_ref().map(|_| role_name.arn.as_str());
    let trust = customer_trust_policy(&settings.operator_arn, external_id, workloads);
    let level = ts.spec.access.as_ref().map(|a| a.level).unwrap_or_default();
    let bucket_arn = Arn::bucket(customer.partition, &customer.bucket).to_string();
    let permissions = customer_permissions_policy(
        level,
        &bucket_arn,
        &customer.role_arn.account,
        &policy.allowed_regions,
        customer.partition,
    );
    DelegationStatus {
        external_id_secret: format!(
            "{}/{}",
            ctx.settings.jobs.namespace,
            external_id::secret_name(id)
        ),
        trust_policy: trust.to_string(),
        permissions_policy: permissions.to_string(),
        bucket_region: assessment.bucket_region.clone(),
    }
}
