//! The Adam update of one parameter tensor, in place on its moments.

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

/// One Adam step of one tensor, in place: the parameters `p` and the moments `m`, `v` are
/// updated where they lie (no new buffers). Adam's one CPU inner loop.
pub fn adam_update_in_place(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    if p.len() < PAR_MIN {
        for i in 0..p.len() {
            p[i] = adam_elem(s, p[i], g[i], &mut m[i], &mut v[i]);
        }
    } else {
        p.par_iter_mut()
            .zip(m.par_iter_mut())
            .zip(v.par_iter_mut())
            .zip(g.par_iter())
            .with_min_len(PAR_MIN / 4)
            .for_each(|(((pi, mi), vi), &gi)| *pi = adam_elem(s, *pi, gi, mi, vi));
    }
}

/// Updates the moments `m`, `v` in place and returns the new parameter values (a copy of `p`
/// updated by [`adam_update_in_place`]).
pub fn adam_update(s: &AdamStep, p: &[f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> Vec<f32> {
    let mut out = p.to_vec();
    adam_update_in_place(s, &mut out, g, m, v);
    out
}
