#!/usr/bin/env python3
"""One end-to-end scenario, run by a real SQL Server client library.

Creates a table, inserts three rows with parameters, reads them back by id and
by a parameterized equality, and compares every value with what was written.
Exits 0 when everything matched; prints what differed otherwise.

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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--encrypt", default="on", choices=["none", "off", "on", "strict"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="sa")
    parser.add_argument("--database", default="tdsguard")
    parser.add_argument("--table", default="dbo.Patients")
    parser.add_argument("--cafile", help="PEM certificate the server presents (pytds)")
    args = parser.parse_args()
    failures = run(args)
    for failure in failures:
        print(failure)
    print(f"{args.driver} {args.encrypt}: {'ok' if not failures else 'FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
