//! Embeds every `kernels/*.cu` file, with its local `#include "x.cuh"` headers inlined, into
//! `$OUT_DIR/kernels.rs` as `pub const NAME: &str`, plus `ALL: &[(&str, &str)]`, for NVRTC at run
//! time. Needs neither a GPU nor the CUDA toolkit.

use std::fs;
use std::path::{Path, PathBuf};

fn flatten(path: &Path, dir: &Path, depth: usize, out: &mut String) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for line in text.lines() {
        let trimmed = line.trim_start();
        let local = trimmed
            .strip_prefix("#include \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .filter(|_| depth < 8);
        match local {
            Some(header) => {
                out.push_str(&format!("// ---- begin {header}\n"));
                flatten(&dir.join(header), dir, depth + 1, out);
                out.push_str(&format!("// ---- end {header}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

fn main() {
    let dir = PathBuf::from("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut consts = String::new();
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "cu")) {
        println!("cargo:rerun-if-changed={}", f.display());
        let stem = f.file_stem().expect("a .cu file has a stem").to_string_lossy().to_string();
        let mut src = String::new();
        flatten(f, &dir, 0, &mut src);
        let name = stem.to_uppercase();
        consts.push_str(&format!("pub const {name}: &str = {src:?};\n"));
        all.push_str(&format!("    ({stem:?}, {name}),\n"));
    }
    all.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("kernels.rs"), consts + &all).expect("OUT_DIR is writable");
}
