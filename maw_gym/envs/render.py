"""What the MAW envs draw: one text screen (``ansi``) or one image (``rgb_array``) per decision.

A frame shows the state a decision was made in and, once it is made, the decision: the query,
the action, the reward parts the env paid (the very numbers of ``info``) and the candidates
reranked by the variant's own :meth:`~maw_gym.envs.base.Variant.candidate_scores`, so the
picture cannot disagree with the reward. ``render_mode="human"`` is Gymnasium's
``HumanRendering`` over ``rgb_array`` (``gym.make`` applies it).

The image (``uint8 (H, W, 3)``, one size per env, drawn with numpy only so a frame costs well
under a millisecond; see ``scripts/bench_env.py --render``):

- left: the pooled attention maps the decision was made on, one row per depth and one column
  per head (colour: viridis from the query's smallest to its largest pooled value, so that
  near-uniform maps still show their differences); the chosen depth's row (or, per head, each
  chosen tile) is outlined, a mixture's rows with brightness ∝ weight; the bar left of each
  row is that depth's share of the action;
- right: each candidate's rank by its score under the action (y, best at the top) against its
  BM25 rank (x, best at the left): the diagonal is "BM25's order kept". Ranks, not raw
  scores, because one outlying score squeezes the others into a corner and NDCG reads only
  the order. Relevant candidates in orange, others in grey; the dashed line is the top-10
  cut. Before a decision (and after a layer-1 choice) the candidates sit on the diagonal.

Texts are looked up lazily, once per renderer, through :func:`maw_gym.data.load_split`
(the tables' ``meta`` names the dataset and split); tables without a dataset
(``Tables.synthetic``) show ids instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from maw_gym.cache import atomic_path
from maw_gym.metrics import NDCG_CUTOFF, rank_candidates
from maw_gym.tables import Tables

if TYPE_CHECKING:
    from maw_gym.data import Split


class Variant(Protocol):
    """What the renderer asks of an env's variant (``maw_gym.envs.base.Variant`` has it): the
    renderer sits below the envs and knows no variant class."""

    horizon: ClassVar[int]
    tables: Tables
    weights: np.ndarray

    def observe(self, query: np.ndarray, step: np.ndarray, previous: np.ndarray) -> Any: ...

    def candidate_scores(
        self, query: np.ndarray, previous: np.ndarray, actions: np.ndarray
    ) -> np.ndarray: ...

    def action_weights(self, action: np.ndarray) -> np.ndarray: ...

    def describe(self, action: np.ndarray, earlier: list[int]) -> str: ...


RENDER_MODES = ("ansi", "rgb_array")
#: Frames per second of recorded videos: an episode is one or two decisions.
RENDER_FPS = 2

GRID_BOX = 320  # pixels the heatmap grid may span, per side
PANEL = 320  # the scores panel's side, pixels
MARGIN, GAP, BAR = 16, 2, 24
# Greys as one channel value: filling with a scalar is ~100x faster than with an RGB triple.
BACKGROUND, PANEL_BACKGROUND, AXIS = 255, 246, 120
OUTLINE, BAR_COLOUR = np.array([230, 40, 40]), 60
RELEVANT, OTHER = (240, 140, 0), (150, 150, 170)
# Viridis at nine evenly spaced points (matplotlib's values), interpolated to 256 entries.
_VIRIDIS_ANCHORS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
VIRIDIS = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 9), c) for c in _VIRIDIS_ANCHORS.T], -1
).astype(np.uint8)


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if the envs draw it; "human" is ``gym.make``'s ``HumanRendering``."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(
            f"render_mode={render_mode!r}: expected one of {RENDER_MODES} or None "
            "('human' works through gym.make, which wraps 'rgb_array' in HumanRendering)"
        )
    return render_mode


@dataclass(frozen=True)
class RenderState:
    """A batch's last decisions, or first states after a reset; kept only when rendering.

    Row ``i`` is sub-env ``i``: the decision at ``step`` (a layer) of ``query`` after
    ``previous``; ``action`` is None after a reset; ``parts`` (each (B,)) are the reward parts
    of the rows where ``paid`` (the decision ended an episode and was paid).
    """

    query: np.ndarray
    step: np.ndarray
    previous: np.ndarray
    action: np.ndarray | None = None
    paid: np.ndarray | None = None
    parts: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Frame:
    """One sub-env's frame as arrays: maps (D, H, P, P), tile weights (D, H), scores (C,)."""

    query: int
    step: int
    previous: int
    action: np.ndarray | None
    maps: np.ndarray
    weights: np.ndarray
    scores: np.ndarray | None
    parts: dict[str, float]


class Renderer:
    """Draws one env's frames; the split's texts are read on the first ``ansi`` frame only."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.tables: Tables = variant.tables
        self._split: Split | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the split's texts (a whole corpus): they are re-read on demand."""
        return {**self.__dict__, "_split": None}

    def render(self, mode: str, state: RenderState, index: int, env_id: str) -> Any:
        """Sub-env ``index``'s frame of ``state`` in ``mode`` ("ansi" or "rgb_array")."""
        frame = self.frame(state, index)
        return self.text(frame, env_id) if mode == "ansi" else self.image(frame)

    def frame(self, state: RenderState, index: int) -> Frame:
        """What a frame shows, as arrays: one computation for both modes."""
        query, step, previous = (int(a[index]) for a in (state.query, state.step, state.previous))
        observed = self.variant.observe(*(np.array([v]) for v in (query, step, previous)))
        if isinstance(observed, dict):
            observed = observed["attention"]
        d, h, p = self.tables.observation.shape[1:4]
        maps = np.asarray(observed[0]).ravel()[: d * h * p * p].reshape(d, h, p, p)
        action = None if state.action is None else state.action[index]
        paid = action is not None and state.paid is not None and bool(state.paid[index])
        scores = None
        if paid:
            batch = (np.array([query]), np.array([previous]), action[None])
            scores = self.variant.candidate_scores(*batch)[0].astype(np.float64)
        parts = {k: float(v[index]) for k, v in state.parts.items()} if paid and state.parts else {}
        return Frame(
            query, step, previous, action, maps, tile_weights(self.variant, action), scores, parts
        )

    def text(self, frame: Frame, env_id: str) -> str:
        """The ``ansi`` screen: query, action, reward parts, top-10 after reranking."""
        tables, q = self.tables, frame.query
        query_id = str(tables.query_ids[q])
        lines = [
            f"{env_id} · {tables.meta.get('split', 'synthetic')} query {q} of "
            f"{tables.num_queries} · id {query_id} · decision {frame.step + 1} of "
            f"{self.variant.horizon}",
            f"query: {self.query_text(query_id)}",
            f"action: {describe_action(self.variant, frame)}",
            self.reward_line(frame),
            f"{'rank':>4} {'bm25':>4} {'grade':>5} {'score':>8}  {'doc id':<14} text",
        ]
        mask = tables.candidate_mask[q]
        scores = tables.bm25_scores[q] if frame.scores is None else frame.scores
        order = rank_candidates(scores, mask)
        for rank, c in enumerate(order[mask[order]][:NDCG_CUTOFF], start=1):
            doc_id = str(tables.candidate_ids[q, c])
            lines.append(
                f"{rank:>4} {c + 1:>4} {tables.relevance[q, c]:>5g} {scores[c]:>8.3f}  "
                f"{doc_id:<14} {first_words(self.doc_text(doc_id))}"
            )
        return "\n".join(lines) + "\n"

    def reward_line(self, frame: Frame) -> str:
        if not frame.parts:
            pending = "no decision yet" if frame.action is None else "paid after the last layer"
            return f"reward: none ({pending}); ranking by BM25"
        w, parts = self.variant.weights, frame.parts
        terms = " + ".join(
            f"{weight:.2f}·{name} {parts[name]:.4f}"
            for weight, name in zip(w, ("entropy", "focus", "alignment"), strict=True)
        )
        regret = parts["best_depth_reward"] - parts["reward"]
        return (
            f"reward {parts['reward']:.4f} = {terms} · best depth {parts['best_depth_reward']:.4f} "
            f"· regret {regret:.4f}"
        )

    def image(self, frame: Frame) -> np.ndarray:
        """The ``rgb_array`` frame: heatmap grid beside the scores panel (module docstring)."""
        d, h, p = frame.maps.shape[:3]
        cell = max(1, (GRID_BOX // max(d, h) - GAP) // p)
        grid = heatmap_grid(frame.maps, frame.weights, cell)
        height = round_up(max(grid.shape[0], PANEL) + 2 * MARGIN, 16)
        width = round_up(BAR + grid.shape[1] + PANEL + 3 * MARGIN, 16)
        canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
        top = MARGIN
        canvas[top : top + grid.shape[0], MARGIN + BAR : MARGIN + BAR + grid.shape[1]] = grid
        draw_bars(canvas[top:, MARGIN : MARGIN + BAR - GAP], frame.weights.mean(axis=1), cell * p)
        left = MARGIN * 2 + BAR + grid.shape[1]
        draw_scores(canvas[top : top + PANEL, left : left + PANEL], self.tables, frame)
        return canvas

    def query_text(self, query_id: str) -> str:
        split = self.split()
        return query_id if split is None else self.look_up(split.queries, query_id, "query")

    def doc_text(self, doc_id: str) -> str:
        split = self.split()
        if split is None:
            return doc_id
        doc = self.look_up(split.corpus, doc_id, "document")
        return f"{doc['title']} {doc['text']}".strip()

    def look_up(self, texts: dict[str, Any], key: str, what: str) -> Any:
        """``texts[key]``, or an error saying the tables and the dataset disagree."""
        if key not in texts:
            meta = self.tables.meta
            raise ValueError(
                f"{meta['dataset']} ({meta['split']}): no {what} {key!r}, which the tables "
                "name; they were built from other data: rebuild them (maw-gym tables build)"
            )
        return texts[key]

    def split(self) -> Split | None:
        """The tables' split, opened once; None for tables that name no dataset."""
        meta = self.tables.meta
        if self._split is None and "dataset" in meta:
            from maw_gym.data import load_split  # the one place that opens a dataset

            self._split = load_split(meta["dataset"], meta["split"])
        return self._split


def tile_weights(variant: Variant, action: np.ndarray | None) -> np.ndarray:
    """Each (depth, head) tile's share of ``action``: (D, H) float64, zeros before a decision
    (:meth:`Variant.action_weights`)."""
    if action is None:
        return np.zeros((variant.tables.depth, variant.tables.heads))
    return variant.action_weights(action)


def describe_action(variant: Variant, frame: Frame) -> str:
    """The action in words (:meth:`Variant.describe`), or that none was taken yet."""
    if frame.action is None:
        return "none yet (after reset)"
    return variant.describe(frame.action, [frame.previous] if frame.step else [])


def first_words(text: str, width: int = 60) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return text[: width - 1].rsplit(" ", 1)[0] + "…"


def round_up(value: int, multiple: int) -> int:
    """Video codecs want frame sides that are multiples of 16 (imageio resizes otherwise)."""
    return -(-value // multiple) * multiple


def heatmap_grid(maps: np.ndarray, weights: np.ndarray, cell: int) -> np.ndarray:
    """Tiles of ``maps`` (D, H, P, P) as one uint8 image, chosen tiles outlined."""
    d, h, p = maps.shape[:3]
    tile = cell * p
    low, span = float(maps.min()), max(float(maps.max() - maps.min()), 1e-12)
    colours = VIRIDIS[np.clip((maps - low) / span * 255, 0, 255).astype(np.uint8)]  # (D,H,P,P,3)
    tiles = colours.repeat(cell, axis=2).repeat(cell, axis=3)  # (D, H, tile, tile, 3)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (GAP, GAP), (GAP, GAP), (0, 0)), constant_values=255)
    strength = weights / max(float(weights.max()), 1e-12)  # (D, H), 1 for the chosen tiles
    outline = (255 + strength[..., None] * (OUTLINE - 255)).astype(np.uint8)  # (D, H, 3)
    border = np.ones(tiles.shape[2:4], bool)
    border[GAP:-GAP, GAP:-GAP] = False
    chosen = (strength > 0)[:, :, None, None]
    tiles[:, :, border] = np.where(chosen, outline[:, :, None], tiles[:, :, border])
    # (D, H, T, T, 3) -> (D·T, H·T, 3): tile rows stacked, columns side by side.
    side = tile + 2 * GAP
    return tiles.transpose(0, 2, 1, 3, 4).reshape(d * side, h * side, 3)


def draw_bars(region: np.ndarray, shares: np.ndarray, tile: int) -> None:
    """One horizontal bar per depth row, its length ∝ the depth's share of the action."""
    width, side = region.shape[1], tile + 2 * GAP
    for row, share in enumerate(shares):
        length = round(float(share) * width)
        if length:
            region[row * side + GAP : row * side + GAP + tile, width - length :] = BAR_COLOUR


def draw_scores(region: np.ndarray, tables: Tables, frame: Frame) -> None:
    """Candidates' ranks under the action (y) against their BM25 ranks (x), relevant marked."""
    region[:] = PANEL_BACKGROUND
    region[-1, :], region[:, 0] = AXIS, AXIS
    q, dot = frame.query, 3
    mask = tables.candidate_mask[q]
    count = int(mask.sum())
    bm25 = positions(rank_candidates(tables.bm25_scores[q], mask))
    new = bm25 if frame.scores is None else positions(rank_candidates(frame.scores, mask))
    step = (region.shape[0] - 1 - 2 * dot) / max(count - 1, 1)
    columns = (dot + bm25 * step).round().astype(int)
    rows = (dot + new * step).round().astype(int)
    if count > NDCG_CUTOFF:
        cut = round(dot + (NDCG_CUTOFF - 0.5) * step)
        region[cut, ::6], region[cut, 1::6] = AXIS, AXIS
    for c in np.argsort(tables.relevance[q] > 0, kind="stable"):  # relevant ones drawn on top
        if mask[c]:
            colour = RELEVANT if tables.relevance[q, c] > 0 else OTHER
            r, k = rows[c], columns[c]
            region[r - dot : r + dot + 1, k - dot : k + dot + 1] = colour


def positions(order: np.ndarray) -> np.ndarray:
    """Each candidate's 0-based rank given ``order`` (candidates best first)."""
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks


def write_png(frame: np.ndarray, path: Path) -> None:
    """Write an ``rgb_array`` frame as a PNG, atomically (Pillow, which matplotlib needs)."""
    from PIL import Image

    with atomic_path(Path(path)) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG")
