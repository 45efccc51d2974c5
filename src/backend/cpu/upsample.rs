//! Nearest-neighbour upsampling over `(N, D, H, W, C)`, with PyTorch's index rule.
//!
//! Each output voxel copies one input voxel (all `C` channels at once, a contiguous row). The
//! backward pass sums output gradients into their source; it runs per input plane so that no two
//! threads add into the same element.

use rayon::prelude::*;

use super::elementwise::PAR_MIN;

/// Source index of every output index along one axis, as PyTorch's `nearest_idx` computes it:
/// the identity or `i / 2` for sizes equal or doubled, else `min(floor(i * (in / out)), in - 1)`
/// with the scale in f32 (so rounding matches PyTorch, not exact rational arithmetic).
pub fn nearest_src(out: usize, inp: usize) -> Vec<usize> {
    if out == inp {
        return (0..out).collect();
    }
    if out == 2 * inp {
        return (0..out).map(|i| i >> 1).collect();
    }
    let scale = inp as f32 / out as f32;
    (0..out).map(|i| ((i as f32 * scale).floor() as usize).min(inp.saturating_sub(1))).collect()
}

/// Upsamples `x: (N, D, H, W, C)` to `(N, D', H', W', C)` given each axis' source indices.
pub fn nearest_fwd(x: &[f32], [_, d, h, w, c]: [usize; 5], src: [&[usize]; 3]) -> Vec<f32> {
    let [sd, sh, sw] = src;
    let (od, oh, ow) = (sd.len(), sh.len(), sw.len());
    let n = x.len() / (d * h * w * c).max(1);
    let plane = oh * ow * c;
    let mut out = vec![0.0f32; n * od * plane];
    let fill = |p: usize, o: &mut [f32]| {
        let (b, z) = (p / od, p % od);
        let row = ow * c;
        for (y, &iy) in sh.iter().enumerate() {
            if y > 0 && sh[y - 1] == iy {
                // The same source row as the previous output row: one block copy.
                o.copy_within((y - 1) * row..y * row, y * row);
                continue;
            }
            for (xx, &ix) in sw.iter().enumerate() {
                let i = (((b * d + sd[z]) * h + iy) * w + ix) * c;
                let oi = (y * ow + xx) * c;
                o[oi..oi + c].copy_from_slice(&x[i..i + c]);
            }
        }
    };
    if plane == 0 {
        return out;
    }
    if out.len() < PAR_MIN {
        out.chunks_mut(plane).enumerate().for_each(|(p, o)| fill(p, o));
    } else {
        out.par_chunks_mut(plane).enumerate().for_each(|(p, o)| fill(p, o));
    }
    out
}

/// The gradient of [`nearest_fwd`]: every output gradient summed into its source voxel.
pub fn nearest_bwd(g: &[f32], [n, d, h, w, c]: [usize; 5], src: [&[usize]; 3]) -> Vec<f32> {
    let [sd, sh, sw] = src;
    let (oh, ow) = (sh.len(), sw.len());
    let plane = h * w * c;
    let mut gx = vec![0.0f32; n * d * plane];
    let od = sd.len();
    let fill = |p: usize, gi: &mut [f32]| {
        let (b, iz) = (p / d, p % d);
        for z in (0..od).filter(|&z| sd[z] == iz) {
            for (y, &iy) in sh.iter().enumerate() {
                for (xx, &ix) in sw.iter().enumerate() {
                    let o = (((b * od + z) * oh + y) * ow + xx) * c;
                    let i = (iy * w + ix) * c;
                    for ch in 0..c {
                        gi[i + ch] += g[o + ch];
                    }
                }
            }
        }
    };
    if plane == 0 {
        return gx;
    }
    if g.len() < PAR_MIN {
        gx.chunks_mut(plane).enumerate().for_each(|(p, gi)| fill(p, gi));
    } else {
        gx.par_chunks_mut(plane).enumerate().for_each(|(p, gi)| fill(p, gi));
    }
    gx
}
