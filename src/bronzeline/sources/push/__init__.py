"""The platform's pushes, received by `bronzeline receive` and spooled, as a source (`type: tracksolid_push`)."""
