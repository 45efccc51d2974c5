//! Augmentation: seeded and reproducible; geometric transforms move image and label alike.

use dnvs_engine::io::normalize::Normalization;
use dnvs_engine::train::augment::{apply_list, apply_pair, parse_transform, Patch, Transform};

fn geo_lists() -> (Vec<Transform>, Vec<Transform>) {
    let raw = [
        r#"{"name": "RandomFlip", "axes": [0, 1, 2], "execution_probability": 0.5}"#,
        r#"{"name": "RandomRotate", "axes": [[0,1],[0,2],[2,1]], "angle_spectrum": 30, "mode": "constant"}"#,
        r#"{"name": "ElasticDeformation", "spline_order": 0, "alpha": 4, "sigma": 2, "execution_probability": 1.0}"#,
    ];
    let parse = |s: &str, label| parse_transform(&serde_json::from_str(s).unwrap(), label).unwrap();
    (raw.iter().map(|s| parse(s, false)).collect(), raw.iter().map(|s| parse(s, true)).collect())
}

/// A label with structure on every axis: a ball off centre and a slab.
fn phantom(dims: [usize; 3]) -> Patch {
    let mut data = vec![0.0; dims.iter().product()];
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let r2 =
                    (i as f32 - 5.0).powi(2) + (j as f32 - 9.0).powi(2) + (k as f32 - 6.0).powi(2);
                if r2 < 16.0 || (j < 3 && k > 8) {
                    data[(i * dims[1] + j) * dims[2] + k] = 1.0;
                }
            }
        }
    }
    Patch { data, dims }
}

const STATS: Normalization = Normalization::Minmax { min: 0.0, max: 100.0 };

#[test]
fn geometric_transforms_keep_image_and_label_aligned() {
    let (raw, label) = geo_lists();
    let dims = [12, 16, 14];
    let mut changed = 0;
    for seed in 0..20u64 {
        let mut lab = phantom(dims);
        // The image is a function of the label, so aligned outputs keep image == 100 * label.
        let mut img = Patch { data: lab.data.iter().map(|v| v * 100.0).collect(), dims };
        let before = lab.clone();
        apply_pair(&raw, &label, &mut img, &mut lab, &STATS, seed);
        changed += usize::from(lab != before);
        for (a, b) in img.data.iter().zip(&lab.data) {
            // Outside the rotated volume the image is filled with -1 and the label with 0.
            assert!(
                *a == *b * 100.0 || (*a == -1.0 && *b == 0.0),
                "seed {seed}: image {a} label {b}"
            );
        }
        assert!(lab.data.iter().all(|v| *v == 0.0 || *v == 1.0), "labels stay binary");
    }
    assert!(changed >= 15, "the transforms did something ({changed} of 20)");
}

#[test]
fn the_same_seed_gives_the_same_patch() {
    let (raw, _) = geo_lists();
    let dims = [10, 11, 12];
    let base: Vec<f32> = (0..dims.iter().product::<usize>()).map(|i| (i % 97) as f32).collect();
    let run = |seed| {
        let mut p = Patch { data: base.clone(), dims };
        apply_list(&raw, &mut p, &STATS, seed, false);
        p
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn normalize_and_contrast_ranges() {
    let norm = parse_transform(&serde_json::json!({"name": "Normalize"}), false).unwrap();
    let con = parse_transform(
        &serde_json::json!({"name": "RandomContrast", "alpha": [2, 3], "execution_probability": 1.0}),
        false,
    )
    .unwrap();
    let mut p = Patch { data: vec![0.0, 50.0, 100.0, 25.0], dims: [1, 2, 2] };
    apply_list(&[norm], &mut p, &STATS, 1, false);
    assert_eq!(p.data, vec![-1.0, 0.0, 1.0, -0.5]);
    apply_list(&[con], &mut p, &STATS, 1, false);
    assert!(p.data.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(p.data[0], -1.0, "stretched contrast saturates at -1");
}
