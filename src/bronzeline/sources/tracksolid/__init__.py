"""The Jimi IoT / Tracksolid Pro open platform as a source (`type: tracksolid`)."""
