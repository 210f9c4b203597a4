"""What every long-running tortie program shares: settings parsers, health and metrics HTTP.

A room below the programs (agent, kube_controllers) and beside datastore: it
imports nothing of tortie's.
"""
