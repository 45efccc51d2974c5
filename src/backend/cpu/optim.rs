//! The Adam update of one parameter tensor, in place on its moments.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::elementwise::PAR_MIN;

/// Scalars of one Adam step, with PyTorch's bias corrections already folded in.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bias2_sqrt: f32,
}

/// One element of `torch.optim.Adam` (single-tensor path): L2 decay into the gradient,
/// `m` by lerp, `v` by `beta2 * v + (1 - beta2) g^2`, then
/// `p -= step_size * m / (sqrt(v) / bias2_sqrt + eps)`. Returns the new parameter.
fn adam_elem(s: &AdamStep, p: f32, g: f32, m: &mut f32, v: &mut f32) -> f32 {
    let g = g + s.weight_decay * p;
    *m += (1.0 - s.beta1) * (g - *m);
    *v = *v * s.beta2 + (1.0 - s.beta2) * g * g;
    let denom = v.sqrt() / s.bias2_sqrt + s.eps;
    p - s.step_size * *m / denom
}

/// Elements per rayon task: large enough that a task streams several pages of each of the four
/// arrays, small enough that the 8 M-weight layers split into dozens of tasks.
const CHUNK: usize = 1 << 16;

/// One Adam step in place: `p`, `m` and `v` are overwritten, `g` is read. This is the only copy
/// of the arithmetic (through `adam_elem`): the optimiser calls it for every parameter, so the
/// update reuses the parameter's buffer instead of filling fresh pages each step. Slices have
/// equal lengths (checked by the caller).
pub fn adam_update_in_place(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    debug_assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
    let _t = super::profile::scope(|| "adam".into());
    let run = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p = adam_elem(s, *p, *g, m, v);
        }
    };
    if p.len() < PAR_MIN {
        run(p, g, m, v);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| run(p, g, m, v));
    }
}

/// Updates the moments `m`, `v` in place and returns the new parameter values, for callers that
/// cannot give up the old parameter buffer (same arithmetic, `adam_elem`, as
/// [`adam_update_in_place`]; one pass, no copy first).
pub fn adam_update(s: &AdamStep, p: &[f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> Vec<f32> {
    assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len(), "adam: lengths");
    let _t = super::profile::scope(|| "adam".into());
    let n = p.len();
    // Not `vec![0.0; n]`: every element is written below, and zeroing 250 MB of parameters per
    // step first would cost as much as a quarter of the update.
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    let run = |o: &mut [MaybeUninit<f32>], p: &[f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for ((((o, p), g), m), v) in o.iter_mut().zip(p).zip(g).zip(m.iter_mut()).zip(v.iter_mut())
        {
            o.write(adam_elem(s, *p, *g, m, v));
        }
    };
    if n < PAR_MIN {
        run(dst, p, g, m, v);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(p.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|((((o, p), g), m), v)| run(o, p, g, m, v));
    }
    // SAFETY: `run` wrote all `n` elements of the spare capacity (the slices have equal lengths,
    // checked by the caller, so the zips cover every element).
    unsafe { out.set_len(n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place update equals PyTorch's single-tensor Adam formula, element by element, on
    /// both sides of the parallel threshold.
    #[test]
    fn in_place_matches_formula() {
        let s = AdamStep {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step_size: 1e-3 / (1.0 - 0.9f32.powi(3)),
            bias2_sqrt: (1.0 - 0.999f32.powi(3)).sqrt(),
        };
        for n in [7, PAR_MIN + 5] {
            let p0: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
            let g: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.2).collect();
            let (mut m, mut v) = (vec![0.05f32; n], vec![0.01f32; n]);
            let (mut m2, mut v2) = (m.clone(), v.clone());
            let mut p = p0.clone();
            adam_update_in_place(&s, &mut p, &g, &mut m, &mut v);
            assert_eq!(adam_update(&s, &p0, &g, &mut m2, &mut v2), p, "both drivers agree");
            for i in [0, n / 2, n - 1] {
                let gi = g[i] + 0.01 * p0[i];
                let mi = 0.05 + 0.1 * (gi - 0.05);
                let vi = 0.01 * 0.999 + 0.001 * gi * gi;
                let want = p0[i] - s.step_size * mi / (vi.sqrt() / s.bias2_sqrt + 1e-8);
                assert!((m[i] - mi).abs() < 1e-6 && (v[i] - vi).abs() < 1e-6, "moments at {i}");
                assert!((p[i] - want).abs() < 1e-6, "p[{i}] = {} want {want}", p[i]);
            }
        }
    }
}
