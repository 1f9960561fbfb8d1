"""Process supervision for zk0bot: Flower's SuperLink and SuperNodes as real processes."""
