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
    4.0 / 3.0 * std::f64::consts::PI * (big_r.powi(3) - r.powi(3))
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

    run(&[
        "inflate",
        "--mc",
        &p("mc.nii.gz"),
        "--tb",
        &p("tb.nii.gz"),
        "--out",
        &p("nv"),
        "--max-mm",
        "8",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("nv/nv.json")).unwrap()).unwrap();
    let vol = json["volume_mm3"].as_f64().unwrap();
    assert!((vol - want).abs() < 0.05 * want, "NV {vol} vs {want}");
    let nv = read_nifti(&dir.join("nv/nv.nii.gz")).unwrap();
    let mc = read_nifti(&dir.join("mc.nii.gz")).unwrap();
    assert_eq!(nv.dims, mc.dims);
    assert_eq!(nv.affine, mc.affine);
    let count = nv.data.iter().filter(|&&v| v > 0.5).count() as f64;
    assert!((count * 0.8 * 0.9 - vol).abs() < 1e-6 * vol);
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
    std::fs::remove_dir_all(&dir).unwrap();
}
