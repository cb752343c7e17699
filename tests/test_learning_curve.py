"""Learning-curve diagnostics and hook (pe_panoptic/engine/learning_curve.py)."""
import json
import math

import pytest
import torch

from pe_panoptic.encoding import PositionalEncoding
from pe_panoptic.engine.learning_curve import LearningCurveHook, instance_code_diagnostics


def test_diagnostics_by_hand():
    L = 2
    enc = PositionalEncoding(L)
    uv = torch.tensor([0.25, -0.5]).view(1, 2, 1, 1).expand(1, 2, 2, 3)
    target = enc.targets(uv, torch.ones(1, 2, 3, dtype=torch.bool))
    thing = torch.zeros(1, 2, 3, dtype=torch.bool)
    thing[0, 0] = True
    d = instance_code_diagnostics(target, target, thing, L)
    assert math.isclose(d["norm"], math.sqrt(2 * L), rel_tol=1e-6)
    assert all(math.isclose(d[f"cos_{a}{l}"], 1.0, rel_tol=1e-6) for a in "uv" for l in range(L))
    d = instance_code_diagnostics(-0.5 * target, target, thing, L)
    assert math.isclose(d["norm"], 0.5 * math.sqrt(2 * L), rel_tol=1e-6) and math.isclose(d["cos_v1"], -1.0, rel_tol=1e-6)
    # a quarter turn of harmonic 0 of u only
    rot = target.clone()
    rot[:, 0], rot[:, 1] = target[:, 1], -target[:, 0]
    d = instance_code_diagnostics(rot, target, thing, L)
    assert abs(d["cos_u0"]) < 1e-6 and math.isclose(d["cos_u1"], 1.0, rel_tol=1e-6)
    assert instance_code_diagnostics(target, target, torch.zeros_like(thing), L) == {}


def test_hook_writes_json_and_png(tmp_path):
    from detectron2.utils.events import EventStorage

    class Trainer:
        max_iter = 6
        iter = 0

    hook = LearningCurveHook(str(tmp_path), period=3, sample_period=2, window=1)
    hook.trainer = Trainer()
    with EventStorage(0) as storage:
        Trainer.storage = storage
        for it in range(6):
            storage.iter = it
            hook.trainer.iter = it
            storage.put_scalars(loss_inst=1.0 / (it + 1), **{"diag/inst/norm": 0.1 * it})
            if it == 2:
                storage.put_scalars(**{"panoptic_seg/PQ_th": 12.5})
            hook.after_step()
    curves = json.loads((tmp_path / "learning_curve.json").read_text())
    assert [p[0] for p in curves["loss_inst"]] == [1, 2, 3, 5]
    assert curves["loss_inst"][-1][1] == 1.0 / 6
    assert curves["val PQ_th"] == [[2, 12.5]]
    assert [p[0] for p in curves["diag/inst/norm"]] == [1, 2, 3, 5]  # the code diagnostics are sampled too
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_trainer_logs_diagnostics_without_adding_them_to_the_loss():
    """The model returns ``diag/...`` next to its losses; PETrainer averages them over the
    micro-batches into the event storage and keeps them out of the loss and its gradient."""
    from detectron2.utils.events import EventStorage

    from pe_panoptic.engine.trainer import PETrainer

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))
            self.calls = 0

        def forward(self, batch):
            self.calls += 1
            return {"loss_a": self.w * batch[0], "diag/inst/norm": torch.tensor(10.0 * self.calls)}

    net = Net().train()
    trainer = PETrainer(net, iter([[1.0], [3.0]]), torch.optim.SGD(net.parameters(), lr=0.0), accumulate_steps=2)
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
        latest = storage.latest()
    assert latest["diag/inst/norm"][0] == pytest.approx(15.0)  # the mean of 10 and 20 over the micro-batches
    assert latest["total_loss"][0] == pytest.approx(4.0)  # (2 * 1 + 2 * 3) / 2: no diagnostic in it
    assert "diag/inst/norm" not in {k for k in latest if k.startswith("loss")}
    assert net.w.grad.item() == pytest.approx(2.0)  # d/dw of (w * 1 + w * 3) / 2


def test_void_plateau_warning_from_the_code_norm():
    """The stall diagnostic of the COCO recipes: past 10% of the schedule, a thing-code norm under
    PLATEAU_NORM (measured plateau: 0.21-0.44; learning: 1.05-1.51) is reported once."""
    from pe_panoptic.engine.learning_curve import PLATEAU_NORM, void_plateau_warning

    plateau = {"diag/inst/norm": [[20, 0.9], [40, 0.3]]}
    assert void_plateau_warning(plateau, 40, 1000) is None  # too early to tell
    msg = void_plateau_warning(plateau, 120, 1000)
    assert msg and "void plateau" in msg and "include_void=False" in msg and "0.30" in msg
    assert void_plateau_warning({"diag/inst/norm": [[120, PLATEAU_NORM + 0.1]]}, 120, 1000) is None
    assert void_plateau_warning({"loss_inst": [[120, 1.0]]}, 500, 1000) is None  # no diagnostics: no verdict


def test_training_clock_leaves_out_the_hooks_after_it(tmp_path):
    """detectron2's trainer runs the hooks' after_step in registration order: the clock stops
    before the (slow) evaluation registered after it, and the learning curve records it with the
    validation points, which budget_curves puts on a time axis (the evaluation after the last
    step, stored at max_iter, counts as max_iter iterations)."""
    import time

    from detectron2.engine import HookBase, TrainerBase

    from pe_panoptic.engine.learning_curve import TRAIN_SECONDS, TrainingClockHook
    from pe_panoptic.studies.budget_curves import load_run_points, plot_budget_curves

    class SlowEval(HookBase):
        def after_step(self):
            time.sleep(0.2)
            if self.trainer.iter in (1, 3):
                self.trainer.storage.put_scalars(**{"panoptic_seg/PQ_th": 10.0 * self.trainer.iter,
                                                    "panoptic_seg/PQ": 5.0})

        def after_train(self):  # as detectron2's EvalHook: one more evaluation after the last step
            self.trainer.storage.put_scalars(**{"panoptic_seg/PQ_th": 40.0})

    class Steps(TrainerBase):
        def run_step(self):
            time.sleep(0.02)

    trainer = Steps()
    clock = TrainingClockHook()
    trainer.register_hooks([clock, SlowEval(), LearningCurveHook(str(tmp_path), period=2, sample_period=1)])
    trainer.train(0, 4)
    assert 0.08 <= clock.seconds < 0.2 * 4 / 2  # 4 steps of 20 ms; none of the 800 ms of evaluation
    curves = json.loads((tmp_path / "learning_curve.json").read_text())
    assert [p[0] for p in curves[TRAIN_SECONDS]] == [0, 1, 2, 3]
    assert curves[TRAIN_SECONDS][-1][1] == pytest.approx(clock.seconds)
    pts = load_run_points(str(tmp_path), s_per_iter=0.5)
    assert [p["iteration"] for p in pts] == [2, 4]  # iteration 3's evaluation and the final one share a point
    assert [p["calibrated_s"] for p in pts] == [1.0, 2.0]
    assert pts[0]["PQ_th"] == 10.0 and pts[0]["PQ"] == 5.0 and pts[1]["PQ_th"] == 40.0
    assert pts[0]["measured_s"] == pytest.approx(curves[TRAIN_SECONDS][1][1])
    plot_budget_curves({"a": pts, "b": pts}, str(tmp_path / "c.png"), "measured")
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="axis must be"):
        plot_budget_curves({"a": pts}, str(tmp_path / "c.png"), "wall")
    (tmp_path / "learning_curve.json").write_text(json.dumps({"val PQ_th": [[1, 3.0]]}))
    with pytest.raises(ValueError, match="train.learning_curve=True"):
        load_run_points(str(tmp_path))
