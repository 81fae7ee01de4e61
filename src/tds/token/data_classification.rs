//! DATACLASSIFICATION (0xA3, [MS-TDS] 2.2.7.5): sensitivity labels and
//! information types of the result columns. Sent after COLMETADATA only when
//! the DATACLASSIFICATION feature was acknowledged; version 2 adds ranks.
//!
//! The token has no length. Its per-column part must describe exactly the
//! columns of the current COLMETADATA.

use super::wire::{read_b_varchar, write_b_varchar, UcsString};
use super::{TokenContext, DATACLASSIFICATION};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// First DATACLASSIFICATION version with SensitivityRank fields.
pub const VERSION_WITH_RANK: u8 = 2;

/// Cap on the whole token while it is buffered. Labels and information types
/// are short names chosen by a DBA; 1 MiB holds thousands of them.
pub const MAX_DATACLASSIFICATION_BYTES: usize = 1 << 20;

/// One (label, information type) pair of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensitivityProperty {
    pub label: u16,
    pub information_type: u16,
    /// Version 2 and later.
    pub rank: Option<i32>,
}

/// `A3 | SensitivityLabels | InformationTypes | [SensitivityRank 4] |
/// NumResultSetColumns 2 | per column: NumSensitivityProperties 2 | properties`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataClassification {
    /// (name, id) pairs.
    pub labels: Vec<(UcsString, UcsString)>,
    /// (name, id) pairs.
    pub information_types: Vec<(UcsString, UcsString)>,
    /// Version 2 and later: the rank of the whole result.
    pub rank: Option<i32>,
    /// One list per result column.
    pub columns: Vec<Vec<SensitivityProperty>>,
}

impl DataClassification {
    pub fn decode_body(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let with_rank = require_ack(ctx)? >= VERSION_WITH_RANK;
        let labels = decode_pairs(r)?;
        let information_types = decode_pairs(r)?;
        let rank = if with_rank {
            Some(r.u32_le()? as i32)
        } else {
            None
        };
        let count = check_column_count(r.u16_le()?, ctx)?;
        let columns = (0..count)
            .map(|_| decode_column(r, with_rank))
            .collect::<Result<_, _>>()?;
        Ok(DataClassification {
            labels,
            information_types,
            rank,
            columns,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(DATACLASSIFICATION);
        encode_pairs(&self.labels, out)?;
        encode_pairs(&self.information_types, out)?;
        if let Some(rank) = self.rank {
            out.extend_from_slice(&rank.to_le_bytes());
        }
        out.extend_from_slice(&count_u16(self.columns.len())?.to_le_bytes());
        let with_rank = ctx.data_classification.unwrap_or(1) >= VERSION_WITH_RANK;
        for column in &self.columns {
            out.extend_from_slice(&count_u16(column.len())?.to_le_bytes());
            for p in column {
                out.extend_from_slice(&p.label.to_le_bytes());
                out.extend_from_slice(&p.information_type.to_le_bytes());
                if with_rank {
                    out.extend_from_slice(&p.rank.unwrap_or_default().to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// The acknowledged version, or an error: the token is only legal after
/// the server acknowledged the feature.
pub fn require_ack(ctx: &TokenContext) -> Result<u8, DecodeError> {
    ctx.data_classification.ok_or(DecodeError::Malformed {
        structure: "DATACLASSIFICATION",
        reason: "sent although the feature was not acknowledged",
    })
}

/// NumResultSetColumns must equal the current COLMETADATA's column count.
pub fn check_column_count(count: u16, ctx: &TokenContext) -> Result<usize, DecodeError> {
    let expected = ctx.require_columns("DATACLASSIFICATION")?.columns.len();
    if count as usize != expected {
        return Err(DecodeError::LengthMismatch {
            structure: "DATACLASSIFICATION columns",
            declared: count as usize,
            used: expected,
        });
    }
    Ok(expected)
}

/// One (name, id) pair of SensitivityLabels or InformationTypes.
pub fn decode_pair(r: &mut Reader<'_>) -> Result<(UcsString, UcsString), DecodeError> {
    Ok((read_b_varchar(r)?, read_b_varchar(r)?))
}

/// One SensitivityProperty.
pub fn decode_property(
    r: &mut Reader<'_>,
    with_rank: bool,
) -> Result<SensitivityProperty, DecodeError> {
    Ok(SensitivityProperty {
        label: r.u16_le()?,
        information_type: r.u16_le()?,
        rank: if with_rank {
            Some(r.u32_le()? as i32)
        } else {
            None
        },
    })
}

fn decode_pairs(r: &mut Reader<'_>) -> Result<Vec<(UcsString, UcsString)>, DecodeError> {
    let count = r.u16_le()?;
    (0..count).map(|_| decode_pair(r)).collect()
}

fn decode_column(
    r: &mut Reader<'_>,
    with_rank: bool,
) -> Result<Vec<SensitivityProperty>, DecodeError> {
    let count = r.u16_le()?;
    (0..count).map(|_| decode_property(r, with_rank)).collect()
}

fn encode_pairs(pairs: &[(UcsString, UcsString)], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&count_u16(pairs.len())?.to_le_bytes());
    for (name, id) in pairs {
        write_b_varchar(name, "DATACLASSIFICATION", out)?;
        write_b_varchar(id, "DATACLASSIFICATION", out)?;
    }
    Ok(())
}

fn count_u16(n: usize) -> Result<u16, EncodeError> {
    u16::try_from(n).map_err(|_| EncodeError::TooLarge {
        structure: "DATACLASSIFICATION",
        field: "count",
        length: n,
        limit: 0xFFFF,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::col_metadata::tests::{column, INT4};
    use crate::tds::token::col_metadata::ColMetadata;
    use crate::tds::token::test_util::encode_round_trip;
    use crate::tds::token::Token;
    use std::sync::Arc;

    fn ctx(version: Option<u8>) -> TokenContext {
        let meta = ColMetadata {
            columns: vec![column("a", INT4), column("b", INT4)],
            ..ColMetadata::default()
        };
        TokenContext {
            data_classification: version,
            columns: Some(Arc::new(meta)),
            ..TokenContext::default()
        }
    }

    fn sample(rank: Option<i32>) -> DataClassification {
        let p = SensitivityProperty {
            label: 0,
            information_type: 0,
            rank,
        };
        DataClassification {
            labels: vec![("Confidential".into(), "L1".into())],
            information_types: vec![("Health".into(), "T1".into())],
            rank,
            columns: vec![vec![p], vec![]],
        }
    }

    #[test]
    fn versions_1_and_2() {
        encode_round_trip(&Token::DataClassification(sample(None)), &ctx(Some(1)));
        encode_round_trip(&Token::DataClassification(sample(Some(20))), &ctx(Some(2)));
    }

    #[test]
    fn refused_without_ack_or_with_wrong_column_count() {
        let mut bytes = Vec::new();
        Token::DataClassification(sample(None))
            .encode(&ctx(Some(1)), &mut bytes)
            .unwrap();
        let mut r = Reader::new(&bytes, "t");
        assert!(Token::decode(&mut r, &ctx(None)).is_err());
        let mut one = ctx(Some(1));
        one.columns = Some(Arc::new(ColMetadata {
            columns: vec![column("a", INT4)],
            ..ColMetadata::default()
        }));
        let mut r = Reader::new(&bytes, "t");
        assert!(Token::decode(&mut r, &one).is_err());
    }
}
