//! The Kubernetes manifests under `deploy/`: generated from the Rust types, and valid
//! Kubernetes objects. No API server can be installed on these machines, so they are
//! checked against Kubernetes' own types (k8s-openapi).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn deploy_holds_the_crds_the_types_generate() {
    assert!(
        deploy("crds.yaml") == sedna::api::crds_yaml(),
        "deploy/crds.yaml differs from the types: run `cargo run -- crds > deploy/crds.yaml`"
    );
}

#[test]
fn the_crds_are_valid_custom_resource_definitions_with_sedna_names() {
    let text = deploy("crds.yaml");
    let crds: Vec<CustomResourceDefinition> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| CustomResourceDefinition::deserialize(document).unwrap())
        .collect();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "datasets.sedna.io",
            "models.sedna.io",
            "incrementallearningjobs.sedna.io"
        ]
    );
    for crd in &crds {
        assert_eq!(crd.spec.group, "sedna.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let [version] = crd.spec.versions.as_slice() else {
            panic!("one version")
        };
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(columns.contains(&"Age"), "{columns:?}");
    }
    let job = &crds[2];
    assert_eq!(job.spec.names.kind, "IncrementalLearningJob");
    assert_eq!(
        job.spec.names.short_names.as_deref(),
        Some(&["il".to_string()][..])
    );
    // Sedna's field names, and pod templates left to the API server's Pod checks.
    let schema = serde_json::to_value(&job.spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "initialModel",
        "dataset",
        "trainSpec",
        "evalSpec",
        "deploySpec",
        "outputDir",
    ] {
        assert!(spec.get(field).is_some(), "spec.{field} in {spec}");
    }
    let template = &spec["trainSpec"]["properties"]["template"];
    assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
    let condition = &spec["trainSpec"]["properties"]["trigger"]["properties"]["condition"];
    assert_eq!(condition["properties"]["operator"]["type"], "string");
}

#[test]
fn sedna_crds_prints_them() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sedna"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        sedna::api::crds_yaml()
    );
}
