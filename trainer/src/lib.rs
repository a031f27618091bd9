//! The trainer: learns and applies commentaries with burn (`nn`, `models`, `hypergrad`,
//! `commentary`, `learn`, `apply`). Dataset decoding and the digest live in the burn-free
//! `dataset` crate, re-exported as `data` with the tensor conversion beside it.

pub mod apply;
pub mod commentary;
pub mod data;
pub mod device;
pub mod hypergrad;
pub mod learn;
pub mod models;
pub mod nn;
pub mod stop;
pub mod verify;
