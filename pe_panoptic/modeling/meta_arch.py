"""``PixelCentroidHead``: the paper's deep-encoder / shallow-decoder panoptic model.

DINOv2 encoder -> 4 intermediate feature maps concatenated -> transposed-conv decoder (output at
8/14 of the input) -> one conv per task: semantic logits, instance embedding (PE of the centroid,
4L channels), optional depth. Training computes the per-pixel losses of :mod:`pe_panoptic.modeling.losses`
on targets built by the dataset mapper; inference returns detectron2's standard outputs
(``sem_seg``, ``panoptic_seg``, ``depth``) at the original image size, so detectron2's
evaluators work unchanged.

``forward`` is a pure function of the batch: it trains the tasks the batch declares (the inputs'
``"tasks"``, tagged by the train loaders, e.g. one task per optimizer step drawn by
:mod:`pe_panoptic.data.task_draw`) or all of ``tasks``, and returns its diagnostics (detached,
keys prefixed :data:`DIAG_PREFIX`) next to the losses; :class:`pe_panoptic.engine.trainer.PETrainer`
logs them without adding them to the loss.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from pe_panoptic.modeling.decoder import PixelHeads, concat_channels
from pe_panoptic.encoding import CentroidEncoding, build_encoding
from pe_panoptic.modeling.losses import TASKS, PixelCentroidCriterion
from pe_panoptic.postprocess import SEMANTIC_OUTPUTS, PostProcessConfig, batch_results

__all__ = ["PixelCentroidHead", "TASKS", "DIAG_PREFIX", "split_diagnostics"]

#: prefix of the training outputs that are diagnostics (detached), not losses
DIAG_PREFIX = "diag/"

_MOVED = object()


def split_diagnostics(outputs: Dict[str, torch.Tensor]):
    """``(losses, diagnostics)`` of a training output: the keys prefixed :data:`DIAG_PREFIX` are
    diagnostics (never to be summed into the loss)."""
    losses = {k: v for k, v in outputs.items() if not k.startswith(DIAG_PREFIX)}
    return losses, {k: v for k, v in outputs.items() if k.startswith(DIAG_PREFIX)}


def _plain(x):
    """LazyConfig passes nested dicts/lists as OmegaConf containers: make them plain Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover
        return x
    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def _metadata_classes(dataset_name: str):
    """(num_classes, thing contiguous ids) from a registered panoptic dataset's metadata."""
    meta = MetadataCatalog.get(dataset_name)
    try:
        stuff = meta.stuff_dataset_id_to_contiguous_id
        things = meta.thing_dataset_id_to_contiguous_id
    except AttributeError as e:
        raise ValueError(
            f"dataset {dataset_name!r} has no panoptic metadata (thing/stuff_dataset_id_to_contiguous_id); "
            "is it registered? (import pe_panoptic registers the synthetic datasets; detectron2 "
            "registers COCO/Cityscapes from $DETECTRON2_DATASETS)"
        ) from e
    num_classes = len(set(stuff.values()) | set(things.values()))
    return num_classes, sorted(set(things.values()))


@META_ARCH_REGISTRY.register()
class PixelCentroidHead(nn.Module):
    """Panoptic segmentation by per-pixel semantic classification + centroid-PE regression.

    Args:
        backbone: a detectron2 ``Backbone`` returning a dict of stride-14 feature maps
            (:class:`pe_panoptic.modeling.backbone.DINOv2Backbone`); all of them are concatenated.
        decoder: module mapping the concatenated features ``[B, sum C, H/14, W/14]`` to
            ``[B, width, h, w]`` (:class:`pe_panoptic.modeling.decoder.TransposedConvDecoder`),
            or a factory ``decoder(in_channels=sum C)`` called with the backbone's channels
            (:func:`pe_panoptic.modeling.decoder_factory.transposed_conv_decoder`).
        decoder_width: channels of the decoder output (input of the heads).
        encoding: instance encoding (:func:`pe_panoptic.encoding.build_encoding`) or a dict of
            its arguments.
        dataset_name: registered dataset whose metadata gives ``num_classes`` and the thing ids
            (unless given explicitly).
        tasks: tasks trained. Subset of ``("sem", "inst", "depth")``; stage 1 of the paper uses
            ``("inst",)``.
            A batch whose inputs declare ``"tasks"`` trains those (:meth:`declared_tasks`);
            otherwise every task of ``tasks`` (summed losses). ONE task per optimizer step
            (paper_v1) is drawn by the train loader: ``dataloader.train.task_probs``
            (:mod:`pe_panoptic.data.task_draw`); ``task_probs`` here is an error saying so.
        loss: keyword arguments of :class:`pe_panoptic.modeling.losses.PixelCentroidCriterion`.
        postprocess: keyword arguments of :class:`pe_panoptic.postprocess.PostProcessConfig`.
        depth: add the depth head (sigmoid x ``max_depth``).
        inst_position: ``"none"`` (paper: a conv outputs the code) or ``"rotary"``: the conv
            predicts a phase offset per harmonic that rotates the pixel's own position code
            (:func:`pe_panoptic.modeling.decoder.rotate_by_position`). Not in the paper; see the README's
            learning experiments.
        decode_at: ``"output"`` decodes panoptic at the network output resolution and pastes
            the result (nearest) at the image size (paper); ``"image"`` bilinearly upsamples
            logits and embeddings to the image size first (sharper boundaries, slower), in
            column bands of bounded memory.
        semantic_output: ``"labels"``: ``sem_seg`` is the ``[H, W]`` class map at the original
            size (memory ``O(H W)`` at any class count; what the evaluators need);
            ``"probs"``: detectron2's ``[N, H, W]`` probabilities (``4 N H W`` bytes: 6.4 GB for
            133 classes at 12 MP). See :func:`pe_panoptic.postprocess.batch_results`.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        decoder: Union[nn.Module, Callable[..., nn.Module]],
        decoder_width: int,
        encoding=None,
        dataset_name: Optional[str] = None,
        num_classes: Optional[int] = None,
        thing_ids: Optional[Sequence[int]] = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        tasks: Sequence[str] = ("sem", "inst"),
        task_probs=_MOVED,
        loss: Optional[dict] = None,
        postprocess: Optional[dict] = None,
        depth: bool = False,
        max_depth: float = 10.0,
        head_kernel_size: int = 3,
        inst_position: str = "none",
        decode_at: str = "output",
        semantic_output: str = "labels",
        ignore_label: int = 255,
        diagnostics: bool = False,
    ):
        super().__init__()
        if task_probs is not _MOVED:
            raise ValueError(
                "PixelCentroidHead: model.task_probs has moved to the train loader: set "
                "dataloader.train.task_probs (pe_panoptic.engine.recipes.set_task_probs; "
                "pe_panoptic/data/task_draw.py) and remove model.task_probs from the config")
        encoding, loss, postprocess = map(_plain, (encoding, loss, postprocess))
        tasks = tuple(_plain(tasks))
        if encoding is None:
            encoding = build_encoding("pe", 4)
        elif isinstance(encoding, dict):
            encoding = build_encoding(**encoding)
        if not isinstance(encoding, CentroidEncoding):
            raise TypeError(f"encoding must be a CentroidEncoding or dict, got {type(encoding)}")
        if num_classes is None or thing_ids is None:
            if dataset_name is None:
                raise ValueError("give dataset_name, or both num_classes and thing_ids")
            n, t = _metadata_classes(dataset_name)
            num_classes = n if num_classes is None else num_classes
            thing_ids = t if thing_ids is None else thing_ids
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}")
        if "depth" in tasks and not depth:
            raise ValueError("task 'depth' needs depth=True (the depth head)")
        if decode_at not in ("output", "image"):
            raise ValueError(f"decode_at must be 'output' or 'image', got {decode_at!r}")
        if semantic_output not in SEMANTIC_OUTPUTS:
            raise ValueError(f"semantic_output must be one of {SEMANTIC_OUTPUTS}, got {semantic_output!r}")

        if not isinstance(decoder, nn.Module):  # a factory: input channels from the backbone (as ViTDet)
            decoder = decoder(in_channels=concat_channels(backbone.output_shape()))
        self.backbone = backbone
        self.decoder = decoder
        self.encoding = encoding
        self.num_classes = int(num_classes)
        self.thing_ids = sorted(int(t) for t in thing_ids)
        self.heads = PixelHeads(
            decoder_width, self.num_classes, encoding.num_channels, depth=depth, max_depth=max_depth,
            kernel_size=head_kernel_size, inst_position=inst_position,
            num_harmonics=encoding.num_harmonics or 4,  # positional heads need the PE encoding (PixelHeads checks)
        )
        self.criterion = PixelCentroidCriterion(
            encoding, num_classes=self.num_classes, ignore_label=ignore_label, **(loss or {})
        )
        self.postprocess_cfg = PostProcessConfig(**(postprocess or {}))
        self.tasks = tuple(tasks)
        self.depth = depth
        self.decode_at = decode_at
        self.semantic_output = semantic_output
        # training outputs also carry detached instance-code diagnostics (keys "diag/...") when
        # True: PETrainer logs them apart from the loss (tools/train_net.py turns it on with
        # train.learning_curve); off by default, so any trainer that sums the output sums losses
        self.diagnostics = bool(diagnostics)
        self.input_format = input_format
        self.ignore_label = ignore_label
        self.size_divisibility = int(getattr(backbone, "size_divisibility", 14) or 14)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        images = [x["image"].to(self.device, non_blocking=True) for x in batched_inputs]
        images = [(x.float() - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Raw network outputs at the decoder resolution for a padded, normalized batch."""
        feats = self.backbone(x)
        h = self.decoder(feats, x)  # the decoder uses the image only with image_skip
        return self.heads(h)

    def forward(self, batched_inputs: List[dict]):
        if not self.training:
            return self.inference_by_size(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        outputs = self.forward_features(images.tensor)
        return self.losses(outputs, batched_inputs, images.tensor.shape[-2:])

    def size_groups(self, batched_inputs: List[dict]) -> List[List[int]]:
        """Indices of the images that share a padded size (each side rounded up to a multiple of
        ``size_divisibility``), in order of first appearance."""
        d = self.size_divisibility
        groups: Dict[tuple, List[int]] = {}
        for i, x in enumerate(batched_inputs):
            h, w = x["image"].shape[-2:]
            groups.setdefault((-(-h // d) * d, -(-w // d) * d), []).append(i)
        return list(groups.values())

    def inference_by_size(self, batched_inputs: List[dict]) -> List[dict]:
        """Inference of a batch, one forward pass per padded size (:meth:`size_groups`). Padding a
        smaller image up to a larger one's size would change its prediction: the ViT attends to the
        padded tokens and the convolutions see them. Grouped, every image gets the prediction it
        gets at batch 1 (the padding to its own multiple of 14 is the same), and images of one size
        still share a forward pass."""
        results: List[Optional[dict]] = [None] * len(batched_inputs)
        for idx in self.size_groups(batched_inputs):
            group = [batched_inputs[i] for i in idx]
            images = self.preprocess_image(group)
            for i, r in zip(idx, self.inference(self.forward_features(images.tensor), group, images)):
                results[i] = r
        return results

    # ------------------------------------------------------------------------------------
    def batch_targets(self, batched_inputs: List[dict], out_hw, in_hw) -> Dict[str, torch.Tensor]:
        """Stack the per-image targets, padding each to the batch's output size.

        Each image's targets must have exactly the size the network produces for that image
        (``image size * output / input``): a mismatch means the mapper's ``output_stride`` does
        not match the decoder (e.g. ``num_upsample=4`` needs ``output_stride=14/16``).
        """
        if any("targets" not in x for x in batched_inputs):
            raise ValueError("training inputs need 'targets' (use PanopticCentroidDatasetMapper(is_train=True))")
        H, W = out_hw
        for x in batched_inputs:
            ih, iw = x["image"].shape[-2:]
            want = (ih * H // in_hw[0], iw * W // in_hw[1])
            got = tuple(next(iter(x["targets"].values())).shape[-2:])
            if got != want:
                raise ValueError(
                    f"{x.get('file_name', 'input')}: targets are {got[0]}x{got[1]} but the network output for a "
                    f"{ih}x{iw} input is {want[0]}x{want[1]}: the mapper's output_stride must be "
                    f"{in_hw[0] / H:g} for this decoder"
                )
        # A key missing from some images (a batch mixing panoptic and depth-only datasets) gets a
        # neutral value there: ignore label, zero weight, invalid depth.
        fill = {"sem_seg": self.ignore_label}
        keys = list(dict.fromkeys(k for x in batched_inputs for k in x["targets"]))
        out = {}
        for k in keys:
            ref = next(x["targets"][k] for x in batched_inputs if k in x["targets"])
            items = []
            for x in batched_inputs:
                t = x["targets"].get(k)
                if t is None:
                    h, w = next(iter(x["targets"].values())).shape[-2:]
                    t = torch.full((*ref.shape[:-2], h, w), fill.get(k, 0), dtype=ref.dtype)
                h, w = t.shape[-2:]
                if h > H or w > W:
                    raise ValueError(f"target {k!r} of {x.get('file_name')} is {h}x{w}, larger than the output {H}x{W}")
                if (h, w) != (H, W):
                    t = F.pad(t, (0, W - w, 0, H - h), value=fill.get(k, 0))
                items.append(t)
            out[k] = torch.stack(items).to(self.device, non_blocking=True)
        return out

    def declared_tasks(self, batched_inputs: List[dict]) -> Optional[set]:
        """The tasks the batch trains, from the inputs' ``"tasks"`` (set by the train loaders:
        the tasks a dataset's labels supervise in :class:`pe_panoptic.data.mixed.MixedTrainLoader`,
        the step's drawn task with ``task_probs``); ``None`` when no input declares them.
        A task outside ``self.tasks`` or inputs that only partly declare tasks are errors."""
        declared = [x.get("tasks") for x in batched_inputs]
        if all(t is None for t in declared):
            return None
        if any(t is None for t in declared):
            raise ValueError("some inputs of the batch declare 'tasks' and others do not")
        union = set(t for ts in declared for t in ts)
        extra = union - set(self.tasks)
        if extra:
            raise ValueError(f"the batch's labels supervise tasks {sorted(extra)} that the model does not train "
                             f"(model.tasks={self.tasks})")
        return union

    def losses(self, outputs, batched_inputs, in_hw):
        """Loss terms of the batch's tasks (:meth:`declared_tasks`, else all of ``tasks``) and,
        for the instance task, the instance-code diagnostics under :data:`DIAG_PREFIX`."""
        targets = self.batch_targets(batched_inputs, outputs["inst"].shape[-2:], in_hw)
        declared = self.declared_tasks(batched_inputs)
        tasks = set(self.tasks) if declared is None else declared
        if not tasks:  # e.g. the step's task is "sem" and the batch is depth-only: no loss this batch
            import logging

            from detectron2.utils.logger import log_every_n_seconds

            log_every_n_seconds(logging.WARNING, "training batch declares no task (the step's drawn task has no "
                                "labels in this dataset): this batch trains nothing", n=60, name=__name__)
        losses = self.criterion(outputs, targets, tasks)
        # Keep every head in the graph so DDP sees a gradient (zero) for unused parameters.
        zero = sum(v.sum() for v in outputs.values()) * 0.0
        first = next(iter(losses)) if losses else None
        if first is None:
            losses = {"loss_zero": zero}
        else:
            losses[first] = losses[first] + zero
        if self.diagnostics and "inst" in tasks:
            losses.update(self.instance_diagnostics(outputs["inst"], targets))
        return losses

    def instance_diagnostics(self, pred: torch.Tensor, targets: dict) -> Dict[str, torch.Tensor]:
        """The encoding's code diagnostics on thing pixels
        (:meth:`pe_panoptic.encoding.CentroidEncoding.code_diagnostics`) as detached scalars
        ``diag/inst/<name>``; empty for an encoding without them."""
        if "inst_uv" not in targets or "inst_valid" not in targets:
            return {}
        valid = targets["inst_valid"].bool()
        diag = self.encoding.code_diagnostics(pred.detach(), targets["inst_uv"].float(), valid)
        return {f"{DIAG_PREFIX}inst/{k}": torch.tensor(float(v)) for k, v in diag.items()}

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def inference(self, outputs, batched_inputs, images: ImageList):
        """detectron2 results at each image's original size. The mapper may already have padded
        an image (to a multiple of 14 or a fixed size): only its ``image_size_unpadded`` region
        of the output is pasted back."""
        sizes = [tuple(x.get("image_size_unpadded", hw)) for x, hw in zip(batched_inputs, images.image_sizes)]
        originals = [(x.get("height", hw[0]), x.get("width", hw[1])) for x, hw in zip(batched_inputs, sizes)]
        if not self.depth:
            outputs = {k: v for k, v in outputs.items() if k != "depth"}
        return batch_results(outputs, sizes, originals, self.encoding, self.thing_ids, self.postprocess_cfg,
                             decode_at=self.decode_at, input_hw=tuple(images.tensor.shape[-2:]),
                             semantic=self.semantic_output)
