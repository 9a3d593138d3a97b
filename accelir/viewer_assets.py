"""The stylesheet and script of the HTML graph view, kept apart from the Python that fills in the data.

The script lays the graph out in layers (longest path from the sources; a source sits
just above its first user), gives every edge that spans more than one layer a chain
of narrow slots in the layers it crosses (one chain per source output, shared by its
users), and packs each layer left to right without overlap.  So a long edge runs
through gaps between boxes and never under one: residual and skip connections stay
visible.  Edges leave a multi-output node from one port per output index, each
labelled once, and enter a node at one port per input, so two inputs from one
operand's side still show as two edges.

The page is driven by the mouse (wheel zoom, drag pan, click for details) and, for
headless tests and links, by the URL hash: ``#find=TEXT``, ``#select=KEY``,
``#frame=LABEL``, ``#depth=N``, ``#expand=PATH``, ``#collapse=PATH`` joined with ``&``.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1em 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0.2em 0; } h2 { font-size: 1.1em; margin-top: 1.4em; border-bottom: 1px solid #ccc; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; }
td.bar { width: 300px; } td.bar div { background: #7aa7d6; height: 10px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; border: 1px solid #999; }
.toolbar { margin: 0.4em 0; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 13px; }
#main { display: flex; gap: 8px; height: 78vh; }
#view { position: relative; flex: 1; border: 1px solid #ccc; background: #fcfcfc; overflow: hidden;
        cursor: grab; user-select: none; }
#view.drag { cursor: grabbing; }
#graph { width: 100%; height: 100%; display: block; }
#minimap { position: absolute; right: 6px; top: 6px; border: 1px solid #aaa; background: rgba(255,255,255,0.85);
           cursor: pointer; }
#panel { width: 360px; border: 1px solid #ccc; padding: 6px; overflow: auto; font-size: 13px; }
#panel pre { white-space: pre-wrap; word-break: break-all; user-select: text; }
.node rect { stroke: #555; } .node:hover rect { stroke: #d00; stroke-width: 2; }
.node.hit rect { stroke: #e07000; stroke-width: 4; } .node.sel rect { stroke: #d00; stroke-width: 3; }
.node.added rect { stroke: #0a0; stroke-width: 4; } .node.replaced rect { stroke: #06c; stroke-width: 4; }
.node.removed rect { stroke: #d00; stroke-width: 4; stroke-dasharray: 5 3; }
.node.group rect { stroke-dasharray: 6 3; } .node.miss rect { stroke: #b00; stroke-dasharray: 2 2; }
.e { fill: none; stroke: #888; stroke-width: 1.2; } .e.back { stroke: #c66; }
.ol { font-size: 9px; fill: #555; }
.legend-added { color: #0a0; } .legend-replaced { color: #06c; } .legend-removed { color: #d00; }
.diff .add { color: #070; background: #eaffea; } .diff .del { color: #a00; background: #ffecec; }
.diff .hunk { color: #06c; } details { margin: 0.3em 0; } tr.pick { cursor: pointer; } tr.pick:hover { background: #eef; }
"""

SCRIPT = r"""
(function () {
  'use strict';
  var T0 = performance.now();
  var DATA = JSON.parse(document.getElementById('accelir-data').textContent);
  var BOX_H = 34, GAP_Y = 56, GAP_X = 18, CH = 7, M = 20, SLOT_W = 6, PORT = 16;
  var view = document.getElementById('view'), svg = document.getElementById('graph');
  var panel = document.getElementById('details'), info = document.getElementById('frameinfo');
  var mini = document.getElementById('minimap');
  var st = {frame: DATA.frames.length - 1, depth: 0, expanded: {}, collapsed: {}, compare: false, sel: null, find: '',
            hits: [], hit: -1, s: 1, tx: 0, ty: 0};
  var cur = null;  // the drawn view: {items, byKey, pos, w, h}

  function esc(t) { return String(t).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
                                    .replace(/"/g, '&quot;'); }
  function groupOf(it) {
    if (!it.module) return it.key;
    var parts = it.module.split('.');
    for (var c = 1; c <= parts.length; c++) {  // a layer collapsed by hand, outermost first
      var q = parts.slice(0, c).join('.');
      if (st.collapsed[q]) return 'g:' + q;
    }
    if (!st.depth) return it.key;
    var d = Math.min(st.depth, parts.length);
    for (;;) {
      var p = parts.slice(0, d).join('.');
      if (!st.expanded[p]) return 'g:' + p;
      if (d >= parts.length) return it.key;
      d++;
    }
  }

  // ----- the items and edges of the current frame, layers collapsed -----
  function build(frame) {
    var items = [], byKey = {}, of = {};
    frame.items.forEach(function (it) {
      var g = groupOf(it); of[it.key] = g;
      var v = byKey[g];
      if (!v) {
        v = g === it.key ? {key: it.key, label: it.label, sub: it.sub, fam: it.fam, outputs: it.outputs, members: [it]}
                         : {key: g, label: g.slice(2), sub: '', fam: 'group', outputs: 1, members: []};
        byKey[g] = v; items.push(v);
      }
      if (g !== it.key) v.members.push(it);
    });
    items.forEach(function (v) {
      if (v.fam === 'group') v.sub = v.members.length + ' nodes, click to expand';
      v.find = v.members.map(function (m) { return m.find; }).join(' ') + ' ' + v.key.toLowerCase();
      v.miss = v.members.some(function (m) { return m.miss; });
    });
    var edges = [], seen = {};
    frame.edges.forEach(function (e) {
      var s = of[e[0]], d = of[e[3]];
      if (s === d) return;
      var grouped = byKey[s].fam === 'group';
      var idx = grouped ? 0 : e[1], cnt = grouped ? 1 : e[2];
      var id = s + '>' + d + '#' + idx;
      if (grouped || byKey[d].fam === 'group') { if (seen[id]) return; seen[id] = 1; }
      edges.push({s: s, d: d, i: idx, c: cnt, id: id});
    });
    return {items: items, byKey: byKey, edges: edges};
  }

  function width(v, ins) {
    return Math.max(Math.max(v.label.length, v.sub.length, 4) * CH + 16, (v.outputs + 1) * PORT, (ins + 1) * 10);
  }

  // ----- layout: layers, slot chains for long edges, packing -----
  function layout(g) {
    var V = g.items, n = V.length, idx = {};
    V.forEach(function (v, k) { idx[v.key] = k; v.ins = 0; });
    var preds = V.map(function () { return []; }), succs = V.map(function () { return []; });
    g.edges.forEach(function (e) {
      e.a = idx[e.s]; e.b = idx[e.d]; V[e.b].ins++;
      if (e.a < e.b) { preds[e.b].push(e.a); succs[e.a].push(e.b); } else e.back = true;
    });
    V.forEach(function (v) { v.w = width(v, v.ins); });
    var layer = new Array(n).fill(0);
    for (var k = 0; k < n; k++) preds[k].forEach(function (p) { layer[k] = Math.max(layer[k], layer[p] + 1); });
    for (k = 0; k < n; k++) if (!preds[k].length && succs[k].length) {
      var lo = Infinity; succs[k].forEach(function (s) { lo = Math.min(lo, layer[s]); });
      layer[k] = Math.max(0, lo - 1);
    }
    // layout nodes: the items, then one slot per layer crossed by each chain (source, output index)
    var L = V.map(function (v, k) { return {w: v.w, layer: layer[k], pred: preds[k], real: true}; });
    var chains = {};
    g.edges.forEach(function (e) {
      if (e.back || layer[e.b] - layer[e.a] < 2) return;
      var ck = e.a + '#' + e.i, c = chains[ck];
      if (!c) c = chains[ck] = {src: e.a, slots: []};
      for (var l = layer[e.a] + 1 + c.slots.length; l < layer[e.b]; l++) {
        var prev = c.slots.length ? c.slots[c.slots.length - 1] : e.a;
        L.push({w: SLOT_W, layer: l, pred: [prev], real: false}); c.slots.push(L.length - 1);
      }
      e.chain = c;
    });
    var rows = [];
    L.forEach(function (u, k) { (rows[u.layer] = rows[u.layer] || []).push(k); });
    var centre = new Array(L.length);
    var succL = L.map(function () { return []; });
    L.forEach(function (u, k) { u.pred.forEach(function (p) { succL[p].push(k); }); });
    rows.forEach(function (row) {
      if (!row) return;
      pack(row, row.map(function (k) {
        var ps = L[k].pred.filter(function (p) { return centre[p] !== undefined; });
        return ps.length ? ps.reduce(function (a, p) { return a + centre[p]; }, 0) / ps.length : null;
      }), L, centre);
    });
    for (var r = rows.length - 1; r >= 0; r--) {
      var row = rows[r];
      if (!row || !row.some(function (k) { return L[k].real && !L[k].pred.length; })) continue;
      pack(row, row.map(function (k) {
        if (L[k].pred.length || !succL[k].length) return centre[k];
        return succL[k].reduce(function (a, s) { return a + centre[s]; }, 0) / succL[k].length;
      }), L, centre);
    }
    var left = Infinity, right = -Infinity;
    L.forEach(function (u, k) { left = Math.min(left, centre[k] - u.w / 2); right = Math.max(right, centre[k] + u.w / 2); });
    var X = function (k) { return centre[k] - left + M; }, Y = function (l) { return l * (BOX_H + GAP_Y) + M; };
    var pos = {};
    V.forEach(function (v, k) { pos[v.key] = {x: X(k) - v.w / 2, y: Y(layer[k]), w: v.w}; });
    // routes: out port -> the chain's slots -> in port
    var slotIn = {};
    g.edges.forEach(function (e) {
      var a = V[e.a], b = V[e.b], pa = pos[a.key], pb = pos[b.key];
      var sx = e.c > 1 ? pa.x + pa.w * (e.i + 1) / (e.c + 1) : pa.x + pa.w / 2;
      var j = slotIn[b.key] = (slotIn[b.key] || 0) + 1;
      var tx = pb.x + pb.w * j / (b.ins + 1);
      var pts = [[sx, pa.y + BOX_H]];
      if (e.chain) for (var l = layer[e.a] + 1; l < layer[e.b]; l++) {
        var sk = e.chain.slots[l - layer[e.a] - 1];
        pts.push([X(sk), Y(l)], [X(sk), Y(l) + BOX_H]);
      }
      pts.push([tx, pb.y]);
      e.pts = pts; e.port = [sx, pa.y + BOX_H];
    });
    return {pos: pos, w: right - left + 2 * M, h: (rows.length - 1) * (BOX_H + GAP_Y) + BOX_H + 2 * M};
  }

  function pack(row, ideal, L, centre) {
    var fallback = 0, wanted = {};
    row.forEach(function (k, i) {
      wanted[k] = ideal[i] === null || ideal[i] === undefined ? fallback : ideal[i];
      fallback = wanted[k] + L[k].w + GAP_X;
    });
    var order = row.slice().sort(function (a, b) { return wanted[a] - wanted[b] || a - b; });
    var rightEdge = -Infinity, placed = {}, shift = 0;
    order.forEach(function (k) {
      placed[k] = Math.max(wanted[k], rightEdge + GAP_X + L[k].w / 2); rightEdge = placed[k] + L[k].w / 2;
      shift += placed[k] - wanted[k];
    });
    shift /= row.length;
    row.forEach(function (k) { centre[k] = placed[k] - shift; });
  }

  function pathD(pts, back) {
    var d = 'M' + pts[0][0].toFixed(1) + ',' + pts[0][1].toFixed(1);
    if (back) return d + ' L' + pts[pts.length - 1][0].toFixed(1) + ',' + pts[pts.length - 1][1].toFixed(1);
    for (var i = 1; i < pts.length; i++) {
      var p = pts[i - 1], q = pts[i], f = function (v) { return v.toFixed(1); };
      if (i % 2 === 0) { d += ' L' + f(q[0]) + ',' + f(q[1]); continue; }  // down through a slot
      var m = (p[1] + q[1]) / 2;
      d += ' C' + f(p[0]) + ',' + f(m) + ' ' + f(q[0]) + ',' + f(m) + ' ' + f(q[0]) + ',' + f(q[1]);
    }
    return d;
  }

  // ----- drawing -----
  function marks() {
    var f = DATA.frames[st.frame], m = {};
    if (st.compare && st.frame > 0) { (f.removed || []).forEach(function (k) { m[k] = 'removed'; }); return m; }
    (f.added || []).forEach(function (k) { m[k] = 'added'; });
    (f.replaced || []).forEach(function (k) { m[k] = 'replaced'; });
    return m;
  }

  function draw() {
    var t = performance.now();
    var frame = DATA.frames[st.compare && st.frame > 0 ? st.frame - 1 : st.frame];
    var g = build(frame), lay = layout(g), out = [], mk = marks(), labelled = {};
    g.edges.forEach(function (e) {
      out.push('<path class="e' + (e.back ? ' back' : '') + '" data-edge="' + esc(e.id) + '" d="' +
               pathD(e.pts, e.back) + '" marker-end="url(#arrow)"/>');
      var lk = e.s + '#' + e.i;
      if (e.c > 1 && !labelled[lk]) {
        labelled[lk] = 1;
        out.push('<text class="ol" x="' + (e.port[0] + 2).toFixed(1) + '" y="' + (e.port[1] + 10).toFixed(1) + '">' +
                 e.i + '</text>');
      }
    });
    g.items.forEach(function (v) {
      var p = lay.pos[v.key], fill = DATA.colours[v.fam] || '#f4f4f4';
      var cls = 'node' + (v.fam === 'group' ? ' group' : '') + (v.miss ? ' miss' : '');
      v.members.forEach(function (m) { if (mk[m.key]) cls += ' ' + mk[m.key]; });
      var rx = v.fam === 'input' || v.fam === 'output' ? 16 : 5;
      out.push('<g class="' + cls + '" data-key="' + esc(v.key) + '" data-op="' + esc(v.label) + '"><rect x="' +
               p.x.toFixed(1) + '" y="' + p.y.toFixed(1) + '" width="' + p.w + '" height="' + BOX_H + '" rx="' + rx +
               '" fill="' + fill + '"/><text x="' + (p.x + p.w / 2).toFixed(1) + '" y="' + (p.y + 14).toFixed(1) +
               '" text-anchor="middle" font-size="12" font-weight="bold">' + esc(v.label) + '</text><text x="' +
               (p.x + p.w / 2).toFixed(1) + '" y="' + (p.y + 28).toFixed(1) +
               '" text-anchor="middle" font-size="10" fill="#333">' + esc(v.sub) + '</text><title>' +
               esc(v.fam === 'group' ? v.key.slice(2) : v.members[0].details) + '</title></g>');
    });
    svg.innerHTML = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ' +
      'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>' +
      '<g id="vp">' + out.join('') + '</g>';
    cur = {g: g, pos: lay.pos, w: lay.w, h: lay.h};
    svg.setAttribute('data-width', lay.w.toFixed(0)); svg.setAttribute('data-height', lay.h.toFixed(0));
    var f = DATA.frames[st.frame];
    info.textContent = f.label + (f.pass ? ': ' + (f.added || []).length + ' added, ' + (f.replaced || []).length +
      ' replacing, ' + (f.removed || []).length + ' removed' + (st.compare ? ' (showing the graph before, removed ' +
      'nodes marked)' : '') : '') + '; ' + g.items.length + ' boxes, ' + g.edges.length + ' edges';
    view.setAttribute('data-layout-ms', (performance.now() - t).toFixed(1));
    search(st.find, false);
    if (st.sel && !cur.g.byKey[st.sel]) st.sel = null;
    select(st.sel);
    drawMini();
  }

  // ----- zoom and pan -----
  function apply() {
    var vp = document.getElementById('vp');
    if (vp) vp.setAttribute('transform', 'translate(' + st.tx.toFixed(1) + ',' + st.ty.toFixed(1) + ') scale(' + st.s + ')');
    drawMiniView();
  }
  function fit() {
    var W = view.clientWidth || 800, H = view.clientHeight || 600;
    st.s = Math.min(W / cur.w, H / cur.h, 1);
    if (st.s < 0.25) st.s = Math.min(W / cur.w, 1);  // a tall graph: fit its width, scroll down it
    st.tx = (W - cur.w * st.s) / 2; st.ty = 0; apply();
  }
  function zoomAt(f, mx, my) {
    var s = Math.max(0.02, Math.min(8, st.s * f)); f = s / st.s;
    st.tx = mx - (mx - st.tx) * f; st.ty = my - (my - st.ty) * f; st.s = s; apply();
  }
  function centreOn(key) {
    var p = cur.pos[key]; if (!p) return;
    var W = view.clientWidth || 800, H = view.clientHeight || 600;
    if (st.s < 0.6) st.s = 1;
    st.tx = W / 2 - (p.x + p.w / 2) * st.s; st.ty = H / 2 - (p.y + BOX_H / 2) * st.s; apply();
  }
  view.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var r = view.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, {passive: false});
  var drag = null;
  view.addEventListener('pointerdown', function (ev) {
    if (ev.target === mini) return;
    drag = {x: ev.clientX, y: ev.clientY, tx: st.tx, ty: st.ty, moved: false};
    view.classList.add('drag');
  });
  window.addEventListener('pointermove', function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    st.tx = drag.tx + dx; st.ty = drag.ty + dy; apply();
  });
  window.addEventListener('pointerup', function (ev) {
    if (!drag) return;
    var moved = drag.moved; drag = null; view.classList.remove('drag');
    if (moved) return;
    var n = ev.target.closest ? ev.target.closest('.node') : null;
    if (!n) return;
    var key = n.getAttribute('data-key');
    if (key.slice(0, 2) === 'g:') {
      var p = key.slice(2);
      if (st.collapsed[p]) delete st.collapsed[p]; else st.expanded[p] = true;
      draw(); centreOn(firstBoxOf(p));
    }
    else select(key);
  });
  function firstBoxOf(prefix) {
    var k = null;
    cur.g.items.some(function (v) {
      var m = v.members[0];
      if (m && (m.module === prefix || m.module.indexOf(prefix + '.') === 0)) { k = v.key; return true; }
      return false;
    });
    return k;
  }

  // ----- minimap -----
  var miniScale = 1;
  function drawMini() {
    var H = Math.min(view.clientHeight - 12 || 300, 400), W = 120;
    miniScale = Math.min(W / cur.w, H / cur.h);
    mini.width = Math.max(20, Math.ceil(cur.w * miniScale)); mini.height = Math.max(20, Math.ceil(cur.h * miniScale));
    mini.hidden = cur.w <= (view.clientWidth || 800) && cur.h <= (view.clientHeight || 600);  // all of it in view
    drawMiniView();
  }
  function drawMiniView() {
    if (!cur) return;
    var c = mini.getContext('2d');
    if (!c) return;
    c.clearRect(0, 0, mini.width, mini.height);
    cur.g.items.forEach(function (v) {
      var p = cur.pos[v.key];
      c.fillStyle = DATA.colours[v.fam] || '#ccc';
      c.fillRect(p.x * miniScale, p.y * miniScale, Math.max(1, p.w * miniScale), Math.max(1, BOX_H * miniScale));
    });
    var W = view.clientWidth || 800, H = view.clientHeight || 600;
    c.strokeStyle = '#d00'; c.lineWidth = 1.5;
    c.strokeRect(-st.tx / st.s * miniScale, -st.ty / st.s * miniScale, W / st.s * miniScale, H / st.s * miniScale);
  }
  function miniJump(ev) {
    var r = mini.getBoundingClientRect(), W = view.clientWidth || 800, H = view.clientHeight || 600;
    var gx = (ev.clientX - r.left) / miniScale, gy = (ev.clientY - r.top) / miniScale;
    st.tx = W / 2 - gx * st.s; st.ty = H / 2 - gy * st.s; apply();
  }
  var miniDrag = false;
  mini.addEventListener('pointerdown', function (ev) { ev.stopPropagation(); miniDrag = true; miniJump(ev); });
  mini.addEventListener('pointermove', function (ev) { if (miniDrag) miniJump(ev); });
  window.addEventListener('pointerup', function () { miniDrag = false; });

  // ----- side panel, search -----
  function select(key) {
    st.sel = key;
    svg.querySelectorAll('.node.sel').forEach(function (n) { n.classList.remove('sel'); });
    var v = key && cur.g.byKey[key];
    if (!v) { panel.textContent = 'Click a node to see its details.'; return; }
    var el = svg.querySelector('.node[data-key="' + key.replace(/"/g, '\\"') + '"]');
    if (el) el.classList.add('sel');
    panel.textContent = v.fam === 'group' ? 'layer ' + v.key.slice(2) + '\n' + v.members.length + ' nodes' : v.members[0].details;
  }
  function search(q, move) {
    st.find = q; q = q.trim().toLowerCase();
    svg.querySelectorAll('.node.hit').forEach(function (n) { n.classList.remove('hit'); });
    st.hits = [];
    if (q) cur.g.items.forEach(function (v) {
      if (v.find.indexOf(q) >= 0 || v.label.toLowerCase().indexOf(q) >= 0) st.hits.push(v.key);
    });
    st.hits.forEach(function (k) {
      var el = svg.querySelector('.node[data-key="' + k + '"]'); if (el) el.classList.add('hit');
    });
    document.getElementById('hits').textContent = q ? st.hits.length + ' match' + (st.hits.length === 1 ? '' : 'es') : '';
    st.hit = -1;
    if (move) next();
  }
  function next() {
    if (!st.hits.length) return;
    st.hit = (st.hit + 1) % st.hits.length; centreOn(st.hits[st.hit]); select(st.hits[st.hit]);
  }
  var findBox = document.getElementById('find');
  findBox.addEventListener('input', function () { search(findBox.value, true); });
  findBox.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') next(); });
  document.getElementById('copy').onclick = function () {
    if (navigator.clipboard) navigator.clipboard.writeText(panel.textContent);
  };
  document.getElementById('collapse').onclick = function () {
    var v = st.sel && cur.g.byKey[st.sel], m = v && v.members[0] && v.members[0].module;
    if (!m) return;
    Object.keys(st.expanded).forEach(function (p) { if (p === m || p.indexOf(m + '.') === 0) delete st.expanded[p]; });
    st.collapsed[m] = true; draw(); centreOn('g:' + m);
  };
  document.getElementById('zin').onclick = function () { zoomAt(1.25, view.clientWidth / 2, view.clientHeight / 2); };
  document.getElementById('zout').onclick = function () { zoomAt(0.8, view.clientWidth / 2, view.clientHeight / 2); };
  document.getElementById('zfit').onclick = fit;

  // ----- layers and passes -----
  var depthSel = document.getElementById('depth'), frameSel = document.getElementById('frame');
  var compare = document.getElementById('compare');
  var maxDepth = 0;
  DATA.frames[DATA.frames.length - 1].items.forEach(function (it) {
    if (it.module) maxDepth = Math.max(maxDepth, it.module.split('.').length);
  });
  for (var d = 1; d <= Math.min(maxDepth, 8); d++) depthSel.add(new Option('modules to depth ' + d, d));
  depthSel.onchange = function () { st.depth = +depthSel.value; st.expanded = {}; draw(); fit(); };
  DATA.frames.forEach(function (f, i) { frameSel.add(new Option(f.label, i)); });
  frameSel.value = st.frame;
  function showFrame(i) { st.frame = i; frameSel.value = i; draw(); }
  frameSel.onchange = function () { showFrame(+frameSel.value); };
  compare.onchange = function () { st.compare = compare.checked; draw(); };
  document.querySelectorAll('tr.pick').forEach(function (tr) {
    tr.onclick = function () {
      var label = tr.getAttribute('data-frame');
      DATA.frames.forEach(function (f, i) { if (f.label === label) showFrame(i); });
      view.scrollIntoView();
    };
  });

  // ----- #selftest: drive the mouse handlers with synthetic events, report in #selftest (for headless tests) -----
  function selftest() {
    var out = {}, r = view.getBoundingClientRect();
    function ptr(type, target, x, y) {
      target.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, bubbles: true}));
    }
    var s0 = st.s;
    view.dispatchEvent(new WheelEvent('wheel', {deltaY: -400, clientX: r.left + 50, clientY: r.top + 50,
                                                bubbles: true, cancelable: true}));
    out.wheel = st.s / s0;
    var tx = st.tx, ty = st.ty;
    ptr('pointerdown', svg, r.left + 100, r.top + 100); ptr('pointermove', svg, r.left + 160, r.top + 130);
    ptr('pointerup', svg, r.left + 160, r.top + 130);
    out.drag = [st.tx - tx, st.ty - ty];
    var node = svg.querySelector('.node:not(.group)[data-key^="n"]');
    if (node) {
      var b = node.getBoundingClientRect();
      ptr('pointerdown', node.querySelector('rect'), b.left + 2, b.top + 2);
      ptr('pointerup', node.querySelector('rect'), b.left + 2, b.top + 2);
      out.click = {key: node.getAttribute('data-key'), selected: st.sel, panel: panel.textContent.split('\n')[0]};
    }
    findBox.value = 'RETURN'; findBox.dispatchEvent(new Event('input'));
    out.find = document.getElementById('hits').textContent;
    document.getElementById('zfit').click();
    out.fit = st.s;
    document.getElementById('selftest').textContent = JSON.stringify(out);
  }

  // ----- the URL hash: #find=..&select=..&frame=..&depth=..&expand=.. -----
  var hash = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var i = kv.indexOf('='); if (i > 0) (hash[kv.slice(0, i)] = hash[kv.slice(0, i)] || []).push(decodeURIComponent(kv.slice(i + 1)));
  });
  if (hash.frame) DATA.frames.forEach(function (f, i) { if (f.label === hash.frame[0]) st.frame = i; });
  if (hash.compare) st.compare = compare.checked = true;
  if (hash.depth) { st.depth = +hash.depth[0]; depthSel.value = st.depth; }
  (hash.expand || []).forEach(function (p) { st.expanded[p] = true; });
  (hash.collapse || []).forEach(function (p) { st.collapsed[p] = true; });
  frameSel.value = st.frame;
  draw(); fit();
  if (hash.find) { findBox.value = hash.find[0]; search(hash.find[0], true); }
  if (hash.select) { select(hash.select[0]); centreOn(hash.select[0]); }
  if (hash.selftest) selftest();
  view.setAttribute('data-ready-ms', (performance.now() - T0).toFixed(1));  // the script: data, layout, drawing
  view.setAttribute('data-open-ms', performance.now().toFixed(1));  // since the page was asked for
})();
"""
