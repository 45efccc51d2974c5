//! Folds over patients and patches from VOIs, as the original splits and cuts them.
//!
//! **Folds.** The original's `k_folds` takes ten patients numbered 1..10 and makes fold `i` test
//! patients `2i+1, 2i+2`: contiguous blocks of sorted ids. Here the case ids are sorted and cut
//! into `k` contiguous blocks whose sizes differ by at most one (earlier blocks take the extra
//! case), which is exactly the original for ten cases and five folds. The other cases train;
//! with `trainsize`, the original leaves out `others - trainsize` of them drawn at random, and so
//! does [`train_ids`] (seeded).
//!
//! **Patches.** `PatchBuilder._gen_indices`: starts `0, s, 2s, ...` while the patch fits, plus a
//! last patch flush with the end when the grid missed it (unless the stride equals the size).

use crate::train::augment::Patch;
use crate::train::rng::Rng;
use crate::{Error, Result};

/// The test ids of each fold: contiguous blocks of the sorted ids.
///
/// # Errors
/// [`Error::Config`] when there are fewer cases than folds.
pub fn k_folds(ids: &[String], k: usize) -> Result<Vec<Vec<String>>> {
    let mut ids = ids.to_vec();
    ids.sort();
    if k == 0 || ids.len() < k {
        return Err(Error::Config {
            msg: format!(
                "k_follds_number {k} needs at least {k} cases; the data set has {}",
                ids.len()
            ),
        });
    }
    let (base, extra) = (ids.len() / k, ids.len() % k);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let n = base + usize::from(f < extra);
        out.push(ids[start..start + n].to_vec());
        start += n;
    }
    Ok(out)
}

/// The training ids of a fold: every id not tested, less a seeded random subset when `trainsize`
/// asks for fewer (the original's `choose_test_sample`).
pub fn train_ids(
    all: &[String],
    test: &[String],
    trainsize: Option<usize>,
    rng: &mut Rng,
) -> Vec<String> {
    let mut ids: Vec<String> = all.iter().filter(|i| !test.contains(i)).cloned().collect();
    ids.sort();
    if let Some(n) = trainsize {
        while ids.len() > n.max(1) {
            let drop = rng.below(ids.len());
            ids.remove(drop);
        }
    }
    ids
}

/// Patch start positions along one axis (`PatchBuilder._gen_indices`).
pub fn gen_indices(size: usize, patch: usize, stride: usize) -> Vec<usize> {
    if patch > size {
        return Vec::new();
    }
    let mut v: Vec<usize> = (0..=size - patch).step_by(stride.max(1)).collect();
    let last = *v.last().expect("0 is always a start");
    if last + patch < size && size != stride {
        v.push(size - patch);
    }
    v
}

/// All grid corners of patches of `patch` with `stride` in a volume of `dims`.
pub fn grid(dims: [usize; 3], patch: [usize; 3], stride: [usize; 3]) -> Vec<[usize; 3]> {
    let mut out = Vec::new();
    for z in gen_indices(dims[0], patch[0], stride[0]) {
        for y in gen_indices(dims[1], patch[1], stride[1]) {
            for x in gen_indices(dims[2], patch[2], stride[2]) {
                out.push([z, y, x]);
            }
        }
    }
    out
}

/// A uniformly random corner for a patch of `patch` in `dims`.
pub fn random_corner(dims: [usize; 3], patch: [usize; 3], rng: &mut Rng) -> [usize; 3] {
    let mut c = [0; 3];
    for a in 0..3 {
        c[a] = rng.below(dims[a] - patch[a] + 1);
    }
    c
}

/// Copies the box at `corner` of size `size` out of `data` (row-major over `dims`).
pub fn crop(data: &[f32], dims: [usize; 3], corner: [usize; 3], size: [usize; 3]) -> Patch {
    let mut out = Vec::with_capacity(size.iter().product());
    for i in 0..size[0] {
        for j in 0..size[1] {
            let row = ((corner[0] + i) * dims[1] + corner[1] + j) * dims[2] + corner[2];
            out.extend_from_slice(&data[row..row + size[2]]);
        }
    }
    Patch { data: out, dims: size }
}

/// The centred box of `size` in `dims` (the original's `precrop`).
pub fn centre_corner(dims: [usize; 3], size: [usize; 3]) -> [usize; 3] {
    [(dims[0] - size[0]) / 2, (dims[1] - size[1]) / 2, (dims[2] - size[2]) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_match_the_original_for_ten_patients() {
        let ids: Vec<String> = (1..=10).map(|i| format!("p{i:02}")).collect();
        let f = k_folds(&ids, 5).unwrap();
        assert_eq!(f[0], vec!["p01", "p02"]);
        assert_eq!(f[4], vec!["p09", "p10"]);
        let f = k_folds(&ids[..7], 3).unwrap();
        assert_eq!(f.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![3, 2, 2]);
    }

    #[test]
    fn gen_indices_like_patch_builder() {
        assert_eq!(gen_indices(120, 112, 120), vec![0]);
        assert_eq!(gen_indices(10, 4, 4), vec![0, 4, 6]);
        assert_eq!(gen_indices(8, 4, 4), vec![0, 4]);
    }
}
