"""task.py helpers that need no model."""

from zk0.task import progress


def test_progress_bar_shows_steps_loss_and_rate():
    assert progress(50, 200, 0.53125, 25.0) == "[#####---------------] step 50/200 loss 0.5312 2.0 steps/s"
    assert progress(200, 200, 0.1, 10.0).startswith("[####################] step 200/200")
