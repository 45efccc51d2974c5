//! The `joints` training target: the localisation network's data (issue 10).
//!
//! A sample is one whole-head CT of a `synth --profile head` data set on the localiser's coarse
//! canvas ([`localize::coarse_head`], [`localize::COARSE_MM`] voxels, exactly `loaders.voi_shape`),
//! normalised as inference normalises it ([`localize::normalize_hu`]), so the trainer's transform
//! lists should not normalise again. The label is a ball of [`LABEL_RADIUS_MM`] around each
//! condylar head centre of `dataset.json` that the scan shows; a joint outside the field of view
//! has no label, so the network learns to stay silent on a cut-off condyle.
//!
//! The `joints_fine` target ([`fine_samples`]) feeds the fine localiser
//! ([`localize::fine`]): boxes of [`localize::FINE_CROP`] voxels of [`localize::FINE_MM`] cut from
//! the same heads around each condyle the scan shows, moved off it by a seeded offset, with a
//! [`localize::fine::FINE_LABEL_RADIUS_MM`] ball on the condylar head.

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
            let entry = case_entry(ds, id)?;
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
                if let Some(c) = visible_centre(id, side, entry.sides.get(&side))? {
                    centres.push(c);
                }
            }
            let label = ball_label(&coarse, &centres, LABEL_RADIUS_MM);
            Ok(sample(id, "LR".into(), &coarse, label))
        })
        .collect()
}

/// Fine boxes cut around each visible condyle of a head.
pub const FINE_BOXES_PER_JOINT: usize = 4;
/// Largest offset (mm, along each axis) of a fine training box's centre from the condyle's:
/// about twice the coarse localiser's error on held-out heads (up to 2.3 mm), so the fine
/// network finds the head wherever the coarse one leaves the box.
pub const FINE_OFFSET_MM: f64 = 5.0;

/// [`FINE_BOXES_PER_JOINT`] samples per condyle that a case's scan shows (sides named `L0`..`R3`),
/// case ids in `ids` order; the offsets are a function of the case id, side and box number.
///
/// # Errors
/// [`Error::Config`] when `loaders.voi_shape` is not [`localize::FINE_CROP`] or a case lacks
/// `condyle_center_ras_mm`; reading errors name the file.
pub fn fine_samples(cfg: &Config, ds: &Dataset, ids: &[String]) -> Result<Vec<Sample>> {
    let shape = cfg.loaders.voi_shape;
    if shape != localize::FINE_CROP {
        return Err(Error::Config {
            msg: format!(
                "the fine localiser's box is {:?} voxels of {} mm (pipeline::localize::FINE_CROP); \
                 loaders.voi_shape {shape:?} must equal it",
                localize::FINE_CROP,
                localize::FINE_MM
            ),
        });
    }
    let mut out = Vec::new();
    for id in ids {
        let entry = case_entry(ds, id)?;
        let (ct, _) = ds.load_head(id)?;
        let src = localize::FineSource::new(&ct);
        for side in Side::BOTH {
            let Some(c) = visible_centre(id, side, entry.sides.get(&side))? else { continue };
            for b in 0..FINE_BOXES_PER_JOINT {
                let key = crate::rng::mix64(
                    id.bytes().fold(side.index() as u64, |h, x| h.wrapping_mul(31) ^ u64::from(x))
                        ^ (b as u64) << 48,
                );
                let mut rng = crate::rng::Xoshiro256::seeded(key);
                let off = [0; 3].map(|_| FINE_OFFSET_MM * (2.0 * rng.unit_f64() - 1.0));
                let box_ = src.crop([0, 1, 2].map(|a| c[a] + off[a]), shape)?;
                let label = ball_label(&box_, &[c], localize::fine::FINE_LABEL_RADIUS_MM);
                out.push(sample(id, format!("{side}{b}"), &box_, label));
            }
        }
    }
    Ok(out)
}

/// The `dataset.json` entry of case `id`.
fn case_entry<'a>(ds: &'a Dataset, id: &str) -> Result<&'a crate::synth::ManifestCase> {
    ds.manifest()
        .cases
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| Error::Config { msg: format!("case {id} is not in {}", ds.dir().display()) })
}

/// The condyle centre of one side of a case when its scan shows it.
fn visible_centre(
    id: &str,
    side: Side,
    s: Option<&crate::synth::ManifestSide>,
) -> Result<Option<[f64; 3]>> {
    let Some(s) = s else { return Ok(None) };
    if s.in_field_of_view == Some(false) {
        return Ok(None);
    }
    s.condyle_center_ras_mm.map(Some).ok_or_else(|| Error::Config {
        msg: format!(
            "case {id} side {side}: no condyle_center_ras_mm in dataset.json (write the data set \
             with `dnvs-engine synth --profile head`)"
        ),
    })
}

/// A sample of HU `image` (windowed as inference windows it) and its 0/1 `label`.
fn sample(id: &str, side: String, image: &crate::volume::Volume, label: Vec<f32>) -> Sample {
    let foreground = (0..label.len() as u32).filter(|&i| label[i as usize] > 0.5).collect();
    Sample {
        id: id.to_string(),
        side,
        image: Patch { data: localize::normalize_hu(&image.data), dims: image.dims },
        label: Patch { data: label, dims: image.dims },
        spacing: image.spacing,
        foreground,
        native: None,
        joint: None,
        scans: Vec::new(),
    }
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
