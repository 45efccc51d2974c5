//! Segmentation scores as the original computes them: the prediction is the argmax of the
//! network's two-class probabilities; Dice and IoU with its epsilons; the Hausdorff distance
//! between the predicted and true foreground voxels (0 when either is empty), in voxel units
//! when the spacing is 1 (the original builds SimpleITK images from bare arrays, so spacing 1) or
//! in millimetres with the VOI's spacing.

/// Foreground where `p1 > p0` (ties go to background, as `torch.max` returns the first index).
///
/// # Shapes
/// `probs` is channels-last `(.., 2)`; the result has one entry per voxel.
pub fn argmax_fg(probs: &[f32]) -> Vec<bool> {
    probs.chunks_exact(2).map(|p| p[1] > p[0]).collect()
}

/// Dice `2|P∩G| / (|P|+|G|+2e-6)` and IoU `|P∩G| / (|P∪G|+1e-6)` of two masks.
pub fn dice_iou(pred: &[bool], gt: &[bool]) -> (f64, f64) {
    let (mut inter, mut p, mut g, mut uni) = (0u64, 0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(gt) {
        inter += (a && b) as u64;
        p += a as u64;
        g += b as u64;
        uni += (a || b) as u64;
    }
    let eps = 1e-6;
    (2.0 * inter as f64 / (p as f64 + g as f64 + 2.0 * eps), inter as f64 / (uni as f64 + eps))
}

/// Squared Euclidean distance from every voxel to the nearest `true` voxel (exact, separable:
/// Felzenszwalb and Huttenlocher's lower envelope of parabolas along each axis, with spacing).
/// `f64::INFINITY` everywhere when the mask is empty.
pub fn edt_sq(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut f: Vec<f64> = mask.iter().map(|&m| if m { 0.0 } else { f64::INFINITY }).collect();
    let strides = [dims[1] * dims[2], dims[2], 1];
    for axis in 0..3 {
        let n = dims[axis];
        let s = spacing[axis];
        let (o1, o2) = ((axis + 1) % 3, (axis + 2) % 3);
        let mut line = vec![0.0; n];
        let mut out = vec![0.0; n];
        for a in 0..dims[o1] {
            for b in 0..dims[o2] {
                let base = a * strides[o1] + b * strides[o2];
                for (i, l) in line.iter_mut().enumerate() {
                    *l = f[base + i * strides[axis]];
                }
                envelope_1d(&line, s, &mut out);
                for (i, o) in out.iter().enumerate() {
                    f[base + i * strides[axis]] = *o;
                }
            }
        }
    }
    f
}

/// `out[q] = min_p (f[p] + (s (q - p))^2)`.
fn envelope_1d(f: &[f64], s: f64, out: &mut [f64]) {
    let n = f.len();
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let mut k: isize = -1;
    let pos = |i: usize| i as f64 * s;
    for q in 0..n {
        if !f[q].is_finite() {
            continue;
        }
        loop {
            if k < 0 {
                k = 0;
                v[0] = q;
                z[0] = f64::NEG_INFINITY;
                z[1] = f64::INFINITY;
                break;
            }
            let p = v[k as usize];
            let sx =
                ((f[q] + pos(q) * pos(q)) - (f[p] + pos(p) * pos(p))) / (2.0 * (pos(q) - pos(p)));
            if sx <= z[k as usize] {
                k -= 1;
                continue;
            }
            k += 1;
            v[k as usize] = q;
            z[k as usize] = sx;
            z[k as usize + 1] = f64::INFINITY;
            break;
        }
    }
    if k < 0 {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let mut j = 0usize;
    for (q, o) in out.iter_mut().enumerate() {
        while z[j + 1] < pos(q) {
            j += 1;
        }
        let d = pos(q) - pos(v[j]);
        *o = d * d + f[v[j]];
    }
}

/// Symmetric Hausdorff distance between two masks' voxel sets; 0 when either is empty (as the
/// original). Units of `spacing`.
pub fn hausdorff(pred: &[bool], gt: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> f64 {
    if !pred.iter().any(|&v| v) || !gt.iter().any(|&v| v) {
        return 0.0;
    }
    let directed = |a: &[bool], b: &[bool]| -> f64 {
        let d = edt_sq(b, dims, spacing);
        a.iter().zip(&d).filter(|(m, _)| **m).map(|(_, d)| *d).fold(0.0, f64::max).sqrt()
    };
    directed(pred, gt).max(directed(gt, pred))
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

    fn brute_hd(a: &[bool], b: &[bool], dims: [usize; 3], sp: [f64; 3]) -> f64 {
        let pts = |m: &[bool]| -> Vec<[f64; 3]> {
            (0..m.len())
                .filter(|&i| m[i])
                .map(|i| {
                    let (x, y, z) = (i / (dims[1] * dims[2]), i / dims[2] % dims[1], i % dims[2]);
                    [x as f64 * sp[0], y as f64 * sp[1], z as f64 * sp[2]]
                })
                .collect()
        };
        let (pa, pb) = (pts(a), pts(b));
        let d = |p: &[f64; 3], q: &[f64; 3]| (0..3).map(|i| (p[i] - q[i]).powi(2)).sum::<f64>();
        let dir = |x: &[[f64; 3]], y: &[[f64; 3]]| {
            x.iter()
                .map(|p| y.iter().map(|q| d(p, q)).fold(f64::INFINITY, f64::min))
                .fold(0.0, f64::max)
        };
        dir(&pa, &pb).max(dir(&pb, &pa)).sqrt()
    }

    #[test]
    fn hausdorff_matches_brute_force() {
        let dims = [5, 6, 7];
        let mut rng = crate::train::rng::Rng::new(3);
        for sp in [[1.0, 1.0, 1.0], [0.5, 1.0, 2.0]] {
            let a: Vec<bool> = (0..210).map(|_| rng.uniform() < 0.1).collect();
            let b: Vec<bool> = (0..210).map(|_| rng.uniform() < 0.05).collect();
            let (h, want) = (hausdorff(&a, &b, dims, sp), brute_hd(&a, &b, dims, sp));
            assert!((h - want).abs() < 1e-9, "{h} vs {want}");
        }
        let (d, i) = dice_iou(&[true, true, false], &[true, false, false]);
        assert!((d - 2.0 / 3.0).abs() < 1e-5 && (i - 0.5).abs() < 1e-5);
    }
}
