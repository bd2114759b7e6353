"""Reading a schema's catalog back, to compare it with River's or with another schema's."""

from __future__ import annotations

from typing import Any

__all__ = ["read_catalog"]


async def read_catalog(conn: Any, schema: str) -> dict[str, Any]:
    """Tables, columns, indexes, constraints, types, functions of `schema`. Asyncio side.

    Run it as ``await driver.run(read_catalog, schema)``. Names print as
    Postgres prints them with the schema on the search path, so two schemas
    migrated alike read the same whatever their names.
    """
    out: dict[str, Any] = {}
    async with conn.transaction():
        # Names print unqualified only when their schema is on the search path.
        await conn.execute("SELECT set_config('search_path', quote_ident($1), true)", schema)
        # pg_get_indexdef qualifies the table all the same (quoted if need be).
        prefix = await conn.fetchval("SELECT quote_ident($1) || '.'", schema)
        nsp = await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema)
        tables = await conn.fetch(
            "SELECT oid, relname, relpersistence::text FROM pg_class "
            "WHERE relnamespace = $1 AND relkind = 'r' ORDER BY relname",
            nsp,
        )
        out["tables"] = {t["relname"]: t["relpersistence"] for t in tables}
        out["columns"] = {}
        out["indexes"] = {}
        out["checks"] = {}
        out["primary_keys"] = {}
        for t in tables:
            cols = await conn.fetch(
                """
                SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
                       pg_get_expr(d.adbin, d.adrelid) AS dflt
                FROM pg_attribute a
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attnum
                """,
                t["oid"],
            )
            out["columns"][t["relname"]] = [
                (c["attname"], c["type"], c["attnotnull"], c["dflt"]) for c in cols
            ]
            idx = await conn.fetch(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1",
                t["oid"],
            )
            out["indexes"][t["relname"]] = {i["relname"]: i["def"].replace(prefix, "") for i in idx}
            cons = await conn.fetch(
                "SELECT conname, contype::text, pg_get_constraintdef(oid) AS def "
                "FROM pg_constraint WHERE conrelid = $1",
                t["oid"],
            )
            out["checks"][t["relname"]] = {
                c["conname"]: c["def"] for c in cons if c["contype"] == "c"
            }
            out["primary_keys"][t["relname"]] = [c["def"] for c in cons if c["contype"] == "p"]
        out["other_relations"] = sorted(
            (r["relname"], r["relkind"])
            for r in await conn.fetch(
                "SELECT relname, relkind::text FROM pg_class "
                "WHERE relnamespace = $1 AND relkind NOT IN ('r', 'i')",
                nsp,
            )
        )
        out["enums"] = sorted(
            r["typname"]
            for r in await conn.fetch(
                "SELECT typname FROM pg_type WHERE typnamespace = $1 AND typtype = 'e'", nsp
            )
        )
        out["enum_values"] = [
            r["enumlabel"]
            for r in await conn.fetch(
                "SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                "WHERE t.typnamespace = $1 AND t.typname = 'river_job_state' "
                "ORDER BY e.enumsortorder",
                nsp,
            )
        ]
        out["functions"] = sorted(
            (
                r["proname"],
                r["args"],
                r["result"],
                r["provolatile"],
            )
            for r in await conn.fetch(
                "SELECT proname, pg_get_function_identity_arguments(oid) AS args, "
                "format_type(prorettype, NULL) AS result, provolatile::text "
                "FROM pg_proc WHERE pronamespace = $1",
                nsp,
            )
        )
        out["triggers"] = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = $1 AND NOT t.tgisinternal",
            nsp,
        )
    return out
