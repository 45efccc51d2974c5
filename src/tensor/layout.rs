//! Conversions between PyTorch's layouts and the engine's channels-last layout. Used only at the
//! boundary: safetensors import/export and golden tests.

/// `(N, C, D, H, W)` -> `(N, D, H, W, C)`.
pub fn ncdhw_to_ndhwc(x: &[f32], [n, c, d, h, w]: [usize; 5]) -> Vec<f32> {
    let sp = d * h * w;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for s in 0..sp {
                out[(b * sp + s) * c + ch] = x[(b * c + ch) * sp + s];
            }
        }
    }
    out
}

/// `(N, D, H, W, C)` -> `(N, C, D, H, W)`.
pub fn ndhwc_to_ncdhw(x: &[f32], [n, d, h, w, c]: [usize; 5]) -> Vec<f32> {
    let sp = d * h * w;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for s in 0..sp {
                out[(b * c + ch) * sp + s] = x[(b * sp + s) * c + ch];
            }
        }
    }
    out
}

/// Conv weight `(K, C, kd, kh, kw)` -> `(K, kd, kh, kw, C)`: the same permutation as activations.
pub fn kcdhw_to_kdhwc(w: &[f32], dims: [usize; 5]) -> Vec<f32> {
    ncdhw_to_ndhwc(w, dims)
}

/// Conv weight `(K, kd, kh, kw, C)` -> `(K, C, kd, kh, kw)`.
pub fn kdhwc_to_kcdhw(w: &[f32], dims: [usize; 5]) -> Vec<f32> {
    ndhwc_to_ncdhw(w, dims)
}

/// PyTorch dims `(N, C, D, H, W)` -> engine dims `(N, D, H, W, C)`.
pub fn dims_ncdhw_to_ndhwc([n, c, d, h, w]: [usize; 5]) -> [usize; 5] {
    [n, d, h, w, c]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dims = [2, 3, 4, 5, 6];
        let x: Vec<f32> = (0..dims.iter().product::<usize>()).map(|i| i as f32).collect();
        let y = ncdhw_to_ndhwc(&x, dims);
        assert_eq!(y[1], x[4 * 5 * 6]); // channel 1 of voxel 0
        assert_eq!(ndhwc_to_ncdhw(&y, dims_ncdhw_to_ndhwc(dims)), x);
    }
}
