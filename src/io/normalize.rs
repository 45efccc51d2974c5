//! Intensity normalisation of CT volumes before they enter a network.
//!
//! [`Normalization`] is the one a trained model carries in its card: fitted once on the training
//! cases of a fold, then applied unchanged by training, validation, `eval` and `segment`.

use serde::{Deserialize, Serialize};

/// A fixed intensity mapping with its numbers, as stored in a model card
/// (`{"kind": "ct", "lo": .., "hi": .., "mean": .., "std": ..}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Normalization {
    /// Values enter the network as stored.
    None,
    /// pytorch-3dunet's `Normalize`: `[min, max]` maps linearly to `[-1, 1]`, not clipped.
    Minmax { min: f32, max: f32 },
    /// nnU-Net's CT scheme: clip to `[lo, hi]` (the 0.5 and 99.5 percentiles of the training
    /// cases' foreground voxels), subtract their `mean`, divide by their `std`. Independent of a
    /// scanner's range (metal, air, padding values).
    Ct { lo: f32, hi: f32, mean: f32, std: f32 },
    /// Each volume by its own mean and standard deviation (`segment --normalize zscore`; what a
    /// per-patch `Standardize` comes closest to on a whole volume).
    Zscore,
}

impl Normalization {
    /// Applies the mapping in place.
    pub fn apply(&self, data: &mut [f32]) {
        match *self {
            Normalization::None => {}
            Normalization::Minmax { min, max } => {
                let scale = if max > min { 2.0 / (max - min) } else { 0.0 };
                data.iter_mut().for_each(|v| *v = (*v - min) * scale - 1.0);
            }
            Normalization::Ct { lo, hi, mean, std } => {
                let inv = if std > 0.0 { 1.0 / std } else { 0.0 };
                data.iter_mut().for_each(|v| *v = (v.clamp(lo, hi) - mean) * inv);
            }
            Normalization::Zscore => {
                let z = z_score(data);
                data.copy_from_slice(&z);
            }
        }
    }

    /// The smallest value the mapping produces for anything at or below the data's floor: what
    /// padding and rotation fills should be (-1 for min-max, the clipped `lo` for CT).
    pub fn floor(&self) -> f32 {
        match *self {
            Normalization::Minmax { .. } => -1.0,
            Normalization::Ct { lo, mean, std, .. } if std > 0.0 => (lo - mean) / std,
            _ => 0.0,
        }
    }

    /// Min-max over `values` (non-finite values are skipped); `None` when none is finite.
    pub fn fit_minmax(values: impl IntoIterator<Item = f32>) -> Option<Normalization> {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        (lo <= hi).then_some(Normalization::Minmax { min: lo, max: hi })
    }

    /// nnU-Net's CT statistics of the foreground voxel values: the 0.5 and 99.5 percentiles
    /// (linear interpolation, as numpy's), then mean and std of the values clipped to them
    /// (accumulated in f64). `None` when no value is finite.
    pub fn fit_ct(mut values: Vec<f32>) -> Option<Normalization> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f32::total_cmp);
        let (lo, hi) = (percentile(&values, 0.5), percentile(&values, 99.5));
        let n = values.len() as f64;
        let mean = values.iter().map(|v| v.clamp(lo, hi) as f64).sum::<f64>() / n;
        let var = values.iter().map(|v| (v.clamp(lo, hi) as f64 - mean).powi(2)).sum::<f64>() / n;
        let std = var.sqrt().max(1e-6) as f32;
        Some(Normalization::Ct { lo, hi, mean: mean as f32, std })
    }
}

/// The `q`-th percentile (0..=100) of sorted values, linearly interpolated (numpy's default).
pub fn percentile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let x = q.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let (i, t) = (x.floor() as usize, x - x.floor());
    let j = (i + 1).min(sorted.len() - 1);
    (sorted[i] as f64 + (sorted[j] as f64 - sorted[i] as f64) * t) as f32
}

/// Values sampled (evenly strided) for [`not_hounsfield`]: enough for a 1st percentile to a few
/// HU, and a 512x512x300 CT is not sorted whole.
const HU_CHECK_SAMPLES: usize = 1 << 20;

/// The 1st percentile a head CT in Hounsfield units stays below: the air around the head
/// (-1000 HU; the padding outside a scanner's circle, -1024 to -3024, is lower still).
const AIR_P1_MAX_HU: f32 = -500.0;

/// The 99.9th percentile a head CT in HU reaches: cortical bone and teeth are 700-3000 HU.
const BONE_P999_MIN_HU: f32 = 300.0;

/// A warning when `data` (a head CT) does not look like Hounsfield units, else `None`: no air
/// (its 1st percentile above [`AIR_P1_MAX_HU`], e.g. raw stored values whose rescale was not
/// applied, air reading 0) or no bone (its 99.9th percentile under [`BONE_P999_MIN_HU`], e.g.
/// an 8-bit export). The networks and the localiser read HU; on other scales their output is
/// meaningless, and nothing else would say so. Non-finite values are ignored.
pub fn not_hounsfield(data: &[f32]) -> Option<String> {
    let stride = (data.len() / HU_CHECK_SAMPLES).max(1);
    let mut v: Vec<f32> = data.iter().step_by(stride).copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let (p1, p999) = (percentile(&v, 1.0), percentile(&v, 99.9));
    let problem = if p1 > AIR_P1_MAX_HU {
        format!("its 1st percentile is {p1:.0} where the air around a head reads about -1000 HU")
    } else if p999 < BONE_P999_MIN_HU {
        format!("its 99.9th percentile is {p999:.0} where bone reads 700-3000 HU")
    } else {
        return None;
    };
    Some(format!(
        "the CT's values do not look like Hounsfield units ({problem}): the models read HU, so \
         the localisation, the masks and the NV are not to be trusted. Convert the scan to HU \
         (apply its rescale slope and intercept; DICOM series are rescaled when read)"
    ))
}

/// Rescales to [0, 1] by the volume's own minimum and maximum, as the original DNVS code does
/// (`(x - min) / (max - min)`). A constant volume becomes zeros. Non-finite values are ignored
/// for the range and mapped to 0.
pub fn min_max(data: &[f32]) -> Vec<f32> {
    let finite = data.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) =
        finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let range = hi - lo;
    data.iter()
        .map(|&v| if v.is_finite() && range > 0.0 { (v - lo) / range } else { 0.0 })
        .collect()
}

/// Clips to the window `[lo, hi]` (HU) and scales it to [0, 1]: a fixed mapping, so the same
/// tissue gets the same value in every scan (e.g. a bone window `hu_window(x, -1000.0, 2000.0)`).
///
/// # Panics
/// Never; a window with `hi <= lo` maps everything at or above `lo` to 1 and below to 0.
pub fn hu_window(data: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    let width = hi - lo;
    data.iter()
        .map(|&v| {
            if !v.is_finite() {
                0.0
            } else if width > 0.0 {
                ((v - lo) / width).clamp(0.0, 1.0)
            } else if v >= lo {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Zero mean, unit standard deviation over the volume (a constant volume becomes zeros).
/// Statistics accumulate in f64.
pub fn z_score(data: &[f32]) -> Vec<f32> {
    let n = data.len().max(1) as f64;
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt();
    data.iter().map(|&v| if sd > 0.0 { ((v as f64 - mean) / sd) as f32 } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_in_hu_passes_the_hounsfield_check_and_other_scales_do_not() {
        // Air around the head, soft tissue, bone: a head in HU.
        let mut head = vec![-1000.0f32; 3000];
        head.extend(std::iter::repeat_n(40.0, 6000));
        head.extend(std::iter::repeat_n(1400.0, 1000));
        assert_eq!(not_hounsfield(&head), None);
        // Raw stored values (rescale intercept -1024 not applied): air reads about 0.
        let raw: Vec<f32> = head.iter().map(|v| v + 1024.0).collect();
        let w = not_hounsfield(&raw).expect("raw values are not HU");
        assert!(w.contains("1st percentile is 24"), "{w}");
        // An 8-bit export: air 0, bone 255 at most.
        let byte: Vec<f32> = head.iter().map(|v| ((v + 1000.0) / 2400.0 * 255.0).round()).collect();
        assert!(not_hounsfield(&byte).is_some());
        // Air present, but nothing brighter than soft tissue.
        let no_bone: Vec<f32> = head.iter().map(|v| v.min(100.0)).collect();
        assert!(not_hounsfield(&no_bone).expect("no bone").contains("99.9th percentile is 100"));
        assert_eq!(not_hounsfield(&[f32::NAN; 4]), None);
    }

    #[test]
    fn ranges() {
        let x = [-1000.0, 0.0, 1000.0, 3000.0];
        assert_eq!(min_max(&x), vec![0.0, 0.25, 0.5, 1.0]);
        assert_eq!(hu_window(&x, -1000.0, 1000.0), vec![0.0, 0.5, 1.0, 1.0]);
        let z = z_score(&x);
        let mean: f32 = z.iter().sum::<f32>() / 4.0;
        let var: f32 = z.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert_eq!(min_max(&[2.0, 2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn fitted_normalisations_have_the_numbers_they_claim() {
        // numpy: np.percentile(np.arange(201), [0.5, 99.5]) == [1.0, 199.0]
        let v: Vec<f32> = (0..=200).map(|i| i as f32).collect();
        let Some(Normalization::Ct { lo, hi, mean, std }) = Normalization::fit_ct(v.clone()) else {
            panic!("a CT normalisation")
        };
        assert_eq!((lo, hi), (1.0, 199.0));
        // numpy: np.clip(np.arange(201), 1, 199).std() == 58.00592
        assert!((mean - 100.0).abs() < 1e-4 && (std - 58.0059).abs() < 1e-3, "{mean} {std}");
        let n = Normalization::Ct { lo, hi, mean, std };
        let mut x = vec![-5000.0, 100.0, 1e9];
        n.apply(&mut x);
        assert_eq!(x[1], 0.0);
        assert!((x[0] - n.floor()).abs() < 1e-6 && x[2] > 1.7);
        let m = Normalization::fit_minmax(v.iter().copied().chain([f32::NAN])).unwrap();
        assert_eq!(m, Normalization::Minmax { min: 0.0, max: 200.0 });
        let json = serde_json::to_string(&n).unwrap();
        assert!(json.starts_with("{\"kind\":\"ct\""), "{json}");
        assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), n);
    }
}
