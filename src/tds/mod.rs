//! The TDS wire format ([MS-TDS]): packets, client messages, server tokens and
//! data types. Sans-I/O: bytes in, "need more" / error / item out; no sockets,
//! no tokio, and nothing logged above trace.

pub mod all_headers;
pub mod error;
pub mod login7;
pub mod packet;
pub mod prelogin;
pub mod reader;
pub mod rpc;
pub mod sql_batch;
pub mod stream;
pub mod tls_record;
pub mod token;
pub mod types;

pub use error::{DecodeError, EncodeError};
pub use reader::Reader;
