//! proptest strategies for TYPE_INFO and typed values, shared by the tests
//! of the types and RPC modules.

use proptest::collection::vec;
use proptest::prelude::*;

use super::collation::Collation;
use super::datetime::{
    ticks_per_second, Date, DateTime, DateTime2, DateTimeOffset, SmallDateTime, Time, MAX_DATE_DAYS,
};
use super::tvp::{TvpColumn, TvpOptional, TvpTypeInfo};
use super::type_info::{
    DecimalType, FixedType, LegacyVarLenType, LongType, NullableType, TypeContext, TypeInfo,
    UdtInfo, VarLenType, XmlSchema,
};
use super::value::SqlValue;

pub fn arb_collation() -> impl Strategy<Value = Collation> {
    (any::<u32>(), any::<u8>()).prop_map(|(info, sort_id)| Collation { info, sort_id })
}

pub fn arb_name() -> impl Strategy<Value = String> {
    "[@a-zA-Z0-9_ \u{e9}\u{4e2d}\u{1f600}]{0,12}"
}

fn arb_fixed() -> impl Strategy<Value = TypeInfo> {
    use FixedType::*;
    prop::sample::select(vec![
        Null, Int1, Bit, Int2, Int4, DateTim4, Flt4, Money, DateTime, Flt8, Money4, Int8,
    ])
    .prop_map(TypeInfo::Fixed)
}

fn arb_nullable() -> impl Strategy<Value = TypeInfo> {
    use NullableType::*;
    prop::sample::select(vec![
        (IntN, 1),
        (IntN, 2),
        (IntN, 4),
        (IntN, 8),
        (BitN, 1),
        (FltN, 4),
        (FltN, 8),
        (MoneyN, 4),
        (MoneyN, 8),
        (DateTimeN, 4),
        (DateTimeN, 8),
        (Guid, 16),
    ])
    .prop_map(|(ty, len)| TypeInfo::Nullable { ty, len })
}

fn arb_decimal() -> impl Strategy<Value = TypeInfo> {
    use DecimalType::*;
    (
        prop::sample::select(vec![DecimalN, NumericN, Decimal, Numeric]),
        prop::sample::select(vec![5u8, 9, 13, 17]),
        0u8..=38,
        0u8..=38,
    )
        .prop_map(|(ty, len, precision, scale)| TypeInfo::Decimal {
            ty,
            len,
            precision,
            scale,
        })
}

fn arb_time_types() -> impl Strategy<Value = TypeInfo> {
    prop_oneof![
        Just(TypeInfo::Date),
        (0u8..=7).prop_map(|scale| TypeInfo::Time { scale }),
        (0u8..=7).prop_map(|scale| TypeInfo::DateTime2 { scale }),
        (0u8..=7).prop_map(|scale| TypeInfo::DateTimeOffset { scale }),
    ]
}

fn arb_strings() -> impl Strategy<Value = TypeInfo> {
    use VarLenType::*;
    let var = (
        prop::sample::select(vec![
            BigVarBinary,
            BigBinary,
            BigVarChar,
            BigChar,
            NVarChar,
            NChar,
        ]),
        any::<u16>(),
        arb_collation(),
    )
        .prop_map(|(ty, max_len, c)| TypeInfo::VarLen {
            ty,
            max_len,
            collation: ty.has_collation().then_some(c),
        });
    let legacy = (
        prop::sample::select(vec![
            LegacyVarLenType::Char,
            LegacyVarLenType::VarChar,
            LegacyVarLenType::Binary,
            LegacyVarLenType::VarBinary,
        ]),
        any::<u8>(),
    )
        .prop_map(|(ty, len)| TypeInfo::LegacyVarLen { ty, len });
    let long = (
        prop::sample::select(vec![LongType::Text, LongType::NText, LongType::Image]),
        any::<u32>(),
        arb_collation(),
    )
        .prop_map(|(ty, max_len, c)| TypeInfo::Long {
            ty,
            max_len,
            collation: (ty != LongType::Image).then_some(c),
        });
    prop_oneof![var, legacy, long]
}

fn arb_other(ctx: TypeContext) -> impl Strategy<Value = TypeInfo> {
    let schema =
        (arb_name(), arb_name(), arb_name()).prop_map(|(db_name, owning_schema, collection)| {
            XmlSchema {
                db_name,
                owning_schema,
                collection,
            }
        });
    let column = ctx == TypeContext::Column;
    let udt = (any::<u16>(), arb_name(), arb_name(), arb_name(), arb_name()).prop_map(
        move |(len, db_name, schema_name, type_name, asm)| {
            TypeInfo::Udt(UdtInfo {
                max_len: column.then_some(len),
                db_name,
                schema_name,
                type_name,
                assembly: column.then_some(asm),
            })
        },
    );
    prop_oneof![
        proptest::option::of(schema).prop_map(|schema| TypeInfo::Xml { schema }),
        udt,
        any::<u32>().prop_map(|max_len| TypeInfo::Variant { max_len }),
        Just(TypeInfo::Json),
        (any::<u16>(), any::<u8>()).prop_map(|(max_len, dimension_type)| TypeInfo::Vector {
            max_len,
            dimension_type
        }),
    ]
}

/// Any TYPE_INFO except TVP, valid in `ctx`.
pub fn arb_scalar_type_info(ctx: TypeContext) -> BoxedStrategy<TypeInfo> {
    prop_oneof![
        arb_fixed(),
        arb_nullable(),
        arb_decimal(),
        arb_time_types(),
        arb_strings(),
        arb_other(ctx)
    ]
    .boxed()
}

pub fn arb_tvp() -> impl Strategy<Value = TypeInfo> {
    let column = (
        any::<u32>(),
        any::<u16>(),
        arb_scalar_type_info(TypeContext::Rpc),
        arb_name(),
    )
        .prop_map(|(user_type, flags, type_info, name)| TvpColumn {
            user_type,
            flags,
            type_info,
            name,
        });
    let optional = prop_oneof![
        vec((any::<u16>(), any::<u8>()), 0..3).prop_map(TvpOptional::OrderUnique),
        vec(any::<u16>(), 0..3).prop_map(TvpOptional::ColumnOrdering),
    ];
    (
        arb_name(),
        arb_name(),
        arb_name(),
        proptest::option::of(vec(column, 0..4)),
        vec(optional, 0..3),
    )
        .prop_map(|(db_name, owning_schema, type_name, columns, optional)| {
            TypeInfo::Tvp(Box::new(TvpTypeInfo {
                db_name,
                owning_schema,
                type_name,
                columns,
                optional,
            }))
        })
}

/// Any TYPE_INFO valid in `ctx`.
pub fn arb_type_info(ctx: TypeContext) -> BoxedStrategy<TypeInfo> {
    match ctx {
        TypeContext::Column => arb_scalar_type_info(ctx),
        TypeContext::Rpc => prop_oneof![4 => arb_scalar_type_info(ctx), 1 => arb_tvp()].boxed(),
    }
}

fn arb_time(scale: u8) -> impl Strategy<Value = Time> {
    (0..86_400 * ticks_per_second(scale)).prop_map(move |ticks| Time { ticks, scale })
}

fn arb_datetime2(scale: u8) -> impl Strategy<Value = DateTime2> {
    (
        (0..=MAX_DATE_DAYS).prop_map(|days| Date { days }),
        arb_time(scale),
    )
        .prop_map(|(date, time)| DateTime2 { date, time })
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count() * 2
}

/// A type and a non-NULL value of it.
fn arb_typed_value() -> BoxedStrategy<(TypeInfo, SqlValue)> {
    let int = |ty: FixedType| TypeInfo::Fixed(ty);
    let intn = |len| TypeInfo::Nullable {
        ty: NullableType::IntN,
        len,
    };
    let latin = Collation::new(0x0409, 0x00D0_0000, 0, 52);
    prop_oneof![
        any::<i32>().prop_map(move |v| (int(FixedType::Int4), SqlValue::Int(v))),
        any::<u8>().prop_map(move |v| (intn(1), SqlValue::TinyInt(v))),
        any::<i16>().prop_map(move |v| (intn(2), SqlValue::SmallInt(v))),
        any::<i64>().prop_map(move |v| (intn(8), SqlValue::BigInt(v))),
        any::<bool>().prop_map(|v| (
            TypeInfo::Nullable {
                ty: NullableType::BitN,
                len: 1
            },
            SqlValue::Bit(v)
        )),
        any::<u64>().prop_map(|v| (
            TypeInfo::Fixed(FixedType::Flt8),
            SqlValue::Float(f64::from_bits(v))
        )),
        any::<u32>().prop_map(|v| (
            TypeInfo::Nullable {
                ty: NullableType::FltN,
                len: 4
            },
            SqlValue::Real(f32::from_bits(v))
        )),
        any::<i64>().prop_map(|v| (
            TypeInfo::Nullable {
                ty: NullableType::MoneyN,
                len: 8
            },
            SqlValue::Money(v)
        )),
        any::<i32>().prop_map(|v| (TypeInfo::Fixed(FixedType::Money4), SqlValue::SmallMoney(v))),
        (any::<i32>(), any::<u32>()).prop_map(|(days, ticks)| {
            (
                TypeInfo::Nullable {
                    ty: NullableType::DateTimeN,
                    len: 8,
                },
                SqlValue::DateTime(DateTime { days, ticks }),
            )
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(days, minutes)| {
            (
                TypeInfo::Fixed(FixedType::DateTim4),
                SqlValue::SmallDateTime(SmallDateTime { days, minutes }),
            )
        }),
        any::<[u8; 16]>().prop_map(|g| (
            TypeInfo::Nullable {
                ty: NullableType::Guid,
                len: 16
            },
            SqlValue::Guid(g)
        )),
        (prop::sample::select(vec![5u8, 9, 13, 17]), any::<i128>()).prop_map(|(len, v)| {
            let bits = 8 * (u32::from(len) - 1) - 1;
            let value = if bits >= 127 {
                v.max(-i128::MAX)
            } else {
                v % (1i128 << bits)
            };
            let ti = TypeInfo::Decimal {
                ty: DecimalType::NumericN,
                len,
                precision: 38,
                scale: 3,
            };
            (
                ti,
                SqlValue::Decimal {
                    value,
                    precision: 38,
                    scale: 3,
                },
            )
        }),
        (0..=MAX_DATE_DAYS).prop_map(|days| (TypeInfo::Date, SqlValue::Date(Date { days }))),
        (0u8..=7).prop_flat_map(
            |s| arb_time(s).prop_map(move |t| (TypeInfo::Time { scale: s }, SqlValue::Time(t)))
        ),
        (0u8..=7).prop_flat_map(|s| {
            arb_datetime2(s)
                .prop_map(move |v| (TypeInfo::DateTime2 { scale: s }, SqlValue::DateTime2(v)))
        }),
        (0u8..=7, -840i16..=840).prop_flat_map(|(s, offset_minutes)| {
            arb_datetime2(s).prop_map(move |utc| {
                (
                    TypeInfo::DateTimeOffset { scale: s },
                    SqlValue::DateTimeOffset(DateTimeOffset {
                        utc,
                        offset_minutes,
                    }),
                )
            })
        }),
        (any::<String>(), any::<bool>()).prop_map(move |(s, max)| {
            let max_len = if max { 0xFFFF } else { 8000 };
            (TypeInfo::nvarchar(max_len, latin), SqlValue::NVarChar(s))
        }),
        any::<String>().prop_map(move |s| {
            let ti = TypeInfo::VarLen {
                ty: VarLenType::NChar,
                max_len: utf16_len(&s) as u16,
                collation: Some(latin),
            };
            (ti, SqlValue::NChar(s))
        }),
        (vec(any::<u8>(), 0..300), any::<bool>()).prop_map(move |(bytes, max)| {
            let max_len = if max { 0xFFFF } else { 8000 };
            let ti = TypeInfo::VarLen {
                ty: VarLenType::BigVarChar,
                max_len,
                collation: Some(latin),
            };
            (
                ti,
                SqlValue::VarChar {
                    bytes,
                    collation: Some(latin),
                },
            )
        }),
        vec(any::<u8>(), 0..300).prop_map(move |bytes| {
            let ti = TypeInfo::VarLen {
                ty: VarLenType::BigChar,
                max_len: 300,
                collation: Some(latin),
            };
            (
                ti,
                SqlValue::Char {
                    bytes,
                    collation: Some(latin),
                },
            )
        }),
        (vec(any::<u8>(), 0..300), any::<bool>()).prop_map(|(b, max)| {
            (
                TypeInfo::varbinary(if max { 0xFFFF } else { 8000 }),
                SqlValue::VarBinary(b),
            )
        }),
        vec(any::<u8>(), 0..300).prop_map(|b| {
            (
                TypeInfo::VarLen {
                    ty: VarLenType::BigBinary,
                    max_len: 300,
                    collation: None,
                },
                SqlValue::Binary(b),
            )
        }),
        vec(any::<u8>(), 1..256).prop_map(|b| {
            (
                TypeInfo::LegacyVarLen {
                    ty: LegacyVarLenType::VarBinary,
                    len: 255,
                },
                SqlValue::VarBinary(b),
            )
        }),
    ]
    .boxed()
}

/// A type and a value of it, NULL included where the type allows it.
pub fn arb_typed() -> BoxedStrategy<(TypeInfo, SqlValue)> {
    (arb_typed_value(), prop::bool::weighted(0.1))
        .prop_map(|((ti, v), null)| match (null, &ti) {
            (true, TypeInfo::Fixed(_)) | (false, _) => (ti, v),
            (true, _) => (ti, SqlValue::Null),
        })
        .boxed()
}
