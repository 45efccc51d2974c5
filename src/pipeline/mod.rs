//! The pipeline from a head CT to per-joint results: localisation (head -> joints -> VOIs), then
//! (other issues) segmentation, enhancement, inflation and reports.

pub mod localize;
