//! The trainer: decodes datasets and computes their content digest (`data`), and learns and
//! applies commentaries with burn (later modules: `nn`, `models`, `hypergrad`, `commentary`).

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
