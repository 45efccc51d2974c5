//! The `joints` training target: the localisation network's data (issue 10).
//!
//! A sample is one whole-head CT of a `synth --profile head` data set on the localiser's coarse
//! canvas ([`localize::coarse_head`], [`localize::COARSE_MM`] voxels, exactly `loaders.voi_shape`),
//! normalised as inference normalises it ([`localize::normalize_hu`]), so the trainer's transform
//! lists should not normalise again. The label is a ball of [`LABEL_RADIUS_MM`] around each
//! condylar head centre of `dataset.json` that the scan shows; a joint outside the field of view
//! has no label, so the network learns to stay silent on a cut-off condyle.

use crate::io::orientation;
use crate::pipeline::localize;
use crate::synth::Side;
use crate::train::augment::Patch;
use crate::train::config::Config;
use crate::train::dataset::Dataset;
use crate::train::trainer::Sample;
use crate::{Error, Result};

/// Radius of the condylar-head label ball (mm): larger than the head itself (r 4-5 mm) so the
/// coarse grid holds ~65 voxels of it and its centroid is stable.
pub const LABEL_RADIUS_MM: f64 = 10.0;

/// The normalisation a `joints` model's card records: the HU window the samples were mapped
/// through ([`localize::normalize_hu`]), which inference then applies to the coarse head.
/// (Validation must use `val_patch`, whose patches are already windowed.)
pub fn normalization() -> crate::io::normalize::Normalization {
    localize::hu_window()
}

/// One sample per case (both joints in one head), case ids in `ids` order.
///
/// # Errors
/// [`Error::Config`] when a case lacks `condyle_center_ras_mm` or its coarse grid is not
/// `loaders.voi_shape`; reading errors name the file.
pub fn samples(cfg: &Config, ds: &Dataset, ids: &[String]) -> Result<Vec<Sample>> {
    let shape = cfg.loaders.voi_shape;
    ids.iter()
        .map(|id| {
            let entry = ds.manifest().cases.iter().find(|c| &c.id == id).ok_or_else(|| {
                Error::Config { msg: format!("case {id} is not in {}", ds.dir().display()) }
            })?;
            let (ct, _) = ds.load_head(id)?;
            let coarse = localize::coarse_head(&ct)?;
            if coarse.dims != shape {
                return Err(Error::Config {
                    msg: format!(
                        "case {id}: the localisation network's canvas is {:?} voxels of {} mm \
                         (pipeline::localize::CANVAS); loaders.voi_shape {shape:?} must equal it",
                        coarse.dims,
                        localize::COARSE_MM
                    ),
                });
            }
            let mut centres = Vec::new();
            for side in Side::BOTH {
                let Some(s) = entry.sides.get(&side) else { continue };
                if s.in_field_of_view == Some(false) {
                    continue;
                }
                let c = s.condyle_center_ras_mm.ok_or_else(|| Error::Config {
                    msg: format!(
                        "case {id} side {side}: no condyle_center_ras_mm in dataset.json (write the \
                         data set with `dnvs-engine synth --profile head`)"
                    ),
                })?;
                centres.push(c);
            }
            let label = ball_label(&coarse, &centres, LABEL_RADIUS_MM);
            let foreground =
                (0..label.len() as u32).filter(|&i| label[i as usize] > 0.5).collect();
            Ok(Sample {
                id: id.clone(),
                side: "LR".into(),
                image: Patch { data: localize::normalize_hu(&coarse.data), dims: coarse.dims },
                label: Patch { data: label, dims: coarse.dims },
                spacing: coarse.spacing,
                foreground,
                native: None,
            })
        })
        .collect()
}

/// 1 at voxels of `grid` whose centre lies within `radius` mm of any of `centres` (world).
pub fn ball_label(grid: &crate::volume::Volume, centres: &[[f64; 3]], radius: f64) -> Vec<f32> {
    let [d, h, w] = grid.dims;
    let mut out = vec![0f32; d * h * w];
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let p = orientation::apply(&grid.affine, [i as f64, j as f64, k as f64]);
                let near = centres
                    .iter()
                    .any(|c| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() <= radius * radius);
                if near {
                    out[(i * h + j) * w + k] = 1.0;
                }
            }
        }
    }
    out
}
