"""Small LeRobot datasets with the wrong shape, written with LeRobot's own API, for error-path tests."""

from pathlib import Path

import numpy as np

CAM = "observation.images."
IMAGE = {"dtype": "image", "shape": (8, 8, 3), "names": ["height", "width", "channels"]}


def vector(n: int) -> dict:
    return {"dtype": "float32", "shape": (n,), "names": [f"j{i}" for i in range(n)]}


def write_dataset(root: Path, features: dict, frames: int = 3, episodes: int = 1) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(
        "zk0/odd", fps=10, features=features, root=root, robot_type="so100_follower", use_videos=False
    )
    for _ in range(episodes):
        for _ in range(frames):
            frame = {
                k: np.zeros(v["shape"], dtype=np.uint8 if v["dtype"] == "image" else np.float32)
                for k, v in features.items()
            }
            ds.add_frame(frame | {"task": "wave"})
        ds.save_episode()
    ds.finalize()
