//! The catalog kept inside each SQLite database file: declared T-SQL types of every column,
//! identity state, procedures, and the rows served for `sys.*` and `INFORMATION_SCHEMA` views.
//!
//! SQLite only knows storage classes, so the declared type (precision, scale, length,
//! nullability, identity) lives in `__tdsguard_columns`; result metadata comes from there.

use rusqlite::{params, Connection, OptionalExtension};

use crate::sandbox::engine::errors::{from_sqlite, SqlError};
use crate::sandbox::engine::session::DEFAULT_COLLATION;
use crate::sandbox::engine::types::{Len, SqlType};

/// First object id handed out; SQL Server user objects have large positive ids as well.
const FIRST_OBJECT_ID: i64 = 901_578_250;

/// `schema_id` of `dbo`.
pub const DBO_SCHEMA_ID: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS __tdsguard_objects(
    object_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL COLLATE NOCASE UNIQUE,
    type TEXT NOT NULL,
    create_date TEXT NOT NULL,
    definition TEXT,
    identity_next INTEGER,
    identity_increment INTEGER);
CREATE TABLE IF NOT EXISTS __tdsguard_columns(
    object_id INTEGER NOT NULL,
    column_id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    type TEXT NOT NULL,
    is_nullable INTEGER NOT NULL,
    is_identity INTEGER NOT NULL,
    default_sql TEXT,
    PRIMARY KEY(object_id, column_id));
";

/// One column of a table, with its declared type.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    pub identity: bool,
    /// DEFAULT expression, already translated to SQLite.
    pub default_sql: Option<String>,
}

/// A table (or a catalog view served from a temporary table).
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub object_id: i64,
    pub name: String,
    /// Name to use in SQLite (differs from `name` for catalog views).
    pub sqlite_name: String,
    pub columns: Vec<ColumnInfo>,
    pub identity_increment: Option<i64>,
}

impl TableInfo {
    /// Finds a column by name, case-insensitively.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The identity column, if any.
    pub fn identity_column(&self) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.identity)
    }
}

/// Creates the catalog tables in a database file.
pub fn init(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(SCHEMA)
}

fn sql_err(e: rusqlite::Error) -> SqlError {
    from_sqlite(&e, "catalog")
}

/// Loads a user table by name.
pub fn table(conn: &Connection, name: &str) -> Result<Option<TableInfo>, SqlError> {
    let row = conn
        .prepare_cached("SELECT object_id, name, identity_increment FROM __tdsguard_objects WHERE name = ?1 AND type = 'U'")
        .and_then(|mut st| {
            st.query_row([name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(sql_err)?;
    let Some((object_id, name, identity_increment)) = row else {
        return Ok(None);
    };
    let columns = columns(conn, object_id)?;
    Ok(Some(TableInfo {
        object_id,
        sqlite_name: name.clone(),
        name,
        columns,
        identity_increment,
    }))
}

fn columns(conn: &Connection, object_id: i64) -> Result<Vec<ColumnInfo>, SqlError> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, type, is_nullable, is_identity, default_sql FROM __tdsguard_columns \
             WHERE object_id = ?1 ORDER BY column_id",
        )
        .map_err(sql_err)?;
    let rows = st
        .query_map([object_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
                r.get(4)?,
            ))
        })
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, ty, nullable, identity, default_sql) = row.map_err(sql_err)?;
        out.push(ColumnInfo {
            name,
            ty: SqlType::parse(&ty)?,
            nullable,
            identity,
            default_sql,
        });
    }
    Ok(out)
}

/// Object id of a user object (`U` table or `P` procedure), for OBJECT_ID().
pub fn object_id(
    conn: &Connection,
    name: &str,
    kind: Option<&str>,
) -> Result<Option<i64>, SqlError> {
    let kind = kind.map(|k| k.trim().to_ascii_uppercase());
    conn.query_row(
        "SELECT object_id FROM __tdsguard_objects WHERE name = ?1 AND (?2 IS NULL OR type = ?2)",
        params![name, kind],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err)
}

/// Records a new object and returns its id.
pub fn add_object(
    conn: &Connection,
    name: &str,
    kind: &str,
    definition: Option<&str>,
    identity: Option<(i64, i64)>,
) -> Result<i64, SqlError> {
    let id: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(object_id) + 16, ?1) FROM __tdsguard_objects",
            [FIRST_OBJECT_ID],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    conn.execute(
        "INSERT INTO __tdsguard_objects(object_id, name, type, create_date, definition, identity_next, identity_increment) \
         VALUES (?1, ?2, ?3, strftime('%Y-%m-%d %H:%M:%f0000', 'now'), ?4, ?5, ?6)",
        params![id, name, kind, definition, identity.map(|i| i.0), identity.map(|i| i.1)],
    )
    .map_err(sql_err)?;
    Ok(id)
}

/// Records one column of a new table.
pub fn add_column(
    conn: &Connection,
    object_id: i64,
    column_id: i64,
    col: &ColumnInfo,
) -> Result<(), SqlError> {
    conn.execute(
        "INSERT INTO __tdsguard_columns VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            object_id,
            column_id,
            col.name,
            col.ty.to_string(),
            col.nullable,
            col.identity,
            col.default_sql
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// Removes an object and its columns.
pub fn drop_object(conn: &Connection, object_id: i64) -> Result<(), SqlError> {
    conn.execute(
        "DELETE FROM __tdsguard_columns WHERE object_id = ?1",
        [object_id],
    )
    .map_err(sql_err)?;
    conn.execute(
        "DELETE FROM __tdsguard_objects WHERE object_id = ?1",
        [object_id],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// Procedure text by name.
pub fn procedure(conn: &Connection, name: &str) -> Result<Option<String>, SqlError> {
    conn.query_row(
        "SELECT definition FROM __tdsguard_objects WHERE name = ?1 AND type = 'P'",
        [name],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err)
}

/// Takes the write lock and reads the next identity value of a table.
pub fn identity_next(conn: &Connection, object_id: i64) -> Result<i64, SqlError> {
    conn.execute(
        "UPDATE __tdsguard_objects SET identity_next = identity_next WHERE object_id = ?1",
        [object_id],
    )
    .map_err(sql_err)?;
    conn.query_row(
        "SELECT identity_next FROM __tdsguard_objects WHERE object_id = ?1",
        [object_id],
        |r| r.get(0),
    )
    .map_err(sql_err)
}

/// Stores the next identity value of a table.
pub fn set_identity_next(conn: &Connection, object_id: i64, next: i64) -> Result<(), SqlError> {
    conn.execute(
        "UPDATE __tdsguard_objects SET identity_next = ?2 WHERE object_id = ?1",
        params![object_id, next],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// `system_type_id` of a type, as in `sys.types`.
pub fn system_type_id(ty: &SqlType) -> i64 {
    match ty {
        SqlType::TinyInt => 48,
        SqlType::SmallInt => 52,
        SqlType::Int => 56,
        SqlType::BigInt => 127,
        SqlType::Bit => 104,
        SqlType::Decimal { .. } => 106,
        SqlType::Numeric { .. } => 108,
        SqlType::Float { mantissa_bits: 24 } | SqlType::Real => 59,
        SqlType::Float { .. } => 62,
        SqlType::Money => 60,
        SqlType::SmallMoney => 122,
        SqlType::Char(_) => 175,
        SqlType::VarChar(_) => 167,
        SqlType::NChar(_) => 239,
        SqlType::NVarChar(_) => 231,
        SqlType::Binary(_) => 173,
        SqlType::VarBinary(_) => 165,
        SqlType::Date => 40,
        SqlType::Time(_) => 41,
        SqlType::DateTime => 61,
        SqlType::SmallDateTime => 58,
        SqlType::DateTime2(_) => 42,
        SqlType::DateTimeOffset(_) => 43,
        SqlType::UniqueIdentifier => 36,
    }
}

/// Every built-in type with its default declaration, for `sys.types` and sp_datatype_info.
pub fn builtin_types() -> Vec<SqlType> {
    vec![
        SqlType::UniqueIdentifier,
        SqlType::Date,
        SqlType::Time(7),
        SqlType::DateTime2(7),
        SqlType::DateTimeOffset(7),
        SqlType::TinyInt,
        SqlType::SmallInt,
        SqlType::Int,
        SqlType::SmallDateTime,
        SqlType::Real,
        SqlType::Money,
        SqlType::DateTime,
        SqlType::Float { mantissa_bits: 53 },
        SqlType::Bit,
        SqlType::Decimal {
            precision: 18,
            scale: 0,
        },
        SqlType::Numeric {
            precision: 18,
            scale: 0,
        },
        SqlType::SmallMoney,
        SqlType::BigInt,
        SqlType::VarBinary(Len::N(8000)),
        SqlType::VarChar(Len::N(8000)),
        SqlType::Binary(8000),
        SqlType::Char(8000),
        SqlType::NVarChar(Len::N(4000)),
        SqlType::NChar(4000),
    ]
}

/// A catalog view: its name, column declarations and how to fill it.
pub struct ViewDef {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str, bool)],
    /// SQLite SELECT over the catalog tables giving the rows; `{db}` is the database name and
    /// `{types}` a VALUES list of the built-in types.
    pub fill: &'static str,
}

const NAME: &str = "nvarchar(128)";

/// Catalog views served from the catalog (name, columns (name, type, nullable), rows).
pub const VIEWS: &[ViewDef] = &[
    ViewDef {
        name: "sys.tables",
        columns: &[("name", NAME, false), ("object_id", "int", false), ("schema_id", "int", false), ("type", "char(2)", true), ("type_desc", "nvarchar(60)", true), ("create_date", "datetime", false)],
        fill: "SELECT name, object_id, 1, 'U ', 'USER_TABLE', create_date FROM __tdsguard_objects WHERE type = 'U'",
    },
    ViewDef {
        name: "sys.objects",
        columns: &[("name", NAME, false), ("object_id", "int", false), ("schema_id", "int", false), ("type", "char(2)", true), ("type_desc", "nvarchar(60)", true), ("create_date", "datetime", false)],
        fill: "SELECT name, object_id, 1, CASE type WHEN 'U' THEN 'U ' ELSE 'P ' END, CASE type WHEN 'U' THEN 'USER_TABLE' ELSE 'SQL_STORED_PROCEDURE' END, create_date FROM __tdsguard_objects",
    },
    ViewDef {
        name: "sys.schemas",
        columns: &[("name", NAME, false), ("schema_id", "int", false), ("principal_id", "int", true)],
        fill: "SELECT 'dbo', 1, 1",
    },
    ViewDef {
        name: "sys.columns",
        columns: &[("object_id", "int", false), ("name", NAME, true), ("column_id", "int", false), ("system_type_id", "tinyint", false), ("user_type_id", "int", false), ("max_length", "smallint", false), ("precision", "tinyint", false), ("scale", "tinyint", false), ("collation_name", NAME, true), ("is_nullable", "bit", true), ("is_identity", "bit", false)],
        fill: "SELECT object_id, name, column_id, __tds_typeinfo(type, 'system_type_id'), __tds_typeinfo(type, 'system_type_id'), __tds_typeinfo(type, 'max_length'), __tds_typeinfo(type, 'precision'), __tds_typeinfo(type, 'scale'), __tds_typeinfo(type, 'collation'), is_nullable, is_identity FROM __tdsguard_columns",
    },
    ViewDef {
        name: "sys.types",
        columns: &[("name", NAME, false), ("system_type_id", "tinyint", false), ("user_type_id", "int", false), ("schema_id", "int", false), ("max_length", "smallint", false), ("precision", "tinyint", false), ("scale", "tinyint", false), ("collation_name", NAME, true), ("is_nullable", "bit", true), ("is_user_defined", "bit", false)],
        fill: "SELECT __tds_typeinfo(t, 'name'), __tds_typeinfo(t, 'system_type_id'), __tds_typeinfo(t, 'system_type_id'), 4, __tds_typeinfo(t, 'max_length'), __tds_typeinfo(t, 'precision'), __tds_typeinfo(t, 'scale'), __tds_typeinfo(t, 'collation'), 1, 0 FROM ({types})",
    },
    ViewDef {
        name: "sys.databases",
        columns: &[("name", NAME, false), ("database_id", "int", false), ("create_date", "datetime", false), ("collation_name", NAME, true), ("state_desc", "nvarchar(60)", true), ("is_encrypted", "bit", true)],
        fill: "SELECT name, database_id, create_date, 'SQL_Latin1_General_CP1_CI_AS', 'ONLINE', 0 FROM {databases}",
    },
    ViewDef {
        name: "information_schema.tables",
        columns: &[("TABLE_CATALOG", NAME, true), ("TABLE_SCHEMA", NAME, true), ("TABLE_NAME", NAME, false), ("TABLE_TYPE", "varchar(10)", true)],
        fill: "SELECT '{db}', 'dbo', name, 'BASE TABLE' FROM __tdsguard_objects WHERE type = 'U'",
    },
    ViewDef {
        name: "information_schema.columns",
        columns: &[("TABLE_CATALOG", NAME, true), ("TABLE_SCHEMA", NAME, true), ("TABLE_NAME", NAME, false), ("COLUMN_NAME", NAME, true), ("ORDINAL_POSITION", "int", true), ("COLUMN_DEFAULT", "nvarchar(4000)", true), ("IS_NULLABLE", "varchar(3)", true), ("DATA_TYPE", NAME, true), ("CHARACTER_MAXIMUM_LENGTH", "int", true), ("NUMERIC_PRECISION", "tinyint", true), ("NUMERIC_SCALE", "int", true), ("DATETIME_PRECISION", "smallint", true), ("COLLATION_NAME", NAME, true)],
        fill: "SELECT '{db}', 'dbo', o.name, c.name, c.column_id, c.default_sql, CASE c.is_nullable WHEN 1 THEN 'YES' ELSE 'NO' END, __tds_typeinfo(c.type, 'name'), __tds_typeinfo(c.type, 'char_max'), __tds_typeinfo(c.type, 'num_precision'), __tds_typeinfo(c.type, 'num_scale'), __tds_typeinfo(c.type, 'dt_precision'), __tds_typeinfo(c.type, 'collation') FROM __tdsguard_columns c JOIN __tdsguard_objects o ON o.object_id = c.object_id ORDER BY o.name, c.column_id",
    },
];

/// Finds a catalog view by its (schema-qualified, lower-case) name.
pub fn view(name: &str) -> Option<&'static ViewDef> {
    VIEWS.iter().find(|v| v.name == name)
}

/// SQLite name of the temporary table serving a view.
pub fn view_table_name(view: &ViewDef) -> String {
    format!("__tdsguard_view_{}", view.name.replace('.', "_"))
}

/// Table info for a view, so result metadata is typed like any table's.
pub fn view_info(view: &ViewDef) -> Result<TableInfo, SqlError> {
    let mut columns = Vec::new();
    for (name, ty, nullable) in view.columns {
        columns.push(ColumnInfo {
            name: (*name).into(),
            ty: SqlType::parse(ty)?,
            nullable: *nullable,
            identity: false,
            default_sql: None,
        });
    }
    Ok(TableInfo {
        object_id: 0,
        name: view.name.into(),
        sqlite_name: view_table_name(view),
        columns,
        identity_increment: None,
    })
}

/// Re-fills the temporary table of a view. `databases` is a SQL VALUES list of
/// (name, database_id, create_date).
pub fn refresh_view(
    conn: &Connection,
    view: &ViewDef,
    db: &str,
    databases: &str,
) -> Result<(), SqlError> {
    let table = view_table_name(view);
    let cols: Vec<String> = view
        .columns
        .iter()
        .map(|(n, ..)| format!("\"{n}\""))
        .collect();
    let types: Vec<String> = builtin_types()
        .iter()
        .map(|t| format!("SELECT '{t}' AS t"))
        .collect();
    let fill = view
        .fill
        .replace("{db}", &db.replace('\'', "''"))
        .replace("{types}", &types.join(" UNION ALL "))
        .replace("{databases}", databases);
    let sql = format!(
        "CREATE TEMP TABLE IF NOT EXISTS \"{table}\"({cols}); DELETE FROM temp.\"{table}\"; \
         INSERT INTO temp.\"{table}\" {fill};",
        cols = cols.join(", ")
    );
    conn.execute_batch(&sql).map_err(sql_err)
}

/// Implements `__tds_typeinfo(type_text, field)` used by the view fills.
pub fn type_info(type_text: &str, field: &str) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    let Ok(ty) = SqlType::parse(type_text) else {
        return V::Null;
    };
    let int = |n: i64| V::Integer(n);
    let numeric = matches!(
        ty.storage(),
        crate::sandbox::engine::types::Storage::Integer
            | crate::sandbox::engine::types::Storage::Scaled(_)
            | crate::sandbox::engine::types::Storage::Real
    ) && ty != SqlType::Bit;
    match field {
        "name" => V::Text(ty.type_name().into()),
        "system_type_id" => int(system_type_id(&ty)),
        "max_length" => int(ty.max_length().into()),
        "precision" => int(ty.precision().into()),
        "scale" => int(ty.scale().into()),
        "collation" if ty.is_character() => V::Text(DEFAULT_COLLATION.into()),
        "char_max"
            if ty.is_character() || matches!(ty, SqlType::Binary(_) | SqlType::VarBinary(_)) =>
        {
            int(ty.length_limit().map_or(-1, i64::from))
        }
        "num_precision" if numeric => int(ty.precision().into()),
        "num_scale" if numeric => int(ty.scale().into()),
        "dt_precision"
            if matches!(
                ty,
                SqlType::Date
                    | SqlType::Time(_)
                    | SqlType::DateTime
                    | SqlType::SmallDateTime
                    | SqlType::DateTime2(_)
                    | SqlType::DateTimeOffset(_)
            ) =>
        {
            int(ty.scale().into())
        }
        _ => V::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_through_the_catalog() {
        let conn = Connection::open_in_memory().unwrap();
        init(&conn).unwrap();
        let id = add_object(&conn, "T", "U", None, Some((1, 1))).unwrap();
        let col = ColumnInfo {
            name: "price".into(),
            ty: SqlType::Decimal {
                precision: 10,
                scale: 2,
            },
            nullable: true,
            identity: false,
            default_sql: None,
        };
        add_column(&conn, id, 1, &col).unwrap();
        let t = table(&conn, "t").unwrap().unwrap();
        assert_eq!(t.object_id, id);
        assert_eq!(
            t.column("PRICE").unwrap().ty,
            SqlType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(identity_next(&conn, id).unwrap(), 1);
        assert!(table(&conn, "missing").unwrap().is_none());
    }

    #[test]
    fn type_info_matches_sys_columns() {
        assert_eq!(
            type_info("nvarchar(50)", "max_length"),
            rusqlite::types::Value::Integer(100)
        );
        assert_eq!(
            type_info("decimal(10,2)", "system_type_id"),
            rusqlite::types::Value::Integer(106)
        );
        assert_eq!(type_info("int", "collation"), rusqlite::types::Value::Null);
    }
}
