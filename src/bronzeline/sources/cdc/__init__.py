"""Change data capture from PostgreSQL: the pgoutput decoder (`pgoutput`), the slot reader (`slot`), the
exported snapshot (`snapshot`) and the seam they hand on (`changes`). Import from the modules: this package
stays empty so that `sources.base` can use the seam's dataclasses without importing the reader."""
