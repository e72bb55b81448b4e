"""Neural networks: image backbones (:mod:`~furpe.networks.backbones`)."""
