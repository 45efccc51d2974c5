//! Cohorts.
