//! The TDS wire format ([MS-TDS]): packets, client messages, server tokens and
//! data types. Sans-I/O: bytes in, "need more" / error / item out; no sockets,
//! no tokio, and nothing logged above trace.

pub mod error;
pub mod packet;
pub mod prelogin;
pub mod reader;
pub mod token;
pub mod types;

pub use error::{DecodeError, EncodeError};
pub use reader::Reader;
