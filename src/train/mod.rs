//! Training: config (accepts the original config.txt), data pipeline, augmentation, loop, early
//! stopping, k-fold, checkpoints, logs.

pub mod dataset;
