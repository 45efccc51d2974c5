//! Training: config (accepts the original config.txt), data pipeline, augmentation, loop, early
//! stopping, k-fold, checkpoints, logs.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dataset;
pub mod eval;
pub mod evaluate;
pub mod interrupt;
pub mod joints;
pub mod logs;
pub mod metrics;
pub mod rng;
pub mod sampling;
pub mod synth_bridge;
pub mod trainer;
