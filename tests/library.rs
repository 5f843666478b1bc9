//! The crate's shape: a library a tch user can depend on without the command
//! line's dependencies, and modules that never import in a circle.

mod common;

use common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `cargo tree -e normal --no-default-features`: what a library user who
/// turns the `cli` feature off gets.
#[test]
fn the_library_alone_brings_no_cli_dependencies() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-e", "normal", "--no-default-features", "--prefix", "none", "--offline"])
        .current_dir(root())
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains("tch") && names.contains("safetensors"), "{tree}");
    for cli_only in ["clap", "indicatif", "plotters", "anyhow"] {
        assert!(!names.contains(cli_only), "{cli_only} is in the library's tree:\n{tree}");
    }
}

/// The modules each module of `dir` imports (`crate::X` in the library,
/// `super::X` in the command line's `cli/`), by file stem.
fn imports(dir: &str, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(root().join(dir)).expect("a source dir") {
        let path = entry.expect("a dir entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().is_none_or(|e| e != "rs") || ["lib", "main", "mod"].contains(&stem) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        let mut used = BTreeSet::new();
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if rest.starts_with('{') {
                // `use super::{a, b}`
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for part in group.split(',') {
                    let module = part.trim().split("::").next().unwrap_or("").trim();
                    if !module.is_empty() && module != stem {
                        used.insert(module.to_string());
                    }
                }
            } else if !name.is_empty() && name != stem {
                used.insert(name);
            }
        }
        graph.insert(stem.to_string(), used);
    }
    graph
}

/// A circle of imports in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next) {
                if let Some(cycle) = visit(next, graph, path, done) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    for (dir, prefix) in [("src", "crate::"), ("src/cli", "super::")] {
        let graph = imports(dir, prefix);
        assert!(graph.len() >= 5, "{dir}: only {} modules found", graph.len());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{dir}: the modules import in a circle: {}", cycle.join(" -> "));
        }
    }
    // The checker itself finds a circle.
    let circle: BTreeMap<String, BTreeSet<String>> = [
        ("checkpoint", &["output"][..]),
        ("output", &["training"][..]),
        ("training", &["checkpoint"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(
        find_cycle(&circle).map(|c| c.join(" -> ")),
        Some("checkpoint -> output -> training -> checkpoint".to_string())
    );
}

/// The library refuses what would otherwise train nothing or panic, with a
/// typed error naming the setting.
#[test]
fn the_training_api_refuses_settings_that_make_no_sense() {
    use cross_entropy_tch::checkpoint::Checkpoint;
    use cross_entropy_tch::data::{Bundled, Dataset};
    use cross_entropy_tch::training::{train, TrainConfig, TrainError};
    let data = Dataset::bundled(Bundled::Iris).unwrap();
    let cpu = tch::Device::Cpu;
    let refused = |config: TrainConfig, init: Option<&Checkpoint>| match train(
        &data,
        &config,
        cpu,
        init,
        |_| {},
    ) {
        Err(TrainError::Config { what, .. }) => what,
        other => panic!("expected a Config error, got {:?}", other.map(|r| r.epochs.len())),
    };
    assert_eq!(refused(TrainConfig { epochs: 0, ..TrainConfig::default() }, None), "epochs");
    let zero_batch = TrainConfig { batch_size: Some(0), ..TrainConfig::default() };
    assert_eq!(refused(zero_batch, None), "batch_size");
    let no_clip = TrainConfig { clip_grad_norm: Some(-1.0), ..TrainConfig::default() };
    assert_eq!(refused(no_clip, None), "clip_grad_norm");
    let short = Checkpoint {
        layers: vec![cross_entropy_tch::checkpoint::LinearParams {
            weight: vec![0.0; 5],
            bias: vec![0.0; 3],
        }],
        classes: 3,
        features: 4,
        hidden: vec![],
        standardizer: None,
    };
    assert_eq!(refused(TrainConfig::default(), Some(&short)), "checkpoint");
    let no_dropout_layer = TrainConfig { dropout: 0.5, ..TrainConfig::default() };
    assert_eq!(refused(no_dropout_layer, None), "dropout");
    let mlp = TrainConfig { hidden: vec![4], dropout: 1.0, ..TrainConfig::default() };
    assert_eq!(refused(mlp, None), "dropout");
    let empty_layer = TrainConfig { hidden: vec![4, 0], ..TrainConfig::default() };
    assert_eq!(refused(empty_layer, None), "hidden");
}
