"""pe_panoptic.data.mixed: one dataset per effective batch drawn from (seed, step) with the given
proportions, each dataset's images in epoch-wise permutations, resumable, worker-independent;
and the model's use of the batches' task tags."""
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from pe_panoptic.data.mixed import DatasetSchedule, MixedTrainLoader, build_mixed_train_loader
from pe_panoptic.modeling.meta_arch import PixelCentroidHead


def _data(prefix, n):
    return [{"id": f"{prefix}{i}"} for i in range(n)]


def _mapper(d):
    # augmentation randomness comes from the seeded global RNG: recorded to check determinism
    return {"id": d["id"], "aug": float(np.random.rand())}


def _loader(**kw):
    args = dict(datasets=[_data("a", 7), _data("b", 3)], mappers=[_mapper, _mapper], total_batch_size=2,
                names=["A", "B"], tasks=[("sem", "inst"), ("depth",)], seed=123)
    args.update(kw)
    return build_mixed_train_loader(**args)


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_schedule_proportions_and_determinism():
    s = DatasetSchedule([3, 1], seed=5)
    d = s.draws(0, 200_000)
    assert abs(np.mean(d == 0) - 0.75) < 0.005
    np.testing.assert_array_equal(d[:1000], DatasetSchedule([3, 1], seed=5).draws(0, 1000))
    assert (d[:1000] != DatasetSchedule([3, 1], seed=6).draws(0, 1000)).any()
    # chunked draws equal whole-range draws
    np.testing.assert_array_equal(s.draws(4090, 20), d[4090:4110])
    three = DatasetSchedule([0.2, 0.0, 0.8], seed=1).draws(0, 100_000)
    assert not (three == 1).any() and abs(np.mean(three == 2) - 0.8) < 0.01
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        DatasetSchedule([0, 0], seed=1)


def test_schedule_locate_matches_brute_force():
    s = DatasetSchedule([1, 2], seed=9, batches_per_step=3)
    steps = s.draws(0, 3000)
    seen = [0, 0]
    for g in range(9000):
        d, k = s.locate(g)
        assert d == steps[g // 3]  # every micro-batch of a step: the step's dataset
        assert k == seen[d]
        seen[d] += 1
    far = DatasetSchedule([1, 2], seed=9, batches_per_step=1)
    big = far.draws(0, 10_000)
    d, k = far.locate(9_999)
    assert d == big[9_999] and k == int(np.sum(big[:9_999] == d))


def test_batches_one_dataset_each_with_tags_and_epochs():
    loader = _loader()
    assert loader.probs == pytest.approx({"A": 0.7, "B": 0.3})
    batches = _take(loader, 40)
    per = {"A": [], "B": []}
    for b in batches:
        names = {x["dataset"] for x in b}
        assert len(names) == 1 and len(b) == 2
        name = names.pop()
        assert all(x["id"][0] == name.lower() for x in b)
        assert all(x["tasks"] == (("sem", "inst") if name == "A" else ("depth",)) for x in b)
        per[name] += [x["id"] for x in b]
    assert per["A"] and per["B"]
    # each dataset's stream is a permutation per epoch: its first 6 images (2 epochs of B) and 7 of A
    assert sorted(per["B"][:3]) == ["b0", "b1", "b2"] and sorted(per["B"][3:6]) == ["b0", "b1", "b2"]
    assert sorted(per["A"][:7]) == [f"a{i}" for i in range(7)]
    # reproducible: same seed, same batches (images and augmentations); another seed differs
    assert _take(_loader(), 40) == batches
    assert _take(_loader(seed=124), 40) != batches


def test_resume_and_workers_give_the_uninterrupted_stream():
    full = _take(_loader(), 12)
    resumed = _loader()
    it = iter(resumed)  # the trainer takes its iterator before the checkpoint is loaded
    resumed.set_start(5)
    assert [next(it) for _ in range(7)] == full[5:]
    with pytest.raises(RuntimeError, match="already started"):
        resumed.set_start(0)
    assert _take(_loader(num_workers=2), 12) == full


def test_one_dataset_per_effective_batch():
    loader = _loader(effective_batch_size=6)  # 3 micro-batches of 2 per optimizer step
    batches = _take(loader, 30)
    for step in range(10):
        assert len({x["dataset"] for b in batches[3 * step:3 * step + 3] for x in b}) == 1
    with pytest.raises(ValueError, match="must be a multiple of total_batch_size=2"):
        _loader(effective_batch_size=5)


def test_task_probs_tag_the_step_task_intersected_with_the_dataset_tasks():
    from pe_panoptic.data.task_draw import draw_step_task

    probs = {"inst": 0.5, "sem": 0.25, "depth": 0.25}
    loader = _loader(effective_batch_size=4, task_probs=probs)  # 2 micro-batches of 2 per optimizer step
    assert loader.batches_per_step == 2 and loader.task_probs == probs
    batches = _take(loader, 40)
    untagged = _take(_loader(effective_batch_size=4), 40)
    for g, (b, plain) in enumerate(zip(batches, untagged)):
        drawn = draw_step_task(probs, 123, g // 2)  # the loader's seed, the micro-batch's step
        own = ("sem", "inst") if b[0]["dataset"] == "A" else ("depth",)
        assert all(x["tasks"] == tuple(t for t in own if t == drawn) for x in b), (g, drawn, b)
        assert [x["id"] for x in b] == [x["id"] for x in plain]  # the draw does not change the data
    assert {x["tasks"] for b in batches for x in b} >= {("inst",), ("sem",), ()}
    no_tasks = _take(_loader(tasks=None, task_probs={"sem": 1.0}), 3)
    assert all(x["tasks"] == ("sem",) for b in no_tasks for x in b)
    with pytest.raises(ValueError, match="dataloader.train.task_probs"):
        _loader(task_probs={"sem": -1.0})


def test_errors():
    with pytest.raises(ValueError, match="2 datasets and 1 mappers"):
        _loader(mappers=[_mapper])
    with pytest.raises(ValueError, match=r"datasets \['B'\] are empty"):
        _loader(datasets=[_data("a", 2), []])
    with pytest.raises(ValueError, match="non-empty task tuple per dataset"):
        _loader(tasks=[("sem",), ()])
    with pytest.raises(TypeError, match=r"dataset 0 is an OmegaConf ListConfig; .*dataset_dicts_per_name"):
        _loader(datasets=[OmegaConf.create([{"id": "a0"}]), _data("b", 2)])
    with pytest.raises(ValueError, match="1 weights for 2 datasets"):
        MixedTrainLoader([_data("a", 2), _data("b", 2)], [_mapper, _mapper], total_batch_size=2, weights=[1])


def test_model_trains_the_tasks_a_batch_declares():
    fake = SimpleNamespace(tasks=("sem", "inst", "depth"))
    assert PixelCentroidHead.declared_tasks(fake, [{}, {}]) is None
    assert PixelCentroidHead.declared_tasks(fake, [{"tasks": ("depth",)}] * 2) == {"depth"}
    with pytest.raises(ValueError, match="some inputs of the batch declare 'tasks'"):
        PixelCentroidHead.declared_tasks(fake, [{"tasks": ("depth",)}, {}])
    with pytest.raises(ValueError, match=r"supervise tasks \['depth'\] that the model does not train"):
        PixelCentroidHead.declared_tasks(SimpleNamespace(tasks=("sem", "inst")), [{"tasks": ("depth",)}])
