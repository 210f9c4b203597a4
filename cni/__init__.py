"""CNI: the `tortie` main plugin, the `tortie-ipam` IPAM plugin and install-cni."""
