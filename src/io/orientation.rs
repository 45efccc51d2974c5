//! Affine geometry: NIfTI quaternions, orientation codes (`RAS`, `LPS`, ...) and reorienting a
//! volume to the closest canonical RAS+ orientation the way nibabel's `as_closest_canonical` does.
//!
//! Affines map voxel indices `(i, j, k, 1)` to world RAS millimetres (NIfTI convention).

use crate::volume::Volume;

/// A 4x4 affine, row-major (`a[row][col]`).
pub type Affine = [[f64; 4]; 4];

/// The NIfTI quaternion form of an affine: rotation `(b, c, d)`, offsets, voxel sizes and `qfac`
/// (the sign of the third axis; -1 for a left-handed index frame).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quatern {
    /// Quaternion parameters `b, c, d` (`a` is implied, `a >= 0`).
    pub bcd: [f64; 3],
    /// World position of voxel `(0, 0, 0)`.
    pub offset: [f64; 3],
    /// Voxel sizes along `i, j, k` (`pixdim[1..4]`).
    pub pixdim: [f64; 3],
    /// `pixdim[0]`: +1 or -1.
    pub qfac: f64,
}

/// Builds the affine of a NIfTI qform (method 2 of the NIfTI-1 standard), as nibabel does:
/// `a = sqrt(1 - b² - c² - d²)` (0 when rounding makes that negative), `qfac` other than -1
/// counts as +1.
pub fn quatern_to_affine(q: &Quatern) -> Affine {
    let [b, c, d] = q.bcd;
    let a2 = 1.0 - (b * b + c * c + d * d);
    let a = if a2 > 0.0 { a2.sqrt() } else { 0.0 };
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let qfac = if q.qfac < 0.0 { -1.0 } else { 1.0 };
    let zooms = [q.pixdim[0], q.pixdim[1], q.pixdim[2] * qfac];
    let mut m = identity();
    for row in 0..3 {
        for col in 0..3 {
            m[row][col] = r[row][col] * zooms[col];
        }
        m[row][3] = q.offset[row];
    }
    m
}

/// The quaternion form closest to `affine`: voxel sizes are the column norms, the rotation is the
/// orthogonal matrix nearest to the normalised columns (shears cannot be stored in a qform).
pub fn affine_to_quatern(affine: &Affine) -> Quatern {
    let mut pixdim = [0.0; 3];
    let mut m = [[0.0; 3]; 3];
    for col in 0..3 {
        let n = column_norm(affine, col);
        // A degenerate column (zero voxel size) cannot be normalised; treat it as a unit axis.
        let n = if n > 0.0 { n } else { 1.0 };
        pixdim[col] = n;
        for row in 0..3 {
            m[row][col] = affine[row][col] / n;
        }
    }
    let mut r = nearest_orthogonal(m);
    let mut qfac = 1.0;
    if det3(&r) < 0.0 {
        qfac = -1.0;
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let (a, b, c, d) = rotation_to_quaternion(&r);
    // NIfTI stores a >= 0: q and -q are the same rotation.
    let s = if a < 0.0 { -1.0 } else { 1.0 };
    Quatern {
        bcd: [b * s, c * s, d * s],
        offset: [affine[0][3], affine[1][3], affine[2][3]],
        pixdim,
        qfac,
    }
}

/// Unit quaternion `(a, b, c, d)` of a proper rotation matrix (Shepperd's method: divide by the
/// largest of the four candidate magnitudes, so no branch loses precision).
fn rotation_to_quaternion(r: &[[f64; 3]; 3]) -> (f64, f64, f64, f64) {
    let trace = r[0][0] + r[1][1] + r[2][2];
    if trace > 0.0 {
        let s = 2.0 * (trace + 1.0).sqrt();
        (0.25 * s, (r[2][1] - r[1][2]) / s, (r[0][2] - r[2][0]) / s, (r[1][0] - r[0][1]) / s)
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = 2.0 * (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt();
        ((r[2][1] - r[1][2]) / s, 0.25 * s, (r[0][1] + r[1][0]) / s, (r[0][2] + r[2][0]) / s)
    } else if r[1][1] > r[2][2] {
        let s = 2.0 * (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt();
        ((r[0][2] - r[2][0]) / s, (r[0][1] + r[1][0]) / s, 0.25 * s, (r[1][2] + r[2][1]) / s)
    } else {
        let s = 2.0 * (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt();
        ((r[1][0] - r[0][1]) / s, (r[0][2] + r[2][0]) / s, (r[1][2] + r[2][1]) / s, 0.25 * s)
    }
}

/// The orthogonal polar factor of `m` by Newton iteration `X <- (X + X^-T) / 2`, which converges
/// quadratically for the nearly orthogonal matrices affines hold. A singular matrix is returned
/// unchanged.
fn nearest_orthogonal(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = m;
    for _ in 0..30 {
        let Some(inv) = inverse3(&x) else { return m };
        let mut next = [[0.0; 3]; 3];
        let mut change: f64 = 0.0;
        for row in 0..3 {
            for col in 0..3 {
                // X^-T[row][col] = inv[col][row]
                next[row][col] = 0.5 * (x[row][col] + inv[col][row]);
                change = change.max((next[row][col] - x[row][col]).abs());
            }
        }
        x = next;
        if change < 1e-15 {
            break;
        }
    }
    x
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = det3(m);
    if det.abs() < 1e-300 || !det.is_finite() {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (row, inv_row) in inv.iter_mut().enumerate() {
        for (col, v) in inv_row.iter_mut().enumerate() {
            // Cofactor of m[col][row] (transposed adjugate).
            let (r0, r1) = others(col);
            let (c0, c1) = others(row);
            let minor = m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
            let sign = if (row + col) % 2 == 0 { 1.0 } else { -1.0 };
            *v = sign * minor / det;
        }
    }
    Some(inv)
}

/// The inverse of a voxel-to-world affine (world mm -> voxel index), `None` when its 3x3 part is
/// singular or not finite (determinant below 1e-12 mm^3: no real scan has such voxels).
pub fn invert_affine(a: &Affine) -> Option<Affine> {
    let m = [0, 1, 2].map(|r| [a[r][0], a[r][1], a[r][2]]);
    let det = det3(&m);
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let m_inv = inverse3(&m)?;
    let mut inv = identity();
    for r in 0..3 {
        inv[r][..3].copy_from_slice(&m_inv[r]);
        inv[r][3] = -(0..3).map(|c| m_inv[r][c] * a[c][3]).sum::<f64>();
    }
    Some(inv)
}

/// The two indices of {0, 1, 2} other than `i`, in order.
fn others(i: usize) -> (usize, usize) {
    match i {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// The 4x4 identity.
pub fn identity() -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

/// Length of column `col` of the 3x3 part: the voxel size along that array axis.
pub fn column_norm(affine: &Affine, col: usize) -> f64 {
    (0..3).map(|row| affine[row][col] * affine[row][col]).sum::<f64>().sqrt()
}

/// `a * b` for 4x4 affines.
pub fn mul(a: &Affine, b: &Affine) -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (row, m_row) in m.iter_mut().enumerate() {
        for (col, v) in m_row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[row][k] * b[k][col]).sum();
        }
    }
    m
}

/// World position of the (possibly fractional) voxel index `ijk`.
pub fn apply(affine: &Affine, ijk: [f64; 3]) -> [f64; 3] {
    let mut p = [0.0; 3];
    for (row, v) in p.iter_mut().enumerate() {
        *v = affine[row][3] + (0..3).map(|c| affine[row][c] * ijk[c]).sum::<f64>();
    }
    p
}

/// For each array axis, the world axis (0 = x/R, 1 = y/A, 2 = z/S) it runs closest to and the
/// direction (+1 towards R, A, S; -1 towards L, P, I), like nibabel's `io_orientation`: the
/// rotation is first made orthogonal (so oblique scans pick their dominant axis) and axes are
/// assigned greedily by the largest remaining cosine.
pub fn io_orientation(affine: &Affine) -> [(usize, f64); 3] {
    let mut m = [[0.0; 3]; 3];
    for col in 0..3 {
        let n = column_norm(affine, col);
        let n = if n > 0.0 { n } else { 1.0 };
        for row in 0..3 {
            m[row][col] = affine[row][col] / n;
        }
    }
    let r = nearest_orthogonal(m);
    let mut out = [(usize::MAX, 1.0); 3];
    let mut used_world = [false; 3];
    for _ in 0..3 {
        let mut best = (0.0, 0, 0);
        for (col, o) in out.iter().enumerate() {
            if o.0 != usize::MAX {
                continue;
            }
            for (row, used) in used_world.iter().enumerate() {
                if !used && (r[row][col].abs() > best.0 || best.0 == 0.0) {
                    best = (r[row][col].abs(), row, col);
                }
            }
        }
        let (_, row, col) = best;
        used_world[row] = true;
        out[col] = (row, if r[row][col] < 0.0 { -1.0 } else { 1.0 });
    }
    out
}

/// Orientation code such as `"RAS"` or `"LPS"`: for each array axis, the world direction its
/// index increases towards.
pub fn axis_codes(affine: &Affine) -> String {
    io_orientation(affine)
        .iter()
        .map(|&(world, sign)| {
            let (pos, neg) = [('R', 'L'), ('A', 'P'), ('S', 'I')][world];
            if sign > 0.0 {
                pos
            } else {
                neg
            }
        })
        .collect()
}

/// The volume with its array axes permuted and flipped so that they run as close as possible to
/// +R, +A, +S (nibabel's `as_closest_canonical`). Voxel data move with the axes and the affine is
/// updated so every voxel keeps its world position; the header is kept (the NIfTI writer
/// re-derives qform and sform from the new affine).
pub fn as_closest_canonical(vol: &Volume) -> Volume {
    let ornt = io_orientation(&vol.affine);
    // new axis `w` (world axis) comes from old axis `from[w]`, flipped when `flip[w]`.
    let mut from = [0usize; 3];
    let mut flip = [false; 3];
    for (old_axis, &(world, sign)) in ornt.iter().enumerate() {
        from[world] = old_axis;
        flip[world] = sign < 0.0;
    }
    let old = vol.dims;
    let dims = [old[from[0]], old[from[1]], old[from[2]]];

    // old index = M * new index: column w of M is +-e_{from[w]}, with an offset for flips.
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    for w in 0..3 {
        let o = from[w];
        if flip[w] {
            m[o][w] = -1.0;
            m[o][3] = old[o] as f64 - 1.0;
        } else {
            m[o][w] = 1.0;
        }
    }
    let affine = mul(&vol.affine, &m);
    let spacing = [vol.spacing[from[0]], vol.spacing[from[1]], vol.spacing[from[2]]];

    let mut data = Vec::with_capacity(vol.data.len());
    if !vol.data.is_empty() {
        let old_strides = [old[1] * old[2], old[2], 1];
        let mut stride = [0isize; 3];
        let mut base = 0isize;
        for w in 0..3 {
            let s = old_strides[from[w]] as isize;
            if flip[w] {
                stride[w] = -s;
                base += s * (old[from[w]] as isize - 1);
            } else {
                stride[w] = s;
            }
        }
        for a in 0..dims[0] as isize {
            for b in 0..dims[1] as isize {
                let row = base + a * stride[0] + b * stride[1];
                for c in 0..dims[2] as isize {
                    data.push(vol.data[(row + c * stride[2]) as usize]);
                }
            }
        }
    }
    Volume { data, dims, spacing, affine, header: vol.header.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_round_trip_oblique() {
        // 20 degrees about x, left-handed index frame (qfac -1), anisotropic voxels.
        let (s, c) = 20f64.to_radians().sin_cos();
        let mut a = identity();
        let cols = [[0.8, 0.0, 0.0], [0.0, c * 0.9, s * 0.9], [0.0, -s * 2.4, c * 2.4]];
        for (col, v) in cols.iter().enumerate() {
            for row in 0..3 {
                a[row][col] = v[row] * if col == 2 { -1.0 } else { 1.0 };
            }
        }
        a[0][3] = -70.0;
        a[1][3] = 12.5;
        a[2][3] = 3.0;
        let q = affine_to_quatern(&a);
        assert_eq!(q.qfac, -1.0);
        let back = quatern_to_affine(&q);
        for row in 0..4 {
            for col in 0..4 {
                assert!((back[row][col] - a[row][col]).abs() < 1e-12, "{back:?} vs {a:?}");
            }
        }
    }

    #[test]
    fn codes_and_canonical() {
        let mut vol = Volume::zeros([2, 3, 4], [1.0, 2.0, 3.0]);
        // LPS-style: i towards L, j towards P, k towards S.
        vol.affine[0][0] = -1.0;
        vol.affine[1][1] = -2.0;
        vol.data = (0..24).map(|v| v as f32).collect();
        assert_eq!(axis_codes(&vol.affine), "LPS");
        let can = as_closest_canonical(&vol);
        assert_eq!(axis_codes(&can.affine), "RAS");
        assert_eq!(can.dims, [2, 3, 4]);
        // Every voxel keeps its world position.
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    let v = can.data[can.index(i, j, k)];
                    let old = v as usize;
                    let (oi, oj, ok) = (old / 12, (old / 4) % 3, old % 4);
                    let pw = apply(&can.affine, [i as f64, j as f64, k as f64]);
                    let po = apply(&vol.affine, [oi as f64, oj as f64, ok as f64]);
                    assert_eq!(pw, po);
                }
            }
        }
    }
}
