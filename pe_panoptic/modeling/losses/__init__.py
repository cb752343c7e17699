"""Training losses (paper Eq. 1, 4, 6-14) and the criterion that combines them.

Every loss is a pure function on tensors that computes in float32 (inputs produced under bf16/fp16
autocast are upcast) and keeps the autograd graph attached even when nothing contributes (it then
returns a zero that still backpropagates), so a training step never has to special-case an empty
batch.

* :mod:`.pixel` -- :func:`weighted_mean` (the EDS-weighted pixel average of Eq. 1),
  :func:`semantic_ce_map` (per-pixel cross-entropy of the semantic head),
  :func:`offset_l1_map` (direct L1 loss of the ``inst_position="offset"`` head's centroid
  offset; not in the paper); :func:`instance_pe_loss_map` (checked entry to the PE instance loss
  of Eq. 4, :meth:`pe_panoptic.encoding.PositionalEncoding.code_loss`).
* :mod:`.regularizers` -- :func:`tv_loss_regression` / :func:`tv_loss_semantic` (total
  variation, Eq. 10 / 11) and :func:`generalized_dice_loss` (generalized DICE over the labeled
  instances, Eq. 12-14) with :func:`instance_codes_from_targets` to get each instance's code.
* :mod:`.depth` -- :func:`affine_invariant_disparity_loss` (relative depth, Eq. 6-8) and
  :func:`silog_loss` (metric depth, Eq. 9).
* :mod:`.criterion` -- :class:`PixelCentroidCriterion`, the detectron2-style dict of weighted
  losses per task.
* :mod:`.checks` -- the shared input checks.

Reductions (decisions not fixed by the paper):

* Eq. (1) over a batch: the weighted loss sum of the whole batch divided by the batch's weight
  sum (``normalize="batch"``, the default: an image counts by its total EDS weight), or Eq. (1)
  per image then the mean over the images that carry weight (``normalize="per_image"``: every
  image counts the same, and a batch of B images equals B one-image steps averaged). The paper
  writes Eq. (1) for a single image; config key ``model.loss.normalize``.

* TV losses are *averaged* over the ``(H-1)(W-1)`` pixels that have both neighbours (and over the
  batch) instead of summed as written in Eq. (11): the paper's weight 0.1 then does not depend on
  the output resolution. Eq. (10) is evaluated on the same pixels.
* DICE sums run over *all* pixels (paper: "i, j are iterating over all pixels"), including void
  and padding, since penalizing an existing instance's code there is the point of the loss; an
  optional ``pixel_mask`` restricts them. The loss is computed per image and averaged over the
  images that have at least one labeled instance.
* Depth losses are computed per image over its valid pixels and averaged over the images that
  have at least one valid pixel.
"""
from pe_panoptic.modeling.losses.criterion import TASKS, PixelCentroidCriterion
from pe_panoptic.modeling.losses.depth import affine_invariant_disparity_loss, silog_loss
from pe_panoptic.modeling.losses.pixel import NORMALIZATIONS, instance_pe_loss_map, offset_l1_map, semantic_ce_map, weighted_mean
from pe_panoptic.modeling.losses.regularizers import generalized_dice_loss, instance_codes_from_targets, tv_loss_regression, tv_loss_semantic

__all__ = [
    "NORMALIZATIONS",
    "offset_l1_map",
    "weighted_mean",
    "semantic_ce_map",
    "instance_pe_loss_map",
    "tv_loss_regression",
    "tv_loss_semantic",
    "instance_codes_from_targets",
    "generalized_dice_loss",
    "affine_invariant_disparity_loss",
    "silog_loss",
    "PixelCentroidCriterion",
    "TASKS",
]
