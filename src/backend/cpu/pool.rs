//! Max pooling with kernel 2 and stride 2 over `(N, D, H, W, C)`.
//!
//! Windows do not overlap, so the forward pass records for every output the flat index of the
//! input that won, and the backward pass scatters each output gradient to that one input without
//! any accumulation conflict.

use rayon::prelude::*;

use super::elementwise::PAR_MIN;

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
                for ch in 0..c {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = usize::MAX;
                    for dz in 0..2 {
                        for dy in 0..2 {
                            for dx in 0..2 {
                                let i = (((b * d + 2 * z + dz) * h + 2 * y + dy) * w + 2 * xx + dx)
                                    * c
                                    + ch;
                                let v = x[i];
                                if at == usize::MAX || v > best || v.is_nan() && !best.is_nan() {
                                    best = v;
                                    at = i;
                                }
                            }
                        }
                    }
                    let oi = (y * ow + xx) * c + ch;
                    o[oi] = best;
                    a[oi] = at as u32;
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
