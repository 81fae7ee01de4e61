//! Subcommands of the `tdsguard` binary that are more than argument
//! plumbing. Each is a plain function the binary calls.

pub mod dump;
