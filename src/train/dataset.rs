//! The phantom data set on disk (`dnvs-engine synth`'s layout, see CONTRACTS.md): a folder with
//! `dataset.json`, whole-head CTs and labels, and per-joint VOIs (CT + MC, TB, NV masks).
//! [`Dataset::open`] checks that every referenced file exists, so a broken data set fails at once
//! with the file's name, not in the middle of training.

use std::path::{Path, PathBuf};

use crate::io::read_nifti;
pub use crate::synth::Side;
use crate::synth::{manifest_path, Manifest, ManifestCase, VoiCase};
use crate::volume::Volume;
use crate::{Error, Result};

/// Affine entries (mm) may differ by at most this much between volumes of one sample.
pub const ALIGN_TOL: f64 = 1e-4;

/// One case of the data set: its id and which joints it has.
#[derive(Clone, Debug)]
pub struct CaseEntry {
    pub id: String,
    pub sides: Vec<Side>,
}

/// An opened data set folder.
#[derive(Clone, Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    cases: Vec<CaseEntry>,
}

impl Dataset {
    /// Reads `dir/dataset.json` and checks that every file it names exists.
    ///
    /// # Errors
    /// [`Error::Io`] when `dataset.json` cannot be read, [`Error::Format`] when it is not a data
    /// set manifest, names a side other than L/R, or names a file that is missing (the error
    /// gives the case and the path).
    pub fn open(dir: &Path) -> Result<Dataset> {
        let json = manifest_path(dir);
        let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::format(&json, format!("not a phantom data set manifest: {e}")))?;
        let mut cases = Vec::with_capacity(manifest.cases.len());
        for c in &manifest.cases {
            for rel in case_files(c) {
                let p = dir.join(rel);
                if !p.is_file() {
                    return Err(Error::format(
                        &json,
                        format!("case {}: file {} is missing", c.id, p.display()),
                    ));
                }
            }
            cases.push(CaseEntry { id: c.id.clone(), sides: c.sides.keys().copied().collect() });
        }
        Ok(Dataset { dir: dir.to_path_buf(), manifest, cases })
    }

    /// The data set folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `dataset.json`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every case, in file order.
    pub fn cases(&self) -> &[CaseEntry] {
        &self.cases
    }

    fn case(&self, id: &str) -> Result<&ManifestCase> {
        self.manifest.cases.iter().find(|c| c.id == id).ok_or_else(|| {
            Error::arg("dataset", format!("no case `{id}` in {}", self.dir.display()))
        })
    }

    /// Loads the VOI of `case_id`'s `side` (CT in HU, masks 0/1, the truth from `dataset.json`),
    /// checking that CT and masks align.
    ///
    /// # Errors
    /// [`Error::Arg`] for an unknown case or side, [`Error::Format`] naming both files when a
    /// mask's dims or affine differ from the CT's (tolerance [`ALIGN_TOL`]), and whatever
    /// reading the NIfTI files returns.
    pub fn load_voi(&self, case_id: &str, side: Side) -> Result<VoiCase> {
        let c = self.case(case_id)?;
        let s = c
            .sides
            .get(&side)
            .ok_or_else(|| Error::arg("dataset", format!("case `{case_id}` has no side {side}")))?;
        let ct_path = self.dir.join(&s.image);
        let ct = read_nifti(&ct_path)?;
        let load_aligned = |rel: &str| -> Result<Volume> {
            let p = self.dir.join(rel);
            let m = read_nifti(&p)?;
            check_aligned(&ct, &ct_path, &m, &p)?;
            Ok(m)
        };
        let (mc, tb, nv) = (load_aligned(&s.mc)?, load_aligned(&s.tb)?, load_aligned(&s.nv)?);
        let scans = s.scans.iter().map(|rel| load_aligned(rel)).collect::<Result<Vec<_>>>()?;
        Ok(VoiCase {
            side,
            ct,
            scans,
            mc,
            tb,
            nv,
            nv_mm3: s.nv_mm3,
            joint_space_mm: s.joint_space_mm,
            condyle_center_ras_mm: s.condyle_center_ras_mm,
            in_field_of_view: s.in_field_of_view,
        })
    }

    /// Loads the whole-head CT and its label volume (0 bg, 1 MC, 2 TB, 3 NV).
    ///
    /// # Errors
    /// As [`Dataset::load_voi`].
    pub fn load_head(&self, case_id: &str) -> Result<(Volume, Volume)> {
        let c = self.case(case_id)?;
        let (ct_path, label_path) = (self.dir.join(&c.image), self.dir.join(&c.label));
        let ct = read_nifti(&ct_path)?;
        let labels = read_nifti(&label_path)?;
        check_aligned(&ct, &ct_path, &labels, &label_path)?;
        Ok((ct, labels))
    }
}

/// Every file a case names, relative to the data set folder.
fn case_files(c: &ManifestCase) -> Vec<&str> {
    let mut v = vec![c.image.as_str(), c.label.as_str()];
    for s in c.sides.values() {
        v.extend([s.image.as_str(), s.mc.as_str(), s.tb.as_str(), s.nv.as_str()]);
        v.extend(s.scans.iter().map(String::as_str));
    }
    v
}

/// Same dims and affine (within [`ALIGN_TOL`]), else an error naming both files.
fn check_aligned(a: &Volume, a_path: &Path, b: &Volume, b_path: &Path) -> Result<()> {
    let why = if a.dims != b.dims {
        Some(format!("dims {:?} vs {:?}", b.dims, a.dims))
    } else {
        (0..3)
            .flat_map(|r| (0..4).map(move |c| (r, c)))
            .find(|&(r, c)| {
                // NaN counts as a mismatch.
                let d = (a.affine[r][c] - b.affine[r][c]).abs();
                d.is_nan() || d > ALIGN_TOL
            })
            .map(|(r, c)| format!("affine[{r}][{c}] {} vs {}", b.affine[r][c], a.affine[r][c]))
    };
    match why {
        None => Ok(()),
        Some(why) => {
            Err(Error::format(b_path, format!("does not align with {}: {why}", a_path.display())))
        }
    }
}
