"""`bronzeline receive`: the push receiver. The spool (segments.py: format, reading, claiming; spool.py: the
group-commit writer) is imported by the push source too, so nothing here imports the web stack at import time."""
