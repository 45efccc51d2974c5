//! Concatenation over the last (channel) axis and its inverse, the split of a gradient.
//!
//! Channels-last makes this a row interleave: output row `v` is input rows `v` laid side by side.

use super::elementwise::for_rows_mut;

/// Interleaves `xs[i]: (rows, cs[i])` into `(rows, sum cs)`.
pub fn concat_fwd(xs: &[&[f32]], cs: &[usize], rows: usize) -> Vec<f32> {
    let total: usize = cs.iter().sum();
    let _t = super::profile::scope(|| format!("concat {rows}x{cs:?}"));
    let mut out = vec![0.0f32; rows * total];
    for_rows_mut(&mut out, total, |r0, block| {
        for (r, orow) in block.chunks_exact_mut(total).enumerate() {
            let v = r0 + r;
            let mut off = 0;
            for (x, &c) in xs.iter().zip(cs) {
                orow[off..off + c].copy_from_slice(&x[v * c..(v + 1) * c]);
                off += c;
            }
        }
    });
    out
}

/// Channels `off..off + c` of every row of `g: (rows, total)`.
pub fn split_channels(g: &[f32], total: usize, off: usize, c: usize) -> Vec<f32> {
    let rows = g.len().checked_div(total).unwrap_or(0);
    let mut out = vec![0.0f32; rows * c];
    for_rows_mut(&mut out, c, |r0, block| {
        for (r, orow) in block.chunks_exact_mut(c).enumerate() {
            let v = r0 + r;
            orow.copy_from_slice(&g[v * total + off..v * total + off + c]);
        }
    });
    out
}
