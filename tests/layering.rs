//! The bottom floors of the engine import each other in one direction only:
//!
//! ```text
//! tensor  <-  backend  <-  autograd  <-  ops  <-  loss, optim
//! ```
//!
//! (`error` is below all of them.) Beside that stack, a few base modules and leaf files name
//! (almost) nothing of the crate, so that every room can use them without a detour through
//! another room: `volume` (the medical volume, used by io, geometry, nn, synth and train) names
//! only the error type, and geometry does not depend on io's file formats to hold a volume;
//! `geometry/mc_tables.rs` (the marching-cubes case table) names nothing, and it is the only
//! path from the bottom floors into an upper room.
//!
//! This test reads the sources of those six modules, collects
//! every `crate::<module>` path they name (in `use` lines and inline), and fails on an edge that
//! points upwards, naming the file and the line, so an import cycle cannot come back unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom first; a module may name only modules of a lower rank.
const LAYERS: &[(&str, usize)] =
    &[("tensor", 0), ("backend", 1), ("autograd", 2), ("ops", 3), ("loss", 4), ("optim", 4)];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The `.rs` files of `module` (a directory or a single file under `src/`).
fn files(src: &Path, module: &str) -> Vec<PathBuf> {
    let dir = src.join(module);
    if !dir.is_dir() {
        return vec![src.join(format!("{module}.rs"))];
    }
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The first path segment of every `crate::...` path on a line of code (comments stripped),
/// including each branch of `crate::{a, b::c}`.
fn crate_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let seg = part.trim().split("::").next().unwrap_or("").trim();
                out.push(seg.to_string());
            }
        } else {
            let seg: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(seg);
        }
    }
    out
}

#[test]
fn bottom_floors_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut bad = Vec::new();
    for (module, r) in LAYERS {
        for file in files(&src, module) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (n, line) in text.lines().enumerate() {
                for target in crate_modules(line) {
                    let Some(tr) = rank(&target) else { continue };
                    if target == *module {
                        continue;
                    }
                    let at = format!("{}:{}", file.display(), n + 1);
                    edges.entry((module.to_string(), target.clone())).or_insert(at.clone());
                    if tr >= *r {
                        bad.push(format!("{module} -> {target} at {at}: {}", line.trim()));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "upward imports (would make a cycle):\n{}", bad.join("\n"));
    // The expected downward edges exist, so the scan itself is known to see imports.
    for (from, to) in [("backend", "tensor"), ("autograd", "tensor"), ("ops", "autograd")] {
        assert!(edges.contains_key(&(from.into(), to.into())), "no {from} -> {to} edge found");
    }
}

/// Base modules and leaf files with the crate paths each may name (`Error`/`Result` are the
/// crate-root re-exports of `error`).
const FLOORS: &[(&str, &[&str])] =
    &[("volume.rs", &["error", "Error", "Result"]), ("geometry/mc_tables.rs", &[])];

/// Leaf files of upper rooms that the bottom floors may name (the CUDA marching cubes uploads the
/// CPU's case table); any other path into those rooms from below is an upward edge.
const LEAVES_FROM_BELOW: &[&str] = &["crate::geometry::mc_tables"];

/// Rooms above the bottom floors (beside the base modules).
const UPPER: &[&str] = &["io", "geometry", "nn", "train", "synth", "pipeline", "cli"];

/// Rooms and the modules each must not name: geometry computes on volumes, it does not read them.
const NOT_NAMED: &[(&str, &[&str])] = &[("geometry", &["io", "nn", "train", "pipeline", "synth"])];

/// Every `(target module, file:line)` named by the code of `path` (a file or a module's files).
fn named(src: &Path, path: &str) -> Vec<(String, String)> {
    let file = src.join(path);
    let list = if file.is_file() { vec![file] } else { files(src, path) };
    let mut out = Vec::new();
    for f in list {
        let text = std::fs::read_to_string(&f).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            for target in crate_modules(line) {
                out.push((target, format!("{}:{}: {}", f.display(), n + 1, line.trim())));
            }
        }
    }
    out
}

#[test]
fn base_modules_name_only_what_lies_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (path, allowed) in FLOORS {
        assert!(src.join(path).exists(), "the base module src/{path} is gone");
        for (target, at) in named(&src, path) {
            if !allowed.contains(&target.as_str()) {
                bad.push(format!("{path} names crate::{target} at {at}"));
            }
        }
    }
    for (room, forbidden) in NOT_NAMED {
        for (target, at) in named(&src, room) {
            if forbidden.contains(&target.as_str()) {
                bad.push(format!("{room} names crate::{target} at {at}"));
            }
        }
    }
    assert!(bad.is_empty(), "a base module or room names what lies above it:\n{}", bad.join("\n"));
    // The scan sees geometry's use of the base module, so an empty result above means something.
    assert!(named(&src, "geometry").iter().any(|(t, _)| t == "volume"), "no geometry -> volume");
}

#[test]
fn bottom_floors_reach_upper_rooms_only_through_leaf_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut leaf_used = false;
    for (module, _) in LAYERS {
        for (target, at) in named(&src, module) {
            if !UPPER.contains(&target.as_str()) {
                continue;
            }
            let line = at.split_once(": ").map_or("", |(_, l)| l);
            let paths = line.matches(&format!("crate::{target}")).count();
            let leaves: usize = LEAVES_FROM_BELOW.iter().map(|l| line.matches(l).count()).sum();
            if leaves == paths {
                leaf_used = true;
            } else {
                bad.push(format!("{module} names crate::{target} at {at}"));
            }
        }
    }
    assert!(bad.is_empty(), "bottom floors name upper rooms:\n{}", bad.join("\n"));
    assert!(leaf_used, "no bottom floor uses the shared case table any more: update the test");
}

#[test]
fn the_scanner_reads_grouped_and_inline_paths() {
    assert_eq!(crate_modules("use crate::{ops, tensor::Tensor};"), ["ops", "tensor"]);
    assert_eq!(crate_modules("let t = crate::backend::add(a, b)?; // crate::ops"), ["backend"]);
    assert!(crate_modules("// use crate::ops;").is_empty());
}
