//! Datasets for the engine: the burn-free `dataset` crate (formats, archives, digest) re-exported
//! whole, plus [`tensors`], which turns its decoded splits into burn tensors and holds the
//! validation protocol.

pub use dataset::*;

pub mod tensors;
