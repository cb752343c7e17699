"""Post-processing (pe_panoptic/postprocess/) on hand-made per-pixel outputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from pe_panoptic.encoding import (
    BinEncoding,
    PositionalEncoding,
    RGBEncoding,
    build_encoding,
    grid_centers,
    normalize_coords,
)
from pe_panoptic.postprocess import (
    PostProcessConfig,
    decode_cells,
    grid_nms,
    instance_map_from_outputs,
    matrix_nms,
    naive_decode,
    panoptic_from_outputs,
    resize_panoptic,
)

N_CLASSES = 5
THINGS = (0, 1)  # classes 2, 3, 4 are stuff
LOGIT = 10.0
DECODERS = ("nn", "vote", "painter")


# ------------------------------------------------------------------------------------------
# helpers: perfect per-pixel outputs from a ground-truth layout
# ------------------------------------------------------------------------------------------


def centroid_map(inst_ids: torch.Tensor):
    """uv [2, h, w] of every instance pixel's centroid (normalized with the map size)."""
    h, w = inst_ids.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    uv = torch.zeros(2, h, w, dtype=torch.float64)
    for k in inst_ids.unique().tolist():
        if k == 0:
            continue
        m = inst_ids == k
        uv[0][m] = normalize_coords(xs[m].mean(), w)
        uv[1][m] = normalize_coords(ys[m].mean(), h)
    return uv.float(), inst_ids > 0


def perfect_outputs(inst_ids, sem, enc):
    uv, valid = centroid_map(inst_ids)
    inst = enc.targets(uv[None], valid[None])[0]
    logits = F.one_hot(sem, N_CLASSES).permute(2, 0, 1).float() * LOGIT
    return logits, inst


def cell_code(enc, iv, iu, grid):
    """The code of the center of grid cell (iv, iu)."""
    gh, gw = grid
    uv = torch.stack((grid_centers(gw)[iu], grid_centers(gh)[iv]), -1)
    return enc.encode(uv)


def gt_segments(inst_ids, sem):
    """GT as {first flat pixel index: (category, isthing, mask)}: things per instance id, stuff
    per class (pixels not in an instance)."""
    segs = {}
    for k in inst_ids.unique().tolist():
        if k == 0:
            continue
        m = inst_ids == k
        segs[int(m.reshape(-1).nonzero()[0])] = (int(sem[m][0]), True, m)
    for c in range(N_CLASSES):
        if c in THINGS:
            continue
        m = (sem == c) & (inst_ids == 0)
        if m.any():
            segs[int(m.reshape(-1).nonzero()[0])] = (c, False, m)
    return segs


def pred_segments(pan, info):
    assert pan.dtype == torch.int32
    segs = {}
    for s in info:
        m = pan == s["id"]
        segs[int(m.reshape(-1).nonzero()[0])] = (s["category_id"], s["isthing"], m)
    return segs


def assert_same_segments(pan, info, inst_ids, sem):
    got, want = pred_segments(pan, info), gt_segments(inst_ids, sem)
    assert sorted(got) == sorted(want), f"segments differ: {len(got)} predicted, {len(want)} expected"
    for k, (c, t, m) in want.items():
        gc, gt, gm = got[k]
        assert (gc, gt) == (c, t)
        assert torch.equal(gm, m)


def check_format(pan, info):
    """detectron2 panoptic format: ids 1..S, areas equal pixel counts, python scalars."""
    assert pan.dtype == torch.int32
    assert [s["id"] for s in info] == list(range(1, len(info) + 1))
    for s in info:
        assert set(s) == {"id", "category_id", "isthing", "score", "area"}
        assert isinstance(s["category_id"], int) and isinstance(s["isthing"], bool)
        assert isinstance(s["score"], float) and 0.0 <= s["score"] <= 1.0
        assert s["area"] == int((pan == s["id"]).sum())
        assert s["isthing"] == (s["category_id"] in THINGS)
    assert set(pan.unique().tolist()) <= {0} | {s["id"] for s in info}


def base_scene(h=96, w=128):
    """Sky (2) on top, road (3) below; three things far apart."""
    inst = torch.zeros(h, w, dtype=torch.long)
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[h // 2 :] = 3
    inst[8:30, 10:40] = 1
    inst[50:90, 20:44] = 2
    inst[20:70, 80:120] = 3
    sem[inst == 1] = 0
    sem[inst == 2] = 1
    sem[inst == 3] = 0
    return inst, sem


def random_scene(seed, h=96, w=128, grid=(80, 80), max_inst=6):
    """Non-overlapping rectangles whose centroid cells are >= 3 cells apart (Chebyshev)."""
    g = torch.Generator().manual_seed(seed)
    inst = torch.zeros(h, w, dtype=torch.long)
    sem = torch.randint(2, N_CLASSES, (1,), generator=g).expand(h, w).clone()
    sem[: h // 3] = 2 + (int(sem[0, 0]) - 1) % 3  # a second stuff class, big enough
    cells = []
    k = 0
    for _ in range(50):
        if k == max_inst:
            break
        y0, x0 = torch.randint(0, h - 8, (1,), generator=g).item(), torch.randint(0, w - 8, (1,), generator=g).item()
        y1 = min(h, y0 + torch.randint(4, 30, (1,), generator=g).item())
        x1 = min(w, x0 + torch.randint(4, 30, (1,), generator=g).item())
        if (inst[y0:y1, x0:x1] > 0).any():
            continue
        cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
        cell = (int((cy + 0.5) / h * grid[0]), int((cx + 0.5) / w * grid[1]))
        if any(max(abs(cell[0] - c[0]), abs(cell[1] - c[1])) < 3 for c in cells):
            continue
        cells.append(cell)
        k += 1
        inst[y0:y1, x0:x1] = k
        sem[y0:y1, x0:x1] = torch.randint(0, 2, (1,), generator=g).item()
    return inst, sem


# ------------------------------------------------------------------------------------------
# perfect predictions -> exactly the GT segments
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_perfect_pe_predictions_give_gt_segments(decoder):
    inst_ids, sem = base_scene()
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, PostProcessConfig(decoder=decoder))
    check_format(pan, info)
    assert_same_segments(pan, info, inst_ids, sem)
    assert [s["isthing"] for s in info] == [True, True, True, False, False]  # things first
    assert not (pan == 0).any()


@pytest.mark.parametrize("decoder", DECODERS)
def test_void_source_semantic_recovers_shrunk_predictions(decoder):
    """An uncertain model shrinks its instance codes toward the (zero) void code. At 0.3 x the
    true code every thing pixel is nearer to void than to any grid code, so with the paper's
    void_source="instance" no instance survives; "semantic" takes the thing pixels from the
    semantic head and the nearest *grid* cell is unchanged by the scaling: the exact GT again.
    Stuff pixels with confident non-void codes stay void under "semantic"."""
    inst_ids, sem = base_scene()
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    shrunk = inst * 0.3
    stuff_code = cell_code(enc, 5, 5, (80, 80))
    shrunk[:, inst_ids == 0] = stuff_code[:, None]  # a full-strength code on every stuff pixel
    pan, info = panoptic_from_outputs(logits, shrunk, enc, THINGS, PostProcessConfig(decoder=decoder))
    assert not any(s["isthing"] for s in info)
    pan, info = panoptic_from_outputs(logits, shrunk, enc, THINGS,
                                      PostProcessConfig(decoder=decoder, void_source="semantic"))
    check_format(pan, info)
    assert_same_segments(pan, info, inst_ids, sem)
    # the grid distance (not the distance to void) makes the score: 0.3 x code is 0.7 x scale
    # from the code (plus the centroid's offset from its cell centre), so the score is ~0.3
    thing_scores = [s["score"] for s in info if s["isthing"]]
    assert thing_scores == pytest.approx([0.3] * 3, abs=0.01)


def test_void_source_semantic_on_decode_cells_and_errors():
    enc = PositionalEncoding(2)
    grid = (4, 4)
    inst = torch.zeros(enc.num_channels, 1, 3)
    inst[:, 0, 0] = cell_code(enc, 1, 2, grid) * 0.2  # shrunk: void by default
    inst[:, 0, 1] = cell_code(enc, 3, 0, grid)  # confident code on a non-thing pixel
    code, ndist = decode_cells(inst, enc, grid)
    assert code.tolist() == [[-1, 3 * 4 + 0, -1]]
    things = torch.tensor([[True, False, True]])
    code, ndist = decode_cells(inst, enc, grid, thing_pixels=things)
    assert code[0, 0] == 1 * 4 + 2 and code[0, 1] == -1
    assert ndist[0, 0] == pytest.approx(0.8, abs=1e-5)  # distance to the grid code / sqrt(2L)
    assert 0 <= int(code[0, 2]) < 16  # an all-zero prediction still takes a grid cell
    with pytest.raises(ValueError, match="thing_pixels must be a bool"):
        decode_cells(inst, enc, grid, thing_pixels=things.long())
    with pytest.raises(ValueError, match="needs thing_pixels"):
        instance_map_from_outputs(inst, enc, void_source="semantic")
    with pytest.raises(ValueError, match="void_source"):
        PostProcessConfig(void_source="depth")


@pytest.mark.parametrize("name,kw", [("rgb", {}), ("bins", {"num_bins": 80}), ("pe", {"num_harmonics": 6})])
@pytest.mark.parametrize("decoder", DECODERS)
def test_other_encodings_decode_perfect_predictions(name, kw, decoder):
    inst_ids, sem = base_scene()
    enc = build_encoding(name, **kw)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    if name == "bins":
        inst = inst * LOGIT  # one-hot targets -> confident logits
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, decoder=decoder)
    check_format(pan, info)
    assert_same_segments(pan, info, inst_ids, sem)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decoder", DECODERS)
def test_random_layouts_recovered_exactly(seed, decoder):
    inst_ids, sem = random_scene(seed)
    assert inst_ids.max() >= 3  # the layout really has several instances
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, decoder=decoder, min_stuff_area=0.0)
    check_format(pan, info)
    assert_same_segments(pan, info, inst_ids, sem)


def test_cityscapes_grid_non_square():
    """160 x 320 grid on a 1:2 map (paper's Cityscapes setting)."""
    inst_ids, sem = base_scene(h=64, w=128)
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    for decoder in DECODERS:
        pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, decoder=decoder, grid=(160, 320))
        assert_same_segments(pan, info, inst_ids, sem)


def test_score_is_decode_confidence_times_class_probability():
    """Embedding exactly on a grid code -> normalized distance 0 -> score = softmax prob."""
    h, w = 40, 40
    grid = (8, 8)
    enc = PositionalEncoding(4)
    inst = torch.zeros(enc.num_channels, h, w)
    inst[:, 10:20, 10:20] = cell_code(enc, 3, 2, grid)[:, None, None]
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[10:20, 10:20] = 1
    logits = F.one_hot(sem, N_CLASSES).permute(2, 0, 1).float() * LOGIT
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, grid=grid)
    p = math.exp(LOGIT) / (math.exp(LOGIT) + N_CLASSES - 1)
    assert info[0]["category_id"] == 1 and info[0]["area"] == 100
    assert info[0]["score"] == pytest.approx(p, rel=1e-5)
    assert info[1]["category_id"] == 2 and info[1]["area"] == 1500
    assert info[1]["score"] == pytest.approx(p, rel=1e-5)
    # half-way between the code and void: normalized distance 0.5 -> score 0.5 p
    pan, info = panoptic_from_outputs(logits, inst * 0.5, enc, THINGS, grid=grid)
    assert info[0]["score"] == pytest.approx(0.5 * p, rel=1e-4)


# ------------------------------------------------------------------------------------------
# merges, fragments, scattering
# ------------------------------------------------------------------------------------------


def same_cell_layouts():
    """(name, inst_ids, grid): two instances whose centroids fall in one grid cell."""
    h = w = 64
    concentric = torch.zeros(h, w, dtype=torch.long)
    concentric[16:48, 16:48] = 2  # ring
    concentric[24:40, 24:40] = 1  # inner square, same centroid (31.5, 31.5)
    stripes = torch.zeros(h, w, dtype=torch.long)
    stripes[16:48, 18:50:2] = 1  # centroid x = 33 -> u = 0.047 -> cell 8 of 16
    stripes[16:48, 19:50:2] = 2  # centroid x = 34 -> u = 0.078 -> cell 8 of 16
    return [("concentric", concentric, (16, 16)), ("concentric", concentric, (80, 80)),
            ("stripes", stripes, (16, 16))]


@pytest.mark.parametrize("decoder,merge_radius", [("nn", 1), ("nn", 0), ("vote", 1), ("painter", 1)])
@pytest.mark.parametrize("layout", range(3))
def test_two_centroids_in_one_cell_merge_into_one_segment(decoder, merge_radius, layout):
    """Two instances whose centroids share a grid cell decode to the same code and become ONE
    segment, whatever the NMS (documented limitation of grid decoding)."""
    name, inst_ids, grid = same_cell_layouts()[layout]
    sem = torch.full(inst_ids.shape, 3, dtype=torch.long)
    sem[inst_ids > 0] = 0
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    code, _ = decode_cells(inst, enc, grid)
    assert code[inst_ids == 1].unique().tolist() == code[inst_ids == 2].unique().tolist()  # one cell
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, decoder=decoder, grid=grid,
                                      merge_radius=merge_radius, painter_cell_radius=merge_radius)
    things = [s for s in info if s["isthing"]]
    assert len(things) == 1
    assert things[0]["area"] == 32 * 32 if name == "concentric" else 32 * 32
    assert torch.equal(pan == things[0]["id"], inst_ids > 0)


def test_nn_merges_adjacent_fragment_and_drops_small_far_fragment():
    h, w = 80, 80
    grid = (20, 20)  # 4 px cells
    enc = PositionalEncoding(4)
    inst = torch.zeros(enc.num_channels, h, w)
    inst[:, 20:60, 20:60] = cell_code(enc, 10, 10, grid)[:, None, None]  # the instance (1600 px)
    inst[:, 20:22, 20:22] = cell_code(enc, 11, 10, grid)[:, None, None]  # 4 px -> adjacent cell
    inst[:, 58:60, 58:60] = cell_code(enc, 15, 3, grid)[:, None, None]  # 4 px -> far cell
    inst[:, 0:10, 70:80] = cell_code(enc, 1, 18, grid)[:, None, None]  # 100 px -> far, big enough
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[20:60, 20:60] = 0
    sem[0:10, 70:80] = 1
    logits = F.one_hot(sem, N_CLASSES).permute(2, 0, 1).float() * LOGIT
    cfg = PostProcessConfig(grid=grid, min_instance_area=10 / (h * w), min_stuff_area=0.0)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg)
    assert scores.shape == (2,)
    assert int((inst_map == 1).sum()) == 1600 - 4  # merged fragment, far fragment removed
    assert int((inst_map == 2).sum()) == 100
    assert (inst_map[58:60, 58:60] == 0).all()
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, cfg)
    check_format(pan, info)
    assert [(s["category_id"], s["area"]) for s in info] == [(0, 1596), (1, 100), (2, 6400 - 1600 - 100)]
    assert (pan[58:60, 58:60] == 0).all()  # thing pixels of a dropped fragment are void
    # without merging, the adjacent fragment (4 px < 10 px) is dropped too
    inst_map, _ = instance_map_from_outputs(inst, enc, cfg, merge_radius=0)
    assert int((inst_map == 1).sum()) == 1600 - 8 and (inst_map[20:22, 20:22] == 0).all()


def scattered_instance(enc, grid, sizes=((20, 20), (20, 20))):
    """One 40 x 40 instance whose quadrants decode to the 4 cells (10..11, 10..11)."""
    h, w = 80, 80
    inst = torch.zeros(enc.num_channels, h, w)
    (a, b), (c, d) = sizes
    y0, x0 = 20, 20
    ys = (slice(y0, y0 + a), slice(y0 + a, y0 + 40))
    xs = (slice(x0, x0 + c), slice(x0 + c, x0 + 40))
    for i, sy in enumerate(ys):
        for j, sx in enumerate(xs):
            inst[:, sy, sx] = cell_code(enc, 10 + i, 10 + j, grid)[:, None, None]
    return inst


@pytest.mark.parametrize("split", [((20, 20), (20, 20)), ((25, 15), (12, 28))])
def test_vote_decoder_survives_instance_scattered_over_four_cells(split):
    grid = (20, 20)
    enc = PositionalEncoding(4)
    inst = scattered_instance(enc, grid, split)
    inst_map, scores = instance_map_from_outputs(inst, enc, decoder="vote", grid=grid)
    assert scores.shape == (1,)
    assert int((inst_map == 1).sum()) == 1600
    # panoptic: one thing segment
    sem = torch.full((80, 80), 2, dtype=torch.long)
    sem[20:60, 20:60] = 1
    logits = F.one_hot(sem, N_CLASSES).permute(2, 0, 1).float() * LOGIT
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, decoder="vote", grid=grid)
    assert [(s["category_id"], s["area"]) for s in info] == [(1, 1600), (2, 4800)]
    # the same input without any merging gives 4 segments: the test exercises the merge
    inst_map, scores = instance_map_from_outputs(inst, enc, decoder="nn", grid=grid, merge_radius=0)
    assert scores.shape == (4,)


def test_vote_far_small_cell_becomes_void_and_smoothing_merges_two_apart():
    grid = (20, 20)
    enc = PositionalEncoding(4)
    h = w = 80
    inst = torch.zeros(enc.num_channels, h, w)
    inst[:, 0:40, 0:20] = cell_code(enc, 5, 5, grid)[:, None, None]  # 800 px
    inst[:, 0:40, 20:40] = cell_code(enc, 5, 7, grid)[:, None, None]  # 800 px, two cells apart
    inst[:, 60:62, 0:2] = cell_code(enc, 5, 9, grid)[:, None, None]  # 4 px, two cells from a peak
    cfg = PostProcessConfig(decoder="vote", grid=grid, min_votes=10 / (h * w), min_instance_area=0.0)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg)
    assert scores.shape == (2,)
    assert int((inst_map == 1).sum()) == 800 and int((inst_map == 2).sum()) == 800
    assert (inst_map[60:62, 0:2] == 0).all()  # farther than assign_radius=1.5 from every peak
    # a larger assign radius attaches it to the nearest peak (cell (5, 7))
    inst_map, _ = instance_map_from_outputs(inst, enc, cfg, assign_radius=2.0)
    assert (inst_map[60:62, 0:2] == inst_map[0, 30]).all()
    # 3x3 box smoothing: the middle cell (5, 6) gets 1600 votes and is the only peak
    # (the 4 px cell then joins a weak peak at (5, 8) whose box sum is 800 + 4)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg, vote_smooth_kernel=3)
    assert inst_map[0, 0] == inst_map[0, 30] == 1 and int((inst_map == 1).sum()) == 1600


def test_painter_overlapping_masks_suppressed_and_pasted():
    grid = (20, 20)
    enc = PositionalEncoding(4)
    h = w = 80
    inst = torch.zeros(enc.num_channels, h, w)
    inst[:, 10:50, 10:50] = cell_code(enc, 7, 7, grid)[:, None, None]  # 1600 px
    inst[:, 50:60, 10:50] = cell_code(enc, 8, 7, grid)[:, None, None]  # 400 px, adjacent cell
    inst[:, 60:80, 60:80] = cell_code(enc, 17, 17, grid)[:, None, None]  # far
    cfg = PostProcessConfig(decoder="painter", grid=grid, min_instance_area=0.0)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg)
    # both candidates near (7..8, 7) have the same mask (union of the two groups): the second is
    # covered 100% -> skipped; the pasted one holds both groups
    assert scores.shape == (2,)
    assert sorted(torch.bincount(inst_map.reshape(-1))[1:].tolist()) == [400, 2000]
    # disjoint masks (radius 0): three instances
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg, painter_cell_radius=0)
    assert sorted(torch.bincount(inst_map.reshape(-1))[1:].tolist()) == [400, 400, 1600]
    # max instances
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg, painter_cell_radius=0, painter_max_instances=1)
    assert scores.shape == (1,)


def test_painter_matrix_nms_order_and_overlap_skip_by_hand():
    """Cells A=(7,7) 100 px, B=(7,8) 10 px, C=(7,9) 50 px, radius 1: masks A|B (110), A|B|C
    (160), B|C (60); all scores 1. IoU(A,B)=110/160, IoU(A,C)=10/160, IoU(B,C)=60/160 ->
    decayed B = exp(-2 * 0.6875^2) = 0.389, C = exp(-2 * 0.0625^2) = 0.992: paste order A, C, B.
    C is 10/60 covered by A -> pasted (owns its 50 px); B fully covered -> skipped."""
    grid = (20, 20)
    enc = PositionalEncoding(4)
    inst = torch.zeros(enc.num_channels, 40, 40)
    inst[:, 0:10, 0:10] = cell_code(enc, 7, 7, grid)[:, None, None]
    inst[:, 20:22, 0:5] = cell_code(enc, 7, 8, grid)[:, None, None]
    inst[:, 30:35, 20:30] = cell_code(enc, 7, 9, grid)[:, None, None]
    cfg = PostProcessConfig(decoder="painter", grid=grid, min_instance_area=0.0)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg)
    assert torch.bincount(inst_map.reshape(-1)).tolist()[1:] == [110, 50]
    assert (inst_map[20:22, 0:5] == 1).all() and (inst_map[30:35, 20:30] == 2).all()
    # the decay reorders: the 2 best after Matrix NMS are A and C (undecayed ties: A and B)
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg, painter_max_instances=2)
    assert torch.bincount(inst_map.reshape(-1)).tolist()[1:] == [110, 50]
    # stricter overlap threshold: C (16.7% covered) is skipped too and its pixels become void
    inst_map, scores = instance_map_from_outputs(inst, enc, cfg, overlap_thresh=0.1)
    assert torch.bincount(inst_map.reshape(-1)).tolist()[1:] == [110]
    assert (inst_map[30:35, 20:30] == 0).all()


# ------------------------------------------------------------------------------------------
# panoptic merge rules
# ------------------------------------------------------------------------------------------


def test_stuff_min_area():
    h, w = 50, 80  # 4000 px
    enc = PositionalEncoding(4)
    inst_ids = torch.zeros(h, w, dtype=torch.long)
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[0:3, 0:3] = 4  # 9 px of stuff class 4
    sem[40:50, 0:10] = 3  # 100 px of stuff class 3
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, min_stuff_area=10 / 4000)
    check_format(pan, info)
    assert [(s["category_id"], s["area"]) for s in info] == [(2, 3891), (3, 100)]
    assert (pan[0:3, 0:3] == 0).all()
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, min_stuff_area=0.0)
    assert [(s["category_id"], s["area"]) for s in info] == [(2, 3891), (3, 100), (4, 9)]
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, min_stuff_area=101 / 4000)
    assert [(s["category_id"], s["area"]) for s in info] == [(2, 3891)]
    assert int((pan == 0).sum()) == 109


def test_thing_pixels_without_instance_are_void_and_thing_fraction():
    h, w = 60, 60
    enc = PositionalEncoding(4)
    inst_ids = torch.zeros(h, w, dtype=torch.long)
    inst_ids[5:25, 5:25] = 1  # semantic: 60% thing -> kept, all 400 px
    inst_ids[35:55, 35:55] = 2  # semantic: 30% thing -> dropped, its pixels fall back
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[5:17, 5:25] = 1  # 240 / 400 thing
    sem[35:41, 35:55] = 0  # 120 / 400 thing
    sem[0:5, 40:60] = 0  # thing class but no instance (embedding = void)
    logits, _ = perfect_outputs(inst_ids, sem, enc)
    _, inst = perfect_outputs(inst_ids, torch.zeros_like(sem), enc)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, min_stuff_area=0.0)
    check_format(pan, info)
    got = [(s["category_id"], s["isthing"], s["area"]) for s in info]
    assert got == [(1, True, 400), (2, False, 3600 - 400 - 100 - 120)]
    assert torch.equal(pan[5:25, 5:25], torch.ones(20, 20, dtype=torch.int32))
    assert (pan[0:5, 40:60] == 0).all()  # thing pixels, no instance -> void
    assert (pan[35:41, 35:55] == 0).all()  # thing pixels of the dropped instance -> void
    assert (pan[41:55, 35:55] == 2).all()  # its stuff pixels -> stuff
    # thing_fraction 0.25 keeps the second instance with its majority thing class (0)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, thing_fraction=0.25, min_stuff_area=0.0)
    assert [(s["category_id"], s["isthing"], s["area"]) for s in info][:2] == [(1, True, 400), (0, True, 400)]


def test_majority_vote_uses_thing_restricted_argmax():
    """Class = majority of the argmax over THING classes, even where stuff wins overall."""
    h, w = 20, 20
    enc = PositionalEncoding(4)
    inst_ids = torch.zeros(h, w, dtype=torch.long)
    inst_ids[0:10, 0:10] = 1
    logits = torch.zeros(N_CLASSES, h, w)
    logits[2] = 5.0  # stuff class 2 everywhere
    logits[0, 0:10, 0:10] = 6.0  # thing argmax = class 0 on all 100 px (full argmax too)
    logits[1, 0:4, 0:10] = 7.0  # class 1 on 40 px
    logits[0, 4:10, 0:10] = 1.0  # 60 px: full argmax stuff (5 > 1 > 0); thing argmax class 0
    _, inst = perfect_outputs(inst_ids, torch.zeros(h, w, dtype=torch.long), enc)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, thing_fraction=0.4, min_stuff_area=0.0)
    # thing fraction 40/100 >= 0.4; votes: class 1 x 40, class 0 x 60 -> class 0, keeps all 100 px
    assert (info[0]["category_id"], info[0]["area"]) == (0, 100)
    pan, info = panoptic_from_outputs(logits, inst, enc, THINGS, thing_fraction=0.41, min_stuff_area=0.0)
    assert [(s["category_id"], s["isthing"]) for s in info] == [(2, False)]


# ------------------------------------------------------------------------------------------
# primitives
# ------------------------------------------------------------------------------------------


def greedy_reference(cells, radius):
    keep, parent = [], []
    for j, c in enumerate(cells):
        near = [i for i in range(j) if max(abs(cells[i][0] - c[0]), abs(cells[i][1] - c[1])) <= radius]
        p = next((i for i in near if keep[i]), None)
        keep.append(p is None)
        parent.append(j if p is None else p)
    return keep, parent


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("radius", [1, 2])
def test_grid_nms_equals_sequential_greedy(seed, radius):
    g = torch.Generator().manual_seed(seed)
    grid = (12, 15)
    codes = torch.randperm(grid[0] * grid[1], generator=g)[:70]  # dense: long suppression chains
    cells = torch.stack((codes // grid[1], codes % grid[1]), 1)
    keep, parent = grid_nms(cells, radius, grid)
    k_ref, p_ref = greedy_reference(cells.tolist(), radius)
    assert keep.tolist() == k_ref
    assert parent.tolist() == p_ref
    assert 0 < sum(k_ref) < 70


def test_grid_nms_chain_by_hand():
    # a row of 4 adjacent cells ranked left to right: keep 0, drop 1 (by 0), keep 2, drop 3 (by 2)
    cells = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3]])
    keep, parent = grid_nms(cells, 1, (1, 4))
    assert keep.tolist() == [True, False, True, False]
    assert parent.tolist() == [0, 0, 2, 2]


def test_matrix_nms_by_hand():
    iou = torch.tensor([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = matrix_nms(iou, scores, sigma=2.0)
    # comp = (0, .5, .3); j=1: exp(-2 * .25); j=2: min(exp(-2 * .04), exp(-2 * (.09 - .25)))
    want = torch.tensor([0.9, 0.8 * math.exp(-0.5), 0.7 * math.exp(-0.08)])
    assert torch.allclose(got, want, atol=1e-6)


def near_tie_mask(emb, enc, grid, tol):
    """Pixels whose best and second-best naive distances differ by less than ``tol``, among all
    codes or among the grid codes alone."""
    gh, gw = grid
    v = grid_centers(gh).repeat_interleave(gw)
    u = grid_centers(gw).repeat(gh)
    codes = torch.cat((enc.encode(torch.stack((u, v), 1)), enc.void_code()[None]))
    p = 2.0 if isinstance(enc, PositionalEncoding) else 1.0
    d = torch.cdist(emb.double(), codes.double(), p=p)
    two = d.topk(2, largest=False).values
    two_grid = d[:, :-1].topk(2, largest=False).values
    return ((two[:, 1] - two[:, 0]) < tol) | ((two_grid[:, 1] - two_grid[:, 0]) < tol)


@pytest.mark.parametrize("enc,grid", [
    (PositionalEncoding(4), (80, 80)),
    (PositionalEncoding(3), (16, 24)),
    (RGBEncoding(), (80, 80)),
    (RGBEncoding(), (160, 320)),
])
def test_decode_equals_naive_full_search(enc, grid):
    g = torch.Generator().manual_seed(0)
    h, w = 24, 32
    C = enc.num_channels
    rand = torch.randn(1, C, h, w, generator=g)
    if isinstance(enc, RGBEncoding):
        rand = rand * 0.4 + 0.5
    # realistic regime too: noisy codes of random centroids, some void
    uv = torch.rand(1, 2, h, w, generator=g) * 2 - 1
    valid = torch.rand(1, h, w, generator=g) > 0.2
    near = enc.targets(uv, valid) + 0.15 * torch.randn(1, C, h, w, generator=g)
    for pred in (rand, near):
        fast = enc.decode(pred, grid)
        slow = naive_decode(pred, enc, grid, chunk=1 << 16)
        emb = pred[0].permute(1, 2, 0).reshape(-1, C)
        ties = near_tie_mask(emb, enc, grid, 1e-4).view(1, h, w)
        assert ties.sum() <= 0.05 * h * w  # near-ties (< 1e-4) are rare
        ok = ~ties
        assert torch.equal(fast.void[ok], slow.void[ok])
        # iu, iv: the nearest GRID cell everywhere, also where the void code is nearer
        assert torch.equal(fast.iu[ok], slow.iu[ok]) and torch.equal(fast.iv[ok], slow.iv[ok])
        assert torch.allclose(fast.dist, slow.dist, atol=1e-3)
        assert torch.allclose(fast.grid_dist, slow.grid_dist, atol=1e-3)
        assert torch.all(fast.grid_dist >= fast.dist - 1e-5)
        assert torch.allclose(fast.grid_dist[~fast.void], fast.dist[~fast.void])
        assert 0 < int(slow.void.sum()) < h * w or pred is rand


@pytest.mark.parametrize("grid", [(80, 80), (40, 20)])
def test_bins_decode_equals_naive_joint_search(grid):
    enc = BinEncoding(80)
    pred = torch.randn(2, enc.num_channels, 12, 10, generator=torch.Generator().manual_seed(1)) * 3
    fast = enc.decode(pred, grid)
    slow = naive_decode(pred, enc, grid)
    assert torch.equal(fast.void, slow.void)
    assert 0 < int(slow.void.sum()) < slow.void.numel()
    assert torch.equal(fast.iu, slow.iu) and torch.equal(fast.iv, slow.iv)
    assert torch.allclose(fast.dist, slow.dist, atol=1e-6)
    assert torch.allclose(fast.grid_dist, slow.grid_dist, atol=1e-6)


def test_decode_cells_codes_and_void():
    enc = PositionalEncoding(4)
    grid = (10, 20)
    inst = torch.zeros(enc.num_channels, 2, 2)
    inst[:, 0, 0] = cell_code(enc, 3, 7, grid)
    inst[:, 1, 1] = cell_code(enc, 9, 19, grid)
    code, ndist = decode_cells(inst, enc, grid)
    assert code.tolist() == [[3 * 20 + 7, -1], [-1, 9 * 20 + 19]]
    assert ndist.max() < 1e-3


def test_resize_panoptic_by_hand():
    pan = torch.tensor([[1, 2, 0], [3, 3, 2]], dtype=torch.int32)
    info = [{"id": i, "category_id": i, "isthing": False, "score": 1.0, "area": 0} for i in (1, 2, 3, 4)]
    out, new = resize_panoptic(pan, info, (4, 6))
    assert torch.equal(out, pan.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert [(s["id"], s["area"]) for s in new] == [(1, 4), (2, 8), (3, 8)]  # id 4 vanished
    # 3 -> 5 pixels: centers floor((i + .5) * 3 / 5) = 0 0 1 2 2; legacy floor(i * 3 / 5) = 0 0 1 1 2
    row = torch.tensor([[1, 2, 3]], dtype=torch.int32)
    out, new = resize_panoptic(row, info[:3], (1, 5))
    assert out.tolist() == [[1, 1, 2, 3, 3]] and [s["area"] for s in new] == [2, 1, 2]
    out, _ = resize_panoptic(row, info[:3], (1, 5), mode="nearest")
    assert out.tolist() == [[1, 1, 2, 2, 3]]


# ------------------------------------------------------------------------------------------
# errors and devices
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    enc = PositionalEncoding(4)
    logits = torch.zeros(N_CLASSES, 8, 8)
    inst = torch.zeros(16, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        panoptic_from_outputs(logits, torch.zeros(3, 8, 8), enc, THINGS)
    with pytest.raises(ValueError, match="same h, w"):
        panoptic_from_outputs(logits, torch.zeros(16, 8, 9), enc, THINGS)
    with pytest.raises(ValueError, match="thing_ids"):
        panoptic_from_outputs(logits, inst, enc, [0, 7])
    with pytest.raises(ValueError, match="decoder"):
        PostProcessConfig(decoder="mean-shift")
    with pytest.raises(ValueError, match="peak_kernel"):
        PostProcessConfig(peak_kernel=2)
    with pytest.raises(ValueError, match="min_stuff_area"):
        panoptic_from_outputs(logits, inst, enc, THINGS, min_stuff_area=5)
    with pytest.raises(ValueError, match=r"\[C, h, w\]"):
        panoptic_from_outputs(logits, inst[None], enc, THINGS)
    with pytest.raises(TypeError, match="encoding"):
        panoptic_from_outputs(logits, inst, "pe", THINGS)


def test_empty_prediction_all_void_or_stuff():
    enc = PositionalEncoding(4)
    logits = torch.zeros(N_CLASSES, 8, 8)
    logits[0] = 1.0  # thing everywhere, no instance anywhere -> all void
    for decoder in DECODERS:
        pan, info = panoptic_from_outputs(logits, torch.zeros(16, 8, 8), enc, THINGS, decoder=decoder)
        assert info == [] and not pan.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("decoder", DECODERS)
def test_cuda_matches_cpu(decoder):
    inst_ids, sem = random_scene(3)
    enc = PositionalEncoding(4)
    logits, inst = perfect_outputs(inst_ids, sem, enc)
    pan_c, info_c = panoptic_from_outputs(logits, inst, enc, THINGS, decoder=decoder)
    pan_g, info_g = panoptic_from_outputs(logits.cuda(), inst.cuda(), enc, THINGS, decoder=decoder)
    assert pan_g.is_cuda and torch.equal(pan_g.cpu(), pan_c)
    assert [(s["category_id"], s["area"]) for s in info_g] == [(s["category_id"], s["area"]) for s in info_c]
