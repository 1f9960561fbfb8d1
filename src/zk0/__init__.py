"""zk0: federated SmolVLA training for SO-100/SO-101 robots with Flower."""
