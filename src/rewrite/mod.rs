//! Column encryption rewriting: which parameter, literal and result column
//! is which mapped PHI column, sealing values on the way up, opening them on
//! the way down, and refusing (fail closed) whatever cannot be handled.

pub mod analysis;
pub mod cache;
pub mod column_map;
pub mod convert;
pub mod error;
pub mod sealer;
