//! The commentary kinds as inner problems for the hypergradient engine.
//!
//! - [`weighting`]: example weighting with a teacher network t(x, i/T) -> (0, 1);
//! - [`blending`]: label blending with a C x C matrix, learned by IFT;
//! - [`masks`]: attention masks from a mask network, learned by IFT.

pub mod blending;
pub mod masks;
pub mod weighting;
