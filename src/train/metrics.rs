//! Small helpers for the scores: the prediction is the argmax of the network's two-class
//! probabilities (as the original's `input.max(1)`); means and standard deviations as numpy's.
//! Dice and IoU come from `loss::hard_dice`, distances from `crate::geometry::metrics`.

/// Foreground where `p1 > p0` (ties go to background, as `torch.max` returns the first index).
///
/// # Shapes
/// `probs` is channels-last `(.., 2)`; the result has one entry per voxel.
pub fn argmax_fg(probs: &[f32]) -> Vec<bool> {
    probs.chunks_exact(2).map(|p| p[1] > p[0]).collect()
}

/// Mean and population standard deviation (numpy's `np.std`), `(NaN, NaN)` when empty.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    (m, (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_background_and_std_is_numpy_s() {
        assert_eq!(argmax_fg(&[0.5, 0.5, 0.2, 0.8]), vec![false, true]);
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
    }
}
