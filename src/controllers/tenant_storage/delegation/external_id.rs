//! A delegated tenant's ExternalId: random, kept in a Secret in the operator's namespace, never
//! logged.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::controllers::{Context, Error};
use crate::plan::{TenantIdentity, naming, tags};

/// Key of the ExternalId in the tenant's ExternalId Secret.
const EXTERNAL_ID_KEY: &str = "externalId";

/// The Secret holding a tenant's ExternalId lives in the operator's namespace, not the
/// tenant's: a tenant must never choose or change its ExternalId, or it could present another
/// customer's and make the operator act for that customer (the confused deputy the ExternalId
/// exists to prevent).
pub(super) fn secret_name(id: &TenantIdentity) -> String {
    format!(
        "{}-external-id",
        naming::role_name(&id.cluster_id, &id.namespace, &id.name)
    )
}

/// A new ExternalId: 128 random bits from the kernel, hex.
pub(super) fn new_external_id() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the tenant's ExternalId, creating its Secret the first time. Never logged.
pub(super) async fn external_id(ctx: &Context, id: &TenantIdentity) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let name = secret_name(id);
    if let Some(secret) = secrets.get_opt(&name).await? {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(EXTERNAL_ID_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .filter(|v| v.len() >= 2 && !v.contains(char::is_whitespace));
        return value.ok_or(Error::ExternalIdSecret {
            secret: format!("{}/{name}", ctx.settings.jobs.namespace),
            why: format!("it has no usable {EXTERNAL_ID_KEY} key; delete the Secret to have a new ExternalId generated (the customer's trust policy must then be updated)"),
        });
    }
    let external_id = new_external_id()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ctx.settings.jobs.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "tenant-storage-operator".to_owned(),
            )])),
            // Annotations, not labels: a TenantStorage name may be longer than a label value.
            annotations: Some(BTreeMap::from([
                (tags::NAMESPACE.to_owned(), id.namespace.clone()),
                (tags::NAME.to_owned(), id.name.clone()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            EXTERNAL_ID_KEY.to_owned(),
            ByteString(external_id.clone().into_bytes()),
        )])),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(external_id)
}

/// Deletes the tenant's ExternalId Secret (it is in another namespace than the TenantStorage,
/// so garbage collection cannot).
pub(in crate::controllers::tenant_storage) async fn forget(
    ctx: &Context,
    id: &TenantIdentity,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    match secrets.delete(&secret_name(id), &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_random_hex() {
        let (a, b) = (new_external_id().ok(), new_external_id().ok());
        assert_ne!(a, b);
        assert!(a.is_some_and(|a| a.len() == 32 && a.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
