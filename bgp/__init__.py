"""BGP: peering plan from the datastore, ExaBGP sidecar, RIB, route reflection, status."""
