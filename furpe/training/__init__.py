"""Training the FuRPE network from label shards (the loader: :mod:`furpe.training.data`)."""
