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
        deploy("crds.yaml") == sedna::spec::crds_yaml(),
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
        sedna::spec::crds_yaml()
    );
}

/// Each document of `file` as the Kubernetes type its kind names; it must come back
/// unchanged from the type, so a misspelt or misplaced field (which the type would drop)
/// fails.
fn objects(file: &str) -> Vec<(String, serde_json::Value)> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
        value: &serde_json::Value,
    ) -> serde_json::Value {
        let typed: T = serde_json::from_value(value.clone()).unwrap();
        serde_json::to_value(typed).unwrap()
    }
    let text = deploy(file);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_json::Value::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap().to_string();
            let typed = match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&value),
                "ServiceAccount" => round_trip::<ServiceAccount>(&value),
                "ClusterRole" => round_trip::<ClusterRole>(&value),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(&value),
                "Deployment" => round_trip::<Deployment>(&value),
                "DaemonSet" => round_trip::<DaemonSet>(&value),
                other => panic!("deploy/{file}: unexpected kind {other}"),
            };
            assert_eq!(
                typed, value,
                "deploy/{file}: {kind} does not survive its type"
            );
            (kind, value)
        })
        .collect()
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let kinds: Vec<String> = [
        "namespace.yaml",
        "rbac.yaml",
        "controller.yaml",
        "agent.yaml",
    ]
    .iter()
    .flat_map(|file| objects(file))
    .map(|(kind, _)| kind)
    .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "DaemonSet"
        ]
    );
}

#[test]
fn the_workloads_run_sedna_with_their_service_accounts() {
    for (file, command, account) in [
        ("controller.yaml", "controller", "sedna-controller"),
        ("agent.yaml", "agent", "sedna-agent"),
    ] {
        let (_, workload) = objects(file).remove(0);
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], account, "{file}");
        assert_eq!(
            pod["containers"][0]["command"],
            serde_json::json!(["sedna", command]),
            "{file}"
        );
        assert_eq!(workload["metadata"]["namespace"], "sedna", "{file}");
    }
    // The agent learns its node from the downward API.
    let (_, agent) = objects("agent.yaml").remove(0);
    let env = &agent["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{env}"
    );
}

#[test]
fn the_roles_allow_what_the_controller_and_agent_call() {
    let roles: Vec<serde_json::Value> = objects("rbac.yaml")
        .into_iter()
        .filter(|(kind, _)| kind == "ClusterRole")
        .map(|(_, role)| role)
        .collect();
    let allows = |role: &serde_json::Value, group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            let has =
                |key: &str, value: &str| rule[key].as_array().unwrap().iter().any(|v| v == value);
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let (controller, agent) = (&roles[0], &roles[1]);
    assert_eq!(controller["metadata"]["name"], "sedna-controller");
    for (group, resource, verb) in [
        ("sedna.io", "incrementallearningjobs", "watch"),
        ("sedna.io", "incrementallearningjobs", "patch"),
        ("sedna.io", "incrementallearningjobs/status", "patch"),
        ("sedna.io", "models", "get"),
        ("sedna.io", "datasets", "get"),
        ("", "pods", "watch"),
        ("", "pods", "create"),
        ("", "pods", "delete"),
        ("", "pods", "deletecollection"),
        ("events.k8s.io", "events", "create"),
    ] {
        assert!(
            allows(controller, group, resource, verb),
            "controller: {verb} {group}/{resource}"
        );
    }
    for (group, resource, verb) in [
        ("sedna.io", "incrementallearningjobs", "list"),
        ("sedna.io", "datasets", "list"),
        ("sedna.io", "models", "list"),
        ("sedna.io", "incrementallearningjobs/status", "patch"),
        ("sedna.io", "datasets/status", "patch"),
    ] {
        assert!(
            allows(agent, group, resource, verb),
            "agent: {verb} {group}/{resource}"
        );
    }
    assert!(
        !allows(agent, "", "pods", "create"),
        "the agent makes no Pods"
    );
}
