"""The API ledger in the control schema: cached access tokens (`api_tokens`) and the call log
(`api_calls`). Writes are autocommit on the control connection, so a call is logged even when the run
that made it fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.sources.api.ledger import CallRecord, Token

Conn = psycopg.Connection[Any]


class WarehouseApiLedger:
    def __init__(self, conn: Callable[[], Conn], schema: str) -> None:
        self._conn = conn  # opened lazily: a run of database tables never touches it
        self.schema = schema

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def load_token(self, connection: str, account: str) -> Token | None:
        row = self._conn().execute(
            sql.SQL("SELECT access_token, refresh_token, expires_at, obtained_at FROM {} "
                    "WHERE connection = %s AND account = %s").format(self._table("api_tokens")),
            (connection, account)).fetchone()
        return None if row is None else Token(row[0], row[1], row[2], row[3])

    def save_token(self, connection: str, account: str, token: Token) -> None:
        self._conn().execute(
            sql.SQL("INSERT INTO {} (connection, account, access_token, refresh_token, expires_at, obtained_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (connection, account) DO UPDATE SET "
                    "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
                    "expires_at = EXCLUDED.expires_at, obtained_at = EXCLUDED.obtained_at").format(
                self._table("api_tokens")),
            (connection, account, token.access_token, token.refresh_token, token.expires_at, token.obtained_at))

    def drop_token(self, connection: str, account: str) -> None:
        self._conn().execute(sql.SQL("DELETE FROM {} WHERE connection = %s AND account = %s").format(
            self._table("api_tokens")), (connection, account))

    def record_call(self, call: CallRecord) -> None:
        self._conn().execute(
            sql.SQL("INSERT INTO {} (called_at, connection, method, target, imeis, code, message, http_status, "
                    "duration_ms, rows, table_name, run_id, retry) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)").format(self._table("api_calls")),
            (call.called_at, call.connection, call.method, call.target, call.imeis, call.code, call.message,
             call.http_status, call.duration_ms, call.rows, call.table_name, call.run_id, call.retry))
