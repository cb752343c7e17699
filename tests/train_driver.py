"""Test helper (not a test module): runs ``tools/train_net.py`` with two test-only additions.

* ``PE_TEST_LOSS_LOG=<file>``: after every training iteration the main process appends one JSON
  line with the *raw* losses of that iteration (detectron2's ``metrics.json`` holds medians
  over a 20-iteration window, whose history restarts on resume) and the learning rate used.
* ``PE_TEST_KILL_AT=<iter>``: the process kills itself with SIGKILL right before running
  iteration ``<iter>`` (a crash: no final checkpoint, no cleanup).

Usage: ``python tests/train_driver.py <train_net.py arguments>``. The patch is applied at import,
so processes spawned by ``launch`` (which re-import this file as ``__mp_main__``) have it too.
"""
import json
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import train_net  # noqa: E402
from detectron2.utils import comm  # noqa: E402

_run_step = train_net.PETrainer.run_step


def _patched_run_step(self):
    kill_at = int(os.environ.get("PE_TEST_KILL_AT", "-1"))
    if self.iter == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    lr = self.optimizer.param_groups[0]["lr"]
    _run_step(self)
    log = os.environ.get("PE_TEST_LOSS_LOG")
    if log and comm.is_main_process():
        rec = {"iter": self.iter, "lr": lr}
        for k in ("total_loss", "loss_sem", "loss_inst"):
            rec[k] = float(self.storage.history(k).latest())
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")


train_net.PETrainer.run_step = _patched_run_step


def main(args):
    return train_net.main(args)


if __name__ == "__main__":
    args = train_net.parse_args()
    train_net.launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                     dist_url=args.dist_url, args=(args,))
