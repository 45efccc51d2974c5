//! Sliding-window inference: a network runs on overlapping windows of a volume and the
//! foreground probabilities are blended back into the volume's own geometry.
//!
//! Windows run one at a time (batch size 1): the V-Net's BatchNorm normalises with the statistics
//! of its input, so batching windows together would change every result. A window that covers
//! the whole (padded) volume runs the network once and its probabilities are returned unblended.
//! Nothing is recorded for backward (`autograd::no_grad`).

use super::{Mode, Network};
use crate::autograd;
use crate::tensor::Tensor;
use crate::volume::Volume;
use crate::{Error, Result};

/// How overlapping windows are weighted where they meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blend {
    /// A Gaussian centred on the window, sigma = 1/8 of its size per axis (as nnU-Net does):
    /// the network's borders, which see less context, count least.
    Gaussian,
    /// A tent: weight falls linearly from the centre to the border.
    Linear,
    /// Plain average.
    Constant,
}

impl std::str::FromStr for Blend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gaussian" => Ok(Blend::Gaussian),
            "linear" => Ok(Blend::Linear),
            "constant" => Ok(Blend::Constant),
            _ => Err(Error::arg("blend", format!("'{s}' is not gaussian, linear or constant"))),
        }
    }
}

/// Window size `[D, H, W]` in voxels, overlap fraction in `[0, 1)`, blending.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub window: [usize; 3],
    pub overlap: f32,
    pub blend: Blend,
}

/// Foreground probability of every voxel of `vol` (same geometry), Gaussian blending.
/// See [`sliding_window_with`].
pub fn sliding_window(
    net: &mut dyn Network,
    vol: &Volume,
    window: [usize; 3],
    overlap: f32,
) -> Result<Volume> {
    sliding_window_with(net, vol, &Options { window, overlap, blend: Blend::Gaussian })
}

/// Foreground probability (class 1 of the softmax) of every voxel of `vol`, in `vol`'s geometry.
///
/// Each window extent is rounded up to the network's size multiple and shrunk to the volume
/// (rounded up likewise); a volume smaller than the window is padded with its minimum value and
/// the padding cropped away again. Windows step by `window * (1 - overlap)` (at least one voxel),
/// spread evenly so the last one ends at the border.
///
/// # Errors
/// [`Error::Arg`] for an empty window or volume, or an overlap outside `[0, 1)`; any error of the
/// network.
pub fn sliding_window_with(net: &mut dyn Network, vol: &Volume, opt: &Options) -> Result<Volume> {
    if !(0.0..1.0).contains(&opt.overlap) {
        return Err(Error::arg("sliding_window", format!("overlap {} not in [0, 1)", opt.overlap)));
    }
    if opt.window.contains(&0)
        || vol.dims.contains(&0)
        || vol.data.len() != vol.dims.iter().product::<usize>()
    {
        return Err(Error::arg(
            "sliding_window",
            format!("window {:?} and volume {:?} must be non-empty", opt.window, vol.dims),
        ));
    }
    let m = net.size_multiple().max(1);
    let mut win = [0, 1, 2].map(|a| round_up(opt.window[a], m).min(round_up(vol.dims[a], m)));
    // The V-Net's BatchNorm needs two voxels at its bottom level (the volume over the multiple):
    // a window shrunk to one there grows along its first axis, and the volume is padded.
    if (0..3).map(|a| win[a] / m).product::<usize>() < 2 {
        win[0] = 2 * m;
    }
    let padded: [usize; 3] = [0, 1, 2].map(|a| vol.dims[a].max(win[a]));
    let src = pad(vol, padded);
    let starts: Vec<Vec<usize>> =
        (0..3).map(|a| window_starts(padded[a], win[a], opt.overlap)).collect();
    let device = net.device();
    let run = |net: &mut dyn Network, origin: [usize; 3]| -> Result<Vec<f32>> {
        let x = Tensor::from_vec(crop(&src, padded, origin, win), [1, win[0], win[1], win[2], 1])?
            .to_device(device)?;
        let probs = autograd::no_grad(|| net.forward(&x, Mode::Eval))?.to_vec()?;
        Ok(probs.chunks_exact(2).map(|p| p[1]).collect())
    };
    let fg = if starts.iter().all(|s| s.len() == 1) {
        run(net, [0, 0, 0])?
    } else {
        let weight = weight_map(win, opt.blend);
        let n: usize = padded.iter().product();
        let (mut acc, mut wsum) = (vec![0.0f32; n], vec![0.0f32; n]);
        for &z in &starts[0] {
            for &y in &starts[1] {
                for &x in &starts[2] {
                    let p = run(net, [z, y, x])?;
                    add_window(&mut acc, &mut wsum, padded, [z, y, x], win, &p, &weight);
                }
            }
        }
        acc.iter().zip(&wsum).map(|(a, w)| a / w).collect()
    };
    Ok(vol.with_data(crop(&fg, padded, [0, 0, 0], vol.dims)))
}

/// Class labels from foreground probabilities: 1 where the foreground wins the argmax
/// (`p1 > p0`, i.e. `p1 > 0.5`; ties go to the background, as `argmax` takes the first).
pub fn mask_from_probs(probs: &Volume) -> Volume {
    probs.with_data(probs.data.iter().map(|&p| if p > 0.5 { 1.0 } else { 0.0 }).collect())
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

/// Start offsets along one axis of `extent` for windows of `win` with `overlap`, evenly spread so
/// the first starts at 0 and the last ends at `extent`.
pub fn window_starts(extent: usize, win: usize, overlap: f32) -> Vec<usize> {
    if extent <= win {
        return vec![0];
    }
    let step = ((win as f32 * (1.0 - overlap)).floor() as usize).max(1);
    let span = extent - win;
    let n = span.div_ceil(step) + 1;
    (0..n).map(|i| ((i * span) as f64 / (n - 1) as f64).round() as usize).collect()
}

/// `vol` padded at the far end of each axis to `dims` with its minimum value.
fn pad(vol: &Volume, dims: [usize; 3]) -> Vec<f32> {
    if dims == vol.dims {
        return vol.data.clone();
    }
    let fill = vol.data.iter().copied().fold(f32::INFINITY, f32::min);
    let mut out = vec![fill; dims.iter().product()];
    let [_, h, w] = vol.dims;
    for z in 0..vol.dims[0] {
        for y in 0..h {
            let src = (z * h + y) * w;
            let dst = (z * dims[1] + y) * dims[2];
            out[dst..dst + w].copy_from_slice(&vol.data[src..src + w]);
        }
    }
    out
}

/// The box `[origin, origin + size)` of a row-major `(D, H, W)` array of `dims`.
fn crop(data: &[f32], dims: [usize; 3], origin: [usize; 3], size: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(size.iter().product());
    for z in origin[0]..origin[0] + size[0] {
        for y in origin[1]..origin[1] + size[1] {
            let row = (z * dims[1] + y) * dims[2] + origin[2];
            out.extend_from_slice(&data[row..row + size[2]]);
        }
    }
    out
}

fn add_window(
    acc: &mut [f32],
    wsum: &mut [f32],
    dims: [usize; 3],
    origin: [usize; 3],
    win: [usize; 3],
    p: &[f32],
    weight: &[f32],
) {
    let mut i = 0;
    for z in origin[0]..origin[0] + win[0] {
        for y in origin[1]..origin[1] + win[1] {
            let row = (z * dims[1] + y) * dims[2] + origin[2];
            for o in row..row + win[2] {
                acc[o] += p[i] * weight[i];
                wsum[o] += weight[i];
                i += 1;
            }
        }
    }
}

/// Per-voxel blending weight of a window, separable over the axes, at least 1e-3 so every voxel
/// of every window counts a little (no division by ~0 where only window borders reach).
fn weight_map(win: [usize; 3], blend: Blend) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i as f32 + 0.5) / n as f32 - 0.5; // -0.5 .. 0.5
                match blend {
                    Blend::Gaussian => (-(t * t) / (2.0 * (1.0f32 / 8.0).powi(2))).exp(),
                    Blend::Linear => 1.0 - 2.0 * t.abs(),
                    Blend::Constant => 1.0,
                }
            })
            .collect()
    };
    let (a, b, c) = (axis(win[0]), axis(win[1]), axis(win[2]));
    let mut out = Vec::with_capacity(a.len() * b.len() * c.len());
    for za in &a {
        for yb in &b {
            for xc in &c {
                out.push((za * yb * xc).max(1e-3));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis() {
        assert_eq!(window_starts(32, 32, 0.5), vec![0]);
        assert_eq!(window_starts(20, 32, 0.5), vec![0]);
        assert_eq!(window_starts(64, 32, 0.5), vec![0, 16, 32]);
        let s = window_starts(100, 32, 0.25);
        assert_eq!(*s.first().unwrap(), 0);
        assert_eq!(*s.last().unwrap(), 68);
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 24));
    }

    #[test]
    fn pad_and_crop_invert() {
        let mut v = Volume::zeros([2, 3, 4], [1.0; 3]);
        v.data = (0..24).map(|i| i as f32).collect();
        let p = pad(&v, [4, 4, 8]);
        assert_eq!(p.len(), 128);
        assert_eq!(crop(&p, [4, 4, 8], [0, 0, 0], [2, 3, 4]), v.data);
        assert_eq!(p[127], 0.0); // the minimum
    }

    #[test]
    fn blending_weights_are_positive_and_peak_inside() {
        for blend in [Blend::Gaussian, Blend::Linear, Blend::Constant] {
            let w = weight_map([4, 6, 8], blend);
            assert!(w.iter().all(|v| (1e-3..=1.0).contains(v)));
        }
        let w = weight_map([4, 4, 4], Blend::Gaussian);
        assert!(w[(2 * 4 + 2) * 4 + 2] > w[0]);
    }
}
