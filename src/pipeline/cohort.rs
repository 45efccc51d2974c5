//! Cohorts: many CTs through [`super::nv::run_case`], one subfolder per case and one
//! `cohort.csv` with a row per case and side.
//!
//! The input is a folder (each `.nii`/`.nii.gz` file and each sub-folder, a DICOM series, is a
//! case; hidden entries are skipped) or a CSV file with a `path` column (and optional `id` and
//! `gt` columns; relative paths are relative to the CSV; fields hold no commas). A case whose
//! folder already holds a `report.json` (written last, so only complete cases have one) is
//! skipped and its rows rebuilt from that report; a failing case gets a `failed` row with its
//! error and the others go on. `cohort.csv` is rewritten atomically after every case, so a killed
//! run leaves a valid table of what finished.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::nv::{run_case, CaseOptions, Report, SideReport};
use super::stages::Stages;
use crate::synth::Side;
use crate::{Error, Result};

/// One CT of a cohort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CohortCase {
    /// Names the case's output folder and its rows.
    pub id: String,
    pub input: PathBuf,
    /// Ground-truth labels for this case (CSV `gt` column).
    pub gt: Option<PathBuf>,
}

/// What happened to a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseStatus {
    Done,
    /// Complete from an earlier run.
    Skipped,
    Failed(String),
}

/// Totals of [`run_cohort`].
#[derive(Clone, Debug, Default)]
pub struct CohortSummary {
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Wall seconds of each case run now (not the skipped ones).
    pub seconds: Vec<f64>,
}

/// Whether `path` is a case list (a `.csv` file) rather than a CT or a folder.
pub fn is_case_list(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Whether `path` names a folder of CTs rather than one DICOM series: it holds NIfTI files or
/// sub-folders.
pub fn is_case_folder(path: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(path) else { return false };
    rd.flatten().any(|e| {
        let p = e.path();
        !hidden(&p) && (p.is_dir() || nifti_stem(&p).is_some())
    })
}

fn hidden(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// `ct` for `ct.nii.gz` or `ct.nii`, `None` for other files.
fn nifti_stem(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_string_lossy().into_owned();
    name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).map(str::to_string)
}

/// The cases of a folder or a CSV (see the module docs), in a stable order.
///
/// # Errors
/// [`Error::Io`] for an unreadable input, [`Error::Format`] for a CSV without a `path` column,
/// an empty cohort, or two cases with the same id.
pub fn list_cases(input: &Path) -> Result<Vec<CohortCase>> {
    let cases = if is_case_list(input) { from_csv(input)? } else { from_folder(input)? };
    if cases.is_empty() {
        return Err(Error::format(input, "no cases (NIfTI files, DICOM folders or CSV rows)"));
    }
    let mut seen = BTreeSet::new();
    for c in &cases {
        if !seen.insert(c.id.clone()) {
            return Err(Error::format(input, format!("two cases are named '{}'", c.id)));
        }
    }
    Ok(cases)
}

fn from_folder(dir: &Path) -> Result<Vec<CohortCase>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| !hidden(p)).collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .filter_map(|p| {
            let id = if p.is_dir() {
                p.file_name()?.to_string_lossy().into_owned()
            } else {
                nifti_stem(&p)?
            };
            Some(CohortCase { id, input: p, gt: None })
        })
        .collect())
}

fn from_csv(path: &Path) -> Result<Vec<CohortCase>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> =
        lines.next().unwrap_or("").split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let path_col = col("path").ok_or_else(|| {
        Error::format(path, format!("no 'path' column (header: {})", header.join(",")))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |s: &str| {
        let p = PathBuf::from(s.trim());
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    lines
        .enumerate()
        .map(|(n, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let field = |c: Option<usize>| {
                c.and_then(|c| f.get(c)).map(|s| s.trim()).filter(|s| !s.is_empty())
            };
            let p = field(Some(path_col))
                .ok_or_else(|| Error::format(path, format!("row {}: empty path", n + 2)))?;
            let input = resolve(p);
            let id = match field(col("id")) {
                Some(id) => id.to_string(),
                None => nifti_stem(&input)
                    .or_else(|| input.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| format!("case_{}", n + 1)),
            };
            Ok(CohortCase { id, input, gt: field(col("gt")).map(resolve) })
        })
        .collect()
}

/// Runs every case into `out/<id>/`, skipping complete ones; `on_case` hears each outcome.
///
/// # Errors
/// Only for the cohort as a whole (its folder or `cohort.csv` cannot be written); a case's
/// error goes into its row.
pub fn run_cohort(
    cases: &[CohortCase],
    out: &Path,
    stages: &mut Stages,
    opts: &CaseOptions,
    on_case: &mut dyn FnMut(&CohortCase, &CaseStatus, f64),
) -> Result<CohortSummary> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut sum = CohortSummary::default();
    for case in cases {
        let dir = out.join(&case.id);
        let done = dir.join("report.json");
        let t = Instant::now();
        let (status, report) = match read_report(&done) {
            Some(r) => (CaseStatus::Skipped, Some(r)),
            None => {
                let mut o = opts.clone();
                if case.gt.is_some() {
                    o.gt = case.gt.clone();
                }
                match run_case(&case.input, &dir, stages, &o, &mut |_| {}) {
                    Ok(r) => (CaseStatus::Done, Some(r)),
                    Err(e) => (CaseStatus::Failed(e.to_string()), None),
                }
            }
        };
        let secs = t.elapsed().as_secs_f64();
        match &status {
            CaseStatus::Done => {
                sum.done += 1;
                sum.seconds.push(secs);
            }
            CaseStatus::Skipped => sum.skipped += 1,
            CaseStatus::Failed(_) => sum.failed += 1,
        }
        rows.extend(case_rows(case, &status, report.as_ref()));
        write_table(&out.join("cohort.csv"), &rows)?;
        on_case(case, &status, secs);
    }
    Ok(sum)
}

fn read_report(path: &Path) -> Option<Report> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The columns of `cohort.csv`.
pub const COLUMNS: [&str; 22] = [
    "case",
    "side",
    "status",
    "nv_mm3",
    "joint_space_anterior_mm",
    "joint_space_superior_mm",
    "joint_space_posterior_mm",
    "joint_space_min_mm",
    "joint_space_mean_mm",
    "joint_space_median_mm",
    "mc_volume_mm3",
    "tb_volume_mm3",
    "dice_mc",
    "dice_tb",
    "dice_nv",
    "hd95_mc_mm",
    "hd95_tb_mm",
    "nv_truth_mm3",
    "nv_error_rel",
    "asymmetry_index",
    "warnings",
    "error",
];

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.4}"))
}

/// One row per side for a finished case, one `failed` row (side `-`) for a failed one.
fn case_rows(case: &CohortCase, status: &CaseStatus, report: Option<&Report>) -> Vec<Vec<String>> {
    let Some(r) = report else {
        let err = match status {
            CaseStatus::Failed(e) => e.clone(),
            _ => String::new(),
        };
        let mut row = vec![case.id.clone(), "-".into(), "failed".into()];
        row.resize(COLUMNS.len() - 1, String::new());
        row.push(err);
        return vec![row];
    };
    let label = if *status == CaseStatus::Skipped { "done (earlier run)" } else { "done" };
    Side::BOTH
        .iter()
        .map(|side| match r.sides.get(side.name()).and_then(|s| s.as_ref()) {
            Some(s) => side_row(case, *side, label, s, r),
            None => {
                let mut row = vec![case.id.clone(), side.name().into(), "not found".into()];
                row.resize(COLUMNS.len() - 1, String::new());
                row.push(r.reasons.get(side.name()).cloned().unwrap_or_default());
                row
            }
        })
        .collect()
}

fn side_row(
    case: &CohortCase,
    side: Side,
    status: &str,
    s: &SideReport,
    r: &Report,
) -> Vec<String> {
    let js = &s.joint_space_mm;
    // The CT's warnings concern both sides; the side's own follow them.
    let warnings: Vec<&str> = r.warnings.iter().chain(&s.warnings).map(String::as_str).collect();
    let m = s.metrics.as_ref();
    vec![
        case.id.clone(),
        side.name().into(),
        status.into(),
        num(Some(s.nv_mm3)),
        num(js.anterior),
        num(js.superior),
        num(js.posterior),
        num(js.min),
        num(js.mean),
        num(js.median),
        num(Some(s.mc_volume_mm3)),
        num(Some(s.tb_volume_mm3)),
        num(m.map(|m| m.mc.dice)),
        num(m.map(|m| m.tb.dice)),
        num(m.map(|m| m.nv.dice)),
        num(m.and_then(|m| m.mc.hd95_mm)),
        num(m.and_then(|m| m.tb.hd95_mm)),
        num(m.map(|m| m.nv_truth_mm3)),
        num(m.and_then(|m| m.nv_error_rel)),
        num(r.asymmetry.asymmetry_index),
        warnings.join(" | "),
        String::new(),
    ]
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_table(path: &Path, rows: &[Vec<String>]) -> Result<()> {
    let mut text = COLUMNS.join(",");
    text.push('\n');
    for r in rows {
        text += &r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        text.push('\n');
    }
    crate::train::logs::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lists_paths_ids_and_gt_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("dnvs_cohort_csv_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("cases.csv");
        std::fs::write(&csv, "path,gt\nct/a.nii.gz,lab/a.nii.gz\n/abs/b.nii,\n\n").unwrap();
        let cases = list_cases(&csv).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].id, "a");
        assert_eq!(cases[0].input, dir.join("ct/a.nii.gz"));
        assert_eq!(cases[0].gt, Some(dir.join("lab/a.nii.gz")));
        assert_eq!((cases[1].id.as_str(), cases[1].gt.is_none()), ("b", true));
        std::fs::write(&csv, "file\nx.nii\n").unwrap();
        let e = list_cases(&csv).unwrap_err().to_string();
        assert!(e.contains("no 'path' column"), "{e}");
        std::fs::write(&csv, "path\nx/a.nii\ny/a.nii.gz\n").unwrap();
        assert!(list_cases(&csv).unwrap_err().to_string().contains("two cases"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(csv_field("a,b \"c\""), "\"a,b \"\"c\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
