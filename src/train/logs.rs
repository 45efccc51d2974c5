//! What a run leaves behind besides weights: the original's two CSV files, a progress plot, and
//! an atomic file writer shared with the checkpoints.
//!
//! `loss_convergence.csv`: `k, epoch, mode, iter, loss, ce, dice, IoU` (one row per batch, mode
//! `train` or `test` as the original names validation rows). `test_results.csv`: `k, final_epoch,
//! patient_id, side, loss, ce, dice, IoU, HD, HD_mm, HD95_mm, ASSD_mm` (HD in voxels as the
//! original; the surface distances in mm added). Rows are appended as they happen (the original
//! writes both only at the very end), so a killed run keeps its history.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The one atomic writer (kept under this name for its callers).
pub use crate::atomic::write_atomic;

/// Header of `loss_convergence.csv`.
pub const CONVERGENCE_HEADER: &str = "k,epoch,mode,iter,loss,ce,dice,IoU";
/// Header of `test_results.csv`.
pub const TEST_HEADER: &str =
    "k,final_epoch,patient_id,side,loss,ce,dice,IoU,HD,HD_mm,HD95_mm,ASSD_mm";

/// An append-only CSV file with a fixed header.
pub struct Csv {
    path: PathBuf,
    file: File,
}

impl Csv {
    /// Opens `path` for appending, writing `header` when the file is new or empty.
    pub fn open(path: &Path, header: &str) -> Result<Csv> {
        let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if fresh {
            writeln!(file, "{header}").map_err(|e| Error::io(path, e))?;
        }
        Ok(Csv { path: path.to_path_buf(), file })
    }

    /// Appends one row (fields joined by commas).
    pub fn row(&mut self, fields: &[String]) -> Result<()> {
        writeln!(self.file, "{}", fields.join(",")).map_err(|e| Error::io(&self.path, e))
    }

    /// Flushes to the OS.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Drops the rows a resumed run will write again: keeps the header and rows whose `(k, epoch)`
/// (the first two columns) is at most `(k, epoch)` in lexicographic order.
pub fn truncate_after(path: &Path, k: usize, epoch: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split(',');
        let key = (it.next().and_then(|v| v.parse().ok()), it.next().and_then(|v| v.parse().ok()));
        let keep = match key {
            (Some(lk), Some(le)) => (lk, le) <= (k, epoch),
            _ => i == 0,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    write_atomic(path, out.as_bytes())
}

/// Per-epoch means that the progress plot draws.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub train_dice: f64,
    pub val_dice: f64,
}

const W: usize = 640;
const H: usize = 300;
const TRAIN_RGB: [u8; 3] = [31, 119, 180];
const VAL_RGB: [u8; 3] = [255, 127, 14];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        // Bresenham, two pixels thick so it reads at a glance.
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }
}

/// Draws two panels, loss (left) and Dice (right), with train (blue) and validation (orange)
/// curves per epoch; each panel has axes, a light grid at quarters of its range and a colour key
/// (a blue and an orange square at the top left: train, validation). Loss panels span 0 to the
/// largest loss; Dice panels span 0 to 1.
pub fn progress_png(path: &Path, points: &[EpochPoint]) -> Result<()> {
    let mut cv = Canvas { px: vec![255; W * H * 3] };
    let max_loss = points
        .iter()
        .flat_map(|p| [p.train_loss, p.val_loss])
        .filter(|v| v.is_finite())
        .fold(1e-6, f64::max);
    type Series = fn(&EpochPoint) -> f64;
    let panels: [(usize, f64, [Series; 2]); 2] = [
        (0, max_loss, [|p| p.train_loss, |p| p.val_loss]),
        (W / 2, 1.0, [|p| p.train_dice, |p| p.val_dice]),
    ];
    let n = points.len().max(2) as f64 - 1.0;
    for (x0, ymax, series) in panels {
        let (left, right, top, bottom) =
            (x0 as i64 + 30, (x0 + W / 2) as i64 - 10, 20i64, H as i64 - 25);
        for q in 1..4 {
            let y = bottom - (bottom - top) * q / 4;
            cv.line((left, y), (right, y), [225, 225, 225]);
        }
        cv.line((left, top), (left, bottom), [0, 0, 0]);
        cv.line((left, bottom), (right, bottom), [0, 0, 0]);
        cv.rect(left + 8, top - 12, 8, 8, TRAIN_RGB);
        cv.rect(left + 22, top - 12, 8, 8, VAL_RGB);
        for (s, colour) in series.iter().zip([TRAIN_RGB, VAL_RGB]) {
            let xy = |i: usize, p: &EpochPoint| {
                let v = s(p);
                let v = if v.is_finite() { (v / ymax).clamp(0.0, 1.0) } else { 0.0 };
                (
                    left + ((right - left) as f64 * i as f64 / n) as i64,
                    bottom - ((bottom - top) as f64 * v) as i64,
                )
            };
            for (i, w) in points.windows(2).enumerate() {
                cv.line(xy(i, &w[0]), xy(i + 1, &w[1]), colour);
            }
            if points.len() == 1 {
                let (x, y) = xy(0, &points[0]);
                cv.rect(x - 2, y - 2, 5, 5, colour);
            }
        }
    }
    crate::io::png::write_rgb(path, W, H, &cv.px)
}
