"""Warehouse: connections, control-schema migrations, bronze DDL, the loader, control reads/writes."""
