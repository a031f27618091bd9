//! The commentary registry: the `commentary` command-line tool and (later) the server.

pub mod cli;
