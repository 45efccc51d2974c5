//! Max pooling with kernel 2 and stride 2 over `(N, D, H, W, C)`.
//!
//! Windows do not overlap, so the forward pass records for every output the flat index of the
//! input that won, and the backward pass scatters each output gradient to that one input without
//! any accumulation conflict.

use rayon::prelude::*;

use super::elementwise::PAR_MIN;

/// The eight offsets of a 2x2x2 window, in PyTorch's scan order.
const WINDOW: [(usize, usize, usize); 8] =
    [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)];

/// Output values and the flat input index of each maximum. Ties go to the first element in
/// (kd, kh, kw) order and NaN wins, as in PyTorch.
pub fn max_pool_k2_fwd(x: &[f32], [n, d, h, w, c]: [usize; 5]) -> (Vec<f32>, Vec<u32>) {
    let (od, oh, ow) = (d / 2, h / 2, w / 2);
    let plane = oh * ow * c;
    let mut out = vec![0.0f32; n * od * plane];
    let mut arg = vec![0u32; out.len()];
    let fill = |p: usize, o: &mut [f32], a: &mut [u32]| {
        let (b, z) = (p / od.max(1), p % od.max(1));
        for y in 0..oh {
            for xx in 0..ow {
                let oi = (y * ow + xx) * c;
                let (orow, arow) = (&mut o[oi..oi + c], &mut a[oi..oi + c]);
                let base = |(dz, dy, dx): (usize, usize, usize)| {
                    (((b * d + 2 * z + dz) * h + 2 * y + dy) * w + 2 * xx + dx) * c
                };
                let rows: [usize; 8] = WINDOW.map(base);
                for ch in 0..c {
                    let mut best = x[rows[0] + ch];
                    let mut at = rows[0] + ch;
                    for &r in &rows[1..] {
                        // Selects, not branches: random data would mispredict a branch.
                        let v = x[r + ch];
                        let better = (v > best) | (v.is_nan() & !best.is_nan());
                        best = if better { v } else { best };
                        at = if better { r + ch } else { at };
                    }
                    orow[ch] = best;
                    arow[ch] = at as u32;
                }
            }
        }
    };
    if plane == 0 {
        return (out, arg);
    }
    if out.len() < PAR_MIN / 8 {
        for (p, (o, a)) in out.chunks_mut(plane).zip(arg.chunks_mut(plane)).enumerate() {
            fill(p, o, a);
        }
    } else {
        out.par_chunks_mut(plane)
            .zip(arg.par_chunks_mut(plane))
            .enumerate()
            .for_each(|(p, (o, a))| fill(p, o, a));
    }
    (out, arg)
}

/// Scatters `g` (one value per output) to the winning inputs of `arg`; zero elsewhere.
pub fn max_pool_k2_bwd(g: &[f32], arg: &[u32], in_len: usize) -> Vec<f32> {
    let mut gx = vec![0.0f32; in_len];
    for (&gv, &i) in g.iter().zip(arg) {
        gx[i as usize] += gv;
    }
    gx
}
