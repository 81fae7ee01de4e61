//! TYPE_INFO: the description of a column's or parameter's data type
//! ([MS-TDS] 2.2.5.4 "Data Type Definitions", 2.2.5.6 "Type Info Rule
//! Definition"; UDT_INFO 2.2.5.5.2, XML_INFO 2.2.5.5.3, TVP 2.2.5.5.5).
//!
//! Every field is kept as sent, so decode followed by encode gives the input
//! bytes back. Lengths that the specification restricts (INTN 1/2/4/8, DECIMALN
//! 5/9/13/17, scale 0..7, ...) are checked on decode.
//!
//! TODO(tdsguard): TDS 7.0 sends character types without a collation (it was
//! added in TDS 7.1); decoding assumes TDS 7.1 or later.

use crate::tds::{DecodeError, EncodeError, Reader};

use super::collation::Collation;
use super::tvp::TvpTypeInfo;
use super::{read_b_varchar, read_us_varchar, write_b_varchar, write_us_varchar};

// Fixed-length types (2.2.5.4.1).
pub const NULLTYPE: u8 = 0x1F;
pub const INT1TYPE: u8 = 0x30;
pub const BITTYPE: u8 = 0x32;
pub const INT2TYPE: u8 = 0x34;
pub const INT4TYPE: u8 = 0x38;
pub const DATETIM4TYPE: u8 = 0x3A;
pub const FLT4TYPE: u8 = 0x3B;
pub const MONEYTYPE: u8 = 0x3C;
pub const DATETIMETYPE: u8 = 0x3D;
pub const FLT8TYPE: u8 = 0x3E;
pub const MONEY4TYPE: u8 = 0x7A;
pub const INT8TYPE: u8 = 0x7F;

// Variable-length types (2.2.5.4.3).
pub const GUIDTYPE: u8 = 0x24;
pub const INTNTYPE: u8 = 0x26;
pub const DECIMALTYPE: u8 = 0x37;
pub const NUMERICTYPE: u8 = 0x3F;
pub const BITNTYPE: u8 = 0x68;
pub const DECIMALNTYPE: u8 = 0x6A;
pub const NUMERICNTYPE: u8 = 0x6C;
pub const FLTNTYPE: u8 = 0x6D;
pub const MONEYNTYPE: u8 = 0x6E;
pub const DATETIMNTYPE: u8 = 0x6F;
pub const DATENTYPE: u8 = 0x28;
pub const TIMENTYPE: u8 = 0x29;
pub const DATETIME2NTYPE: u8 = 0x2A;
pub const DATETIMEOFFSETNTYPE: u8 = 0x2B;
pub const CHARTYPE: u8 = 0x2F;
pub const VARCHARTYPE: u8 = 0x27;
pub const BINARYTYPE: u8 = 0x2D;
pub const VARBINARYTYPE: u8 = 0x25;
pub const BIGVARBINARYTYPE: u8 = 0xA5;
pub const BIGVARCHARTYPE: u8 = 0xA7;
pub const BIGBINARYTYPE: u8 = 0xAD;
pub const BIGCHARTYPE: u8 = 0xAF;
pub const NVARCHARTYPE: u8 = 0xE7;
pub const NCHARTYPE: u8 = 0xEF;
pub const XMLTYPE: u8 = 0xF1;
pub const UDTTYPE: u8 = 0xF0;
pub const TEXTTYPE: u8 = 0x23;
pub const IMAGETYPE: u8 = 0x22;
pub const NTEXTTYPE: u8 = 0x63;
pub const SSVARIANTTYPE: u8 = 0x62;
pub const TVPTYPE: u8 = 0xF3;
/// json (SQL Server 2025 / Azure SQL, LOGIN7 feature JSONSUPPORT 0x0D).
pub const JSONTYPE: u8 = 0xF4;
/// vector (SQL Server 2025 / Azure SQL, LOGIN7 feature VECTORSUPPORT 0x0E).
pub const VECTORTYPE: u8 = 0xF5;

/// USHORTMAXLEN: a max length of 0xFFFF marks a `(max)` type sent as PLP
/// (2.2.5.4.3).
pub const USHORT_MAX_LEN: u16 = 0xFFFF;

/// Largest scale of TIME, DATETIME2 and DATETIMEOFFSET (2.2.5.4.3).
pub const MAX_TIME_SCALE: u8 = 7;

/// Largest DECIMAL/NUMERIC precision (2.2.5.5.1.6).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// Which message a TYPE_INFO is read from. Only UDT_INFO differs: RPC
/// parameters carry the three names alone (2.2.5.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeContext {
    /// COLMETADATA, RETURNVALUE, ALTMETADATA, TVP columns.
    Column,
    /// RPC ParamMetaData.
    Rpc,
}

/// Fixed-length types: the type byte alone; values have no length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FixedType {
    Null,
    Int1,
    Bit,
    Int2,
    Int4,
    DateTim4,
    Flt4,
    Money,
    DateTime,
    Flt8,
    Money4,
    Int8,
}

/// Nullable counterparts of fixed types (and GUID): type byte + 1-byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NullableType {
    IntN,
    BitN,
    FltN,
    MoneyN,
    DateTimeN,
    Guid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecimalType {
    DecimalN,
    NumericN,
    /// Legacy DECIMALTYPE 0x37.
    Decimal,
    /// Legacy NUMERICTYPE 0x3F.
    Numeric,
}

/// Legacy byte-length string/binary types (TDS 4.x heritage, no collation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyVarLenType {
    Char,
    VarChar,
    Binary,
    VarBinary,
}

/// USHORT-length types; max length 0xFFFF means `(max)` (PLP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarLenType {
    BigVarBinary,
    BigBinary,
    BigVarChar,
    BigChar,
    NVarChar,
    NChar,
}

/// LONGLEN types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongType {
    Text,
    NText,
    Image,
}

/// XML_INFO schema part, present when SCHEMA_PRESENT is 1 (2.2.5.5.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XmlSchema {
    pub db_name: String,
    pub owning_schema: String,
    pub collection: String,
}

/// UDT_INFO (2.2.5.5.2). `max_len` and `assembly` are present in column
/// metadata and absent in RPC parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdtInfo {
    pub max_len: Option<u16>,
    pub db_name: String,
    pub schema_name: String,
    pub type_name: String,
    pub assembly: Option<String>,
}

/// A decoded TYPE_INFO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypeInfo {
    Fixed(FixedType),
    Nullable {
        ty: NullableType,
        len: u8,
    },
    Decimal {
        ty: DecimalType,
        len: u8,
        precision: u8,
        scale: u8,
    },
    /// DATENTYPE 0x28: no length byte in TYPE_INFO.
    Date,
    Time {
        scale: u8,
    },
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    LegacyVarLen {
        ty: LegacyVarLenType,
        len: u8,
    },
    VarLen {
        ty: VarLenType,
        max_len: u16,
        /// Present exactly for the character types.
        collation: Option<Collation>,
    },
    Long {
        ty: LongType,
        max_len: u32,
        /// Present for TEXT and NTEXT.
        collation: Option<Collation>,
    },
    Xml {
        schema: Option<XmlSchema>,
    },
    Udt(UdtInfo),
    /// SSVARIANTTYPE with its 4-byte max length.
    Variant {
        max_len: u32,
    },
    /// JSONTYPE: the type byte alone; values are PLP (UTF-8 text).
    /// TODO(tdsguard): confirm the TYPE_INFO of json against a server capture.
    Json,
    /// VECTORTYPE: USHORT max length in bytes and a dimension (element) type
    /// byte, 0x00 = float32; values are USHORTLEN-framed, not PLP. Taken from
    /// Microsoft's SqlClient driver, as [MS-TDS] did not describe it here.
    /// TODO(tdsguard): confirm the layout against a server capture.
    Vector {
        max_len: u16,
        dimension_type: u8,
    },
    /// Table-valued parameter (RPC only).
    Tvp(Box<TvpTypeInfo>),
}

impl FixedType {
    pub fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            NULLTYPE => FixedType::Null,
            INT1TYPE => FixedType::Int1,
            BITTYPE => FixedType::Bit,
            INT2TYPE => FixedType::Int2,
            INT4TYPE => FixedType::Int4,
            DATETIM4TYPE => FixedType::DateTim4,
            FLT4TYPE => FixedType::Flt4,
            MONEYTYPE => FixedType::Money,
            DATETIMETYPE => FixedType::DateTime,
            FLT8TYPE => FixedType::Flt8,
            MONEY4TYPE => FixedType::Money4,
            INT8TYPE => FixedType::Int8,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            FixedType::Null => NULLTYPE,
            FixedType::Int1 => INT1TYPE,
            FixedType::Bit => BITTYPE,
            FixedType::Int2 => INT2TYPE,
            FixedType::Int4 => INT4TYPE,
            FixedType::DateTim4 => DATETIM4TYPE,
            FixedType::Flt4 => FLT4TYPE,
            FixedType::Money => MONEYTYPE,
            FixedType::DateTime => DATETIMETYPE,
            FixedType::Flt8 => FLT8TYPE,
            FixedType::Money4 => MONEY4TYPE,
            FixedType::Int8 => INT8TYPE,
        }
    }

    /// Value size in bytes (2.2.5.4.1).
    pub fn size(self) -> usize {
        match self {
            FixedType::Null => 0,
            FixedType::Int1 | FixedType::Bit => 1,
            FixedType::Int2 => 2,
            FixedType::Int4 | FixedType::DateTim4 | FixedType::Flt4 | FixedType::Money4 => 4,
            FixedType::Money | FixedType::DateTime | FixedType::Flt8 | FixedType::Int8 => 8,
        }
    }
}

impl NullableType {
    fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            INTNTYPE => NullableType::IntN,
            BITNTYPE => NullableType::BitN,
            FLTNTYPE => NullableType::FltN,
            MONEYNTYPE => NullableType::MoneyN,
            DATETIMNTYPE => NullableType::DateTimeN,
            GUIDTYPE => NullableType::Guid,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            NullableType::IntN => INTNTYPE,
            NullableType::BitN => BITNTYPE,
            NullableType::FltN => FLTNTYPE,
            NullableType::MoneyN => MONEYNTYPE,
            NullableType::DateTimeN => DATETIMNTYPE,
            NullableType::Guid => GUIDTYPE,
        }
    }

    /// The lengths 2.2.5.4.3 allows for this type.
    pub fn valid_len(self, len: u8) -> bool {
        match self {
            NullableType::IntN => matches!(len, 1 | 2 | 4 | 8),
            NullableType::BitN => len == 1,
            NullableType::FltN | NullableType::MoneyN | NullableType::DateTimeN => {
                matches!(len, 4 | 8)
            }
            NullableType::Guid => len == 16,
        }
    }
}

impl DecimalType {
    fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            DECIMALNTYPE => DecimalType::DecimalN,
            NUMERICNTYPE => DecimalType::NumericN,
            DECIMALTYPE => DecimalType::Decimal,
            NUMERICTYPE => DecimalType::Numeric,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            DecimalType::DecimalN => DECIMALNTYPE,
            DecimalType::NumericN => NUMERICNTYPE,
            DecimalType::Decimal => DECIMALTYPE,
            DecimalType::Numeric => NUMERICTYPE,
        }
    }
}

impl LegacyVarLenType {
    fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            CHARTYPE => LegacyVarLenType::Char,
            VARCHARTYPE => LegacyVarLenType::VarChar,
            BINARYTYPE => LegacyVarLenType::Binary,
            VARBINARYTYPE => LegacyVarLenType::VarBinary,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            LegacyVarLenType::Char => CHARTYPE,
            LegacyVarLenType::VarChar => VARCHARTYPE,
            LegacyVarLenType::Binary => BINARYTYPE,
            LegacyVarLenType::VarBinary => VARBINARYTYPE,
        }
    }
}

impl VarLenType {
    pub fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            BIGVARBINARYTYPE => VarLenType::BigVarBinary,
            BIGBINARYTYPE => VarLenType::BigBinary,
            BIGVARCHARTYPE => VarLenType::BigVarChar,
            BIGCHARTYPE => VarLenType::BigChar,
            NVARCHARTYPE => VarLenType::NVarChar,
            NCHARTYPE => VarLenType::NChar,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            VarLenType::BigVarBinary => BIGVARBINARYTYPE,
            VarLenType::BigBinary => BIGBINARYTYPE,
            VarLenType::BigVarChar => BIGVARCHARTYPE,
            VarLenType::BigChar => BIGCHARTYPE,
            VarLenType::NVarChar => NVARCHARTYPE,
            VarLenType::NChar => NCHARTYPE,
        }
    }

    /// Character types carry a collation (2.2.5.6).
    pub fn has_collation(self) -> bool {
        !matches!(self, VarLenType::BigVarBinary | VarLenType::BigBinary)
    }
}

impl LongType {
    fn from_byte(b: u8) -> Option<Self> {
        let ty = match b {
            TEXTTYPE => LongType::Text,
            NTEXTTYPE => LongType::NText,
            IMAGETYPE => LongType::Image,
            _ => return None,
        };
        Some(ty)
    }

    pub fn byte(self) -> u8 {
        match self {
            LongType::Text => TEXTTYPE,
            LongType::NText => NTEXTTYPE,
            LongType::Image => IMAGETYPE,
        }
    }
}

impl TypeInfo {
    /// Decodes a TYPE_INFO as found in column metadata.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_in(r, TypeContext::Column)
    }

    /// Decodes a TYPE_INFO read in `ctx`.
    pub fn decode_in(r: &mut Reader<'_>, ctx: TypeContext) -> Result<Self, DecodeError> {
        let b = r.u8()?;
        if let Some(ty) = FixedType::from_byte(b) {
            return Ok(TypeInfo::Fixed(ty));
        }
        if let Some(ty) = NullableType::from_byte(b) {
            return decode_nullable(r, ty);
        }
        if let Some(ty) = DecimalType::from_byte(b) {
            return decode_decimal(r, ty);
        }
        if let Some(ty) = LegacyVarLenType::from_byte(b) {
            return Ok(TypeInfo::LegacyVarLen { ty, len: r.u8()? });
        }
        if let Some(ty) = VarLenType::from_byte(b) {
            return decode_var_len(r, ty);
        }
        if let Some(ty) = LongType::from_byte(b) {
            return decode_long(r, ty);
        }
        decode_other(r, b, ctx)
    }

    /// Appends this TYPE_INFO. Fails only if a name is too long for its
    /// length prefix.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.type_byte());
        match self {
            TypeInfo::Fixed(_) | TypeInfo::Date | TypeInfo::Json => {}
            TypeInfo::Nullable { len, .. } | TypeInfo::LegacyVarLen { len, .. } => out.push(*len),
            TypeInfo::Decimal {
                len,
                precision,
                scale,
                ..
            } => out.extend_from_slice(&[*len, *precision, *scale]),
            TypeInfo::Time { scale }
            | TypeInfo::DateTime2 { scale }
            | TypeInfo::DateTimeOffset { scale } => out.push(*scale),
            TypeInfo::VarLen {
                max_len, collation, ..
            } => encode_with_collation(&max_len.to_le_bytes(), collation, out),
            TypeInfo::Long {
                max_len, collation, ..
            } => encode_with_collation(&max_len.to_le_bytes(), collation, out),
            TypeInfo::Xml { schema } => encode_xml(schema.as_ref(), out)?,
            TypeInfo::Udt(udt) => encode_udt(udt, out)?,
            TypeInfo::Variant { max_len } => out.extend_from_slice(&max_len.to_le_bytes()),
            TypeInfo::Vector {
                max_len,
                dimension_type,
            } => {
                out.extend_from_slice(&max_len.to_le_bytes());
                out.push(*dimension_type);
            }
            TypeInfo::Tvp(tvp) => tvp.encode_type_info_body(out)?,
        }
        Ok(())
    }

    /// The type byte on the wire.
    pub fn type_byte(&self) -> u8 {
        match self {
            TypeInfo::Fixed(ty) => ty.byte(),
            TypeInfo::Nullable { ty, .. } => ty.byte(),
            TypeInfo::Decimal { ty, .. } => ty.byte(),
            TypeInfo::Date => DATENTYPE,
            TypeInfo::Time { .. } => TIMENTYPE,
            TypeInfo::DateTime2 { .. } => DATETIME2NTYPE,
            TypeInfo::DateTimeOffset { .. } => DATETIMEOFFSETNTYPE,
            TypeInfo::LegacyVarLen { ty, .. } => ty.byte(),
            TypeInfo::VarLen { ty, .. } => ty.byte(),
            TypeInfo::Long { ty, .. } => ty.byte(),
            TypeInfo::Xml { .. } => XMLTYPE,
            TypeInfo::Udt(_) => UDTTYPE,
            TypeInfo::Variant { .. } => SSVARIANTTYPE,
            TypeInfo::Json => JSONTYPE,
            TypeInfo::Vector { .. } => VECTORTYPE,
            TypeInfo::Tvp(_) => TVPTYPE,
        }
    }

    /// Whether values are PLP (`(max)` types, XML, UDT, json).
    pub fn is_plp(&self) -> bool {
        match self {
            TypeInfo::VarLen { max_len, .. } => *max_len == USHORT_MAX_LEN,
            TypeInfo::Xml { .. } | TypeInfo::Udt(_) | TypeInfo::Json => true,
            _ => false,
        }
    }

    /// Whether COLMETADATA follows this TYPE_INFO with a TableName
    /// (TEXT, NTEXT, IMAGE; 2.2.7.4).
    pub fn has_table_name(&self) -> bool {
        matches!(self, TypeInfo::Long { .. })
    }

    /// The collation of a character type.
    pub fn collation(&self) -> Option<Collation> {
        match self {
            TypeInfo::VarLen { collation, .. } | TypeInfo::Long { collation, .. } => *collation,
            _ => None,
        }
    }

    /// A `varbinary(n)` TYPE_INFO, or `varbinary(max)` for `n` of 0xFFFF.
    pub fn varbinary(max_len: u16) -> Self {
        TypeInfo::VarLen {
            ty: VarLenType::BigVarBinary,
            max_len,
            collation: None,
        }
    }

    /// An `nvarchar` TYPE_INFO; `max_len` is in bytes (0xFFFF = max).
    pub fn nvarchar(max_len: u16, collation: Collation) -> Self {
        TypeInfo::VarLen {
            ty: VarLenType::NVarChar,
            max_len,
            collation: Some(collation),
        }
    }
}

impl TypeInfo {
    /// The T-SQL type this TYPE_INFO declares, as written in the `@params`
    /// declaration of sp_executesql and sp_prepare (`nvarchar(4000)`,
    /// `varbinary(max)`, `decimal(18,2)`, ...). `None` for NULLTYPE and for
    /// vector element types other than float32.
    pub fn declaration(&self) -> Option<String> {
        let name = match self {
            TypeInfo::Fixed(ty) => fixed_name(*ty)?.to_string(),
            TypeInfo::Nullable { ty, len } => nullable_name(*ty, *len)?.to_string(),
            TypeInfo::Decimal {
                ty,
                precision,
                scale,
                ..
            } => decimal_declaration(*ty, *precision, *scale),
            TypeInfo::Date => "date".to_string(),
            TypeInfo::Time { scale } => format!("time({scale})"),
            TypeInfo::DateTime2 { scale } => format!("datetime2({scale})"),
            TypeInfo::DateTimeOffset { scale } => format!("datetimeoffset({scale})"),
            TypeInfo::LegacyVarLen { ty, len } => legacy_declaration(*ty, *len),
            TypeInfo::VarLen { ty, max_len, .. } => var_len_declaration(*ty, *max_len),
            TypeInfo::Long { ty, .. } => long_name(*ty).to_string(),
            TypeInfo::Xml { .. } => "xml".to_string(),
            TypeInfo::Udt(udt) => format!("{}.{}", udt.schema_name, udt.type_name),
            TypeInfo::Variant { .. } => "sql_variant".to_string(),
            TypeInfo::Json => "json".to_string(),
            TypeInfo::Vector {
                max_len,
                dimension_type: 0,
            } => format!("vector({})", max_len.saturating_sub(8) / 4),
            TypeInfo::Vector { .. } => return None,
            TypeInfo::Tvp(tvp) => format!("{}.{} READONLY", tvp.owning_schema, tvp.type_name),
        };
        Some(name)
    }
}

fn fixed_name(ty: FixedType) -> Option<&'static str> {
    let name = match ty {
        FixedType::Null => return None,
        FixedType::Int1 => "tinyint",
        FixedType::Bit => "bit",
        FixedType::Int2 => "smallint",
        FixedType::Int4 => "int",
        FixedType::DateTim4 => "smalldatetime",
        FixedType::Flt4 => "real",
        FixedType::Money => "money",
        FixedType::DateTime => "datetime",
        FixedType::Flt8 => "float",
        FixedType::Money4 => "smallmoney",
        FixedType::Int8 => "bigint",
    };
    Some(name)
}

fn nullable_name(ty: NullableType, len: u8) -> Option<&'static str> {
    let fixed = match (ty, len) {
        (NullableType::Guid, _) => return Some("uniqueidentifier"),
        (NullableType::IntN, 1) => FixedType::Int1,
        (NullableType::IntN, 2) => FixedType::Int2,
        (NullableType::IntN, 4) => FixedType::Int4,
        (NullableType::IntN, _) => FixedType::Int8,
        (NullableType::BitN, _) => FixedType::Bit,
        (NullableType::FltN, 4) => FixedType::Flt4,
        (NullableType::FltN, _) => FixedType::Flt8,
        (NullableType::MoneyN, 4) => FixedType::Money4,
        (NullableType::MoneyN, _) => FixedType::Money,
        (NullableType::DateTimeN, 4) => FixedType::DateTim4,
        (NullableType::DateTimeN, _) => FixedType::DateTime,
    };
    fixed_name(fixed)
}

fn decimal_declaration(ty: DecimalType, precision: u8, scale: u8) -> String {
    let name = match ty {
        DecimalType::DecimalN | DecimalType::Decimal => "decimal",
        DecimalType::NumericN | DecimalType::Numeric => "numeric",
    };
    format!("{name}({precision},{scale})")
}

fn legacy_declaration(ty: LegacyVarLenType, len: u8) -> String {
    let name = match ty {
        LegacyVarLenType::Char => "char",
        LegacyVarLenType::VarChar => "varchar",
        LegacyVarLenType::Binary => "binary",
        LegacyVarLenType::VarBinary => "varbinary",
    };
    format!("{name}({})", len.max(1))
}

/// Lengths are in bytes on the wire and in characters for nchar/nvarchar;
/// drivers send a length of 0 for empty values, which T-SQL does not accept.
fn var_len_declaration(ty: VarLenType, max_len: u16) -> String {
    let (name, unit) = match ty {
        VarLenType::BigVarBinary => ("varbinary", 1),
        VarLenType::BigBinary => ("binary", 1),
        VarLenType::BigVarChar => ("varchar", 1),
        VarLenType::BigChar => ("char", 1),
        VarLenType::NVarChar => ("nvarchar", 2),
        VarLenType::NChar => ("nchar", 2),
    };
    if max_len == USHORT_MAX_LEN {
        return format!("{name}(max)");
    }
    format!("{name}({})", (max_len / unit).max(1))
}

fn long_name(ty: LongType) -> &'static str {
    match ty {
        LongType::Text => "text",
        LongType::NText => "ntext",
        LongType::Image => "image",
    }
}

fn invalid(r: &Reader<'_>, field: &'static str, value: u8) -> DecodeError {
    DecodeError::InvalidValue {
        structure: r.structure(),
        field,
        value: u64::from(value),
    }
}

fn decode_nullable(r: &mut Reader<'_>, ty: NullableType) -> Result<TypeInfo, DecodeError> {
    let len = r.u8()?;
    if !ty.valid_len(len) {
        return Err(invalid(r, "TYPE_INFO length", len));
    }
    Ok(TypeInfo::Nullable { ty, len })
}

fn decode_decimal(r: &mut Reader<'_>, ty: DecimalType) -> Result<TypeInfo, DecodeError> {
    let len = r.u8()?;
    let precision = r.u8()?;
    let scale = r.u8()?;
    if !matches!(len, 5 | 9 | 13 | 17) {
        return Err(invalid(r, "DECIMAL length", len));
    }
    if precision > MAX_DECIMAL_PRECISION || scale > MAX_DECIMAL_PRECISION {
        return Err(invalid(
            r,
            "DECIMAL precision or scale",
            precision.max(scale),
        ));
    }
    Ok(TypeInfo::Decimal {
        ty,
        len,
        precision,
        scale,
    })
}

fn decode_scale(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let scale = r.u8()?;
    if scale > MAX_TIME_SCALE {
        return Err(invalid(r, "time scale", scale));
    }
    Ok(scale)
}

fn decode_var_len(r: &mut Reader<'_>, ty: VarLenType) -> Result<TypeInfo, DecodeError> {
    let max_len = r.u16_le()?;
    let collation = match ty.has_collation() {
        true => Some(Collation::decode(r)?),
        false => None,
    };
    Ok(TypeInfo::VarLen {
        ty,
        max_len,
        collation,
    })
}

fn decode_long(r: &mut Reader<'_>, ty: LongType) -> Result<TypeInfo, DecodeError> {
    let max_len = r.u32_le()?;
    let collation = match ty {
        LongType::Image => None,
        LongType::Text | LongType::NText => Some(Collation::decode(r)?),
    };
    Ok(TypeInfo::Long {
        ty,
        max_len,
        collation,
    })
}

fn decode_other(r: &mut Reader<'_>, b: u8, ctx: TypeContext) -> Result<TypeInfo, DecodeError> {
    match b {
        DATENTYPE => Ok(TypeInfo::Date),
        TIMENTYPE => Ok(TypeInfo::Time {
            scale: decode_scale(r)?,
        }),
        DATETIME2NTYPE => Ok(TypeInfo::DateTime2 {
            scale: decode_scale(r)?,
        }),
        DATETIMEOFFSETNTYPE => Ok(TypeInfo::DateTimeOffset {
            scale: decode_scale(r)?,
        }),
        XMLTYPE => decode_xml(r),
        UDTTYPE => decode_udt(r, ctx).map(TypeInfo::Udt),
        SSVARIANTTYPE => Ok(TypeInfo::Variant {
            max_len: r.u32_le()?,
        }),
        JSONTYPE => Ok(TypeInfo::Json),
        VECTORTYPE => Ok(TypeInfo::Vector {
            max_len: r.u16_le()?,
            dimension_type: r.u8()?,
        }),
        TVPTYPE => TvpTypeInfo::decode_after_type_byte(r).map(|t| TypeInfo::Tvp(Box::new(t))),
        _ => Err(DecodeError::UnknownType(b)),
    }
}

fn decode_xml(r: &mut Reader<'_>) -> Result<TypeInfo, DecodeError> {
    let present = r.u8()?;
    match present {
        0 => Ok(TypeInfo::Xml { schema: None }),
        1 => {
            let schema = XmlSchema {
                db_name: read_b_varchar(r, "XML DbName")?,
                owning_schema: read_b_varchar(r, "XML OwningSchema")?,
                collection: read_us_varchar(r, "XML XmlSchemaCollection")?,
            };
            Ok(TypeInfo::Xml {
                schema: Some(schema),
            })
        }
        _ => Err(invalid(r, "XML SchemaPresent", present)),
    }
}

fn decode_udt(r: &mut Reader<'_>, ctx: TypeContext) -> Result<UdtInfo, DecodeError> {
    let max_len = match ctx {
        TypeContext::Column => Some(r.u16_le()?),
        TypeContext::Rpc => None,
    };
    let db_name = read_b_varchar(r, "UDT DbName")?;
    let schema_name = read_b_varchar(r, "UDT SchemaName")?;
    let type_name = read_b_varchar(r, "UDT TypeName")?;
    let assembly = match ctx {
        TypeContext::Column => Some(read_us_varchar(r, "UDT AssemblyQualifiedName")?),
        TypeContext::Rpc => None,
    };
    Ok(UdtInfo {
        max_len,
        db_name,
        schema_name,
        type_name,
        assembly,
    })
}

fn encode_with_collation(len: &[u8], collation: &Option<Collation>, out: &mut Vec<u8>) {
    out.extend_from_slice(len);
    if let Some(c) = collation {
        c.encode(out);
    }
}

fn encode_xml(schema: Option<&XmlSchema>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let Some(s) = schema else {
        out.push(0);
        return Ok(());
    };
    out.push(1);
    write_b_varchar(&s.db_name, out, "XML_INFO", "DbName")?;
    write_b_varchar(&s.owning_schema, out, "XML_INFO", "OwningSchema")?;
    write_us_varchar(&s.collection, out, "XML_INFO", "XmlSchemaCollection")
}

fn encode_udt(udt: &UdtInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Some(len) = udt.max_len {
        out.extend_from_slice(&len.to_le_bytes());
    }
    write_b_varchar(&udt.db_name, out, "UDT_INFO", "DbName")?;
    write_b_varchar(&udt.schema_name, out, "UDT_INFO", "SchemaName")?;
    write_b_varchar(&udt.type_name, out, "UDT_INFO", "TypeName")?;
    match &udt.assembly {
        Some(a) => write_us_varchar(a, out, "UDT_INFO", "AssemblyQualifiedName"),
        None => Ok(()),
    }
}

/// The table name that COLMETADATA puts after the TYPE_INFO of TEXT, NTEXT
/// and IMAGE columns: NumParts, then that many US_VARCHAR parts (TDS 7.2+,
/// 2.2.7.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TableName {
    pub parts: Vec<String>,
}

impl TableName {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u8()?;
        let parts = (0..count)
            .map(|_| read_us_varchar(r, "TableName part"))
            .collect::<Result<_, _>>()?;
        Ok(TableName { parts })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let count = u8::try_from(self.parts.len())
            .map_err(|_| super::too_long("TableName", "NumParts", self.parts.len(), 0xFF))?;
        out.push(count);
        self.parts
            .iter()
            .try_for_each(|p| write_us_varchar(p, out, "TableName", "part"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_in(bytes: &[u8], ctx: TypeContext) -> TypeInfo {
        let mut r = Reader::new(bytes, "TYPE_INFO");
        let ti = TypeInfo::decode_in(&mut r, ctx).unwrap();
        r.finish().unwrap();

        let mut out = Vec::new();
        ti.encode(&mut out).unwrap();
        assert_eq!(out, bytes, "{ti:?}");
        ti
    }

    fn round_trip(bytes: &[u8]) -> TypeInfo {
        round_trip_in(bytes, TypeContext::Column)
    }

    #[test]
    fn fixed_types() {
        for b in [
            0x1F, 0x30, 0x32, 0x34, 0x38, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x7A, 0x7F,
        ] {
            let ti = round_trip(&[b]);
            assert!(matches!(ti, TypeInfo::Fixed(_)));
        }
        assert_eq!(round_trip(&[0x38]), TypeInfo::Fixed(FixedType::Int4));
    }

    #[test]
    fn nullable_types_and_their_lengths() {
        assert_eq!(
            round_trip(&[0x26, 0x04]),
            TypeInfo::Nullable {
                ty: NullableType::IntN,
                len: 4
            }
        );
        round_trip(&[0x68, 0x01]);
        round_trip(&[0x6D, 0x08]);
        round_trip(&[0x6E, 0x04]);
        round_trip(&[0x6F, 0x08]);
        round_trip(&[0x24, 0x10]);

        let mut r = Reader::new(&[0x26, 0x03], "TYPE_INFO");
        assert!(matches!(
            TypeInfo::decode(&mut r),
            Err(DecodeError::InvalidValue { value: 3, .. })
        ));
    }

    #[test]
    fn decimal_and_legacy_decimal() {
        assert_eq!(
            round_trip(&[0x6A, 0x11, 0x26, 0x0A]),
            TypeInfo::Decimal {
                ty: DecimalType::DecimalN,
                len: 17,
                precision: 38,
                scale: 10
            }
        );
        round_trip(&[0x6C, 0x05, 0x09, 0x00]);
        round_trip(&[0x37, 0x09, 0x12, 0x02]);
        round_trip(&[0x3F, 0x0D, 0x1C, 0x00]);
    }

    #[test]
    fn date_and_time_types() {
        assert_eq!(round_trip(&[0x28]), TypeInfo::Date);
        for scale in 0..=7 {
            round_trip(&[0x29, scale]);
            round_trip(&[0x2A, scale]);
            round_trip(&[0x2B, scale]);
        }
        let mut r = Reader::new(&[0x2A, 0x08], "TYPE_INFO");
        assert!(TypeInfo::decode(&mut r).is_err());
    }

    #[test]
    fn character_and_binary_types() {
        let nvarchar = round_trip(&[0xE7, 0x40, 0x1F, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        assert_eq!(nvarchar.collation().unwrap().lcid(), 0x0409);
        assert!(!nvarchar.is_plp());

        let max = round_trip(&[0xA7, 0xFF, 0xFF, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        assert!(max.is_plp());
        round_trip(&[0xAF, 0x0A, 0x00, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        round_trip(&[0xEF, 0x14, 0x00, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        assert_eq!(round_trip(&[0xA5, 0x40, 0x1F]), TypeInfo::varbinary(8000));
        round_trip(&[0xAD, 0x0A, 0x00]);
        round_trip(&[0x2F, 0x0A]);
        round_trip(&[0x27, 0xFF]);
        round_trip(&[0x2D, 0x01]);
        round_trip(&[0x25, 0x10]);
    }

    #[test]
    fn long_types_and_table_name() {
        let text = round_trip(&[0x23, 0xFF, 0xFF, 0xFF, 0x7F, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        assert!(text.has_table_name());
        round_trip(&[0x63, 0xFE, 0xFF, 0xFF, 0x7F, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        round_trip(&[0x22, 0xFF, 0xFF, 0xFF, 0x7F]);

        let name = [
            0x02, 0x03, 0x00, b'd', 0, b'b', 0, b'o', 0, 0x01, 0x00, b't', 0,
        ];
        let mut r = Reader::new(&name, "TableName");
        let t = TableName::decode(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(t.parts, ["dbo", "t"]);
        let mut out = Vec::new();
        t.encode(&mut out).unwrap();
        assert_eq!(out, name);
    }

    #[test]
    fn xml_udt_variant_json_vector() {
        assert_eq!(round_trip(&[0xF1, 0x00]), TypeInfo::Xml { schema: None });
        let xml = [
            0xF1, 0x01, 0x01, b'd', 0, 0x01, b's', 0, 0x01, 0x00, b'c', 0,
        ];
        let ti = round_trip(&xml);
        assert!(ti.is_plp());

        let udt_col = [
            0xF0, 0xFF, 0xFF, 0x01, b'd', 0, 0x01, b's', 0, 0x01, b't', 0, 0x01, 0x00, b'a', 0,
        ];
        let ti = round_trip(&udt_col);
        let TypeInfo::Udt(udt) = ti else {
            panic!("not a UDT")
        };
        assert_eq!(udt.max_len, Some(0xFFFF));
        assert_eq!(udt.assembly.as_deref(), Some("a"));

        let udt_rpc = [0xF0, 0x01, b'd', 0, 0x01, b's', 0, 0x01, b't', 0];
        round_trip_in(&udt_rpc, TypeContext::Rpc);

        round_trip(&[0x62, 0x10, 0x1F, 0x00, 0x00]);
        assert_eq!(round_trip(&[0xF4]), TypeInfo::Json);
        round_trip(&[0xF5, 0x14, 0x00, 0x00]);
    }

    #[test]
    fn declarations() {
        let decl = |bytes: &[u8]| round_trip_in(bytes, TypeContext::Rpc).declaration();
        let latin = [0x09, 0x04, 0xD0, 0x00, 0x34];
        assert_eq!(
            decl(&[&[0xE7, 0x40, 0x1F][..], &latin].concat()).unwrap(),
            "nvarchar(4000)"
        );
        assert_eq!(
            decl(&[&[0xE7, 0x00, 0x00][..], &latin].concat()).unwrap(),
            "nvarchar(1)"
        );
        assert_eq!(
            decl(&[&[0xA7, 0xFF, 0xFF][..], &latin].concat()).unwrap(),
            "varchar(max)"
        );
        assert_eq!(decl(&[0xA5, 0x40, 0x1F]).unwrap(), "varbinary(8000)");
        assert_eq!(decl(&[0xA5, 0xFF, 0xFF]).unwrap(), "varbinary(max)");
        assert_eq!(decl(&[0x26, 0x01]).unwrap(), "tinyint");
        assert_eq!(decl(&[0x26, 0x08]).unwrap(), "bigint");
        assert_eq!(decl(&[0x6F, 0x08]).unwrap(), "datetime");
        assert_eq!(decl(&[0x24, 0x10]).unwrap(), "uniqueidentifier");
        assert_eq!(decl(&[0x6A, 0x11, 0x12, 0x02]).unwrap(), "decimal(18,2)");
        assert_eq!(decl(&[0x2B, 0x07]).unwrap(), "datetimeoffset(7)");
        assert_eq!(decl(&[0x38]).unwrap(), "int");
        assert_eq!(decl(&[0x1F]), None);
    }

    #[test]
    fn unknown_type_byte() {
        let mut r = Reader::new(&[0x99], "TYPE_INFO");
        assert_eq!(
            TypeInfo::decode(&mut r),
            Err(DecodeError::UnknownType(0x99))
        );
    }

    #[test]
    fn truncated_type_info_is_an_error() {
        let full = [0xE7, 0x40, 0x1F, 0x09, 0x04, 0xD0, 0x00, 0x34];
        for n in 0..full.len() {
            let mut r = Reader::new(&full[..n], "TYPE_INFO");
            assert!(TypeInfo::decode(&mut r).is_err(), "prefix {n}");
        }
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::tds::types::testing::arb_type_info;

        fn identity(ti: &TypeInfo, ctx: TypeContext) {
            let mut bytes = Vec::new();
            ti.encode(&mut bytes).unwrap();
            let mut r = Reader::new(&bytes, "TYPE_INFO");
            assert_eq!(&TypeInfo::decode_in(&mut r, ctx).unwrap(), ti);
            r.finish().unwrap();
        }

        proptest! {
            #[test]
            fn encode_decode_identity_in_columns(ti in arb_type_info(TypeContext::Column)) {
                identity(&ti, TypeContext::Column);
            }

            #[test]
            fn encode_decode_identity_in_rpc(ti in arb_type_info(TypeContext::Rpc)) {
                identity(&ti, TypeContext::Rpc);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                for ctx in [TypeContext::Column, TypeContext::Rpc] {
                    let mut r = Reader::new(&bytes, "TYPE_INFO");
                    if let Ok(ti) = TypeInfo::decode_in(&mut r, ctx) {
                        let mut out = Vec::new();
                        ti.encode(&mut out).unwrap();
                        prop_assert_eq!(&out[..], &bytes[..r.position()]);
                    }
                }
            }
        }
    }
}
