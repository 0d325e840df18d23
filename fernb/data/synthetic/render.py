"""Batched rendering of faces from identities and actions (OpenCV polygons, supersampled), and one-face rendering."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .actions import _A, OCCLUSION_TYPES, expression_actions
from .identities import FaceIdentity

# A batch of B faces is drawn in two steps: the geometry of every shape is computed for all faces at once (numpy,
# face units -> fixed-point pixels), then one loop issues the anti-aliased OpenCV calls face by face.
_ID_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(FaceIdentity) if f.name not in ("skin", "hair", "iris", "rest")
)
_COLOR_FIELDS = ("skin", "hair", "iris")
_LUMA = np.array([0.299, 0.587, 0.114])
_SHIFT = 4  # fixed-point bits of the coordinates handed to OpenCV
_SCLERA = (0.93, 0.92, 0.9)


def _identity_table(idents: Sequence[FaceIdentity]) -> dict[str, np.ndarray]:
    """Stack identities into columns: scalar fields (B,), colours (B, 3), ``rest`` (B, A)."""
    table = {f: np.array([float(getattr(i, f)) for i in idents]) for f in _ID_FIELDS}
    for f in (*_COLOR_FIELDS, "rest"):
        table[f] = np.array([getattr(i, f) for i in idents], np.float64)
    return table


@functools.cache
def _curve_weights(k: int) -> np.ndarray:
    """(k, 3) weights of (start, middle, end) for the quadratic curve through the three points (middle at t=0.5)."""
    t = np.linspace(0.0, 1.0, k)
    return np.stack([(1 - t) ** 2 - t * (1 - t), 4 * t * (1 - t), t**2 - t * (1 - t)], 1)


def _curve(p0: np.ndarray, mid: np.ndarray, p1: np.ndarray, k: int = 9) -> np.ndarray:
    """(B, k, 2) quadratic curves from ``p0`` through ``mid`` to ``p1`` (each (B, 2))."""
    return _curve_weights(k) @ np.stack([p0, mid, p1], 1)


class _Ops:
    """Records the draw calls of a batch of faces (geometry vectorised over the batch), then replays them per face."""

    def __init__(self, ident: dict[str, np.ndarray], nz: dict[str, np.ndarray], m: int, color: bool) -> None:
        self.b = len(nz["yaw"])
        yaw = np.radians(nz["yaw"])
        # in-plane pose (roll, scale, shift) applied to canvas coordinates, OpenCV's convention (positive roll turns
        # the face counter-clockwise on screen)
        roll = np.radians(nz["roll"])
        self.scale, self.roll_deg = np.asarray(nz["scale"], np.float64), np.asarray(nz["roll"], np.float64)
        self.rot = (
            np.stack([np.stack([np.cos(roll), np.sin(roll)], -1), np.stack([-np.sin(roll), np.cos(roll)], -1)], -2)
            * self.scale[:, None, None]
        )  # (B, 2, 2), rows map (x, y) -> x', y'
        self.offset = 2.0 * np.asarray(nz["shift"], np.float64)  # image fractions -> canvas units
        self.cosy, self.siny = np.cos(yaw), np.sin(yaw)
        self.fw, self.fh = ident["face_w"], ident["face_h"]
        self.cx = 0.16 * self.fw * self.siny  # the head turns about the neck: its centre shifts a little
        self.cy = ident["center_y"]
        self.m, self.half, self.color = m, m / 2.0, color
        self.depth = 0.8  # depth of the head ellipsoid in face units (sets how features move with yaw)
        self.ops: list[tuple[str, Any, list[tuple[float, ...]], int, list[bool] | None]] = []

    def pt(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """(B, 2) points from scalars or (B,) arrays."""
        return np.stack([np.broadcast_to(x, (self.b,)), np.broadcast_to(y, (self.b,))], -1).astype(np.float64)

    def const(self, q: npt.ArrayLike) -> np.ndarray:
        """A (K, 2) constant shape repeated for the batch: (B, K, 2)."""
        return np.broadcast_to(np.asarray(q, np.float64), (self.b, *np.shape(q)))

    def col(self, rgb: Sequence[float] | np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
        """(B, 3) or (3,) RGB in [0, 1], times ``f`` (scalar or (B,)) -> (B, channels) colours in 0..255."""
        f = np.asarray(f, np.float64)
        c = np.asarray(rgb, np.float64) * (f[:, None] if f.ndim else f)
        c = np.clip(np.broadcast_to(c, (self.b, 3)), 0.0, 1.0) * 255.0
        return c if self.color else (c @ _LUMA)[:, None]

    def proj(self, q: np.ndarray, dz: float | np.ndarray = 0.0) -> np.ndarray:
        """Face units (B, K, 2) -> canvas units: points on the head ellipsoid, turned by the yaw."""
        qx, qy = q[..., 0], q[..., 1]
        z = self.depth * np.sqrt(np.clip(1.0 - qx**2 - qy**2, 0.0, None)) + dz
        x = self.cx[:, None] + self.fw[:, None] * (qx * self.cosy[:, None] + z * self.siny[:, None])
        y = self.cy[:, None] + self.fh[:, None] * qy
        return np.stack([x, y], -1)

    def raw(self, q: np.ndarray) -> np.ndarray:
        """Face units -> canvas units without depth (outline, hair, neck): (B, K, 2)."""
        unit = np.stack([self.fw, self.fh], -1)[:, None]
        return q * unit + np.stack([self.cx, self.cy], -1)[:, None]

    def fix(self, c: np.ndarray) -> np.ndarray:
        """Canvas units (B, K, 2) or (B, 2) -> posed fixed-point pixel coordinates (int32)."""
        flat = c.reshape(self.b, -1, 2)
        r, x, y = self.rot[:, None], flat[..., 0], flat[..., 1]
        posed = np.stack([r[..., 0, 0] * x + r[..., 0, 1] * y, r[..., 1, 0] * x + r[..., 1, 1] * y], -1)
        posed += self.offset[:, None]
        pix = np.round(((posed + 1.0) * self.half - 0.5) * (1 << _SHIFT)).reshape(c.shape)
        return np.ascontiguousarray(pix, dtype=np.int32)

    def px(self, length: float) -> int:
        """A line width in canvas units -> whole pixels (>= 1)."""
        return max(1, int(round(length * self.half)))

    def _add(self, kind: str, geom: Any, col: np.ndarray, t: int, on: np.ndarray | None) -> None:
        cols = [tuple(c) for c in col.tolist()]
        self.ops.append((kind, geom, cols, t, None if on is None else np.asarray(on, bool).tolist()))

    def poly(
        self,
        q: np.ndarray,
        col: np.ndarray,
        dz: float | np.ndarray = 0.0,
        raw: bool = False,
        on: np.ndarray | None = None,
    ) -> None:
        self._add("poly", self.fix(q if raw else self.proj(q, dz)), col, 0, on)

    def line(
        self,
        q: np.ndarray,
        col: np.ndarray,
        width: float,
        dz: float | np.ndarray = 0.0,
        raw: bool = False,
        on: np.ndarray | None = None,
    ) -> None:
        self._add("line", self.fix(q if raw else self.proj(q, dz)), col, self.px(width), on)

    def ellipse(
        self,
        c: np.ndarray,
        ax: float | np.ndarray,
        ay: float | np.ndarray,
        col: np.ndarray,
        thickness: float = -1,
        angle: float | np.ndarray = 0.0,
        dz: float = 0.0,
        raw: bool = False,
        on: np.ndarray | None = None,
    ) -> None:
        """Ellipses centred at (B, 2) points with half-axes in canvas units (``ax`` foreshortened by the yaw)."""
        centre = self.fix(c if raw else self.proj(c[:, None], dz)[:, 0])
        ax = np.broadcast_to(ax, (self.b,)) * (1.0 if raw else np.abs(self.cosy))
        axes = np.stack([ax, np.broadcast_to(ay, (self.b,))], -1) * (self.scale * self.half * (1 << _SHIFT))[:, None]
        geom = (
            [tuple(x) for x in centre.tolist()],
            [tuple(x) for x in np.round(axes).astype(int).tolist()],
            (np.broadcast_to(angle, (self.b,)) - self.roll_deg).tolist(),
        )
        self._add("ellipse", geom, col, -1 if thickness < 0 else self.px(thickness), on)

    def replay(self, b: int, img: np.ndarray) -> None:
        """Draw face ``b`` of the batch onto ``img`` (the supersampled canvas)."""
        aa = cv2.LINE_AA
        for kind, geom, cols, t, on in self.ops:
            if on is not None and not on[b]:
                continue
            if kind == "poly":
                cv2.fillPoly(img, [geom[b]], cols[b], aa, _SHIFT)
            elif kind == "line":
                cv2.polylines(img, [geom[b]], False, cols[b], t, aa, _SHIFT)
            else:
                cv2.ellipse(img, geom[0][b], geom[1][b], geom[2][b], 0, 360, cols[b], t, aa, _SHIFT)


def _face_ops(I: dict[str, np.ndarray], a: np.ndarray, nz: dict[str, np.ndarray], m: int, color: bool) -> _Ops:
    """Geometry of B faces. I: identity columns; a: (B, A) actions; nz: nuisance columns (see :func:`_render_batch`)."""
    g = {name: a[:, i] for name, i in _A.items()}
    p = _Ops(I, nz, m, color)
    b = p.b
    skin, hair = I["skin"], I["hair"]
    fw, fh = I["face_w"], I["face_h"]
    style = I["hair_style"].astype(int)
    eye_x, eye_y, eye_w = I["eye_x"], I["eye_y"], I["eye_w"]

    # clothing, long hair behind the head, neck, ears
    p.ellipse(p.pt(p.cx, 1.28), 1.05, 0.42, p.col(nz["clothing"]), raw=True)
    back = np.array([[-1.18, -0.2], [-1.22, 0.95], [1.22, 0.95], [1.18, -0.2]])
    p.poly(p.raw(p.const(back)), p.col(hair, 0.85), raw=True, on=style == 2)
    neck = np.array([[-0.42, 0.4], [-0.46, 1.6], [0.46, 1.6], [0.42, 0.4]])
    p.poly(p.raw(p.const(neck)), p.col(skin, 0.82), raw=True)
    ear_y = p.cy + fh * (eye_y + 0.12)
    for s in (-1.0, 1.0):
        ex = p.cx + s * fw * 0.97 * np.abs(p.cosy) - 0.25 * fw * p.siny
        p.ellipse(p.pt(ex, ear_y), 0.1 * fw, 0.16 * fh, p.col(skin, 0.9), raw=True)

    # face, then the hair over the forehead
    t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    st, ct = np.sin(t), np.cos(t)
    ox = ct * (1.0 - I["jaw_taper"][:, None] * np.clip(st, 0.0, None) ** 2)
    oy = st * np.where(st > 0, 1.0 + 0.1 * g["jaw_drop"][:, None], 1.0)
    p.poly(p.raw(np.stack([ox, oy], -1)), p.col(skin), raw=True)
    t = np.linspace(np.pi * 1.06, np.pi * 1.94, 15)
    cap = np.stack([1.07 * np.cos(t), 1.1 * np.sin(t) - 0.02], 1)
    fringe = (style == 3).astype(np.float64)
    hairline = _curve(p.pt(1.0, -0.28), p.pt(0.0, I["hairline"] + 0.17 * fringe), p.pt(-1.0, -0.28), 13)
    hairline[:, 1:-1:2, 1] += 0.06 * fringe[:, None]  # a ragged fringe
    pts = np.concatenate([p.const([[-1.02, -0.25], *cap, [1.02, -0.25]]), hairline], 1)
    p.poly(p.raw(pts), p.col(hair), raw=True, on=style > 0)

    # eyes and brows
    ink = p.col((0.08, 0.06, 0.05))
    brow_col = p.col(np.minimum(hair * 0.6 + 0.04, skin * 0.45))
    cheek = g["cheek_raise"]
    for s in (-1.0, 1.0):
        pull = g["lip_corner_pull_left" if s < 0 else "lip_corner_pull_right"]
        ex = s * eye_x
        hu = (
            I["eye_open"]
            * (1 + 0.95 * g["upper_lid_raise"])
            * (1 - 0.35 * g["lid_tighten"] - 0.25 * cheek - 0.5 * g["lid_droop"])
        )
        hl = I["eye_low"] * (1 - 0.55 * g["lid_tighten"] - 0.65 * cheek - 0.15 * pull)
        hu, hl = np.maximum(hu, 0.012), np.maximum(hl, 0.006)
        inner, outer = p.pt(ex - s * eye_w, eye_y + 0.008), p.pt(ex + s * eye_w, eye_y - 0.01)
        upper = _curve(inner, p.pt(ex - s * 0.01, eye_y - hu), outer, 9)
        lower = _curve(outer, p.pt(ex + s * 0.01, eye_y + hl), inner, 7)
        p.poly(np.concatenate([upper, lower[:, 1:-1]], 1), p.col(_SCLERA))
        ic = p.pt(ex + nz["gaze"][:, 0] * 0.05, eye_y + 0.01 + nz["gaze"][:, 1] * 0.02)
        r = I["iris_r"] * fw
        p.ellipse(ic, r, r, p.col(I["iris"]), dz=0.05)
        p.ellipse(ic, 0.45 * r, 0.45 * r, p.col((0.03, 0.03, 0.03)), dz=0.05)
        # skin above the upper lid and below the lower lid hides the rest of the iris
        top = np.minimum(eye_y - hu, ic[:, 1] - I["iris_r"] * fw / fh) - 0.03
        bot = np.maximum(eye_y + hl, ic[:, 1] + I["iris_r"] * fw / fh) + 0.03
        p.poly(np.concatenate([upper, np.stack([p.pt(outer[:, 0], top), p.pt(inner[:, 0], top)], 1)], 1), p.col(skin))
        p.poly(np.concatenate([lower, np.stack([p.pt(inner[:, 0], bot), p.pt(outer[:, 0], bot)], 1)], 1), p.col(skin))
        p.line(upper, ink, 0.022)
        p.line(lower, p.col(skin, 0.7), 0.01)
        crease = _curve(
            inner + [0, -0.03], p.pt(ex, eye_y - hu - 0.05 - 0.03 * g["upper_lid_raise"]), outer + [0, -0.04]
        )
        p.line(crease, p.col(skin, 0.82), 0.01)
        on = cheek > 0.05  # crow's feet and the lower-lid bulge
        c = p.col(skin, 1 - 0.3 * cheek)
        x0 = ex + s * (eye_w + 0.04)
        for dy in (-0.03, 0.02, 0.07):
            p.line(np.stack([p.pt(x0, eye_y + dy * 0.5), p.pt(x0 + s * 0.08, eye_y + dy)], 1), c, 0.009, on=on)
        p.line(_curve(inner + [0, 0.06], p.pt(ex, eye_y + hl + 0.07), outer + [0, 0.06]), c, 0.01, on=on)

        bx_in = s * (I["brow_in_x"] - 0.05 * g["brow_lower"] + 0.01 * g["inner_brow_raise"])
        bx_out = s * I["brow_out_x"]
        base = eye_y - I["brow_gap"]
        by_in = base - 0.14 * g["inner_brow_raise"] + 0.09 * g["brow_lower"] + 0.05 * g["nose_wrinkle"] + 0.03
        by_out = (
            base
            - 0.12 * g["outer_brow_raise"]
            - 0.03 * g["inner_brow_raise"]
            + 0.05 * g["brow_lower"]
            - 0.03 * g["upper_lid_raise"]
            + 0.01
        )
        arch = I["brow_arch"] + 0.05 * g["outer_brow_raise"] - 0.02 * g["brow_lower"]
        centre = _curve(
            p.pt(bx_in, by_in), p.pt(0.5 * (bx_in + bx_out), 0.5 * (by_in + by_out) - arch), p.pt(bx_out, by_out), 9
        )
        th = I["brow_thick"][:, None, None] * np.linspace(1.25, 0.55, 9)[None, :, None] * np.array([0.0, 0.5])
        p.poly(np.concatenate([centre - th, (centre + th)[:, ::-1]], 1), brow_col)

    # forehead lines (brows raised) and glabella lines (brows lowered)
    raise_ = 0.5 * (g["inner_brow_raise"] + g["outer_brow_raise"])
    c = p.col(skin, 1 - 0.22 * np.minimum(1.0, raise_))
    width = 0.12 + 0.3 * g["outer_brow_raise"]
    y0 = eye_y - I["brow_gap"] - 0.13 - 0.1 * raise_
    for k in range(3):
        y = y0 - 0.08 * k
        on = (raise_ > 0.15) & ~((y < I["hairline"] + 0.06) & (style > 0))
        p.line(_curve(p.pt(-width, y + 0.015), p.pt(0.0, y - 0.01), p.pt(width, y + 0.015), 7), c, 0.01, on=on)
    c = p.col(skin, 1 - 0.3 * g["brow_lower"])
    y = eye_y - I["brow_gap"] + 0.05
    for s in (-1.0, 1.0):
        p.line(np.stack([p.pt(s * 0.035, y - 0.02), p.pt(s * 0.045, y + 0.1)], 1), c, 0.01, on=g["brow_lower"] > 0.15)

    # nose
    ny = I["nose_y"] - 0.04 * g["nose_wrinkle"] - 0.02 * g["upper_lip_raise"]
    nw = I["nose_w"] * (1 + 0.25 * g["nose_wrinkle"] + 0.1 * g["upper_lip_raise"])
    bridge = np.stack([p.pt(-0.07, eye_y + 0.04), p.pt(-0.075, 0.08), p.pt(-0.09, ny - 0.06)], 1)
    p.line(bridge, p.col(skin, 0.9), 0.012, dz=np.array([0.1, 0.2, 0.25]))
    for s in (-1.0, 1.0):
        wing = _curve(p.pt(s * nw * 0.75, ny - 0.08), p.pt(s * nw, ny - 0.01), p.pt(s * 0.05, ny + 0.045), 7)
        p.line(wing, p.col(skin, 0.72), 0.014, dz=0.12)
        p.ellipse(p.pt(s * 0.065, ny + 0.025), 0.032 * fw, 0.016 * fh, p.col(skin, 0.35), dz=0.2)
    p.line(
        _curve(p.pt(-0.05, ny + 0.045), p.pt(0.0, ny + 0.06), p.pt(0.05, ny + 0.045), 5),
        p.col(skin, 0.82),
        0.01,
        dz=0.22,
    )
    c = p.col(skin, 1 - 0.4 * g["nose_wrinkle"])
    for k in range(3):
        y = eye_y + 0.07 + 0.055 * k
        p.line(
            _curve(p.pt(-0.1, y + 0.012), p.pt(0.0, y - 0.008), p.pt(0.1, y + 0.012), 5),
            c,
            0.011,
            dz=0.15,
            on=g["nose_wrinkle"] > 0.1,
        )

    # mouth: corners, then the inner and outer lip curves through the centre line
    my = I["mouth_y"] - 0.025 * g["chin_raise"]
    half = I["mouth_w"] * (1 + 0.3 * g["lip_stretch"] - 0.18 * g["lip_press"] - 0.15 * g["jaw_drop"])
    corners = []
    for s, side in ((-1.0, "left"), (1.0, "right")):
        pull, dimp = g[f"lip_corner_pull_{side}"], g[f"dimpler_{side}"]
        corners.append(
            p.pt(
                s * (half + 0.08 * pull - 0.03 * dimp),
                my
                - 0.13 * pull
                + 0.11 * g["lip_corner_depress"]
                + 0.03 * g["lip_stretch"]
                - 0.04 * dimp
                + 0.02 * g["chin_raise"],
            )
        )
    left, right = corners
    gap = 0.27 * g["jaw_drop"]
    ju = my - 0.3 * gap - 0.05 * g["upper_lip_raise"]
    jl = my + 0.7 * gap
    tu = I["lip_upper"] * (1 - 0.7 * g["lip_press"]) * (1 - 0.3 * g["lip_stretch"])
    tl = I["lip_lower"] * (1 - 0.65 * g["lip_press"] + 0.3 * g["chin_raise"]) * (1 - 0.3 * g["lip_stretch"])
    up_in = _curve(left, p.pt(0.0, ju), right, 11)
    lo_in = _curve(left, p.pt(0.0, jl), right, 11)
    up_out = _curve(left, p.pt(0.0, ju - tu - 0.01), right, 11)
    up_out[:, 4:7, 1] += 0.012  # Cupid's bow
    lo_out = _curve(left, p.pt(0.0, jl + tl), right, 11)
    lips = skin * (np.array([0.78, 0.52, 0.52]) if color else 0.66)
    dz = 0.08
    is_open = jl - ju > 0.012
    p.poly(np.concatenate([up_in, lo_in[:, ::-1]], 1), p.col((0.18, 0.06, 0.06)), dz=dz, on=is_open)
    teeth_bot = up_in[:, ::-1] * [0.9, 1.0] + np.stack([np.zeros(b), np.minimum(0.6 * (jl - ju), 0.07)], -1)[:, None]
    p.poly(np.concatenate([up_in, teeth_bot], 1), p.col((0.92, 0.9, 0.86)), dz=dz, on=is_open)
    p.poly(np.concatenate([up_out, up_in[:, ::-1]], 1), p.col(lips), dz=dz)
    p.poly(np.concatenate([lo_in, lo_out[:, ::-1]], 1), p.col(lips, 1.05), dz=dz)
    p.line(up_in, p.col(lips, 0.55), 0.012, dz=dz, on=~is_open)
    for s, corner, dimp in ((-1.0, left, g["dimpler_left"]), (1.0, right, g["dimpler_right"])):
        crease = np.stack([corner + [s * 0.03, -0.07], corner + [s * 0.07, -0.01], corner + [s * 0.05, 0.06]], 1)
        p.line(crease, p.col(skin, 1 - 0.45 * dimp), 0.014, on=dimp > 0.1)

    # nasolabial folds and the chin crease
    shared = np.maximum.reduce([cheek, g["upper_lip_raise"], g["nose_wrinkle"], 0.6 * g["lip_stretch"]])
    for s, corner, side in ((-1.0, left, "left"), (1.0, right, "right")):
        fold = I["fold_base"] + 0.75 * np.maximum.reduce(
            [shared, 0.8 * g[f"lip_corner_pull_{side}"], 0.8 * g[f"dimpler_{side}"]]
        )
        top = p.pt(s * (nw + 0.03), ny - 0.03)
        end = corner + [s * 0.07, 0.05]
        p.line(
            _curve(top, p.pt(s * (np.abs(end[:, 0]) + 0.04), 0.5 * (top[:, 1] + end[:, 1])), end, 7),
            p.col(skin, 1 - 0.3 * np.minimum(fold, 1.0)),
            0.012,
        )
    y = jl + tl + 0.09
    p.line(
        _curve(p.pt(-0.13, y + 0.02), p.pt(0.0, y - 0.012), p.pt(0.13, y + 0.02), 5),
        p.col(skin, 1 - 0.3 * g["chin_raise"]),
        0.012,
        on=g["chin_raise"] > 0.15,
    )

    # glasses (an identity trait), then occluders that move with the head
    frame = p.col((0.12, 0.1, 0.1))
    glasses = I["glasses"] > 0.5
    for s in (-1.0, 1.0):
        p.ellipse(p.pt(s * eye_x, eye_y + 0.01), (eye_w + 0.08) * fw, 0.13 * fh, frame, 0.014, dz=0.1, on=glasses)
    bx = eye_x - eye_w - 0.06
    p.line(np.stack([p.pt(-bx, eye_y - 0.02), p.pt(bx, eye_y - 0.02)], 1), frame, 0.012, dz=0.2, on=glasses)
    _occluder_ops(p, I, nz, ny)
    return p


def _occluder_ops(p: _Ops, I: dict[str, np.ndarray], nz: dict[str, np.ndarray], ny: np.ndarray) -> None:
    """Sunglasses, a face mask and a hand: occluders attached to the head (``"rect"`` is added after the pose)."""
    occ, u = nz["occlusion"], nz["occlusion_u"]
    fw, fh, eye_x, eye_y, eye_w = I["face_w"], I["face_h"], I["eye_x"], I["eye_y"], I["eye_w"]

    on = occ == OCCLUSION_TYPES.index("sunglasses")
    tint = p.col(0.05 + 0.12 * u[:, :3])
    for s in (-1.0, 1.0):
        p.ellipse(p.pt(s * eye_x, eye_y + 0.02), (eye_w + 0.1) * fw, 0.15 * fh, tint, dz=0.12, on=on)
        arm = np.stack([p.pt(s * (eye_x + eye_w + 0.08), eye_y - 0.02), p.pt(s * 0.98, eye_y - 0.05)], 1)
        p.line(arm, tint, 0.02, on=on)
    p.line(np.stack([p.pt(-0.2, eye_y - 0.03), p.pt(0.2, eye_y - 0.03)], 1), tint, 0.02, dz=0.25, on=on)

    on = occ == OCCLUSION_TYPES.index("mask")
    base = np.where(u[:, :1] < 0.5, [0.78, 0.85, 0.92], [0.92, 0.92, 0.9]) * (0.85 + 0.15 * u[:, 1:2])
    top = ny - 0.12 - 0.1 * u[:, 2]
    xs = np.array([-0.97, -0.3, 0.0, 0.3, 0.97, 0.9, 0.45, 0.0, -0.45, -0.9])
    ys = np.stack(
        [top + 0.12, top, top - 0.03, top, top + 0.12] + [np.full(p.b, v) for v in (0.62, 0.92, 1.02, 0.92, 0.62)], 1
    )
    p.poly(np.stack([np.broadcast_to(xs, ys.shape), ys], -1), p.col(base), on=on)
    for dy in (0.2, 0.45):
        p.line(np.stack([p.pt(-0.9, top + dy), p.pt(0.9, top + dy)], 1), p.col(base, 0.85), 0.01, on=on)

    on = occ == OCCLUSION_TYPES.index("hand")  # a palm over the mouth, an eye or a cheek, fingers pointing away
    side = np.where(u[:, 1] < 0.5, 1.0, -1.0)
    where = np.minimum((u[:, 0] * 3).astype(int), 2)
    tx = np.choose(where, [np.zeros(p.b), side * eye_x, side * 0.55]) + 0.2 * (u[:, 2] - 0.5)
    ty = np.choose(where, [I["mouth_y"], eye_y, I["nose_y"] + 0.15]) + 0.2 * (u[:, 3] - 0.5)
    c = p.proj(p.pt(tx, ty)[:, None], 0.3)[:, 0]
    angle = 360.0 * u[:, 4]
    skin = I["skin"] * (0.9 + 0.15 * u[:, 5:6])
    col = p.col(skin)
    pw, ph = 0.3 * fw, 0.24 * fh
    theta = np.radians(angle)
    d = np.stack([np.cos(theta), np.sin(theta)], -1)
    nrm = np.stack([-d[:, 1], d[:, 0]], -1)
    for k, length in enumerate((0.5, 0.6, 0.55, 0.42)):
        a0 = c + nrm * ((k - 1.5) * 0.34 * ph)[:, None]
        a1 = a0 + d * (pw + length * fw)[:, None]
        p.line(np.stack([a0, a1], 1), col, 0.1, raw=True, on=on)
    p.ellipse(c, pw, ph, col, angle=angle, raw=True, on=on)
    a0 = c + nrm * (0.3 * ph)[:, None] + d * (0.2 * pw)[:, None]
    p.line(np.stack([a0, a0 + d * (0.8 * pw)[:, None]], 1), p.col(skin, 0.8), 0.008, raw=True, on=on)


def _supersample(size: int) -> int:
    return max(2, math.ceil(128 / size))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    v = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return v[None, :], v[:, None]


@functools.lru_cache(maxsize=1)
def _log_levels() -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.linspace(0.0, 1.0, 1024, dtype=np.float32))


def _render_batch(
    I: dict[str, np.ndarray],
    actions: np.ndarray,
    nz: dict[str, np.ndarray],
    size: int,
    color: bool,
    rngs: Sequence[np.random.Generator] | None,
) -> np.ndarray:
    """Render B faces.

    Args:
        I: identity columns (see :func:`_identity_table`), one row per face.
        actions: (B, A) action values in [0, 1].
        nz: nuisance columns: ``yaw``, ``roll`` (degrees), ``scale``, ``shift`` (B, 2) in image fractions, ``gaze``
            (B, 2), ``background``, ``clothing`` (B, 3) RGB, ``occlusion`` (B,) index into :data:`OCCLUSION_TYPES`
            or -1, ``occlusion_u`` (B, 6) placement, ``light_dir`` (radians), ``light_strength``, ``shadow``,
            ``contrast``, ``brightness``, ``gamma``, ``blur`` (sigma, pixels), ``noise_std``.
        size: output side. color: RGB or grayscale.
        rngs: one generator per face for the sensor noise (None: no noise).

    Returns:
        (B, size, size) uint8, or (B, size, size, 3) uint8 RGB.
    """
    ss = _supersample(size)
    m = size * ss
    ch = 3 if color else 1
    ops = _face_ops(I, actions, nz, m, color)
    bg = np.clip(nz["background"], 0.0, 1.0) * 255.0
    bg = bg if color else (bg @ _LUMA)[:, None]
    n = len(actions)
    out = np.empty((n, size, size, ch), np.float32)
    canvas = np.empty((m, m, ch) if color else (m, m), np.uint8)
    fill = np.round(bg).astype(np.uint8)
    for b in range(n):
        canvas[:] = fill[b]
        ops.replay(b, canvas)
        out[b] = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, ch)
    out *= np.float32(1 / 255)

    rect = OCCLUSION_TYPES.index("rect")
    for j in np.flatnonzero(nz["occlusion"] == rect):  # an object between camera and face, not attached to the head
        u = nz["occlusion_u"][j]
        w, h = (0.25 + 0.25 * u[0]) * size, (0.2 + 0.25 * u[1]) * size
        x0, y0 = (0.1 + 0.8 * u[2]) * size - w / 2, (0.15 + 0.75 * u[3]) * size - h / 2
        rgb = np.array([u[4], u[5], 1 - u[4]]) * 0.9 + 0.05
        out[j, max(0, int(y0)) : max(0, int(y0 + h)), max(0, int(x0)) : max(0, int(x0 + w))] = (
            rgb if color else rgb @ _LUMA
        )

    # lighting: directional gradient and a soft side shadow, then contrast about mid-grey, brightness and gamma
    def col32(key: str) -> np.ndarray:
        return np.asarray(nz[key], np.float32)[:, None, None]

    gx, gy = _grid(size)
    proj = gx * np.cos(col32("light_dir")) + gy * np.sin(col32("light_dir"))
    shade = np.clip(np.float32(0.5) - np.float32(1.5) * proj, 0.0, 1.0)  # 1 on the far side, soft edge
    field = (1.0 + col32("light_strength") * proj) * (1.0 - col32("shadow") * shade)
    out *= field[..., None]
    out -= np.float32(0.5)
    out *= col32("contrast")[..., None]
    out += (np.float32(0.5) + col32("brightness"))[..., None]
    np.clip(out, 0.0, 1.0, out=out)
    log_levels = _log_levels()
    for j in np.flatnonzero(nz["gamma"] != 1.0):  # gamma through a 1024-level table (np.power is slow)
        lut = np.exp(log_levels * np.float32(nz["gamma"][j]))
        out[j] = np.take(lut, (out[j] * np.float32(1023.0) + np.float32(0.5)).astype(np.int32))
    for j in np.flatnonzero(nz["blur"] > 0.05):
        out[j] = cv2.GaussianBlur(out[j], (0, 0), float(nz["blur"][j])).reshape(size, size, ch)
    if rngs is not None:
        for b, rng in enumerate(rngs):
            if nz["noise_std"][b] > 0:
                out[b] += rng.standard_normal((size, size, ch), dtype=np.float32) * np.float32(nz["noise_std"][b])
    img = np.clip(out * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return img if color else img[..., 0]


def render_face(
    expression: str | Mapping[str, float] = "neutral",
    *,
    intensity: float = 1.0,
    identity: int | FaceIdentity = 0,
    seed: int = 0,
    size: int = 64,
    color: bool = False,
    roll: float = 0.0,
    yaw: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    gaze: tuple[float, float] = (0.0, 0.0),
    occlusion: str | None = None,
    occlusion_u: Sequence[float] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
    lighting: float = 0.0,
    light_dir: float = 0.0,
    blur: float = 0.0,
    noise_std: float = 0.0,
    background: tuple[float, float, float] = (0.55, 0.55, 0.58),
    clothing: tuple[float, float, float] = (0.3, 0.35, 0.45),
    rest: bool = True,
) -> np.ndarray:
    """Render one face with explicit settings (for demos of each knob).

    Args:
        expression: class name, blend ``{"fear": 0.7, "surprise": 0.3}``, or explicit actions (see
            :func:`expression_actions`).
        intensity: expression intensity in [0, 1].
        identity: identity number (drawn from ``seed``) or a :class:`FaceIdentity`.
        seed: master seed the identity number refers to (and the sensor-noise seed).
        size: image side in pixels. color: RGB (True) or grayscale.
        roll: in-plane rotation, degrees. yaw: head yaw, degrees. scale: zoom. shift: (dx, dy) fraction of the side.
        gaze: iris offset (x, y) in [-1, 1].
        occlusion: None or one of :data:`OCCLUSION_TYPES`; ``occlusion_u`` (6 numbers in [0, 1]) places it.
        lighting: side-light strength in [0, 1] from direction ``light_dir`` (radians; 0 = lit from the right).
        blur: Gaussian blur sigma in pixels. noise_std: sensor noise std (0..1 intensity scale).
        background, clothing: RGB in [0, 1].
        rest: add the identity's resting face to the actions.

    Returns:
        (size, size) uint8, or (size, size, 3) uint8 RGB when ``color``.
    """
    ident = identity if isinstance(identity, FaceIdentity) else FaceIdentity.sample(seed, identity)
    acts = np.array(list(expression_actions(expression, intensity).values()))
    if rest:
        acts = np.clip(acts + np.asarray(ident.rest), 0.0, 1.0)
    if occlusion is not None and occlusion not in OCCLUSION_TYPES:
        raise ValueError(f"occlusion must be None or one of {OCCLUSION_TYPES}, got {occlusion!r}")
    values = {
        "yaw": [yaw],
        "roll": [roll],
        "scale": [scale],
        "shift": [shift],
        "gaze": [gaze],
        "background": [background],
        "clothing": [clothing],
        "occlusion": [-1 if occlusion is None else OCCLUSION_TYPES.index(occlusion)],
        "occlusion_u": [occlusion_u],
        "light_dir": [light_dir],
        "light_strength": [0.7 * lighting],
        "shadow": [0.5 * lighting],
        "contrast": [1.0],
        "brightness": [0.0],
        "gamma": [1.0],
        "blur": [blur],
        "noise_std": [noise_std],
    }
    nz = {k: np.asarray(v, np.float64) if k != "occlusion" else np.asarray(v, np.int64) for k, v in values.items()}
    rngs = [np.random.default_rng([int(seed), 7])] if noise_std > 0 else None
    return _render_batch(_identity_table([ident]), acts[None], nz, int(size), bool(color), rngs)[0]
