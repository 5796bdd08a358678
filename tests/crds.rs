//! `crds/` is what users and the Helm chart install: it must be exactly what the Rust types
//! generate.

use std::path::PathBuf;

#[test]
fn crds_directory_is_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = tenant_storage_operator::api::crds_yaml().expect("CRDs serialize");
    let mut expected_files: Vec<String> = Vec::new();
    for (plural, yaml) in generated {
        let file = format!("{plural}.{}.yaml", tenant_storage_operator::api::GROUP);
        let on_disk = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "crds/{file} is stale: regenerate with `cargo run -- crds --out-dir crds`"
        );
        expected_files.push(file);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds exactly the generated CRDs"
    );
}

/// `kubectl explain` shows a description for every field of every kind.
#[test]
fn every_field_is_described() {
    fn walk(path: &str, schema: &serde_json::Value, seen: &mut usize, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                *seen += 1;
                if prop["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(here.clone());
                }
                walk(&here, prop, seen, missing);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], seen, missing);
        }
    }
    let (mut seen, mut missing) = (0, Vec::new());
    for crd in [
        <tenant_storage_operator::api::TenantStorage as kube::CustomResourceExt>::crd(),
        <tenant_storage_operator::api::ResidencyPolicy as kube::CustomResourceExt>::crd(),
    ] {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let root = &schema["openAPIV3Schema"];
        // apiVersion, kind and metadata are described by Kubernetes itself.
        for field in ["spec", "status"] {
            if root["properties"][field].is_object() {
                let path = format!("{}.{field}", crd.spec.names.kind);
                walk(&path, &root["properties"][field], &mut seen, &mut missing);
            }
        }
    }
    assert!(seen > 25, "only {seen} fields walked");
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}
