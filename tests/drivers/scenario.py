#!/usr/bin/env python3
"""One end-to-end scenario, run by a real SQL Server client library.

Creates a table, inserts three rows with parameters, reads them back by id and
by a parameterized equality, and compares every value with what was written.
Exits 0 when everything matched; prints what differed otherwise.

With `--scenario types` it instead writes and reads back every encryptable
type of the typed table (the TYPED columns of tests/columns_e2e.rs), NULL,
empty and limit values included, looks rows up by the deterministic columns,
and checks that values a column cannot hold are refused.

Drivers: pytds (python-tds), pymssql (FreeTDS inside), mssql-python
(Microsoft's ODBC Driver 18). Encryption modes: off (login-only TLS, or none
when the server allows it), on (full TLS), strict (TDS 8.0).

The password is read from the environment variable TDSGUARD_TEST_PASSWORD.
"""

import argparse
import datetime
import decimal
import os
import sys
import uuid

LONG_TEXT = "".join(chr(0x41 + i % 26) for i in range(10_000))

ROWS = [
    {
        "full_name": "Zoë",
        "birth_date": datetime.date(1984, 2, 29),
        "ssn": "123-45-6789",
        "notes": LONG_TEXT,
        "balance": decimal.Decimal("12345678.90"),
        "photo": bytes(range(256)) * 4,
    },
    {
        "full_name": "Nguyễn",
        "birth_date": None,
        "ssn": "987-65-4321",
        "notes": "",
        "balance": decimal.Decimal("-0.01"),
        "photo": b"",
    },
    {
        "full_name": "",
        "birth_date": datetime.date(2001, 12, 31),
        "ssn": None,
        "notes": None,
        "balance": None,
        "photo": None,
    },
]

COLUMNS = ["full_name", "birth_date", "ssn", "notes", "balance", "photo"]


def connect(args):
    """Returns the connection, the driver's parameter marker and the function
    that wraps a bytes value so the driver sends it as varbinary."""
    password = os.environ["TDSGUARD_TEST_PASSWORD"]
    if args.driver == "pytds":
        import pytds

        options = {}
        if args.encrypt in ("off", "on"):
            options["cafile"] = args.cafile
            options["validate_host"] = False
            options["enc_login_only"] = args.encrypt == "off"
        elif args.encrypt != "none":
            raise SystemExit(f"pytds has no {args.encrypt} mode")
        return pytds.connect(
            server=args.host,
            port=args.port,
            database=args.database,
            user=args.user,
            password=password,
            autocommit=True,
            **options,
        ), "%s", pytds.Binary
    if args.driver == "pymssql":
        import pymssql

        modes = {"none": "off", "off": "off", "on": "require"}
        if args.encrypt not in modes:
            raise SystemExit(f"pymssql has no {args.encrypt} mode")
        return pymssql.connect(
            server=args.host,
            port=str(args.port),
            user=args.user,
            password=password,
            database=args.database,
            autocommit=True,
            tds_version="7.4",
            encryption=modes[args.encrypt],
        ), "%s", bytearray  # pymssql quotes b"" as '' (varchar), bytearray as 0x
    if args.driver == "mssql-python":
        import mssql_python

        modes = {"off": "no", "on": "yes", "strict": "strict"}
        if args.encrypt not in modes:
            raise SystemExit(f"mssql-python has no {args.encrypt} mode")
        # Strict encryption always verifies the certificate (TrustServerCertificate
        # is ignored); ServerCertificate pins the one the server presents.
        trust = (
            f"ServerCertificate={args.cafile}"
            if args.encrypt == "strict"
            else "TrustServerCertificate=yes"
        )
        conn = mssql_python.connect(
            f"Server=tcp:{args.host},{args.port};Database={args.database};"
            f"UID={args.user};PWD={password};Encrypt={modes[args.encrypt]};{trust}"
        )
        conn.autocommit = True
        return conn, "?", bytes
    raise SystemExit(f"unknown driver {args.driver}")


def normalise(column, value):
    """Brings driver-specific result types to the types the rows were written in."""
    if value is None:
        return None
    if column == "birth_date" and isinstance(value, datetime.datetime):
        return value.date()
    if column == "photo":
        return bytes(value)
    if column == "balance":
        return decimal.Decimal(value)
    return value


def compare(where, expected, got):
    failures = []
    for column, value in zip(COLUMNS, got):
        value = normalise(column, value)
        if value != expected[column]:
            shown = repr(value)[:60]
            wanted = repr(expected[column])[:60]
            failures.append(f"{where}: {column} is {shown}, expected {wanted}")
    return failures


def run(args):
    conn, mark, binary = connect(args)
    cur = conn.cursor()
    table = args.table
    # DROP TABLE IF EXISTS rather than IF OBJECT_ID(...): the encrypting proxy
    # refuses control-of-flow that names a mapped table (error 50107).
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(
        f"CREATE TABLE {table} (id int IDENTITY(1,1) PRIMARY KEY, full_name nvarchar(50), "
        "birth_date date, ssn char(11), notes nvarchar(max), balance decimal(10,2), "
        "photo varbinary(max))"
    )
    marks = ", ".join([mark] * len(COLUMNS))
    insert = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({marks})"
    for row in ROWS:
        values = tuple(
            binary(row[c]) if isinstance(row[c], bytes) else row[c] for c in COLUMNS
        )
        cur.execute(insert, values)

    failures = []
    select = f"SELECT {', '.join(COLUMNS)} FROM {table}"
    for ident, expected in enumerate(ROWS, start=1):
        cur.execute(f"{select} WHERE id = {mark}", (ident,))
        rows = cur.fetchall()
        if len(rows) != 1:
            failures.append(f"id {ident}: {len(rows)} rows")
            continue
        failures += compare(f"id {ident}", expected, rows[0])

    cur.execute(f"{select} WHERE ssn = {mark}", ("987-65-4321",))
    rows = cur.fetchall()
    if len(rows) != 1:
        failures.append(f"ssn lookup: {len(rows)} rows")
    else:
        failures += compare("ssn lookup", ROWS[1], rows[0])

    cur.execute(f"SELECT COUNT(*) FROM {table}")
    count = cur.fetchone()[0]
    if count != len(ROWS):
        failures.append(f"count is {count}")
    conn.close()
    return failures


# The typed table: (column, SQL type) in the order of TYPED in
# tests/columns_e2e.rs, which maps every one of them to an encrypted column.
TYPED = [
    ("c_int", "int"),
    ("c_bigint", "bigint"),
    ("c_smallint", "smallint"),
    ("c_tinyint", "tinyint"),
    ("c_bit", "bit"),
    ("c_decimal", "decimal(10,2)"),
    ("c_float", "float"),
    ("c_real", "real"),
    ("c_money", "money"),
    ("c_char", "char(11)"),
    ("c_varchar", "varchar(50)"),
    ("c_nchar", "nchar(10)"),
    ("c_nvarchar", "nvarchar(50)"),
    ("c_nvarmax", "nvarchar(max)"),
    ("c_varbinary", "varbinary(50)"),
    ("c_varbinmax", "varbinary(max)"),
    ("c_date", "date"),
    ("c_time", "time(7)"),
    ("c_datetime", "datetime"),
    ("c_datetime2", "datetime2(7)"),
    ("c_dto", "datetimeoffset(7)"),
    ("c_guid", "uniqueidentifier"),
]

TYPED_COLUMNS = [column for column, _ in TYPED]


def tz(hours):
    return datetime.timezone(datetime.timedelta(hours=hours))


# Values Python can represent exactly in every type they are written to:
# microsecond times, a datetime whose fraction is a whole 1/300 s, reals that
# are exact in 32 bits. The canaries match CANARIES in tests/columns_e2e.rs.
TYPED_ROWS = {
    1: {
        "c_int": 42,
        "c_bigint": 9_000_000_000,
        "c_smallint": -3,
        "c_tinyint": 255,
        "c_bit": True,
        "c_decimal": decimal.Decimal("12345.67"),
        "c_float": 2.25,
        "c_real": 1.5,
        "c_money": decimal.Decimal("12.3456"),
        "c_char": "999-88-7777",
        "c_varchar": "canary-varchar-Narwhal",
        "c_nchar": "ab",
        "c_nvarchar": "Canary-Zebra-Quokka Zoë",
        "c_nvarmax": "Canary-Max-Okapi " + LONG_TEXT,
        "c_varbinary": bytes([0, 1, 2, 0xFF]),
        "c_varbinmax": bytes(range(256)) * 36,
        "c_date": datetime.date(1984, 2, 29),
        "c_time": datetime.time(12, 34, 56, 123456),
        "c_datetime": datetime.datetime(2024, 1, 31, 12, 0, 0, 120000),
        "c_datetime2": datetime.datetime(2024, 1, 31, 12, 34, 56, 123456),
        "c_dto": datetime.datetime(2024, 1, 31, 12, 34, 56, 123456, tz(1)),
        "c_guid": uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
    },
    2: {column: None for column in TYPED_COLUMNS},
    3: {
        "c_int": -(2**31),
        "c_bigint": 2**63 - 1,
        "c_smallint": -(2**15),
        "c_tinyint": 0,
        "c_bit": False,
        "c_decimal": decimal.Decimal("-99999.99"),
        "c_float": -0.0001,
        "c_real": 0.0,
        "c_money": decimal.Decimal("-214748.3648"),
        "c_char": "",
        "c_varchar": "",
        "c_nchar": "",
        "c_nvarchar": "",
        "c_nvarmax": "",
        "c_varbinary": b"",
        "c_varbinmax": b"",
        "c_date": datetime.date(1, 1, 1),
        "c_time": datetime.time(0, 0, 0),
        "c_datetime": datetime.datetime(1753, 1, 1),
        "c_datetime2": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        "c_dto": datetime.datetime(1, 1, 1, 0, 0, 0, 0, tz(-14)),
        "c_guid": uuid.UUID(int=0),
    },
    # The other limits: every column at its largest, strings filling their
    # declared length (nvarchar(50) in UTF-16 code units, so 25 surrogate
    # pairs), non-ASCII in nchar.
    4: {
        "c_int": 2**31 - 1,
        "c_bigint": -(2**63),
        "c_smallint": 2**15 - 1,
        "c_tinyint": 1,
        "c_bit": True,
        "c_decimal": decimal.Decimal("99999999.99"),
        "c_float": 1.7976931348623157e308,
        "c_real": 3.4028234663852886e38,
        "c_money": decimal.Decimal("922337203685477.5807"),
        "c_char": "ABCDEFGHIJK",
        "c_varchar": "v" * 50,
        "c_nchar": "ñ" * 10,
        "c_nvarchar": "\U0001F600" * 25,
        "c_nvarmax": "\U0001F600" + "ü" * 5000,
        "c_varbinary": bytes([0xAB]) * 50,
        "c_varbinmax": b"\x00",
        "c_date": datetime.date(9999, 12, 31),
        "c_time": datetime.time(23, 59, 59, 999999),
        "c_datetime": datetime.datetime(9999, 12, 31, 23, 59, 59, 990000),
        "c_datetime2": datetime.datetime(1900, 1, 1),
        "c_dto": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tz(14)),
        "c_guid": uuid.UUID(int=2**128 - 1),
    },
}

# char(n) and nchar(n) come back padded with spaces to their length.
PADDED = {"c_char": 11, "c_nchar": 10}


def typed_expected(row):
    """What the server returns for a written row."""
    expected = dict(row)
    for column, length in PADDED.items():
        if expected[column] is not None:
            expected[column] = expected[column].ljust(length)
    return expected


def typed_param(driver, value, binary):
    """A value as `driver` is given it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return binary(value)
    if driver == "mssql-python" and before_1753(value):
        # mssql-python refuses date and time values before 1753 on the client
        # ("Date out of range for SQL Server (1753-9999)"), the range of the
        # old datetime type; the ISO text reaches the column as the same value.
        return value.isoformat()
    if driver == "pymssql" and isinstance(value, datetime.datetime) and value.tzinfo is None:
        # pymssql quotes a naive datetime with milliseconds only, which would
        # lose the datetime2(7) microseconds; the ISO literal keeps them.
        return value.isoformat(sep=" ")
    return value


def before_1753(value):
    """Whether a date or datetime lies before the range of the datetime type."""
    return isinstance(value, (datetime.date, datetime.datetime)) and value.year < 1753


def typed_normalise(column, value):
    """Brings what a driver returns to the Python type the row was written in.
    All three return date, time, datetime (aware for datetimeoffset) and
    UUID values as such; only the container of bytes differs."""
    if value is not None and column in ("c_varbinary", "c_varbinmax"):
        return bytes(value)
    return value


def typed_compare(where, expected, got):
    failures = []
    for column, value in zip(TYPED_COLUMNS, got):
        value = typed_normalise(column, value)
        want = expected[column]
        same = value == want and type(value) is type(want)
        if column == "c_bit" and want is not None:
            same = value == want and isinstance(value, (bool, int))
        if column in ("c_float", "c_real") and want is not None:
            same = isinstance(value, float) and value == want
        if column == "c_dto" and want is not None:
            # Equal instants are not enough: the offset must survive too.
            same = value == want and value.utcoffset() == want.utcoffset()
        if not same:
            failures.append(
                f"{where}: {column} is {repr(value)[:60]}, expected {repr(want)[:60]}"
            )
    return failures


def run_types(args):
    conn, mark, binary = connect(args)
    cur = conn.cursor()
    table = args.table
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    columns = ", ".join(f"{column} {ty}" for column, ty in TYPED)
    cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, {columns})")
    marks = ", ".join([mark] * (len(TYPED) + 1))
    insert = f"INSERT INTO {table} (id, {', '.join(TYPED_COLUMNS)}) VALUES ({marks})"
    for ident, row in TYPED_ROWS.items():
        values = [ident] + [
            typed_param(args.driver, row[c], binary) for c in TYPED_COLUMNS
        ]
        cur.execute(insert, tuple(values))

    failures = []
    select = f"SELECT {', '.join(TYPED_COLUMNS)} FROM {table}"
    for ident, row in TYPED_ROWS.items():
        cur.execute(f"{select} WHERE id = {mark}", (ident,))
        rows = cur.fetchall()
        if len(rows) != 1:
            failures.append(f"id {ident}: {len(rows)} rows")
            continue
        failures += typed_compare(f"id {ident}", typed_expected(row), rows[0])

    # Equality on the deterministic columns (char and nvarchar in
    # tests/columns_e2e.rs), by parameter, non-ASCII and padded values too.
    lookups = [
        ("c_nvarchar", TYPED_ROWS[1]["c_nvarchar"], 1),
        ("c_char", TYPED_ROWS[1]["c_char"], 1),
        ("c_nvarchar", "", 3),
    ]
    for column, value, ident in lookups:
        cur.execute(f"SELECT id FROM {table} WHERE {column} = {mark}", (value,))
        found = [row[0] for row in cur.fetchall()]
        if found != [ident]:
            failures.append(f"{column} lookup of {value!r}: ids {found}, expected [{ident}]")

    # Values the column cannot hold are refused, as the server refuses them
    # for a plaintext column, and write nothing. The message must name the
    # column, so a refusal inside the driver does not pass for the proxy's.
    too_big = [
        ("c_nvarchar", "\U0001F600" * 26),
        ("c_varchar", "v" * 51),
        ("c_varbinary", binary(bytes(51))),
        ("c_tinyint", 256),
        ("c_smallint", 2**15),
        ("c_decimal", decimal.Decimal("100000000.00")),
    ]
    for ident, (column, value) in enumerate(too_big, start=100):
        try:
            cur.execute(
                f"INSERT INTO {table} (id, {column}) VALUES ({mark}, {mark})", (ident, value)
            )
            failures.append(f"{column}: an out-of-range value was accepted")
        except Exception as error:  # each driver raises its own class
            if f"{table}.{column}".lower() not in str(error).lower():
                failures.append(f"{column}: refused otherwise: {str(error)[:120]}")

    cur.execute(f"SELECT COUNT(*) FROM {table}")
    count = cur.fetchone()[0]
    if count != len(TYPED_ROWS):
        failures.append(f"count is {count}")
    conn.close()
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--encrypt", default="on", choices=["none", "off", "on", "strict"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="sa")
    parser.add_argument("--database", default="tdsguard")
    parser.add_argument("--scenario", default="patients", choices=["patients", "types"])
    parser.add_argument("--table", default=None, help="dbo.Patients, or dbo.Typed for types")
    parser.add_argument("--cafile", help="PEM certificate the server presents (pytds)")
    args = parser.parse_args()
    if args.table is None:
        args.table = "dbo.Typed" if args.scenario == "types" else "dbo.Patients"
    failures = run_types(args) if args.scenario == "types" else run(args)
    for failure in failures:
        print(failure)
    print(f"{args.driver} {args.encrypt} {args.scenario}: {'ok' if not failures else 'FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
