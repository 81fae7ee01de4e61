//! Keys and value encryption: the company key, per-database data keys, the key table and the
//! value envelope. Byte formats are specified in docs/FORMAT.md.

pub mod binding;
pub mod company_key;
pub mod data_key;
pub mod demo;
pub mod envelope;
pub mod error;
pub(crate) mod hex;
pub mod key_table;
pub mod rng;
pub mod session_keys;
pub mod sql_type;

pub use binding::{ColumnId, ValueBinding};
pub use company_key::{CompanyKey, Fingerprint};
pub use data_key::{rewrap, rotate, unwrap, DataKey, DataKeyCache, DataKeyId, WrappedDataKey};
pub use envelope::{envelope_len, EnvelopeCipher, Mode};
pub use error::CryptoError;
pub use key_table::KeyTable;
pub use sql_type::SqlType;
