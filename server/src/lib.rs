//! The commentary registry: the `commentary` command-line tool and the registry server.

pub mod cli;
pub mod registry;
