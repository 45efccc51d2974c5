//! The paper's pipeline as one call: head CT -> both joints -> per side MC and TB segmentation,
//! TB enhancement, negative volume and meshes -> `report.json`, `labels.nii.gz`, `report.png`.
//!
//! - [`localize`]: head -> both condyle centres -> a VOI per side, on `synth`'s VOI geometry;
//! - [`nv`]: one CT ([`nv::run_case`]);
//! - [`stages`]: the model-driven stages behind traits (real models, adapters and stand-ins);
//! - [`enhance`]: the 3D Canny TB enhancement;
//! - [`report`]: the picture and the stdout summary;
//! - [`cohort`]: a folder or CSV of CTs, one subfolder each, `cohort.csv`;
//! - [`models`]: the default models in the user's cache.

pub mod cohort;
pub mod enhance;
pub mod localize;
pub mod models;
pub mod nv;
pub mod report;
pub mod stages;

pub use nv::{run_case, CaseOptions, Report};
pub use stages::Stages;
