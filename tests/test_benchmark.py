"""tools/benchmark.py and its helpers (the pe_panoptic/studies/benchmark package) on tiny inputs.

No timing assertions: the subcommands must run end to end and print, as their last line, a JSON
object with the figures; the helpers are checked against hand-computed values and against the
post-processing they are the reference of.
"""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pe_panoptic.studies import benchmark as B
from pe_panoptic.encoding import build_encoding
from pe_panoptic.postprocess import PostProcessConfig, instance_map_from_outputs, panoptic_from_outputs
from pe_panoptic.data.targets import panoptic_targets

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--backbone", "vit_small_patch14_dinov2", "--model-kwargs", '{"depth": 2, "embed_dim": 48, "num_heads": 2}',
        "--decoder-width", "16", "--num-classes", "6", "--num-things", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("pe_benchmark_tool", ROOT / "tools" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def restore_threads():
    import cv2

    n, c = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(n)
    cv2.setNumThreads(c)


def run_tool(tool, capsys, argv):
    ret = tool.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])  # the last line is the JSON figures
    assert printed == json.loads(json.dumps(ret))
    assert len(lines) >= 3  # a title and a table come first
    return printed


# ------------------------------------------------------------------------------------------------
# subcommands
# ------------------------------------------------------------------------------------------------


def test_model_subcommand(tool, capsys, restore_threads):
    r = run_tool(tool, capsys, ["model", *TINY, "--size", "56", "--iters", "2", "--warmup", "1",
                                "--matmul-size", "64", "--threads", "1"])
    assert r["subcommand"] == "model" and r["size"] == 56 and r["batch"] == 1 and r["dtype"] == "fp32"
    assert 0 < r["flops_utilization"] and r["images_per_s"] > 0
    assert r["gflops_per_image"] == pytest.approx(2 * r["gmacs_per_image"])
    assert r["gmacs_per_image"] == pytest.approx(tiny_model_macs(56) / 1e9, rel=1e-9)
    assert "aten::scaled_dot_product_attention" not in r["uncounted_ops"]  # attention is counted


def tiny_model_macs(size):
    """fvcore MACs of the TINY model by hand (conventions: linear / conv / SDPA multiply-adds,
    LayerNorm with affine 5 per element, eval BatchNorm with affine 2 per element, elementwise
    ops uncounted)."""
    g, e, c = size // 14, 48, 16  # patch grid, embed dim, decoder width
    t = g * g + 1  # tokens (+ class token)
    patch = g * g * e * 3 * 14 * 14
    block = (
        2 * 5 * t * e  # norm1, norm2
        + t * e * 3 * e  # qkv
        + 2 * t * t * (e // 2 + e // 2)  # SDPA, 2 heads of dim 24: QK^T + PV
        + t * e * e  # proj
        + t * e * 4 * e + t * 4 * e * e  # MLP
    )
    final_norms = 2 * 5 * t * e  # the final LayerNorm on each of the 2 returned block outputs
    s1, s2, s3 = 2 * g, 4 * g, 8 * g
    decoder = (
        g * g * (2 * e) * c * 4 + s1 * s1 * 2 * c  # transposed conv on the 2 concatenated maps + BN
        + s1 * s1 * c * c * 4 + s2 * s2 * 2 * c
        + s2 * s2 * c * c * 4 + s3 * s3 * 2 * c
        + s3 * s3 * c * c * 9 + s3 * s3 * 2 * c  # 3x3 conv + BN
    )
    heads = s3 * s3 * c * (6 + 16) * 9  # semantic (6 classes) and PE (16 channels) 3x3 convs
    # the official ("dinov2") position-embedding resampling is an einsum of two interpolation
    # matrices with the 37x37 grid; fvcore counts einsum as numpy's optimal-path FLOPs / 2
    import numpy as np

    path = np.einsum_path("ym,bmnc,xn->byxc", np.zeros((g, 37)), np.zeros((1, 37, 37, e)), np.zeros((g, 37)),
                          optimize="optimal")[1]
    resample = float(next(x for x in path.split("\n") if "Optimized FLOP" in x).split(":")[1]) / 2
    return patch + 2 * block + final_norms + decoder + heads + resample


def test_postprocess_subcommand(tool, capsys, restore_threads):
    r = run_tool(tool, capsys, ["postprocess", "--forward-backbone", "vit_small_patch14_dinov2",
                                "--forward-model-kwargs", '{"depth": 1, "embed_dim": 24, "num_heads": 1}',
                                "--decoder-width", "8", "--num-classes", "6", "--num-things", "3", "--device", "cpu",
                                "--size", "112", "--grid", "16", "16", "--images", "1", "--iters", "1", "--warmup", "0",
                                "--threads", "1"])
    assert r["subcommand"] == "postprocess" and r["output_size"] == 64 and r["grid"] == [16, 16]
    assert set(r["decoders"]) == {"nn", "vote", "painter"}
    assert r["speedup_vs_naive"] == r["decoders"]["nn"]["speedup_vs_naive"] > 0
    assert 0 < r["fraction_of_forward"] == r["decoders"]["nn"]["fraction_of_forward"]
    assert r["fraction_of_backbone_forward"] == pytest.approx(r["ms_per_image"] / r["backbone_forward_ms"])
    assert r["naive_matches_painter"] is True
    assert r["instances_per_image"] >= 1


def test_data_subcommand_synthetic(tool, capsys, restore_threads):
    r = run_tool(tool, capsys, ["data", "--sizes", "56", "112", "--images", "2", "--image-size", "64", "96",
                                "--rounds", "1", "--warmup", "0"])
    assert r["subcommand"] == "data" and r["threads"] == 1 and r["images"] == 2
    assert set(r["images_per_s_per_worker"]) == {"56", "112"}
    assert all(v > 0 for v in r["images_per_s_per_worker"].values())
    assert torch.get_num_threads() == 1  # pinned (restored by the fixture)


def test_data_subcommand_real_fixtures(tool, capsys, restore_threads, d2_datasets):
    r = run_tool(tool, capsys, ["data", "--sizes", "70", "--dataset", "coco_2017_val_panoptic", "--images", "3",
                                "--rounds", "1", "--warmup", "0"])
    assert r["source"] == "coco_2017_val_panoptic" and r["images"] == 3
    assert r["images_per_s_per_worker"]["70"] > 0


@pytest.mark.parametrize("extra", [["--dtype", "fp32"], ["--dtype", "bf16", "--depth"]])
def test_train_subcommand(tool, capsys, restore_threads, extra):
    r = run_tool(tool, capsys, ["train", *TINY, "--size", "56", "--batch", "2", "--iters", "1", "--warmup", "1",
                                "--threads", "1", *extra])
    assert r["subcommand"] == "train" and r["batch"] == 2 and r["images_per_s"] > 0 and r["size"] == 56
    assert r["peak_mem_kind"] == "cpu_peak_rss" and r["peak_mem_gb"] > 0.05  # torch alone is > 50 MB
    assert {"loss_sem", "loss_inst"} <= set(r["last_losses"])
    assert ("loss_depth" in r["last_losses"]) == ("--depth" in extra)
    assert all(np.isfinite(v) for v in r["last_losses"].values())


def test_config_file_model_and_bad_arguments(tool, capsys, restore_threads):
    r = run_tool(tool, capsys, ["model", "--config-file", str(ROOT / "configs/synthetic/pe_tiny.py"), "--size", "42",
                                "--iters", "1", "--warmup", "0", "--matmul-size", "32", "--threads", "1",
                                "--device", "cpu"])
    assert r["model"].endswith("pe_tiny.py") and r["gmacs_per_image"] > 0
    with pytest.raises(SystemExit, match="multiple of the patch size 14"):
        tool.main(["model", *TINY, "--size", "50"])
    with pytest.raises(FileNotFoundError, match="--config-file"):
        tool.main(["model", "--config-file", "no/such/config.py"])
    with pytest.raises(SystemExit, match="not valid JSON"):
        tool.main(["model", "--model-kwargs", "{depth: 2}"])
    with pytest.raises(ValueError, match="--dtype 'fp8'"):
        B.resolve_dtype("fp8")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def test_interleaved_times_rotates_order_and_summarize():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "c": lambda: calls.append("c")}
    times = B.interleaved_times(fns, rounds=3, warmup=1)
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    s = B.summarize([3.0, 1.0, 2.0, 10.0])
    assert (s["median_s"], s["min_s"], s["mean_s"], s["n"]) == (2.5, 1.0, 4.0, 4)
    assert s["std_s"] == pytest.approx(np.std([3.0, 1.0, 2.0, 10.0]))
    with pytest.raises(ValueError, match="rounds"):
        B.interleaved_times(fns, rounds=0)


def test_matmul_fn_flops_and_result():
    fn, flops = B.matmul_fn(8, "cpu", torch.float32, repeats=3)
    assert flops == 2 * 8**3 * 3
    out = fn()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    torch.testing.assert_close(out, a @ b)


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 10)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)

    def forward(self, x, img):
        q = k = v = x.view(1, 2, 5, 3)  # 2 heads, 5 tokens, 3 dims
        return self.fc(F.scaled_dot_product_attention(q, k, v).reshape(1, 5, 6)), self.conv(img)


def test_count_macs_by_hand():
    x, img = torch.randn(1, 5, 6), torch.randn(1, 3, 7, 9)
    macs, uncounted = B.count_macs(_Attn(), (x, img))
    sdpa = 2 * 5 * 5 * (3 + 3)  # heads x L x S x (E + Ev)
    linear = 5 * 6 * 10
    conv = 7 * 9 * 4 * 3 * 3 * 3
    assert macs == sdpa + linear + conv
    assert "aten::scaled_dot_product_attention" not in uncounted


def test_synthetic_sample_classes_and_targets():
    image, pan, segs = B.synthetic_panoptic_sample((84, 112), seed=3, num_classes=10, num_things=4)
    assert image.shape == (84, 112, 3) and image.dtype == np.uint8 and pan.shape == (84, 112)
    ids = {s["id"] for s in segs}
    assert set(np.unique(pan)) - {0} == ids
    for s in segs:
        assert (0 <= s["category_id"] < 4) if s["isthing"] else (4 <= s["category_id"] < 10)
        assert s["area"] == int((pan == s["id"]).sum())
    again = B.synthetic_panoptic_sample((84, 112), seed=3, num_classes=10, num_things=4)
    assert np.array_equal(again[1], pan) and again[2] == segs
    _, _, segs = B.synthetic_panoptic_sample((84, 112), seed=3, num_classes=19, thing_ids=range(11, 19))
    assert all((11 <= s["category_id"] < 19) == s["isthing"] for s in segs)  # Cityscapes-like classes
    with pytest.raises(ValueError, match="stuff classes"):
        B.synthetic_panoptic_sample((84, 112), num_classes=4, num_things=4)


def _scene(seed=0, size=168, out=96, num_classes=12, num_things=5):
    _, pan, segs = B.synthetic_panoptic_sample((size, size), seed, num_classes=num_classes, num_things=num_things)
    return panoptic_targets(pan, segs, input_hw=(size, size), output_hw=(out, out))


def test_noisy_outputs_without_noise_are_the_targets():
    t = _scene()
    enc = build_encoding("pe", 4)
    sem, inst = B.noisy_outputs(t, enc, 12, noise=0.0, logit=5.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inst, enc.targets(t["inst_uv"][None], t["inst_valid"][None])[0])
    known = t["sem_seg"] != 255
    onehot = F.one_hot(t["sem_seg"].clamp(max=11), 12).permute(2, 0, 1).float() * 5.0 * known
    noise = sem - onehot
    assert noise.std().item() == pytest.approx(1.0, abs=0.02)  # N(0, 1) logit noise
    clear = known & (noise.abs().amax(0) < 2.5)  # logit margin 5 > 2 x 2.5: the class wins
    assert clear.float().mean() > 0.3
    assert torch.equal(sem.argmax(0)[clear], t["sem_seg"][clear])


@pytest.mark.parametrize("seed,noise", [(0, 0.1), (1, 0.2), (2, 0.0)])
def test_naive_reference_equals_painter_decoder(seed, noise):
    t = _scene(seed)
    enc = build_encoding("pe", 4)
    g = torch.Generator().manual_seed(seed)
    sem, inst = B.noisy_outputs(t, enc, 12, noise=noise, generator=g)
    cfg = PostProcessConfig(decoder="painter", grid=(40, 40))
    ref_map, ref_scores = B.naive_painter_instances(inst, enc, cfg)
    ours_map, ours_scores = instance_map_from_outputs(inst, enc, cfg)
    assert torch.equal(ref_map, ours_map)
    # scores agree up to the float32 error of the decoders' distances (cdist vs the expanded
    # ||e||^2 - 2 e.c + ||c||^2 of PositionalEncoding.decode, ~1e-3 near distance 0)
    torch.testing.assert_close(ref_scores, ours_scores, rtol=0, atol=1e-4)
    assert int(ref_map.max()) >= 3
    pan_ref, info_ref = B.naive_panoptic(sem, inst, enc, range(5), cfg)
    pan, info = panoptic_from_outputs(sem, inst, enc, range(5), cfg)
    assert torch.equal(pan_ref, pan) and [(s["category_id"], s["area"]) for s in info_ref] == [
        (s["category_id"], s["area"]) for s in info
    ]
    if noise == 0.0:  # perfect outputs: every instance with an output pixel is recovered
        assert int(ref_map.max()) == int(t["inst_ids"].max())


def test_naive_reference_by_hand_overlap_skip():
    """Two decoded cells next to each other (radius 1): both masks are the union of both cells;
    the second (lower score) is fully covered and skipped -> one instance with all pixels."""
    enc = build_encoding("pe", 4)
    grid = (8, 8)
    uv = torch.zeros(2, 4, 6)
    cu = -1 + (2 * torch.tensor([2, 3]) + 1) / 8  # cells (iv=4, iu=2) and (iv=4, iu=3)
    cv = -1 + (2 * 4 + 1) / 8
    uv[0, :, :3], uv[0, :, 3:] = cu[0], cu[1]
    uv[1] = cv
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[0, 0] = False  # one void pixel
    inst = enc.targets(uv[None], valid[None])[0]
    cfg = PostProcessConfig(decoder="painter", grid=grid, min_instance_area=0.0)
    ref_map, scores = B.naive_painter_instances(inst, enc, cfg)
    expected = valid.long()
    assert torch.equal(ref_map, expected)
    torch.testing.assert_close(scores, torch.ones(1), rtol=0, atol=1e-6)  # exact codes: distance 0


def test_training_inputs_shapes():
    batch = B.training_inputs(3, 56, num_classes=6, num_things=3, distinct=2)
    assert len(batch) == 3 and batch[2] is batch[0]
    assert batch[0]["image"].shape == (3, 56, 56) and batch[0]["image"].dtype == torch.uint8
    assert batch[0]["targets"]["sem_seg"].shape == (32, 32)


def test_format_table():
    text = B.format_table([{"a": 1.23456, "b": "x"}, {"a": 10, "b": "long"}], ["a", "b"])
    assert text.splitlines() == ["a      b   ", "-----  ----", "1.235  x   ", "10     long"]


def test_peak_memory_cpu():
    gb, kind = B.peak_memory_gb("cpu")
    assert kind == "cpu_peak_rss" and gb > 0.05


def test_postprocess_memory_subcommand(tool, capsys):
    r = run_tool(tool, capsys, ["postprocess-memory", "--sizes", "600x900", "--num-classes", "19"])
    (row,) = r["results"]
    assert row["height"] == 600 and row["width"] == 900 and row["decode_at"] == "output"
    # the int64 panoptic labels alone are 8 bytes per pixel; the old full-size logits were 2 x 19 x 4
    assert 8 <= row["bytes_per_pixel"] < 2 * 19 * 4
    with pytest.raises(SystemExit, match="HxW"):
        tool.main(["postprocess-memory", "--sizes", "600"])


def test_train_against_times_both_in_one_run(tool, capsys, restore_threads):
    """--against: the config and the config + override are timed in the same run (interleaved);
    the result carries both step times and their ratio. Without a config it is refused."""
    r = run_tool(tool, capsys, ["train", "--config-file", str(ROOT / "configs/synthetic/pe_tiny.py"), "--size", "56",
                                "--batch", "2", "--iters", "1", "--warmup", "0", "--threads", "1", "--dtype", "fp32",
                                "--against", "model.decoder.upsample_impl=convtranspose",
                                ])
    assert r["against"] == ["model.decoder.upsample_impl=convtranspose"]
    assert r["step_ms"] > 0 and r["against_step_ms"] > 0
    assert r["speedup_base_vs_against"] == pytest.approx(r["against_step_ms"] / r["step_ms"])
    with pytest.raises(SystemExit, match="--against needs --config-file"):
        tool.main(["train", *TINY, "--against", "a=1"])


def test_pipeline_subcommand_compares_entries_in_one_run(tmp_path):
    """pipeline: loader + model + post-processing + evaluators of two entries on the same images,
    one run, with the ratio of their images/s; one entry alone is refused."""
    import os
    import subprocess
    import sys

    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    d2 = tmp_path / "d2"
    generate_synthetic_panoptic(str(d2 / "synthetic_panoptic"), seed=2, num_train=1, num_val=2)
    env = dict(os.environ, DETECTRON2_DATASETS=str(d2), PYTHONWARNINGS="ignore")
    cfg = str(ROOT / "configs/synthetic/pe_tiny.py")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/benchmark.py"), "pipeline", "--entries", f"a={cfg}", f"b={cfg}",
         "--rounds", "1", "--threads", "1", "--opts", "dataloader.test.num_workers=0",
         "--entry-opts", "b:model.postprocess.grid=[8,8]"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["subcommand"] == "pipeline" and r["images"] == 2 and set(r["entries"]) == {"a", "b"}
    assert r["ratios"]["a"] == pytest.approx(1.0)
    # --entry-opts: an override for one entry only (e.g. a baseline's thresholds)
    assert r["entries"]["a"]["opts"] == ["dataloader.test.num_workers=0"]
    assert r["entries"]["b"]["opts"] == ["dataloader.test.num_workers=0", "model.postprocess.grid=[8,8]"]
    assert r["ratios"]["b"] == pytest.approx(r["entries"]["a"]["images_per_s"] / r["entries"]["b"]["images_per_s"])
    bad = subprocess.run([sys.executable, str(ROOT / "tools/benchmark.py"), "pipeline", "--entries", f"a={cfg}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "at least two" in bad.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "tools/benchmark.py"), "pipeline", "--entries", f"a={cfg}",
                          f"b={cfg}", "--entry-opts", "c:model.x=1"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "'c' is not one of the entries ['a', 'b']" in bad.stderr
