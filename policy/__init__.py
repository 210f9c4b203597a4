"""policy/: pure; the semantics of network policy, held once."""
