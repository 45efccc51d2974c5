//! Compiles every `kernels/*.cu` with NVRTC for sm_90 (the H100 the GPU sessions use) and checks
//! that each CUBIN defines the kernels its launcher asks for. Needs NVRTC but no GPU: it skips with
//! a printed reason when libnvrtc cannot be loaded, and fails instead when DNVS_REQUIRE_NVRTC=1
//! (CI installs NVRTC with .ci/install-nvrtc.sh and sets it).
//!
//! Without NVRTC, `every_kernel_is_launched_and_every_launch_has_a_kernel` still holds the three
//! lists together from the sources alone: the `__global__` kernels each `.cu` defines, the
//! [`EXPECTED`] table, and the op/stage names the launchers build kernel names from. A kernel no
//! launcher asks for fails it (issue 13: use each GPU kernel or delete it), and so does a launcher
//! asking for a kernel no `.cu` defines.

use std::collections::BTreeSet;

use dnvs_engine::backend::cuda::launch::{kernel_name, Pass};
use dnvs_engine::backend::cuda::{nvrtc, sources};

/// Every kernel symbol the launchers in src/backend/cuda use, by module.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "conv3d",
        &[
            "conv3d_fwd_bf16",
            "conv3d_fwd_f32",
            "conv3d_bwd_input_bf16",
            "conv3d_bwd_input_f32",
            "conv3d_bwd_input_tap_bf16",
            "conv3d_bwd_input_tap_f32",
            "conv3d_bwd_weight_bf16",
            "conv3d_bwd_weight_f32",
            "conv3d_fwd_cin1_f32",
            "conv3d_fwd_cout2_f32",
        ],
    ),
    (
        "conv_transpose3d",
        &[
            "conv_transpose3d_fwd_bf16",
            "conv_transpose3d_fwd_f32",
            "conv_transpose3d_fwd_tap_bf16",
            "conv_transpose3d_fwd_tap_f32",
            "conv_transpose3d_bwd_input_bf16",
            "conv_transpose3d_bwd_input_f32",
            "conv_transpose3d_bwd_weight_bf16",
            "conv_transpose3d_bwd_weight_f32",
        ],
    ),
    (
        "elementwise",
        &[
            "fill_fwd_f32",
            "add_fwd_f32",
            "mul_fwd_f32",
            "scale_fwd_f32",
            "relu_fwd_f32",
            "relu_bwd_input_f32",
            "prelu_fwd_f32",
            "prelu_bwd_input_f32",
            "prelu_bwd_weight_f32",
            "elu_fwd_f32",
            "elu_bwd_input_f32",
            "sigmoid_fwd_f32",
            "sigmoid_bwd_input_f32",
            "gate_mul_fwd_f32",
            "channel_dropout_fwd_f32",
            "gate_mul_bwd_weight_f32",
            "concat_fwd_f32",
            "concat_bwd_input_f32",
        ],
    ),
    ("pool", &["max_pool3d_k2_fwd_f32", "max_pool3d_k2_bwd_input_f32"]),
    ("upsample", &["upsample_nearest_fwd_f32", "upsample_nearest_bwd_input_f32"]),
    ("reduce", &["sum_all_fwd_f32", "sum_channels_fwd_f32"]),
    (
        "softmax",
        &[
            "softmax_channels_fwd_f32",
            "softmax_channels_bwd_input_f32",
            "log_softmax_channels_fwd_f32",
            "log_softmax_channels_bwd_input_f32",
        ],
    ),
    (
        "norm",
        &[
            "batch_norm_fwd_var_f32",
            "batch_norm_fwd_affine_f32",
            "batch_norm_bwd_weight_f32",
            "batch_norm_bwd_input_f32",
            "group_norm_fwd_stats_f32",
            "group_norm_fwd_affine_f32",
            "group_norm_bwd_input_stats_f32",
            "group_norm_bwd_input_f32",
            "group_norm_bwd_weight_f32",
            "norm_apply_fwd_f32",
        ],
    ),
    (
        "loss",
        &[
            "dice_ce_fwd_f32",
            "dice_ce_fwd_finish_f32",
            "dice_ce_bwd_input_f32",
            "hard_dice_fwd_f32",
            "hard_dice_fwd_finish_f32",
            "hard_dice_bwd_input_f32",
        ],
    ),
    ("optim", &["adam_fwd_f32"]),
    ("edt", &["edt_fwd_rows_f32", "edt_fwd_lines_f32", "edt_fwd_sqrt_f32", "edt_fwd_signed_f32"]),
    ("scan", &["scan_fwd_block_u32", "scan_fwd_add_u32"]),
    ("marching_cubes", &["marching_cubes_fwd_count_u32", "marching_cubes_fwd_generate_f32"]),
    ("inflate", &["inflate_fwd_march_f32", "inflate_fwd_voxelise_f32"]),
];

fn nvrtc_or_skip() -> bool {
    match nvrtc::version() {
        Ok((major, minor)) => {
            eprintln!("NVRTC {major}.{minor}");
            true
        }
        Err(why) => {
            if std::env::var("DNVS_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("DNVS_REQUIRE_NVRTC=1 but NVRTC is unusable: {why}");
            }
            eprintln!("skipping the NVRTC compile test: {why}");
            false
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn every_kernel_file_compiles_for_sm_90() {
    if !nvrtc_or_skip() {
        return;
    }
    let mut failures = Vec::new();
    let stems: Vec<&str> = sources::ALL.iter().map(|(s, _)| *s).collect();
    for (stem, _) in EXPECTED {
        assert!(stems.contains(stem), "kernels/{stem}.cu is missing from the embedded sources");
    }
    // Two threads: the machine is small and shared; conv3d.cu alone takes ~20 s.
    let results: Vec<(String, Result<Vec<u8>, String>)> = std::thread::scope(|s| {
        let (a, b): (Vec<_>, Vec<_>) =
            sources::ALL.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let run = |part: Vec<(usize, &(&str, &str))>| {
            part.into_iter()
                .map(|(_, (stem, src))| {
                    let t = std::time::Instant::now();
                    let r = nvrtc::compile(stem, src, "sm_90").map_err(|e| e.to_string());
                    eprintln!("kernels/{stem}.cu: {:.1} s", t.elapsed().as_secs_f64());
                    (stem.to_string(), r)
                })
                .collect::<Vec<_>>()
        };
        let h = s.spawn(move || run(b));
        let mut out = run(a);
        out.extend(h.join().expect("compile thread"));
        out
    });
    for (stem, r) in &results {
        match r {
            Err(e) => failures.push(format!("{stem}: {e}")),
            Ok(cubin) => {
                let want = EXPECTED.iter().find(|(s, _)| s == stem).map(|(_, k)| *k).unwrap_or(&[]);
                for k in want {
                    if !contains(cubin, k) {
                        failures.push(format!("{stem}: CUBIN lacks kernel {k}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "NVRTC failures:\n{}", failures.join("\n"));
}

#[test]
fn compile_errors_carry_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let err =
        nvrtc::compile("broken", "extern \"C\" __global__ void k() { undefined_name; }", "sm_90")
            .expect_err("must not compile");
    let msg = err.to_string();
    assert!(msg.contains("undefined_name"), "log missing from: {msg}");
}

// ---- the source-level guard (no NVRTC) -----------------------------------------------------------

/// `src` without `//` and `/* */` comments and without `#define` lines (with their `\`
/// continuations), so that a macro body's `name(` is not taken for a kernel.
fn code_only(src: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    let mut in_define = false;
    for line in src.lines() {
        let mut l = line.to_string();
        if in_block {
            match l.find("*/") {
                Some(e) => {
                    l = l[e + 2..].to_string();
                    in_block = false;
                }
                None => continue,
            }
        }
        if let Some(b) = l.find("/*") {
            in_block = !l[b..].contains("*/");
            l.truncate(b);
        }
        if let Some(c) = l.find("//") {
            l.truncate(c);
        }
        let continued = l.trim_end().ends_with('\\');
        if in_define || l.trim_start().starts_with("#define") {
            in_define = continued;
            continue;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The kernels a flattened `.cu` source defines: `extern "C" __global__ void [__launch_bounds__(..)]
/// NAME(` and the `CONV_ENTRY(NAME, ...)` instantiations of implicit_gemm.cuh.
fn defined_kernels(src: &str) -> BTreeSet<String> {
    let code = code_only(src);
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    for (i, _) in code.match_indices("__global__") {
        let mut rest = code[i + "__global__".len()..].trim_start();
        rest = rest.strip_prefix("void").unwrap_or(rest).trim_start();
        if let Some(r) = rest.strip_prefix("__launch_bounds__") {
            rest = &r[r.find(')').map_or(0, |e| e + 1)..];
        }
        let name = ident(rest);
        assert!(!name.is_empty(), "a __global__ without a name near: {}", &code[i..i + 80]);
        names.insert(name);
    }
    for line in code.lines() {
        if let Some(r) = line.trim_start().strip_prefix("CONV_ENTRY(") {
            names.insert(ident(r));
        }
    }
    names
}

/// `name` split as `launch::kernel_name` builds it: `(op, pass, stage, dtype)`.
fn split_name(name: &str) -> Option<(&str, Pass, Option<&str>, &str)> {
    let (head, dtype) = name.rsplit_once('_')?;
    let passes =
        [("_bwd_weight", Pass::BwdWeight), ("_bwd_input", Pass::BwdInput), ("_fwd", Pass::Fwd)];
    let (at, token, pass) = passes
        .iter()
        .filter_map(|(t, p)| head.find(t).map(|i| (i, *t, *p)))
        .filter(|(i, t, _)| {
            let after = &head[i + t.len()..];
            after.is_empty() || after.starts_with('_')
        })
        .min_by_key(|(i, _, _)| *i)?;
    let op = &head[..at];
    let stage = head[at + token.len()..].strip_prefix('_');
    Some((op, pass, stage, dtype))
}

/// The text of every launcher file (src/backend/cuda/*.rs).
fn launcher_sources() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).expect("launcher source")).collect()
}

#[test]
fn every_kernel_is_launched_and_every_launch_has_a_kernel() {
    let launchers = launcher_sources();
    let mut problems = Vec::new();
    for (stem, src) in sources::ALL {
        let defined = defined_kernels(src);
        let expected: BTreeSet<String> = EXPECTED
            .iter()
            .find(|(s, _)| s == stem)
            .map(|(_, k)| k.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        for k in defined.difference(&expected) {
            problems.push(format!("kernels/{stem}.cu defines {k}, which no launcher asks for"));
        }
        for k in expected.difference(&defined) {
            problems.push(format!("a launcher asks for {k}, which kernels/{stem}.cu lacks"));
        }
    }
    for (stem, kernels) in EXPECTED {
        for k in *kernels {
            let Some((op, pass, stage, dtype)) = split_name(k) else {
                problems.push(format!("{stem}: {k} is not <op>_<pass>[_<stage>]_<dtype>"));
                continue;
            };
            // The launcher builds the name with launch::kernel_name from string literals.
            assert_eq!(kernel_name(op, pass, stage, dtype), *k, "split of {k}");
            for part in std::iter::once(op).chain(stage) {
                if !launchers.contains(&format!("\"{part}\"")) {
                    problems.push(format!("{k}: no launcher names \"{part}\""));
                }
            }
        }
    }
    assert!(problems.is_empty(), "kernels vs launchers:\n{}", problems.join("\n"));
}

#[test]
fn the_kernel_parser_sees_macros_comments_and_launch_bounds() {
    let src = "// extern \"C\" __global__ void commented_f32(\n\
               #define CONV_ENTRY(name, mode) \\\n    extern \"C\" __global__ void name(int a) {}\n\
               CONV_ENTRY(conv3d_fwd_f32, 0)\n\
               extern \"C\" __global__ void __launch_bounds__(THREADS)\n    conv3d_fwd_cin1_f32(int p) {}\n\
               /* __global__ void blocked_f32( */\n\
               extern \"C\" __global__ void add_fwd_f32(long n) {}\n";
    let got: Vec<String> = defined_kernels(src).into_iter().collect();
    assert_eq!(got, ["add_fwd_f32", "conv3d_fwd_cin1_f32", "conv3d_fwd_f32"]);
    assert_eq!(
        split_name("conv3d_bwd_input_tap_bf16"),
        Some(("conv3d", Pass::BwdInput, Some("tap"), "bf16"))
    );
    assert_eq!(
        split_name("max_pool3d_k2_fwd_f32"),
        Some(("max_pool3d_k2", Pass::Fwd, None, "f32"))
    );
    assert_eq!(split_name("nothing"), None);
}
