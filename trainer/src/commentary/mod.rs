//! The commentary kinds as inner problems for the hypergradient engine.
//!
//! - [`weighting`]: example weighting with a teacher network t(x, i/T) -> (0, 1).

pub mod weighting;
