//! The crate boundaries are invariants (ARCHITECTURE.md): checked here over the resolved
//! dependency graph, counting normal and build dependencies (not dev-dependencies).

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId};
use std::collections::{BTreeSet, HashMap};

fn metadata() -> Metadata {
    MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .exec()
        .expect("cargo metadata runs")
}

/// Names of every package `root` depends on at run or build time, transitively.
fn runtime_closure(metadata: &Metadata, root: &str) -> BTreeSet<String> {
    let resolve = metadata.resolve.as_ref().expect("resolved graph");
    let names: HashMap<&PackageId, &str> = metadata
        .packages
        .iter()
        .map(|package| (&package.id, package.name.as_str()))
        .collect();
    let root_id = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == root)
        .map(|package| &package.id)
        .unwrap_or_else(|| panic!("no package {root}"));
    let nodes: HashMap<&PackageId, _> = resolve.nodes.iter().map(|node| (&node.id, node)).collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        for dep in &nodes[id].deps {
            let runtime = dep
                .dep_kinds
                .iter()
                .any(|kind| matches!(kind.kind, DependencyKind::Normal | DependencyKind::Build));
            if runtime && seen.insert(names[&dep.pkg].to_owned()) {
                stack.push(&dep.pkg);
            }
        }
    }
    seen
}

fn assert_lacks(package: &str, closure: &BTreeSet<String>, forbidden: &[&str]) {
    for name in forbidden {
        assert!(
            !closure.contains(*name),
            "{package} must not depend on {name} (it does, transitively)"
        );
    }
}

#[test]
fn protocol_knows_no_runtime_no_actors_no_storage() {
    let metadata = metadata();
    let closure = runtime_closure(&metadata, "playtree-protocol");
    assert_lacks(
        "playtree-protocol",
        &closure,
        &[
            "tokio",
            "ractor",
            "sled",
            "tungstenite",
            "playtree-actors",
            "playtree-client",
            "playtree",
        ],
    );
}

#[test]
fn the_client_depends_only_on_the_protocol_among_our_crates() {
    let metadata = metadata();
    let closure = runtime_closure(&metadata, "playtree-client");
    assert!(closure.contains("playtree-protocol"));
    assert_lacks(
        "playtree-client",
        &closure,
        &["playtree-actors", "playtree", "ractor", "sled"],
    );
}

#[test]
fn actors_know_no_sockets_http_or_tokens() {
    let metadata = metadata();
    let closure = runtime_closure(&metadata, "playtree-actors");
    assert_lacks(
        "playtree-actors",
        &closure,
        &[
            "tungstenite",
            "tokio-tungstenite",
            "axum",
            "hyper",
            "jsonwebtoken",
            "figment",
            "playtree-client",
            "playtree",
        ],
    );
}

#[test]
fn nothing_depends_on_the_simulation_harness() {
    let metadata = metadata();
    for package in metadata.workspace_packages() {
        let closure = runtime_closure(&metadata, package.name.as_str());
        assert!(
            !closure.contains("playtree-sim"),
            "{} depends on playtree-sim",
            package.name
        );
    }
}

#[test]
fn the_sim_drives_the_server_only_through_the_client_crate() {
    let metadata = metadata();
    let closure = runtime_closure(&metadata, "playtree-sim");
    assert!(closure.contains("playtree-client"));
    assert_lacks(
        "playtree-sim",
        &closure,
        &["playtree-actors", "playtree", "ractor", "sled"],
    );
}

#[test]
fn only_the_server_reads_environment_variables() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_dir in ["protocol/src", "actors/src", "clients/rust/src"] {
        for entry in walk(&root.join(crate_dir)) {
            let text = std::fs::read_to_string(&entry).expect("source readable");
            assert!(
                !text.contains("std::env::var") && !text.contains("env::var("),
                "{} reads environment variables; only src/ may",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}
