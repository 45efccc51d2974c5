//! Intensity normalisation of CT volumes before they enter a network.

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
}
