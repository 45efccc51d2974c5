//! Synthetic TMJ head-CT phantoms with ground-truth masks (the embedded default data set).
