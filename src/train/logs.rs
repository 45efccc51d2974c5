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

use crate::io::canvas::Canvas;
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

const W: usize = 720;
const H: usize = 340;
const TRAIN_RGB: [u8; 3] = [31, 119, 180];
const VAL_RGB: [u8; 3] = [255, 127, 14];
const INK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];

/// Draws two panels, loss (left) and Dice (right), with train (blue) and validation (orange)
/// curves per epoch. Each panel has a title, axes with their numbers (epochs along x; 0, the
/// quarters and the top of the range along y, on a light grid) and the axis name, and the page
/// a legend naming the two colours. Loss panels span 0 to the largest loss; Dice 0 to 1.
pub fn progress_png(path: &Path, points: &[EpochPoint]) -> Result<()> {
    let mut cv = Canvas::new(W, H, [255, 255, 255]);
    let max_loss = points
        .iter()
        .flat_map(|p| [p.train_loss, p.val_loss])
        .filter(|v| v.is_finite())
        .fold(1e-6, f64::max);
    type Series = fn(&EpochPoint) -> f64;
    let panels: [(usize, &str, f64, [Series; 2]); 2] = [
        (0, "LOSS", max_loss, [|p| p.train_loss, |p| p.val_loss]),
        (W / 2, "DICE", 1.0, [|p| p.train_dice, |p| p.val_dice]),
    ];
    let first = points.first().map_or(1, |p| p.epoch);
    let last = points.last().map_or(1, |p| p.epoch);
    let n = points.len().max(2) as f64 - 1.0;
    for (x0, title, ymax, series) in panels {
        let (left, right, top, bottom) =
            (x0 as i64 + 52, (x0 + W / 2) as i64 - 14, 44i64, H as i64 - 42);
        cv.text(x0 + W / 4 - Canvas::text_width(title, 2) / 2, 10, title, 2, INK);
        for q in 0..=4 {
            let y = bottom - (bottom - top) * q / 4;
            if q > 0 {
                cv.line((left, y), (right, y), GRID);
            }
            let label = format!("{:.2}", ymax * q as f64 / 4.0);
            let lx = (left as usize).saturating_sub(Canvas::text_width(&label, 1) + 4);
            cv.text(lx, (y as usize).saturating_sub(3), &label, 1, INK);
        }
        cv.line((left, top), (left, bottom), INK);
        cv.line((left, bottom), (right, bottom), INK);
        for (e, x) in [(first, left), (last, right)] {
            let label = e.to_string();
            let lx = (x as usize).saturating_sub(Canvas::text_width(&label, 1) / 2);
            cv.text(lx, bottom as usize + 6, &label, 1, INK);
        }
        let axis = "EPOCH";
        let mid = ((left + right) / 2) as usize - Canvas::text_width(axis, 1) / 2;
        cv.text(mid, bottom as usize + 18, axis, 1, INK);
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
                cv.fill(x.max(2) as usize - 2, y.max(2) as usize - 2, 5, 5, colour);
            }
        }
    }
    legend(&mut cv);
    cv.write(path)
}

/// The colour key under the panels: a blue square "TRAIN", an orange square "VALIDATION".
fn legend(cv: &mut Canvas) {
    let y = H - 14;
    let mut x = W / 2 - 90;
    for (name, colour) in [("TRAIN", TRAIN_RGB), ("VALIDATION", VAL_RGB)] {
        cv.fill(x, y, 9, 9, colour);
        cv.text(x + 14, y + 1, name, 1, INK);
        x += 14 + Canvas::text_width(name, 1) + 24;
    }
}
