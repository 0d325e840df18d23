// fernb's interactive scatter map (an anywidget front end; no dependencies, nothing fetched).
// Canvas layers: the points (re-drawn when the model changes) and an overlay (hover, links, selection, lasso).
// Hover shows a tooltip with the face; a click sets `selected`; a drag (lasso or box) sets `selection`.
// With `xlabel` or `ylabel` set, the map is a plot: margins, a grid with ticks, axis names (`aspect` "free": the two
// axes scaled apart, for columns of different ranges).

const PAD = 0.05;
const HIT_PX = 9;

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function star(ctx, x, y, r) {
  ctx.beginPath();
  for (let k = 0; k < 10; k++) {
    const a = -Math.PI / 2 + (k * Math.PI) / 5;
    const rr = k % 2 ? r * 0.45 : r;
    ctx.lineTo(x + rr * Math.cos(a), y + rr * Math.sin(a));
  }
  ctx.closePath();
}

// about `n` round tick values covering [lo, hi]
function ticks(lo, hi, n = 5) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((v) => span / v <= n) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function tickText(v, step) {
  const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(digits);
}

function inPolygon(px, py, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if (yi > py !== yj > py && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function render({ model, el: root }) {
  root.classList.add("fernb-map");
  const bar = el("div", "fernb-map-bar", root);
  const modes = {};
  for (const m of ["lasso", "box"]) {
    const b = el("button", "fernb-map-mode", bar);
    b.textContent = m === "lasso" ? "Lasso" : "Box";
    b.dataset.mode = m;
    b.onclick = () => {
      model.set("mode", m);
      model.save_changes();
    };
    modes[m] = b;
  }
  const clear = el("button", "fernb-map-clear", bar);
  clear.textContent = "Clear selection";
  clear.onclick = () => {
    model.set("selection", []);
    model.set("selected", -1);
    model.save_changes();
  };
  const caption = el("span", "fernb-map-caption", bar);
  const wrap = el("div", "fernb-map-wrap", root);
  const base = el("canvas", "fernb-map-points", wrap);
  const over = el("canvas", "fernb-map-overlay", wrap);
  const tip = el("div", "fernb-map-tip", wrap);
  const tipImg = el("img", "fernb-map-tip-face", tip);
  const tipText = el("div", "fernb-map-tip-text", tip);
  tip.style.display = "none";

  let W = 0;
  let H = 0;
  let shown = { x: [], y: [] }; // positions on screen now (animated towards the model's)
  let anim = null;
  let hover = -1;
  let drag = null;
  let draws = 0;

  const get = (k) => model.get(k) || [];

  function size() {
    W = model.get("width");
    H = model.get("height");
    const dpr = window.devicePixelRatio || 1;
    for (const c of [base, over]) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
      c.style.width = W + "px";
      c.style.height = H + "px";
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    wrap.style.width = W + "px";
    wrap.style.height = H + "px";
  }

  const axesOn = () => Boolean(model.get("xlabel") || model.get("ylabel"));

  // pixels kept free around the points: none for a map, room for ticks and axis names for a plot
  function margins() {
    return axesOn() ? { l: 46, r: 10, t: 8, b: 34 } : { l: 0, r: 0, t: 0, b: 0 };
  }

  // map coordinates -> pixels: equal aspect (unless `aspect` is "free"), the run's shared bounds (so checkpoints
  // keep one frame)
  function frame() {
    let [x0, x1, y0, y1] = model.get("bounds");
    if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
    if (!(y1 > y0)) [y0, y1] = [y0 - 1, y0 + 1];
    const px = (x1 - x0) * PAD;
    const py = (y1 - y0) * PAD;
    x0 -= px; x1 += px; y0 -= py; y1 += py;
    const m = margins();
    const w = W - m.l - m.r;
    const h = H - m.t - m.b;
    let kx = Math.min(w / (x1 - x0), h / (y1 - y0));
    let ky = kx;
    if (model.get("aspect") === "free") [kx, ky] = [w / (x1 - x0), h / (y1 - y0)];
    const ox = m.l + (w - kx * (x1 - x0)) / 2 - kx * x0;
    const oy = m.t + (h - ky * (y1 - y0)) / 2 + ky * y1;
    return { sx: (x) => ox + kx * x, sy: (y) => oy - ky * y, ix: (p) => (p - ox) / kx, iy: (p) => (oy - p) / ky };
  }

  // a plot's grid, ticks and axis names (under the points)
  function drawAxes(ctx, f) {
    const m = margins();
    const [left, right, top, bottom] = [m.l, W - m.r, m.t, H - m.b];
    const xt = ticks(f.ix(left), f.ix(right));
    const yt = ticks(f.iy(bottom), f.iy(top));
    const xs = xt.length > 1 ? xt[1] - xt[0] : 1;
    const ys = yt.length > 1 ? yt[1] - yt[0] : 1;
    ctx.save();
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#ececec";
    ctx.fillStyle = "#555";
    ctx.font = "10px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of xt) {
      const x = Math.round(f.sx(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, bottom);
      ctx.stroke();
      ctx.fillText(tickText(v, xs), x, bottom + 3);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of yt) {
      const y = Math.round(f.sy(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(right, y);
      ctx.stroke();
      ctx.fillText(tickText(v, ys), left - 4, y);
    }
    ctx.strokeStyle = "#999";
    ctx.strokeRect(left + 0.5, top + 0.5, right - left - 1, bottom - top - 1);
    ctx.fillStyle = "#222";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(model.get("xlabel") || "", (left + right) / 2, H - 1);
    ctx.translate(11, (top + bottom) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(model.get("ylabel") || "", 0, 0);
    ctx.restore();
  }

  function screen(i) {
    const f = frame();
    return [f.sx(shown.x[i]), f.sy(shown.y[i])];
  }

  function drawPoints() {
    const t0 = performance.now();
    const ctx = base.getContext("2d");
    ctx.clearRect(0, 0, W, H);
    const f = frame();
    if (axesOn()) drawAxes(ctx, f);
    const colours = get("colours");
    const faded = get("faded");
    const ring = get("ring");
    const n = shown.x.length;
    const r = Math.max(1.6, Math.min(4.5, 60 / Math.sqrt(Math.max(n, 1))));
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#d9d9d9";
    for (let i = 0; i < n; i++) {
      if (!faded[i]) continue;
      ctx.fillRect(f.sx(shown.x[i]) - r * 0.6, f.sy(shown.y[i]) - r * 0.6, r * 1.2, r * 1.2);
    }
    ctx.globalAlpha = 0.85;
    for (let i = 0; i < n; i++) {
      if (faded[i]) continue;
      ctx.fillStyle = colours[i] || "#444";
      ctx.beginPath();
      ctx.arc(f.sx(shown.x[i]), f.sy(shown.y[i]), r, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "black";
    ctx.lineWidth = 0.7;
    for (let i = 0; i < n; i++) {
      if (!ring[i] || faded[i]) continue;
      ctx.beginPath();
      ctx.arc(f.sx(shown.x[i]), f.sy(shown.y[i]), r + 2, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.font = "11px sans-serif";
    for (const a of get("anchors")) {
      const ax = f.sx(a.x);
      const ay = f.sy(a.y);
      ctx.fillStyle = a.colour;
      ctx.strokeStyle = "black";
      ctx.lineWidth = 1.2;
      star(ctx, ax, ay, 10);
      ctx.fill();
      ctx.stroke();
      if (a.text) {
        ctx.fillStyle = "rgba(255,255,255,0.85)";
        const w = ctx.measureText(a.text).width;
        ctx.fillRect(ax + 9, ay - 18, w + 6, 14);
        ctx.fillStyle = "black";
        ctx.fillText(a.text, ax + 12, ay - 7);
      }
    }
    const ms = performance.now() - t0;
    draws += 1;
    root.dataset.draws = String(draws);
    root.dataset.drawMs = ms.toFixed(2);
    caption.textContent = model.get("title");
    drawOverlay();
    return ms;
  }

  function drawOverlay() {
    const ctx = over.getContext("2d");
    ctx.clearRect(0, 0, W, H);
    const f = frame();
    const sel = model.get("selected");
    const n = shown.x.length;
    ctx.strokeStyle = "rgba(0,0,0,0.9)";
    ctx.lineWidth = 1.5;
    for (const i of get("selection")) {
      if (i < 0 || i >= n) continue;
      ctx.strokeRect(f.sx(shown.x[i]) - 4, f.sy(shown.y[i]) - 4, 8, 8);
    }
    if (sel >= 0 && sel < n) {
      const [px, py] = [f.sx(shown.x[sel]), f.sy(shown.y[sel])];
      ctx.lineWidth = 0.8;
      for (const j of get("links")) {
        if (j < 0 || j >= n) continue;
        ctx.beginPath();
        ctx.moveTo(px, py);
        ctx.lineTo(f.sx(shown.x[j]), f.sy(shown.y[j]));
        ctx.stroke();
        ctx.beginPath();
        ctx.arc(f.sx(shown.x[j]), f.sy(shown.y[j]), 6, 0, 2 * Math.PI);
        ctx.stroke();
      }
      const a = get("anchors")[model.get("anchor_link")];
      if (a) {
        ctx.save();
        ctx.strokeStyle = "crimson";
        ctx.lineWidth = 1.6;
        ctx.setLineDash([5, 4]);
        ctx.beginPath();
        ctx.moveTo(px, py);
        ctx.lineTo(f.sx(a.x), f.sy(a.y));
        ctx.stroke();
        ctx.restore();
      }
      ctx.strokeStyle = "crimson";
      ctx.lineWidth = 2.5;
      ctx.beginPath();
      ctx.arc(px, py, 9, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (hover >= 0 && hover < n) {
      ctx.strokeStyle = "#222";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(f.sx(shown.x[hover]), f.sy(shown.y[hover]), 7, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (drag && drag.path.length > 1) {
      ctx.save();
      ctx.strokeStyle = "#1565c0";
      ctx.fillStyle = "rgba(21,101,192,0.08)";
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1.3;
      ctx.beginPath();
      for (const [x, y] of region(drag)) ctx.lineTo(x, y);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      ctx.restore();
    }
  }

  // the drag's region as a polygon in pixels (a box has four corners)
  function region(d) {
    if (d.mode !== "box") return d.path;
    const [a, b] = [d.path[0], d.path[d.path.length - 1]];
    return [a, [b[0], a[1]], b, [a[0], b[1]]];
  }

  function nearest(mx, my) {
    const f = frame();
    const faded = get("faded");
    let best = -1;
    let bd = HIT_PX * HIT_PX;
    for (let i = 0; i < shown.x.length; i++) {
      if (faded[i]) continue;
      const dx = f.sx(shown.x[i]) - mx;
      const dy = f.sy(shown.y[i]) - my;
      const d = dx * dx + dy * dy;
      if (d < bd) [bd, best] = [d, i];
    }
    return best;
  }

  function showTip(i, mx, my) {
    if (i < 0) {
      tip.style.display = "none";
      return;
    }
    const thumbs = get("thumbs");
    tipImg.style.display = thumbs[i] ? "block" : "none";
    if (thumbs[i]) tipImg.src = thumbs[i];
    tipText.replaceChildren();
    for (const line of String(get("tips")[i] || `#${i}`).split("\n")) el("div", "", tipText).textContent = line;
    tip.dataset.index = String(i);
    tip.style.display = "flex";
    const left = mx + 14 + 230 > W ? mx - 14 - 230 : mx + 14;
    tip.style.left = Math.max(0, left) + "px";
    tip.style.top = Math.max(0, Math.min(H - 80, my - 10)) + "px";
  }

  function pos(ev) {
    const r = over.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  over.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    drag = { mode: ev.shiftKey ? "box" : model.get("mode"), path: [pos(ev)], far: 0 };
  });
  over.addEventListener("mousemove", (ev) => {
    const [mx, my] = pos(ev);
    if (drag) {
      drag.path.push([mx, my]);
      drag.far = Math.max(drag.far, Math.hypot(mx - drag.path[0][0], my - drag.path[0][1]));
      showTip(-1);
      drawOverlay();
      return;
    }
    const i = nearest(mx, my);
    if (i !== hover) {
      hover = i;
      drawOverlay();
    }
    showTip(i, mx, my);
  });
  over.addEventListener("mouseleave", () => {
    hover = -1;
    showTip(-1);
    drawOverlay();
  });
  const onUp = (ev) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    const [mx, my] = pos(ev);
    const [x0, y0] = d.path[0];
    if (Math.max(d.far, Math.hypot(mx - x0, my - y0)) < 4) {
      model.set("selected", nearest(mx, my));
    } else {
      d.path.push([mx, my]);
      const poly = region(d);
      const f = frame();
      const faded = get("faded");
      const inside = [];
      for (let i = 0; i < shown.x.length; i++) {
        if (!faded[i] && inPolygon(f.sx(shown.x[i]), f.sy(shown.y[i]), poly)) inside.push(i);
      }
      model.set("selection", inside);
    }
    model.save_changes();
    drawOverlay();
  };
  window.addEventListener("mouseup", onUp);

  function target() {
    return { x: get("x"), y: get("y") };
  }

  // a change of positions (another checkpoint of the same map) glides when the samples are the same
  function moveTo(next) {
    if (anim) cancelAnimationFrame(anim);
    const from = shown;
    if (from.x.length !== next.x.length || !model.get("animate_ms")) {
      shown = next;
      report(drawPoints());
      return;
    }
    const t0 = performance.now();
    const dur = model.get("animate_ms");
    const step = () => {
      const u = Math.min(1, (performance.now() - t0) / dur);
      const e = u * u * (3 - 2 * u);
      shown = {
        x: next.x.map((v, i) => from.x[i] + (v - from.x[i]) * e),
        y: next.y.map((v, i) => from.y[i] + (v - from.y[i]) * e),
      };
      const ms = drawPoints();
      if (u < 1) anim = requestAnimationFrame(step);
      else {
        anim = null;
        shown = next;
        report(ms);
      }
    };
    anim = requestAnimationFrame(step);
  }

  function report(ms) {
    model.set("draw_ms", ms);
    model.save_changes();
  }

  function syncMode() {
    for (const [m, b] of Object.entries(modes)) b.classList.toggle("fernb-active", m === model.get("mode"));
  }

  const redraw = () => report(drawPoints());
  let moving = false; // x and y arrive together: one glide for both
  const onMove = () => {
    if (moving) return;
    moving = true;
    queueMicrotask(() => {
      moving = false;
      moveTo(target());
    });
  };
  model.on("change:x", onMove);
  model.on("change:y", onMove);
  for (const k of ["colours", "faded", "ring", "anchors", "bounds", "title", "xlabel", "ylabel", "aspect"]) {
    model.on(`change:${k}`, redraw);
  }
  for (const k of ["selected", "selection", "links", "anchor_link"]) model.on(`change:${k}`, drawOverlay);
  model.on("change:mode", syncMode);
  model.on("change:width", () => (size(), redraw()));
  model.on("change:height", () => (size(), redraw()));

  // for tests and scripts: how many points, and where point i is on the page
  root.fernbCount = () => shown.x.length;
  root.fernbScreen = (i) => {
    const r = over.getBoundingClientRect();
    const [x, y] = screen(i);
    return { x: r.left + x, y: r.top + y };
  };

  size();
  syncMode();
  shown = target();
  redraw();
  return () => {
    if (anim) cancelAnimationFrame(anim);
    window.removeEventListener("mouseup", onUp);
  };
}

export default { render };
