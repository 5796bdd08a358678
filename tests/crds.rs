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
