//! `mesh`, `inflate` and `metrics` end to end on tiny NIfTI files.

use std::path::Path;
use std::process::Command;

use dnvs_engine::io::{mesh::read_stl, read_nifti, write_nifti, Volume, VoxelKind};

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dnvs-engine")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{args:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// MC: ball of radius r; TB: everything farther than R from the centre (mm).
fn phantom(dir: &Path) -> f64 {
    let spacing = [0.8, 1.0, 0.9];
    let dims = [30, 24, 27];
    let mut mc = Volume::zeros(dims, spacing);
    mc.affine[0][3] = -10.0; // an origin, so world coordinates differ from voxel ones
    let mut tb = mc.clone();
    let c = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) * spacing[a] / 2.0);
    let (r, big_r) = (5.0, 9.0);
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [i as f64 * spacing[0], j as f64 * spacing[1], k as f64 * spacing[2]];
                let d = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>().sqrt();
                let q = mc.index(i, j, k);
                mc.data[q] = (d <= r) as u8 as f32;
                tb.data[q] = (d > big_r) as u8 as f32;
            }
        }
    }
    write_nifti(&dir.join("mc.nii.gz"), &mc, VoxelKind::Mask).unwrap();
    write_nifti(&dir.join("tb.nii.gz"), &tb, VoxelKind::Mask).unwrap();
    // The head is the upper hemisphere: NV is the upper half shell.
    2.0 / 3.0 * std::f64::consts::PI * (big_r.powi(3) - r.powi(3))
}

/// Runs the binary expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dnvs-engine")).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn mesh_inflate_metrics_round_trip() {
    let dir = std::env::temp_dir().join(format!("dnvs_geometry_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let want = phantom(&dir);
    let p = |n: &str| dir.join(n).to_string_lossy().to_string();

    run(&["mesh", &p("mc.nii.gz"), &p("mc.stl"), "--smooth", "5"]);
    let mesh = read_stl(&dir.join("mc.stl")).unwrap();
    assert!(mesh.topology().is_closed_oriented());
    let ball = 4.0 / 3.0 * std::f64::consts::PI * 125.0;
    assert!((mesh.enclosed_volume() - ball).abs() < 0.05 * ball, "{}", mesh.enclosed_volume());
    // World frame: the origin shift moves the mesh's centre to x = c0 - 10.
    let cx: f64 =
        mesh.vertices.iter().map(|v| v[0] as f64).sum::<f64>() / mesh.vertices.len() as f64;
    assert!((cx - (29.0 * 0.8 / 2.0 - 10.0)).abs() < 0.2, "{cx}");
    run(&["mesh", &p("mc.nii.gz"), &p("mc.obj"), "--level", "0.5"]);
    run(&["mesh", &p("mc.nii.gz"), &p("mc.ply")]);

    // `inflate` of the phantom into DIR/out with extra flags: its stdout and nv.json.
    let inflate = |out: &str, extra: &[&str]| {
        let (mc, tb, to) = (p("mc.nii.gz"), p("tb.nii.gz"), p(out));
        let mut args = vec!["inflate", "--mc", &mc, "--tb", &tb, "--out", &to];
        args.extend(["--max-mm", "8", "--device", "cpu"]);
        args.extend(extra);
        let text = run(&args);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("nv.json")).unwrap())
                .unwrap();
        (text, json)
    };
    let (_, json) = inflate("nv", &[]);
    let vol = json["volume_mm3"].as_f64().unwrap();
    assert!((vol - want).abs() < 0.05 * want, "NV {vol} vs {want}");
    for (key, v) in [("head_depth_mm", 7.0), ("min_up", 0.0), ("max_mm", 8.0)] {
        assert_eq!(json[key].as_f64(), Some(v), "{key}");
    }
    let min = json["joint_space_mm"]["min"].as_f64().unwrap_or(f64::NAN);
    assert!((2.5..=4.0).contains(&min), "joint_space_mm.min = {min}");
    for key in ["anterior", "superior", "posterior", "mean", "median"] {
        let js = json["joint_space_mm"][key].as_f64().unwrap_or(f64::NAN);
        assert!((js - 4.0).abs() < 0.5, "joint_space_mm.{key} = {js}");
    }
    assert!(json["hits"]["head_points"].as_u64().unwrap() > 0);
    let nv = read_nifti(&dir.join("nv/nv.nii.gz")).unwrap();
    let mc = read_nifti(&dir.join("mc.nii.gz")).unwrap();
    assert_eq!(nv.dims, mc.dims);
    assert_eq!(nv.affine, mc.affine);
    let count = nv.data.iter().filter(|&&v| v > 0.5).count() as f64;
    assert!((count * 0.8 * 0.9 - vol).abs() < 1e-6 * vol);
    // 1 mm voxels are more than twice the 0.4 mm the NV is counted on: left as they are.
    assert_eq!(json["refined_by"], serde_json::json!([1, 1, 1]));
    // Refined to 0.5 mm (2x2x2): the same shell, the NV mask back on MC's grid.
    let (text, fine) = inflate("nv_fine", &["--voxel-mm", "0.5"]);
    assert!(text.contains("refined 2x2x2"), "{text}");
    assert_eq!(fine["refined_by"], serde_json::json!([2, 2, 2]));
    for (a, want_mm) in [0.4, 0.5, 0.45].into_iter().enumerate() {
        let got = fine["counted_on_mm"][a].as_f64().unwrap_or(f64::NAN);
        assert!((got - want_mm).abs() < 1e-6, "counted_on_mm[{a}] = {got}");
    }
    let vol_fine = fine["volume_mm3"].as_f64().unwrap();
    assert!((vol_fine - want).abs() < 0.05 * want, "refined NV {vol_fine} vs {want}");
    let nv_fine = read_nifti(&dir.join("nv_fine/nv.nii.gz")).unwrap();
    assert_eq!((nv_fine.dims, nv_fine.affine), (mc.dims, mc.affine));
    assert!(read_stl(&dir.join("nv/nv.stl")).unwrap().topology().is_closed_oriented());

    run(&[
        "metrics",
        "--pred",
        &p("mc.nii.gz"),
        "--gt",
        &p("mc.nii.gz"),
        "--json",
        &p("same.json"),
    ]);
    let same: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("same.json")).unwrap()).unwrap();
    assert_eq!(same["dice"].as_f64(), Some(1.0));
    assert_eq!(same["hd_mm"].as_f64(), Some(0.0));
    let text = run(&["metrics", "--pred", &p("mc.nii.gz"), "--gt", &p("nv/nv.nii.gz")]);
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "hd_original_vox"] {
        assert!(m[key].is_number(), "{key} in {text}");
    }
    assert_eq!(m["dice"].as_f64(), Some(0.0));

    // Masks that are not 0/1 get a warning naming the values; an empty mask is an error.
    let mut odd = read_nifti(&dir.join("mc.nii.gz")).unwrap();
    odd.data.iter_mut().for_each(|v| *v *= 255.0);
    write_nifti(&dir.join("mc255.nii.gz"), &odd, VoxelKind::Image).unwrap();
    let empty = odd.with_data(vec![0.0; odd.data.len()]);
    write_nifti(&dir.join("empty.nii.gz"), &empty, VoxelKind::Mask).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dnvs-engine"))
        .args(["inflate", "--mc", &p("mc255.nii.gz"), "--tb", &p("tb.nii.gz")])
        .args(["--out", &p("nv255"), "--max-mm", "8", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("not 0/1") && err.contains("255"), "{err}");
    let err = fails(&[
        "inflate",
        "--mc",
        &p("mc.nii.gz"),
        "--tb",
        &p("empty.nii.gz"),
        "--out",
        &p("nv0"),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("TB mask is empty") && err.contains("empty.nii.gz"), "{err}");
    let help = run(&["inflate", "--help"]);
    assert!(help.contains("negative volume (NV)") && help.contains("--head-depth-mm"), "{help}");
    let err = fails(&["mesh", &p("mc.nii.gz"), &p("nan.stl"), "--level", "NaN"]);
    assert!(err.contains("finite"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
