"""tortie's datastore: etcd v3 in Calico's key layout, resource models, syncer."""

import os

# gRPC's C core logs TLS handshake failures as raw lines on stderr; the client turns
# them into one clear error instead. An operator can still set GRPC_VERBOSITY=debug.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
