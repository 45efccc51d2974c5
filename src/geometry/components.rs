//! Connected components of a mask (6- or 26-connectivity): labels, sizes, the `n` largest
//! (what localisation needs: the two condyles), and cavity filling (what inflation needs: a
//! thresholded condyle is hollow, marrow is not joint space).

use super::check_len;
use crate::Result;

/// Which neighbours connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Face neighbours.
    Six,
    /// Face, edge and corner neighbours.
    TwentySix,
}

/// Component labels: 0 is background, components are 1..=sizes.len(), numbered in order of
/// their first voxel (row-major).
#[derive(Clone, Debug)]
pub struct Components {
    pub labels: Vec<u32>,
    /// Voxel count of component `l` at `sizes[l - 1]`.
    pub sizes: Vec<usize>,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[parent[x as usize] as usize];
        parent[x as usize] = p; // path halving
        x = p;
    }
    x
}

/// Labels the connected components of `mask`.
///
/// # Errors
/// [`crate::Error::Shape`] when `mask.len()` does not match `dims`.
pub fn label(mask: &[bool], dims: [usize; 3], conn: Connectivity) -> Result<Components> {
    check_len("components", mask.len(), dims)?;
    let [d, h, w] = dims;
    // Earlier neighbours (in scan order) to union with.
    let mut offs: Vec<[isize; 3]> = Vec::new();
    for di in -1isize..=0 {
        for dj in -1isize..=1 {
            for dk in -1isize..=1 {
                let later = di == 0 && (dj > 0 || (dj == 0 && dk >= 0));
                let far = di.abs() + dj.abs() + dk.abs();
                if later || (conn == Connectivity::Six && far != 1) {
                    continue;
                }
                offs.push([di, dj, dk]);
            }
        }
    }
    let mut prov = vec![0u32; mask.len()];
    let mut parent: Vec<u32> = vec![0];
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let q = (i * h + j) * w + k;
                if !mask[q] {
                    continue;
                }
                let mut mine = 0u32;
                for o in &offs {
                    let (ni, nj, nk) = (i as isize + o[0], j as isize + o[1], k as isize + o[2]);
                    if ni < 0 || nj < 0 || nk < 0 || nj >= h as isize || nk >= w as isize {
                        continue;
                    }
                    let n = prov[((ni as usize) * h + nj as usize) * w + nk as usize];
                    if n == 0 {
                        continue;
                    }
                    if mine == 0 {
                        mine = find(&mut parent, n);
                    } else {
                        let (a, b) = (find(&mut parent, mine), find(&mut parent, n));
                        if a != b {
                            let (lo, hi) = (a.min(b), a.max(b));
                            parent[hi as usize] = lo;
                            mine = lo;
                        }
                    }
                }
                if mine == 0 {
                    mine = parent.len() as u32;
                    parent.push(mine);
                }
                prov[q] = mine;
            }
        }
    }
    // Roots in order of first appearance -> final labels 1, 2, ...
    let mut final_of = vec![0u32; parent.len()];
    let mut sizes = Vec::new();
    for l in prov.iter_mut() {
        if *l == 0 {
            continue;
        }
        let r = find(&mut parent, *l) as usize;
        if final_of[r] == 0 {
            sizes.push(0);
            final_of[r] = sizes.len() as u32;
        }
        *l = final_of[r];
        sizes[*l as usize - 1] += 1;
    }
    Ok(Components { labels: prov, sizes })
}

/// Mask of the `n` largest components (ties by label order).
pub fn largest(mask: &[bool], dims: [usize; 3], conn: Connectivity, n: usize) -> Result<Vec<bool>> {
    let c = label(mask, dims, conn)?;
    let mut order: Vec<usize> = (0..c.sizes.len()).collect();
    order.sort_by(|&a, &b| c.sizes[b].cmp(&c.sizes[a]).then(a.cmp(&b)));
    let mut keep = vec![false; c.sizes.len() + 1];
    for &l in order.iter().take(n) {
        keep[l + 1] = true;
    }
    Ok(c.labels.iter().map(|&l| keep[l as usize]).collect())
}

/// `mask` with its internal cavities filled: background voxels not 6-connected to the volume's
/// border become foreground. Background is taken 6-connected so that it is the complement of a
/// 26-connected foreground, the pairing marching cubes assumes; a cavity that touches the
/// outside only through an edge or a corner is a cavity.
/// A `mask` whose length does not match `dims` comes back unchanged ([`try_fill_cavities`]
/// reports it as an error).
pub fn fill_cavities(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    try_fill_cavities(mask, dims).unwrap_or_else(|_| mask.to_vec())
}

/// [`fill_cavities`] with the length check as an error.
///
/// # Errors
/// [`crate::Error::Shape`] when `mask.len()` does not match `dims`.
pub fn try_fill_cavities(mask: &[bool], dims: [usize; 3]) -> Result<Vec<bool>> {
    check_len("fill_cavities", mask.len(), dims)?;
    let [d, h, w] = dims;
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = Vec::new();
    let idx = |i: usize, j: usize, k: usize| (i * h + j) * w + k;
    // Seed with every background voxel on the border, then flood through face neighbours.
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let border = i == 0 || j == 0 || k == 0 || i + 1 == d || j + 1 == h || k + 1 == w;
                let q = idx(i, j, k);
                if border && !mask[q] && !outside[q] {
                    outside[q] = true;
                    stack.push(q);
                }
            }
        }
    }
    while let Some(q) = stack.pop() {
        let (i, j, k) = (q / (h * w), (q / w) % h, q % w);
        let mut visit = |n: usize| {
            if !mask[n] && !outside[n] {
                outside[n] = true;
                stack.push(n);
            }
        };
        if i > 0 {
            visit(idx(i - 1, j, k));
        }
        if i + 1 < d {
            visit(idx(i + 1, j, k));
        }
        if j > 0 {
            visit(idx(i, j - 1, k));
        }
        if j + 1 < h {
            visit(idx(i, j + 1, k));
        }
        if k > 0 {
            visit(idx(i, j, k - 1));
        }
        if k + 1 < w {
            visit(idx(i, j, k + 1));
        }
    }
    Ok(outside.iter().map(|&o| !o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_and_twenty_six() {
        // Two voxels touching at a corner, one separate bar of three.
        let dims = [3, 3, 5];
        let mut m = vec![false; 45];
        m[0] = true; // (0,0,0)
        m[(3 + 1) * 5 + 1] = true; // (1,1,1)
        for k in 2..5 {
            m[(2 * 3 + 2) * 5 + k] = true; // (2,2,2..5)
        }
        let six = label(&m, dims, Connectivity::Six).unwrap();
        assert_eq!(six.sizes, vec![1, 1, 3]);
        let full = label(&m, dims, Connectivity::TwentySix).unwrap();
        assert_eq!(full.sizes, vec![5]);
        let big = largest(&m, dims, Connectivity::Six, 1).unwrap();
        assert_eq!(big.iter().filter(|&&b| b).count(), 3);
    }

    #[test]
    fn cavities_fill_and_open_pockets_stay() {
        // A 5^3 cube shell with a hollow 3^3 centre, in a 7^3 volume; a second copy whose
        // shell has one face hole keeps its pocket.
        let dims = [7, 7, 7];
        let at = |i: usize, j: usize, k: usize| (i * 7 + j) * 7 + k;
        let mut m = vec![false; 343];
        for i in 1..6 {
            for j in 1..6 {
                for k in 1..6 {
                    let inner = (2..5).contains(&i) && (2..5).contains(&j) && (2..5).contains(&k);
                    m[at(i, j, k)] = !inner;
                }
            }
        }
        let filled = fill_cavities(&m, dims);
        assert_eq!(filled.iter().filter(|&&b| b).count(), 125);
        m[at(3, 3, 1)] = false; // a hole in one face opens the cavity
        let open = fill_cavities(&m, dims);
        assert_eq!(open, m);
        assert!(try_fill_cavities(&m, [7, 7, 6]).is_err());
    }
}
