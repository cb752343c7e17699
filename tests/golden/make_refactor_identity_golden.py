"""Write tests/golden/refactor_identity.npz: post-processing, loss and synthetic-data outputs on the
seeded inputs of tests/refactor_inputs.py, the references of tests/test_refactor_identity.py.

    PYTHONPATH=. python tests/golden/make_refactor_identity_golden.py [OUTPUT.npz]

The committed file was written by this script as of commit e2d2cfe, which ran the pre-refactor
modules ``pe_panoptic/postprocess.py``, ``pe_panoptic/losses.py`` and
``pe_panoptic/data/synthetic.py`` of commit e173ad8 (LEGACY_COMMIT), loaded from git. Those
modules are gone, and so is the loader: this version runs today's packages, which the test shows
to reproduce that file (so rerun it only to change the references on purpose). One difference:
today's ``decode_at="image"`` decodes the 640 px wide COCO fixtures in two column bands, so
their scores come out within ~1e-7 of the old ones instead of bit-identical (the test allows it).

Stored: post-processing (every decoder x void_source x decode_at, column bands, other encodings,
naive_decode, the COCO fixtures), the losses and their gradients, the synthetic scenes and files.
Big arrays are stored as checksums (tests/refactor_inputs.py: checksum).
"""
import os
import pathlib
import sys
import tempfile

import numpy as np

TESTS = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402,F401  (points $DETECTRON2_DATASETS at the fixtures)
import refactor_inputs as ri  # noqa: E402
import pe_panoptic.data.synthetic as synthetic  # noqa: E402
import pe_panoptic.modeling.losses as losses  # noqa: E402
import pe_panoptic.postprocess as postprocess  # noqa: E402
from pe_panoptic.encoding import build_encoding  # noqa: E402

#: the commit whose modules wrote the committed references
LEGACY_COMMIT = "e173ad8"


class OldPostprocess:
    """Today's post-processing with the old interface: ``sem_seg`` as ``[N, H, W]`` probabilities."""

    PostProcessConfig = postprocess.PostProcessConfig
    naive_decode = staticmethod(postprocess.naive_decode)

    @staticmethod
    def batch_results(*args, **kw):
        return postprocess.batch_results(*args, semantic="probs", **kw)


def postprocess_records(old) -> dict:
    out = {}
    enc = build_encoding("pe", num_harmonics=4)
    for decoder, void_source, decode_at in ri.CASES:
        cfg = old.PostProcessConfig(**vars(ri.case_config(decoder, void_source)))
        for seed, kind in ri.SEEDS:
            out_hw, sizes, originals = ri.case_sizes(kind)
            outputs = ri.batch_outputs(seed, enc, kind, out_hw)
            res = old.batch_results(outputs, sizes, originals, enc, ri.THINGS, cfg, decode_at=decode_at)
            out.update(ri.result_record(f"case:{decoder}:{void_source}:{decode_at}:{seed}", res))
    for decoder, void_source in ri.BANDED_CASES:
        cfg = old.PostProcessConfig(decoder=decoder, void_source=void_source, grid=(24, 32), min_instance_area=2e-3)
        for seed in ri.BANDED_SEEDS:
            outputs = ri.batch_outputs(seed, enc, "noisy")
            res = old.batch_results(outputs, *ri.BANDED_ARGS, enc, ri.THINGS, cfg, decode_at="image")
            out.update(ri.result_record(f"banded:{decoder}:{void_source}:{seed}", res))
    for name in ri.OTHER_ENCODINGS:
        enc_o = build_encoding(name, num_bins=24)
        for decoder in ri.DECODERS:
            cfg = old.PostProcessConfig(decoder=decoder, grid=(24, 24), min_instance_area=2e-3)
            outputs = ri.batch_outputs(5, enc_o, "noisy")
            res = old.batch_results(outputs, *ri.OTHER_ENCODING_ARGS, enc_o, ri.THINGS, cfg)
            out.update(ri.result_record(f"encoding:{name}:{decoder}", res))
    enc_n, pred, grid = ri.naive_decode_input()
    for i, t in enumerate(old.naive_decode(pred, enc_n, grid)):
        out[f"naive_decode:{i}"] = t.numpy()
    items, enc_c, thing_ids = ri.coco_oracle_outputs()
    for decode_at in ("output", "image"):
        for j, (mapped, sem, inst) in enumerate(items):
            outputs, sizes, originals, input_hw = ri.coco_batch_args(mapped, sem, inst)
            res = old.batch_results(outputs, sizes, originals, enc_c, thing_ids, old.PostProcessConfig(),
                                    decode_at=decode_at, input_hw=input_hw)
            out.update(ri.result_record(f"coco:{decode_at}:{j}", res, store_sem_probs=False))
    return out


def loss_records(old) -> dict:
    out = {}
    for enc_name, depth_loss in ri.LOSS_CASES:
        enc = ri.loss_encoding(enc_name)
        for seed in range(3):
            outputs, targets = ri.loss_batch(enc, seed)
            crit = old.PixelCentroidCriterion(enc, depth_loss=depth_loss, **ri.LOSS_KW)
            outs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
            losses = crit(outs, targets, {"sem", "inst", "depth"})
            sum(losses.values()).backward()
            key = f"loss:{enc_name}:{depth_loss}:{seed}"
            names = sorted(losses)
            out[f"{key}:names"] = np.array(ri.to_json(names))
            out[f"{key}:values"] = np.stack([losses[k].detach().numpy() for k in names])
            for k, v in outs.items():
                out[f"{key}:grad:{k}"] = np.array(ri.checksum(v.grad))
        outputs, t = ri.loss_batch(enc, 9)
        key = f"lossfn:{enc_name}:{depth_loss}"
        if enc_name == "pe":
            codes = old.instance_codes_from_targets(t["inst_uv"], t["inst_ids"], enc)
            out[f"{key}:codes"] = np.array(ri.to_json([ri.checksum(c) for c in codes]))
            out[f"{key}:dice"] = old.generalized_dice_loss(outputs["inst"], t["inst_ids"], codes, 3,
                                                           t["depth_valid"]).numpy()
        out[f"{key}:tv"] = old.tv_loss_regression(outputs["inst"], "l1").numpy()
        out[f"{key}:silog"] = old.silog_loss(outputs["depth"], t["depth"], t["depth_valid"], 1.0).numpy()
    return out


def synthetic_records(old) -> dict:
    out = {}
    for seed in ri.SYNTHETIC_SEEDS:
        scene = old.render_scene(np.random.default_rng(seed), ri.SYNTHETIC_SIZE,
                                 old.SceneConfig(**ri.synthetic_scene_kw(seed)))
        out[f"scene:{seed}:arrays"] = np.array(ri.to_json([ri.checksum(a) for a in scene[:3]]))
        out[f"scene:{seed}:segments"] = np.array(ri.to_json(scene.segments_info))
    with tempfile.TemporaryDirectory() as tmp:
        old.generate_synthetic_panoptic(tmp, **ri.SYNTHETIC_FILES_KW)
        files = sorted(os.path.relpath(os.path.join(d, f), tmp) for d, _, fs in os.walk(tmp) for f in fs)
        sums = {f: ri.checksum(np.frombuffer(open(os.path.join(tmp, f), "rb").read(), np.uint8)) for f in files}
    out["synthetic_files"] = np.array(ri.to_json(sums))
    return out


def main(path: pathlib.Path = ri.GOLDEN):
    data = {"legacy_commit": np.array(LEGACY_COMMIT)}
    data.update(postprocess_records(OldPostprocess))
    data.update(loss_records(losses))
    data.update(synthetic_records(synthetic))
    np.savez_compressed(path, **data)
    print(f"wrote {path}: {len(data)} arrays, {pathlib.Path(path).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main(*(pathlib.Path(a) for a in sys.argv[1:2]))
