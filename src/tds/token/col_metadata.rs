//! COLMETADATA (0x81, [MS-TDS] 2.2.7.4): the columns of the result set that
//! follows, including the "no metadata" form (Count 0xFFFF) and, when column
//! encryption was acknowledged, the CekTable and per-column CryptoMetadata
//! (TDS-NOTES §14).
//!
//! TYPE_INFO (2.2.5.6) is decoded by [`crate::tds::types::TypeInfo`] and also
//! kept as its wire bytes, with the framing of its values ([`Framing`]),
//! which is all a row walker needs.

use super::tab_name::{read_table_name, write_table_name};
use super::wire::{read_b_varchar, read_us_varchar, write_b_varchar, write_us_varchar, UcsString};
use super::{TokenContext, COLMETADATA};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;
use crate::tds::types::{TypeInfo, ValueFraming};

/// Cap on the column count: SQL Server returns at most 4096 columns per
/// SELECT ("Maximum capacity specifications for SQL Server").
pub const MAX_COLUMNS: usize = 4096;

/// Count value meaning "no metadata": the rows reuse the previous COLMETADATA.
pub const NO_METADATA: u16 = 0xFFFF;

/// Column flag fNullable (2.2.7.4).
pub const FLAG_NULLABLE: u16 = 0x0001;
/// Column flag fCaseSen.
pub const FLAG_CASE_SENSITIVE: u16 = 0x0002;
/// Column flags usUpdateable (2 bits: 0 read-only, 1 read/write, 2 unknown).
pub const FLAG_UPDATEABLE_MASK: u16 = 0x000C;
/// Column flag fIdentity.
pub const FLAG_IDENTITY: u16 = 0x0010;
/// Column flag fComputed.
pub const FLAG_COMPUTED: u16 = 0x0020;
/// Column flag fFixedLenCLRType.
pub const FLAG_FIXED_LEN_CLR_TYPE: u16 = 0x0100;
/// Column flag fSparseColumnSet.
pub const FLAG_SPARSE_COLUMN_SET: u16 = 0x0400;
/// Column flag fEncrypted: the column carries CryptoMetadata.
pub const FLAG_ENCRYPTED: u16 = 0x0800;
/// Column flag fHidden (browse-mode key columns).
pub const FLAG_HIDDEN: u16 = 0x2000;
/// Column flag fKey.
pub const FLAG_KEY: u16 = 0x4000;
/// Column flag fNullableUnknown.
pub const FLAG_NULLABLE_UNKNOWN: u16 = 0x8000;

/// Cap on CekTable entries: each encrypted column refers to one entry, so
/// there are never more than columns.
pub const MAX_CEK_ENTRIES: usize = MAX_COLUMNS;

/// How a value of a type is framed in ROW, NBCROW and RETURNVALUE
/// (2.2.5.2 "Data Stream Types" and 2.2.5.4 "Data Type Definitions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Fixed-length type: exactly this many bytes, never NULL.
    Fixed(u8),
    /// 1-byte length, then the bytes; 0 is NULL.
    ByteLen,
    /// 2-byte length, then the bytes; 0xFFFF is NULL.
    UShortLen,
    /// TEXT/NTEXT/IMAGE: TextPtrLen 1 (0 = NULL), TextPtr, Timestamp 8,
    /// 4-byte length, then the bytes.
    Text,
    /// sql_variant: 4-byte length (0 = NULL), then the bytes.
    Variant,
    /// Partially length-prefixed: 8-byte total (all ones = NULL), then chunks
    /// of `length 4 + bytes` up to a zero-length chunk.
    Plp,
}

/// A TYPE_INFO as sent: its wire bytes (re-encoded verbatim, so names with
/// unpaired surrogates survive), the decoded [`TypeInfo`] and the framing of
/// its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfoRaw {
    bytes: Vec<u8>,
    typed: TypeInfo,
    framing: Framing,
}

impl TypeInfoRaw {
    /// Reads one TYPE_INFO of a result column (or RETURNVALUE). Unknown type
    /// bytes are [`DecodeError::UnknownType`]; a table-valued type is refused,
    /// it only occurs in RPC parameters.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.rest();
        let typed = TypeInfo::decode(r)?;
        let used = start.len() - r.remaining();
        let framing = Framing::of(&typed)?;
        Ok(TypeInfoRaw {
            bytes: start.get(..used).unwrap_or_default().to_vec(),
            typed,
            framing,
        })
    }

    /// A TYPE_INFO built by tdsguard (e.g. the plaintext type of a decrypted
    /// column).
    pub fn from_typed(typed: TypeInfo) -> Result<Self, EncodeError> {
        let mut bytes = Vec::new();
        typed.encode(&mut bytes)?;
        let framing = Framing::of(&typed).map_err(|_| EncodeError::TypeMismatch {
            structure: "COLMETADATA",
            type_name: "table-valued type",
        })?;
        Ok(TypeInfoRaw {
            bytes,
            typed,
            framing,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
    }

    /// The type byte (2.2.5.4.x).
    pub fn type_id(&self) -> u8 {
        self.bytes.first().copied().unwrap_or_default()
    }

    /// The TYPE_INFO bytes as sent.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The decoded TYPE_INFO.
    pub fn typed(&self) -> &TypeInfo {
        &self.typed
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// TEXT, NTEXT and IMAGE columns carry a TableName in COLMETADATA.
    pub fn has_table_name(&self) -> bool {
        self.typed.has_table_name()
    }
}

impl Framing {
    /// The framing of values of `typed` in ROW, NBCROW and RETURNVALUE.
    pub fn of(typed: &TypeInfo) -> Result<Self, DecodeError> {
        Ok(match typed.framing() {
            ValueFraming::Fixed(n) => Framing::Fixed(u8::try_from(n).unwrap_or(u8::MAX)),
            ValueFraming::ByteLen => Framing::ByteLen,
            ValueFraming::UShortLen => Framing::UShortLen,
            ValueFraming::TextPtr => Framing::Text,
            ValueFraming::Variant => Framing::Variant,
            ValueFraming::Plp => Framing::Plp,
            ValueFraming::LongLen | ValueFraming::Tvp => {
                return Err(DecodeError::Malformed {
                    structure: "TYPE_INFO",
                    reason: "a parameter-only type in a result",
                })
            }
        })
    }
}

/// One CekTable entry (TDS-NOTES §14): a column encryption key and its
/// encrypted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CekEntry {
    pub database_id: u32,
    pub cek_id: u32,
    pub cek_version: u32,
    pub cek_md_version: u64,
    pub values: Vec<CekValue>,
}

/// One encrypted form of a column encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CekValue {
    pub encrypted_key: Vec<u8>,
    pub key_store_name: UcsString,
    pub key_path: UcsString,
    pub algorithm: UcsString,
}

/// `EkValueCount 2 | CekEntry...`, present when column encryption was acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CekTable(pub Vec<CekEntry>);

impl CekTable {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u16_le()? as usize;
        check_cap("CekTable", count, MAX_CEK_ENTRIES)?;
        let entries = (0..count)
            .map(|_| decode_cek_entry(r))
            .collect::<Result<_, _>>()?;
        Ok(CekTable(entries))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&count_u16("CekTable", self.0.len())?.to_le_bytes());
        for e in &self.0 {
            out.extend_from_slice(&e.database_id.to_le_bytes());
            out.extend_from_slice(&e.cek_id.to_le_bytes());
            out.extend_from_slice(&e.cek_version.to_le_bytes());
            out.extend_from_slice(&e.cek_md_version.to_le_bytes());
            out.push(
                u8::try_from(e.values.len())
                    .map_err(|_| too_many("CekTable", e.values.len(), 0xFF))?,
            );
            for v in &e.values {
                encode_cek_value(v, out)?;
            }
        }
        Ok(())
    }
}

fn decode_cek_entry(r: &mut Reader<'_>) -> Result<CekEntry, DecodeError> {
    let (database_id, cek_id, cek_version) = (r.u32_le()?, r.u32_le()?, r.u32_le()?);
    let cek_md_version = r.u64_le()?;
    let count = r.u8()?;
    let values = (0..count)
        .map(|_| decode_cek_value(r))
        .collect::<Result<_, _>>()?;
    Ok(CekEntry {
        database_id,
        cek_id,
        cek_version,
        cek_md_version,
        values,
    })
}

fn decode_cek_value(r: &mut Reader<'_>) -> Result<CekValue, DecodeError> {
    let len = r.u16_le()? as usize;
    Ok(CekValue {
        encrypted_key: r.bytes(len)?.to_vec(),
        key_store_name: read_b_varchar(r)?,
        key_path: read_us_varchar(r)?,
        algorithm: read_b_varchar(r)?,
    })
}

fn encode_cek_value(v: &CekValue, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&count_u16("CekTable", v.encrypted_key.len())?.to_le_bytes());
    out.extend_from_slice(&v.encrypted_key);
    write_b_varchar(&v.key_store_name, "CekTable", out)?;
    write_us_varchar(&v.key_path, "CekTable", out)?;
    write_b_varchar(&v.algorithm, "CekTable", out)
}

/// Algorithm id meaning "custom": the algorithm's name follows.
const CUSTOM_ALGORITHM: u8 = 0x00;

/// Per-column Always Encrypted metadata (TDS-NOTES §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoMetadata {
    /// Index into the CekTable (RETURNVALUE: absent in the spec's grammar,
    /// kept the same way).
    pub ordinal: u16,
    pub user_type: u32,
    /// The plaintext type.
    pub base_type: TypeInfoRaw,
    /// 2 = AEAD_AES_256_CBC_HMAC_SHA_256; 0 = custom, named by `algorithm_name`.
    pub algorithm: u8,
    pub algorithm_name: Option<UcsString>,
    /// 1 deterministic, 2 randomized.
    pub encryption_type: u8,
    pub norm_version: u8,
}

impl CryptoMetadata {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ordinal = r.u16_le()?;
        let user_type = r.u32_le()?;
        let base_type = TypeInfoRaw::decode(r)?;
        let algorithm = r.u8()?;
        let algorithm_name = match algorithm {
            CUSTOM_ALGORITHM => Some(read_b_varchar(r)?),
            _ => None,
        };
        Ok(CryptoMetadata {
            ordinal,
            user_type,
            base_type,
            algorithm,
            algorithm_name,
            encryption_type: r.u8()?,
            norm_version: r.u8()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.ordinal.to_le_bytes());
        out.extend_from_slice(&self.user_type.to_le_bytes());
        self.base_type.encode(out);
        out.push(self.algorithm);
        if let Some(name) = &self.algorithm_name {
            write_b_varchar(name, "CryptoMetadata", out)?;
        }
        out.extend_from_slice(&[self.encryption_type, self.norm_version]);
        Ok(())
    }
}

/// One column of a COLMETADATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnData {
    /// 4 bytes from TDS 7.2, 2 before.
    pub user_type: u32,
    /// 0x0001 nullable, 0x0800 fEncrypted, ... (2.2.7.4).
    pub flags: u16,
    pub type_info: TypeInfoRaw,
    /// Only for TEXT, NTEXT and IMAGE.
    pub table_name: Option<Vec<UcsString>>,
    /// Only when column encryption was acked and the column is encrypted.
    pub crypto: Option<CryptoMetadata>,
    pub name: UcsString,
}

impl ColumnData {
    pub fn decode(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let user_type = if ctx.tds_version.is_7_2_or_later() {
            r.u32_le()?
        } else {
            u32::from(r.u16_le()?)
        };
        let flags = r.u16_le()?;
        let type_info = TypeInfoRaw::decode(r)?;
        let table_name = match type_info.has_table_name() {
            true => Some(read_table_name(r, ctx)?),
            false => None,
        };
        let crypto = match ctx.column_encryption && flags & FLAG_ENCRYPTED != 0 {
            true => Some(CryptoMetadata::decode(r)?),
            false => None,
        };
        let name = read_b_varchar(r)?;
        Ok(ColumnData {
            user_type,
            flags,
            type_info,
            table_name,
            crypto,
            name,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if ctx.tds_version.is_7_2_or_later() {
            out.extend_from_slice(&self.user_type.to_le_bytes());
        } else {
            out.extend_from_slice(&(self.user_type as u16).to_le_bytes());
        }
        out.extend_from_slice(&self.flags.to_le_bytes());
        self.type_info.encode(out);
        if let Some(parts) = &self.table_name {
            write_table_name(parts, ctx, "COLMETADATA", out)?;
        }
        if let Some(crypto) = &self.crypto {
            crypto.encode(out)?;
        }
        write_b_varchar(&self.name, "COLMETADATA", out)
    }

    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn is_nullable(&self) -> bool {
        self.flags & FLAG_NULLABLE != 0
    }
}

/// `81 | Count 2 | [CekTable] | ColumnData...`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColMetadata {
    /// Count was 0xFFFF: no columns follow; rows use the previous metadata.
    pub no_metadata: bool,
    /// Present when column encryption was acknowledged (even if empty).
    pub cek_table: Option<CekTable>,
    pub columns: Vec<ColumnData>,
}

impl ColMetadata {
    /// The "no metadata" form (Count 0xFFFF).
    pub fn no_metadata() -> Self {
        ColMetadata {
            no_metadata: true,
            ..ColMetadata::default()
        }
    }

    /// Reads Count and checks it; `None` means the 0xFFFF form.
    pub fn decode_count(r: &mut Reader<'_>) -> Result<Option<usize>, DecodeError> {
        let count = r.u16_le()?;
        if count == NO_METADATA {
            return Ok(None);
        }
        check_cap("COLMETADATA", count as usize, MAX_COLUMNS)?;
        Ok(Some(count as usize))
    }

    pub fn decode_body(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let Some(count) = Self::decode_count(r)? else {
            return Ok(Self::no_metadata());
        };
        let cek_table = match ctx.column_encryption {
            true => Some(CekTable::decode(r)?),
            false => None,
        };
        let columns = (0..count)
            .map(|_| ColumnData::decode(r, ctx))
            .collect::<Result<_, _>>()?;
        Ok(ColMetadata {
            no_metadata: false,
            cek_table,
            columns,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(COLMETADATA);
        if self.no_metadata {
            out.extend_from_slice(&NO_METADATA.to_le_bytes());
            return Ok(());
        }
        let count = count_u16("COLMETADATA", self.columns.len())?;
        if count == NO_METADATA {
            return Err(too_many("COLMETADATA", self.columns.len(), MAX_COLUMNS));
        }
        out.extend_from_slice(&count.to_le_bytes());
        if ctx.column_encryption {
            self.cek_table.clone().unwrap_or_default().encode(out)?;
        }
        for column in &self.columns {
            column.encode(ctx, out)?;
        }
        Ok(())
    }

    pub fn is_no_metadata(&self) -> bool {
        self.no_metadata
    }

    /// The value framing of every column, in order.
    pub fn framings(&self) -> Vec<Framing> {
        self.columns.iter().map(|c| c.type_info.framing()).collect()
    }
}

fn check_cap(structure: &'static str, n: usize, limit: usize) -> Result<(), DecodeError> {
    if n > limit {
        return Err(DecodeError::TooLarge {
            structure,
            length: n,
            limit,
        });
    }
    Ok(())
}

fn too_many(structure: &'static str, n: usize, limit: usize) -> EncodeError {
    EncodeError::TooLarge {
        structure,
        field: "count",
        length: n,
        limit,
    }
}

fn count_u16(structure: &'static str, n: usize) -> Result<u16, EncodeError> {
    u16::try_from(n).map_err(|_| too_many(structure, n, 0xFFFF))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tds::token::test_util::{encode_round_trip, round_trip};
    use crate::tds::token::Token;

    /// TYPE_INFO bytes used across the token tests.
    pub const INT4: &[u8] = &[0x38];
    pub const INTN4: &[u8] = &[0x26, 4];
    pub const NVARCHAR50: &[u8] = &[0xE7, 100, 0, 0x09, 0x04, 0xD0, 0x00, 0x34];
    pub const NVARCHAR_MAX: &[u8] = &[0xE7, 0xFF, 0xFF, 0x09, 0x04, 0xD0, 0x00, 0x34];
    pub const DATETIME2_7: &[u8] = &[0x2A, 7];
    pub const DECIMAL_18_2: &[u8] = &[0x6A, 9, 18, 2];
    pub const VARBINARY_MAX: &[u8] = &[0xA5, 0xFF, 0xFF];
    pub const NTEXT: &[u8] = &[0x63, 0xFF, 0xFF, 0xFF, 0x7F, 0x09, 0x04, 0xD0, 0x00, 0x34];
    pub const VARIANT: &[u8] = &[0x62, 0x10, 0x1F, 0, 0];

    pub fn type_info(bytes: &[u8]) -> TypeInfoRaw {
        let mut r = Reader::new(bytes, "test");
        let t = TypeInfoRaw::decode(&mut r).expect("type info");
        assert!(r.is_empty());
        t
    }

    pub fn column(name: &str, ti: &[u8]) -> ColumnData {
        let type_info = type_info(ti);
        let table_name = type_info
            .has_table_name()
            .then(|| vec!["dbo".into(), "t".into()]);
        ColumnData {
            user_type: 0,
            flags: 0x0001,
            type_info,
            table_name,
            crypto: None,
            name: name.into(),
        }
    }

    pub fn sample_metadata() -> ColMetadata {
        ColMetadata {
            no_metadata: false,
            cek_table: None,
            columns: vec![
                column("id", INT4),
                column("n", INTN4),
                column("name", NVARCHAR50),
                column("big", NVARCHAR_MAX),
                column("at", DATETIME2_7),
                column("amount", DECIMAL_18_2),
                column("blob", VARBINARY_MAX),
                column("notes", NTEXT),
                column("v", VARIANT),
            ],
        }
    }

    #[test]
    fn framings_of_common_types() {
        let f = sample_metadata().framings();
        use Framing::*;
        assert_eq!(
            f,
            vec![
                Fixed(4),
                ByteLen,
                UShortLen,
                Plp,
                ByteLen,
                ByteLen,
                Plp,
                Text,
                Variant
            ]
        );
    }

    #[test]
    fn round_trips_with_table_name() {
        let t = Token::ColMetadata(sample_metadata().into());
        encode_round_trip(&t, &TokenContext::default());
    }

    #[test]
    fn no_metadata_form() {
        let t = round_trip(&[COLMETADATA, 0xFF, 0xFF], &TokenContext::default());
        let Token::ColMetadata(m) = t else { panic!() };
        assert!(m.is_no_metadata());
    }

    #[test]
    fn too_many_columns_is_refused() {
        let mut r = Reader::new(&[COLMETADATA, 0x01, 0x10], "t");
        assert!(matches!(
            Token::decode(&mut r, &TokenContext::default()),
            Err(DecodeError::TooLarge {
                limit: MAX_COLUMNS,
                ..
            })
        ));
    }

    #[test]
    fn unknown_type_is_refused() {
        let mut r = Reader::new(&[0x42], "t");
        assert_eq!(
            TypeInfoRaw::decode(&mut r),
            Err(DecodeError::UnknownType(0x42))
        );
        // A table-valued type only occurs in RPC parameters.
        let tvp = [0xF3, 0, 0, 0, 0, 0, 0];
        let mut r = Reader::new(&tvp, "t");
        assert!(TypeInfoRaw::decode(&mut r).is_err());
    }

    #[test]
    fn built_type_info_keeps_its_framing() {
        let raw = TypeInfoRaw::from_typed(TypeInfo::varbinary(0xFFFF)).unwrap();
        assert_eq!(raw.bytes(), VARBINARY_MAX);
        assert_eq!(raw.framing(), Framing::Plp);
    }

    #[test]
    fn encrypted_column_with_cek_table() {
        let ctx = TokenContext {
            column_encryption: true,
            ..TokenContext::default()
        };
        let mut col = column("ssn", &[0xA5, 0x40, 0x1F]);
        col.flags |= FLAG_ENCRYPTED;
        col.crypto = Some(CryptoMetadata {
            ordinal: 0,
            user_type: 0,
            base_type: type_info(&[0xAF, 11, 0, 0x09, 0x04, 0xD0, 0x00, 0x34]),
            algorithm: 2,
            algorithm_name: None,
            encryption_type: 1,
            norm_version: 1,
        });
        let meta = ColMetadata {
            no_metadata: false,
            cek_table: Some(CekTable(vec![CekEntry {
                database_id: 5,
                cek_id: 1,
                cek_version: 1,
                cek_md_version: 9,
                values: vec![CekValue {
                    encrypted_key: vec![1, 2, 3],
                    key_store_name: "MSSQL_CERTIFICATE_STORE".into(),
                    key_path: "CurrentUser/My/AB".into(),
                    algorithm: "RSA_OAEP".into(),
                }],
            }])),
            columns: vec![col, column("id", INT4)],
        };
        encode_round_trip(&Token::ColMetadata(meta.into()), &ctx);
    }
}
