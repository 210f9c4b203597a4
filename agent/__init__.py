"""tortie's node agent (Felix-like): startup, pure calculation, dataplane writers."""
