/* wsc placement report: draws the mesh and the timeline from the JSON data block.
   Everything is canvas: one draw call per kernel, link-load runs batched by colour, timeline
   rows from run-length encoded bins, so a 320-kernel model on a 755x1170 mesh stays light. */
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('wsc-data').textContent);
  var M = D.meta, K = D.kernels, R = D.routes, L = D.links;
  var status = document.getElementById('render-status');
  var tip = document.getElementById('tooltip');
  var KIND = {};
  D.kinds.forEach(function (k) { KIND[k.kind] = k; });
  var CAT = { c: ['compute', cssVar('--compute')], f: ['fabric', cssVar('--fabric')],
              s: ['send', cssVar('--send')], w: ['waiting', cssVar('--wait')] };
  var selected = -1;
  var matches = null;  // the search's matches (a flag per kernel), or null: no filter
  function shown(idx) { return !matches || matches[idx] === 1; }

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; }); }
  var NBSP = '\u00a0';  // joins a number to its unit: the two never wrap apart
  function fint(v) { return v === null || v === undefined ? '—' : Math.round(v).toLocaleString('en-US'); }
  function fbytes(n) {
    if (n === null || n === undefined) return '—';
    var u = [['GiB', 1073741824], ['MiB', 1048576], ['KiB', 1024]];
    for (var i = 0; i < u.length; i++) if (n >= u[i][1]) return (n / u[i][1]).toFixed(1) + NBSP + u[i][0];
    return Math.round(n) + NBSP + 'B';
  }
  function ftime(cycles) {
    var s = cycles / M.clock_hz;
    if (s >= 1) return s.toPrecision(3) + NBSP + 's';
    if (s >= 1e-3) return (s * 1e3).toPrecision(3) + NBSP + 'ms';
    if (s >= 1e-6) return (s * 1e6).toPrecision(3) + NBSP + 'µs';
    return (s * 1e9).toPrecision(3) + NBSP + 'ns';
  }
  function lerpColor(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i;
    var a = stops[i], b = stops[i + 1];
    return 'rgb(' + Math.round(a[0] + (b[0] - a[0]) * f) + ',' + Math.round(a[1] + (b[1] - a[1]) * f) + ',' + Math.round(a[2] + (b[2] - a[2]) * f) + ')';
  }
  function rgbOf(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i, a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  // plasma, cut before its pale yellow end so hot links stay visible on a light mesh
  var LINK_STOPS = [[13, 8, 135], [106, 0, 168], [177, 42, 144], [225, 100, 98], [252, 166, 54]];
  var SRAM_STOPS = [[255, 255, 204], [254, 217, 118], [253, 141, 60], [227, 26, 28], [128, 0, 38]];
  function shortName(n) {
    // shorter labels for block kernels: "model.layers.12.mlp.gate_proj" -> "12.mlp.gate_proj",
    // "L12 gate_proj", "L12 gate", "L12 gat"
    var m = /^(?:model\.|transformer\.)?(?:layers|h|blocks)\.(\d+)\.(.*)$/.exec(n);
    var p = (m ? m[2] : n).split('.'), role = p[p.length - 1];
    var abbr = role.replace(/_proj$/, '').replace(/layer_?norm/, 'ln');
    if (!m) return [role, abbr, abbr.slice(0, 4)];
    var L = 'L' + m[1] + ' ';
    return [m[1] + '.' + m[2], L + role, L + abbr, L + abbr.slice(0, 3)];
  }
  function showTip(html, ev) {
    tip.innerHTML = html; tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight, x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + w > window.innerWidth - 4) x = ev.clientX - w - 14;
    if (y + h > window.innerHeight - 4) y = ev.clientY - h - 14;
    tip.style.left = Math.max(4, x) + 'px'; tip.style.top = Math.max(4, y) + 'px';
  }
  function hideTip() { tip.hidden = true; }
  function capture(el, ev) { try { el.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic pointer */ } }
  function phaseLine(k, ph) {
    var p = k[ph];
    if (!p) return '';
    var share = Math.round(100 * p.compute_share);
    return '<div><span class="k">' + ph + ':</span> ' + fint(p.cycles) + ' cycles busy (' + ftime(p.cycles) +
      '), ' + share + '% compute / ' + (100 - share) + '% communication — ' + p.bound + '-bound' +
      '<div class="bar"><span style="width:' + share + '%;background:' + CAT.c[1] + '"></span><span style="width:' +
      (100 - share) + '%;background:' + CAT.f[1] + '"></span></div></div>';
  }
  function kernelTip(k) {
    return '<b>' + esc(k.name) + '</b> <span class="k">' + esc((KIND[k.kind] || { label: k.kind }).label) + '</span>' +
      (k.module ? '<div><span class="k">module:</span> ' + esc(k.module) +
        (k.layer === null ? '' : ' <span class="k">(layer ' + k.layer + ')</span>') + '</div>' : '') +
      '<div><span class="k">grid:</span> ' + k.rows + ' x ' + k.cols + ' PEs (' + fint(k.pes) + ') at (' + k.x + ', ' + k.y + ')</div>' +
      '<div><span class="k">SRAM:</span> ' + fint(k.sram) + ' B per PE, ' + k.sram_pct.toFixed(1) + '% of the ' +
      fbytes(M.sram_budget) + ' budget' + (k.weight_bytes ? ' (weights ' + fbytes(k.weight_bytes) + ')' : '') +
      (k.has_state ? ', with a resident KV cache' : '') + '</div>' + phaseLine(k, 'prefill') + phaseLine(k, 'decode');
  }

  // --- the mesh --------------------------------------------------------------------------
  var canvas = document.getElementById('mesh'), ctx = canvas.getContext('2d');
  var W = M.width, H = M.height, view = { s: 1, ox: 0, oy: 0 }, fitScale = 1, dpr = 1;
  var layers = { kernels: true, labels: true, routes: true, sram: false };
  var loadMin = Infinity, loadMax = 0;
  for (var i = 4; i < L.length; i += 5) { if (L[i] > 0) { loadMin = Math.min(loadMin, L[i]); loadMax = Math.max(loadMax, L[i]); } }
  function loadT(b) {
    if (!(loadMax > loadMin)) return 1;
    return Math.log(b / loadMin) / Math.log(loadMax / loadMin);
  }
  // link runs bucketed by colour: one stroke per bucket per frame
  var BUCKETS = 24, bucketRuns = [];
  for (var b = 0; b < BUCKETS; b++) bucketRuns.push([]);
  for (i = 0; i < L.length; i += 5) bucketRuns[Math.min(BUCKETS - 1, Math.floor(loadT(L[i + 4]) * BUCKETS))].push(i);
  var bucketColor = bucketRuns.map(function (_, b) { return lerpColor(LINK_STOPS, (b + 0.5) / BUCKETS); });
  document.getElementById('legend-links-text').textContent = L.length
    ? 'link load ' + fbytes(loadMin) + ' – ' + fbytes(loadMax) + ' per run (log scale)' : 'no routes in placement.json';

  // SRAM utilisation per PE, aggregated into cell x cell squares (the max over each cell)
  var cell = Math.max(1, Math.ceil(Math.max(W, H) / 600));
  var cw = Math.ceil(W / cell), ch = Math.ceil(H / cell);
  var sramImg = document.createElement('canvas');
  sramImg.width = cw; sramImg.height = ch;
  (function () {
    var g = sramImg.getContext('2d'), img = g.createImageData(cw, ch), v = new Float32Array(cw * ch).fill(-1);
    K.forEach(function (k) {
      var u = k.sram_pct / 100;
      for (var y = Math.floor(k.y / cell); y <= Math.floor((k.y + k.rows - 1) / cell); y++)
        for (var x = Math.floor(k.x / cell); x <= Math.floor((k.x + k.cols - 1) / cell); x++)
          if (x < cw && y < ch) v[y * cw + x] = Math.max(v[y * cw + x], u);
    });
    for (var j = 0; j < v.length; j++) {
      if (v[j] < 0) continue;
      var c = rgbOf(SRAM_STOPS, v[j]);
      img.data[4 * j] = c[0]; img.data[4 * j + 1] = c[1]; img.data[4 * j + 2] = c[2]; img.data[4 * j + 3] = 255;
    }
    g.putImageData(img, 0, 0);
    document.getElementById('legend-sram-text').textContent = 'SRAM per PE, 0–100% of the ' + fbytes(M.sram_budget) +
      ' budget' + (cell > 1 ? ' (max over ' + cell + 'x' + cell + ' PE cells)' : '');
  })();

  function resize() {
    dpr = window.devicePixelRatio || 1;
    var w = canvas.getBoundingClientRect().width;  // as tall as the mesh needs, within the window
    canvas.style.height = Math.round(Math.max(360, Math.min(w * H / W + 24, 0.8 * window.innerHeight))) + 'px';
    var r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
  }
  function fit() {
    var r = canvas.getBoundingClientRect(), pad = 12;
    fitScale = Math.max(1e-3, Math.min((r.width - 2 * pad) / W, (r.height - 2 * pad) / H));
    view.s = fitScale; view.ox = (r.width - W * view.s) / 2; view.oy = (r.height - H * view.s) / 2;
  }
  var labelFontPx = 11, widthCache = {};
  function textWidth(t, font) {
    var key = font + '|' + t;
    if (!(key in widthCache)) { ctx.font = font; widthCache[key] = ctx.measureText(t).width; }
    return widthCache[key];
  }
  var frameRequested = false;
  function requestDraw() { if (!frameRequested) { frameRequested = true; requestAnimationFrame(function () { frameRequested = false; draw(); }); } }

  function draw() {
    var t0 = performance.now();
    var cssW = canvas.width / dpr, cssH = canvas.height / dpr, s = view.s;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.save();
    ctx.translate(view.ox, view.oy);
    // visible mesh window, in PEs
    var vx0 = Math.max(0, Math.floor(-view.ox / s)), vy0 = Math.max(0, Math.floor(-view.oy / s));
    var vx1 = Math.min(W, Math.ceil((cssW - view.ox) / s)), vy1 = Math.min(H, Math.ceil((cssH - view.oy) / s));
    ctx.fillStyle = '#e4e7eb';
    ctx.fillRect(0, 0, W * s, H * s);
    if (s >= 6) { // the PE grid, once PEs are big enough to see
      ctx.strokeStyle = 'rgba(0,0,0,0.07)'; ctx.lineWidth = 1; ctx.beginPath();
      for (var x = vx0; x <= vx1; x++) { ctx.moveTo(x * s, vy0 * s); ctx.lineTo(x * s, vy1 * s); }
      for (var y = vy0; y <= vy1; y++) { ctx.moveTo(vx0 * s, y * s); ctx.lineTo(vx1 * s, y * s); }
      ctx.stroke();
    }
    if (layers.sram) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(sramImg, 0, 0, cw * cell * s, ch * cell * s);
    }
    var visible = [];
    K.forEach(function (k, idx) {
      if (k.x > vx1 || k.y > vy1 || k.x + k.cols < vx0 || k.y + k.rows < vy0) return;
      visible.push(idx);
    });
    if (layers.kernels) {
      visible.forEach(function (idx) {
        var k = K[idx], color = shown(idx) ? (KIND[k.kind] || { color: '#8c8c8c' }).color : '#c3c8ce';
        var x = k.x * s, y = k.y * s, w = k.cols * s, h = k.rows * s;
        if (!layers.sram) {
          ctx.globalAlpha = !shown(idx) ? 0.5 : layers.routes ? 0.55 : 0.9;
          ctx.fillStyle = color; ctx.fillRect(x, y, w, h);
          ctx.globalAlpha = 1;
        }
        if (w >= 3 && h >= 3) {
          ctx.strokeStyle = layers.sram ? color : 'rgba(0,0,0,0.55)';
          ctx.lineWidth = layers.sram ? 2 : 1;
          ctx.strokeRect(x + 0.5, y + 0.5, Math.max(0, w - 1), Math.max(0, h - 1));
        }
      });
    }
    if (layers.routes && L.length) drawLinks(s);
    var highlighted = matches ? drawMatches(visible, s) : 0;
    if (selected >= 0) drawSelection(s);
    var labels = 0, sample = '';
    if (layers.labels) {
      ctx.textAlign = 'center'; ctx.textBaseline = 'middle'; ctx.lineJoin = 'round';
      visible.forEach(function (idx) {
        var k = K[idx], w = k.cols * s, h = k.rows * s;
        if (h < 11 || w < 16 || !shown(idx)) return;
        // the longest name that fits, at the normal size, then smaller; never scaled with zoom
        var cands = [k.name].concat(shortName(k.name)), text = null, font = null;
        [labelFontPx, labelFontPx - 2].forEach(function (px) {
          if (text || h < px + 2) return;
          var f = '600 ' + px + 'px system-ui, sans-serif';
          for (var c = 0; c < cands.length; c++) if (textWidth(cands[c], f) <= w - 4) { text = cands[c]; font = f; return; }
        });
        if (!text) return;
        var cx = (k.x + k.cols / 2) * s, cy = (k.y + k.rows / 2) * s;
        var second = h >= 2 * labelFontPx + 10 ? k.rows + 'x' + k.cols : null;
        if (second && textWidth(second, font) > w - 4) second = null;
        if (second) cy -= labelFontPx * 0.6;
        ctx.font = font;
        ctx.strokeStyle = 'rgba(255,255,255,0.9)'; ctx.lineWidth = 3; ctx.fillStyle = '#111';
        ctx.strokeText(text, cx, cy); ctx.fillText(text, cx, cy);
        if (second) {
          ctx.font = labelFontPx - 1 + 'px system-ui, sans-serif';
          ctx.strokeText(second, cx, cy + labelFontPx * 1.2); ctx.fillText(second, cx, cy + labelFontPx * 1.2);
        }
        labels++; if (!sample) sample = text;
      });
    }
    ctx.restore();
    status.setAttribute('data-mesh', 'ok');
    status.setAttribute('data-labels', String(labels));
    status.setAttribute('data-label-sample', sample);
    status.setAttribute('data-mesh-highlighted', String(highlighted));
    status.setAttribute('data-mesh-ms', (performance.now() - t0).toFixed(1));
  }

  function runEnds(i, s, off) {
    // a run from PE (x0,y0) to PE (x1,y1): a line through PE centres, offset to the right of
    // its direction so the two directions of a link sit side by side
    var x0 = L[i], y0 = L[i + 1], x1 = L[i + 2], y1 = L[i + 3];
    var dx = Math.sign(x1 - x0), dy = Math.sign(y1 - y0);
    var px = -dy * off, py = dx * off;
    return [(x0 + 0.5 + px) * s, (y0 + 0.5 + py) * s, (x1 + 0.5 + px) * s, (y1 + 0.5 + py) * s];
  }
  function drawLinks(s) {
    var off = s >= 4 ? 0.18 : 0;
    ctx.lineWidth = Math.max(1.2, Math.min(6, 0.3 * s)); ctx.lineCap = 'butt';
    ctx.globalAlpha = matches ? 0.3 : 1;  // links carry many kernels' routes: faded behind a search
    for (var b = 0; b < BUCKETS; b++) {
      var runs = bucketRuns[b];
      if (!runs.length) continue;
      ctx.strokeStyle = bucketColor[b]; ctx.beginPath();
      for (var j = 0; j < runs.length; j++) {
        var e = runEnds(runs[j], s, off);
        ctx.moveTo(e[0], e[1]); ctx.lineTo(e[2], e[3]);
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }
  function drawMatches(visible, s) {
    // the search's matches outlined above the heat map, so they stand out from the greyed rest
    var n = 0;
    ctx.strokeStyle = '#111'; ctx.lineWidth = 2; ctx.setLineDash([]);
    visible.forEach(function (idx) {
      if (!shown(idx)) return;
      var k = K[idx];
      ctx.strokeRect(k.x * s + 1, k.y * s + 1, Math.max(1, k.cols * s - 2), Math.max(1, k.rows * s - 2));
      n++;
    });
    return n;
  }
  function drawSelection(s) {
    var k = K[selected];
    ctx.lineWidth = Math.max(2, Math.min(5, 0.4 * s)); ctx.strokeStyle = '#00b3d6'; ctx.lineJoin = 'round';
    R.forEach(function (r) {
      if (r.src !== k.name && r.dst !== k.name) return;
      ctx.setLineDash(r.src === k.name ? [] : [6, 4]);
      ctx.beginPath();
      r.path.forEach(function (p, j) { (j ? ctx.lineTo : ctx.moveTo).call(ctx, (p[0] + 0.5) * s, (p[1] + 0.5) * s); });
      ctx.stroke();
    });
    ctx.setLineDash([]);
    ctx.strokeStyle = '#000'; ctx.lineWidth = 2.5;
    ctx.strokeRect(k.x * s - 1, k.y * s - 1, k.cols * s + 2, k.rows * s + 2);
  }

  function meshPoint(ev) {
    var r = canvas.getBoundingClientRect();
    var px = ev.clientX - r.left, py = ev.clientY - r.top;
    return { px: px, py: py, x: (px - view.ox) / view.s, y: (py - view.oy) / view.s };
  }
  function kernelAt(x, y) {
    for (var j = K.length - 1; j >= 0; j--) {
      var k = K[j];
      if (x >= k.x && x < k.x + k.cols && y >= k.y && y < k.y + k.rows) return j;
    }
    return -1;
  }
  function linkAt(x, y, tol) {
    var best = -1, bestD = tol;
    for (var i = 0; i < L.length; i += 5) {
      var x0 = Math.min(L[i], L[i + 2]) + 0.5, x1 = Math.max(L[i], L[i + 2]) + 0.5;
      var y0 = Math.min(L[i + 1], L[i + 3]) + 0.5, y1 = Math.max(L[i + 1], L[i + 3]) + 0.5;
      var dx = Math.max(x0 - x, 0, x - x1), dy = Math.max(y0 - y, 0, y - y1), d = Math.max(dx, dy);
      if (d < bestD || (d === bestD && best >= 0 && L[i + 4] > L[best + 4])) { bestD = d; best = i; }
    }
    return best;
  }
  function onRoute(r, x, y, tol) {
    for (var j = 1; j < r.path.length; j++) {
      var a = r.path[j - 1], b = r.path[j];
      var x0 = Math.min(a[0], b[0]) + 0.5, x1 = Math.max(a[0], b[0]) + 0.5;
      var y0 = Math.min(a[1], b[1]) + 0.5, y1 = Math.max(a[1], b[1]) + 0.5;
      if (Math.max(x0 - x, 0, x - x1, y0 - y, 0, y - y1) <= tol) return true;
    }
    return false;
  }
  function linkTip(i, x, y, tol) {
    var horiz = L[i + 1] === L[i + 3];
    var dir = horiz ? (L[i + 2] > L[i] ? 'east' : 'west') : (L[i + 3] > L[i + 1] ? 'south' : 'north');
    var through = R.filter(function (r) { return onRoute(r, x, y, tol); });
    var html = '<b>' + fbytes(L[i + 4]) + '</b> per run on the ' + dir + 'bound links (' + L[i] + ', ' + L[i + 1] +
      ') → (' + L[i + 2] + ', ' + L[i + 3] + ')';
    through.slice(0, 8).forEach(function (r) {
      html += '<div><span class="k">route</span> ' + esc(r.src) + ' → ' + esc(r.dst) + ': ' + fbytes(r.bytes) + ', ' +
        fint(r.hops) + ' hops, ' + esc(r.order || '?') + ', color ' + (r.color === null || r.color === undefined ? '—' : r.color) +
        (r.approx ? ' (approximate path)' : '') + '</div>';
    });
    if (through.length > 8) html += '<div class="k">… ' + (through.length - 8) + ' more routes</div>';
    return html;
  }
  function hover(ev) {
    var p = meshPoint(ev);
    if (p.x < 0 || p.y < 0 || p.x >= W || p.y >= H) { hideTip(); return; }
    var tol = Math.max(0.5, 4 / view.s);
    if (layers.routes && L.length) {
      var li = linkAt(p.x, p.y, tol);
      if (li >= 0) { showTip(linkTip(li, p.x, p.y, tol), ev); return; }
    }
    var pe = '<div class="k">PE (' + Math.floor(p.x) + ', ' + Math.floor(p.y) + ')</div>';
    var ki = kernelAt(p.x, p.y);
    if (ki >= 0) { showTip(kernelTip(K[ki]) + pe, ev); return; }
    showTip('idle PE' + pe, ev);
  }
  function zoomAt(px, py, f) {
    var s = Math.max(fitScale * 0.5, Math.min(80, view.s * f));
    view.ox = px - (px - view.ox) * (s / view.s); view.oy = py - (py - view.oy) * (s / view.s); view.s = s;
    requestDraw();
  }
  var drag = null;
  canvas.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var p = meshPoint(ev);
    zoomAt(p.px, p.py, Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)));
  }, { passive: false });
  canvas.addEventListener('pointerdown', function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, ox: view.ox, oy: view.oy, moved: false };
    capture(canvas, ev);
  });
  canvas.addEventListener('pointermove', function (ev) {
    if (drag) {
      var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add('dragging'); hideTip(); }
      if (drag.moved) { view.ox = drag.ox + dx; view.oy = drag.oy + dy; requestDraw(); return; }
    }
    hover(ev);
  });
  canvas.addEventListener('pointerup', function (ev) {
    if (drag && !drag.moved) { var p = meshPoint(ev); select(kernelAt(p.x, p.y), false); }
    drag = null; canvas.classList.remove('dragging');
  });
  canvas.addEventListener('pointerleave', hideTip);
  canvas.addEventListener('dblclick', function () { fit(); requestDraw(); });
  ['kernels', 'labels', 'routes', 'sram'].forEach(function (name) {
    var box = document.getElementById('layer-' + name);
    layers[name] = box.checked;
    box.addEventListener('change', function () { layers[name] = box.checked; requestDraw(); });
  });
  document.getElementById('zoom-in').addEventListener('click', function () { var r = canvas.getBoundingClientRect(); zoomAt(r.width / 2, r.height / 2, 1.6); });
  document.getElementById('zoom-out').addEventListener('click', function () { var r = canvas.getBoundingClientRect(); zoomAt(r.width / 2, r.height / 2, 1 / 1.6); });
  document.getElementById('zoom-fit').addEventListener('click', function () { fit(); requestDraw(); });

  // --- selection: mesh, table and timeline agree on one kernel -----------------------------
  var table = document.getElementById('kernels'), tableWrap = table.parentNode;
  var grouped = document.getElementById('group-layers');
  var tableOrder = Array.prototype.slice.call(table.tBodies[0].rows), rowsByIndex = {}, groupRows = [];
  tableOrder.forEach(function (tr) {
    if (tr.classList.contains('group')) {
      groupRows.push(tr);
      tr.addEventListener('click', function () { tr.classList.toggle('folded'); refreshTable(); });
      return;
    }
    rowsByIndex[tr.getAttribute('data-i')] = tr;
    tr.addEventListener('click', function () { select(+tr.getAttribute('data-i'), true); });
  });
  function revealRow(tr) {
    // scroll the table's own box to the row, never the page (scrollIntoView scrolls every
    // ancestor, so a click on the mesh used to carry the reader away to the table)
    if (tr.hidden) return;
    var w = tableWrap.getBoundingClientRect(), r = tr.getBoundingClientRect();
    var top = w.top + table.tHead.getBoundingClientRect().height;
    if (r.top < top) tableWrap.scrollTop -= top - r.top;
    else if (r.bottom > w.bottom) tableWrap.scrollTop += r.bottom - w.bottom;
  }
  function select(idx, centre) {
    if (selected >= 0 && rowsByIndex[selected]) rowsByIndex[selected].classList.remove('sel');
    selected = idx === selected && !centre ? -1 : idx;
    if (selected >= 0) {
      var tr = rowsByIndex[selected];
      if (tr) { tr.classList.add('sel'); if (!centre) revealRow(tr); }
      if (centre) {
        var k = K[selected], r = canvas.getBoundingClientRect();
        var s = Math.max(view.s, Math.min(80, 0.3 * Math.min(r.width / k.cols, r.height / k.rows)));
        view.s = s; view.ox = r.width / 2 - (k.x + k.cols / 2) * s; view.oy = r.height / 2 - (k.y + k.rows / 2) * s;
        canvas.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
      }
    }
    requestDraw(); drawTimeline();
  }

  // --- the table: grouped by layer, sortable, filtered by the search ------------------------
  function refreshTable() {
    var counts = {};
    Object.keys(rowsByIndex).forEach(function (i) {
      var tr = rowsByIndex[i], g = tr.getAttribute('data-g');
      var folded = grouped.checked && groupRows[g].classList.contains('folded');
      tr.hidden = !shown(+i) || folded;
      if (shown(+i)) counts[g] = (counts[g] || 0) + 1;
    });
    groupRows.forEach(function (tr, g) { tr.hidden = !grouped.checked || !counts[g]; });
  }
  grouped.addEventListener('change', function () {
    if (grouped.checked) {  // back to pipeline order, under the layers' headers
      Array.prototype.forEach.call(table.querySelectorAll('th'), function (o) { o.removeAttribute('data-dir'); });
      tableOrder.forEach(function (tr) { table.tBodies[0].appendChild(tr); });
    }
    refreshTable();
  });
  Array.prototype.forEach.call(table.querySelectorAll('th'), function (th) {
    th.addEventListener('click', function () {
      var col = +th.getAttribute('data-col'), dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
      Array.prototype.forEach.call(table.querySelectorAll('th'), function (o) { o.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', dir);
      grouped.checked = false;  // a sorted table is one flat list
      var body = table.tBodies[0], rows = tableOrder.filter(function (tr) { return !tr.classList.contains('group'); });
      var key = function (tr) { var td = tr.cells[col], v = td.getAttribute('data-v'); return v === null ? td.textContent : +v; };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return (dir === 'asc' ? c : -c) || (+a.getAttribute('data-i') - +b.getAttribute('data-i'));
      });
      rows.forEach(function (tr) { body.appendChild(tr); });
      refreshTable();
    });
  });

  // --- search: one box filters the mesh, the timeline and the table --------------------------
  var search = document.getElementById('search'), searchCount = document.getElementById('search-count');
  function parseQuery(q) {
    // "layer 3", "layers 2-4" and "L3" pick layers; every other word must appear in the
    // kernel's name, module path or kind ("model.layers.3." is one block, "mlp" every MLP)
    var ranges = [];
    q = q.toLowerCase().replace(/\b(?:layers?\s*|l)(\d+)(?:\s*[-–]\s*(\d+))?\b/g, function (_, a, b) {
      ranges.push([+a, b === undefined ? +a : +b]);
      return ' ';
    });
    return { ranges: ranges, words: q.split(/\s+/).filter(Boolean) };
  }
  function kernelMatches(k, q) {
    var inLayer = function (r) { return k.layer !== null && k.layer >= r[0] && k.layer <= r[1]; };
    if (q.ranges.length && !q.ranges.some(inLayer)) return false;
    var text = [k.name, k.module, k.kind, (KIND[k.kind] || { label: '' }).label].join(' ').toLowerCase();
    return q.words.every(function (w) { return text.indexOf(w) >= 0; });
  }
  function applySearch() {
    var q = parseQuery(search.value), n = 0;
    matches = null;
    if (q.ranges.length || q.words.length) {
      matches = new Uint8Array(K.length);
      K.forEach(function (k, i) { if (kernelMatches(k, q)) { matches[i] = 1; n++; } });
    }
    searchCount.textContent = matches ? n + ' of ' + K.length + ' kernels' : K.length + ' kernels';
    search.classList.toggle('nomatch', matches !== null && n === 0);
    status.setAttribute('data-search-matches', matches ? String(n) : 'all');
    refreshTable(); draw(); drawTimeline();  // one discrete change: draw it now, not next frame
  }
  function zoomToMatches() {
    var x0 = W, y0 = H, x1 = 0, y1 = 0, r = canvas.getBoundingClientRect(), pad = 12;
    K.forEach(function (k, i) {
      if (!matches || !matches[i]) return;
      x0 = Math.min(x0, k.x); y0 = Math.min(y0, k.y); x1 = Math.max(x1, k.x + k.cols); y1 = Math.max(y1, k.y + k.rows);
    });
    if (x1 <= x0) return;
    view.s = Math.max(fitScale, Math.min(80, (r.width - 2 * pad) / (x1 - x0), (r.height - 2 * pad) / (y1 - y0)));
    view.ox = r.width / 2 - (x0 + x1) / 2 * view.s; view.oy = r.height / 2 - (y0 + y1) / 2 * view.s;
    requestDraw();
  }
  search.addEventListener('input', applySearch);
  search.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') zoomToMatches(); });

  // --- timeline ------------------------------------------------------------------------------
  var tlCanvas = document.getElementById('timeline'), tl = tlCanvas.getContext('2d');
  var axCanvas = document.getElementById('timeline-axis'), ax = axCanvas.getContext('2d');
  var phases = Object.keys(D.timeline).sort(function (a, b) { return (a === 'prefill' ? 0 : 1) - (b === 'prefill' ? 0 : 1); });
  var phase = phases[0], tv = { a: 0, b: 1 }, parsed = {};
  var tlOrder = [];  // the kernel drawn on each timeline row: the search's matches, in pipeline order
  var GUTTER = 230, rowH = 16;
  function runsOf(ph) {
    if (!parsed[ph]) {
      parsed[ph] = D.timeline[ph].rows.map(function (rle) {
        var out = [], re = /([.cfsw])(\d+)/g, m, pos = 0;
        while ((m = re.exec(rle))) { var n = +m[2]; if (m[1] !== '.') out.push(m[1], pos, n); pos += n; }
        return out;
      });
    }
    return parsed[ph];
  }
  var tabs = document.getElementById('timeline-tabs');
  phases.forEach(function (ph) {
    var btn = document.createElement('button');
    btn.type = 'button'; btn.id = 'tab-' + ph;
    btn.textContent = ph + ' · ' + ftime(D.timeline[ph].cycles);
    btn.addEventListener('click', function () { phase = ph; tv.a = 0; tv.b = 1; drawTimeline(); });
    tabs.appendChild(btn);
  });
  function niceStep(span, px) {
    var raw = span / Math.max(1, px / 90), p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }
  function drawTimeline() {
    if (!phase) { status.setAttribute('data-timeline', 'none'); return; }
    phases.forEach(function (ph) { document.getElementById('tab-' + ph).classList.toggle('on', ph === phase); });
    var T = D.timeline[phase], bins = T.bins, rows = runsOf(phase);
    tlOrder = K.map(function (_, i) { return i; }).filter(shown);
    rowH = tlOrder.length > 60 ? 10 : 16;  // a big model's rows are thin until a search narrows them
    var dp = window.devicePixelRatio || 1, cssW = tlCanvas.getBoundingClientRect().width, cssH = tlOrder.length * rowH + 2;
    tlCanvas.style.height = cssH + 'px';
    tlCanvas.width = Math.round(cssW * dp); tlCanvas.height = Math.round(cssH * dp);
    var plotW = Math.max(10, cssW - GUTTER - 8), span = tv.b - tv.a;
    var X = function (bin) { return GUTTER + ((bin / bins) - tv.a) / span * plotW; };
    tl.setTransform(dp, 0, 0, dp, 0, 0);
    tl.clearRect(0, 0, cssW, cssH);
    tl.font = (rowH >= 14 ? 11 : 9) + 'px system-ui, sans-serif'; tl.textBaseline = 'middle'; tl.textAlign = 'right';
    // grid lines at the axis ticks: round times, a nice step in seconds converted to cycles
    var cyc = T.cycles, step = niceStep(span * cyc / M.clock_hz, plotW) * M.clock_hz, t0 = Math.ceil(tv.a * cyc / step) * step;
    tl.fillStyle = '#eef1f4';
    for (var t = t0; t <= tv.b * cyc; t += step) tl.fillRect(Math.round(X(t / cyc * bins)), 0, 1, cssH);
    tlOrder.forEach(function (ki, r) {
      var y = r * rowH + 1, runs = rows[ki];
      if (ki === selected) { tl.fillStyle = '#ddf4ff'; tl.fillRect(0, y, cssW, rowH); }
      else if (r % 2) { tl.fillStyle = 'rgba(0,0,0,0.025)'; tl.fillRect(0, y, cssW, rowH); }
      if (r > 0 && K[tlOrder[r - 1]].layer !== K[ki].layer) {  // a rule between layers
        tl.fillStyle = '#aab3bd'; tl.fillRect(0, y - 1, cssW, 1);
      }
      tl.fillStyle = '#333';
      var name = K[ki].name, maxW = GUTTER - 8;
      if (tl.measureText(name).width > maxW) { var sn = shortName(name); name = sn[0]; if (tl.measureText(name).width > maxW) name = sn[1]; }
      tl.fillText(name, GUTTER - 6, y + rowH / 2);
      tl.save(); tl.beginPath(); tl.rect(GUTTER, 0, plotW, cssH); tl.clip();
      for (var j = 0; j < runs.length; j += 3) {
        var x0 = X(runs[j + 1]), x1 = X(runs[j + 1] + runs[j + 2]);
        if (x1 < GUTTER || x0 > GUTTER + plotW) continue;
        tl.fillStyle = CAT[runs[j]][1];
        tl.fillRect(x0, y + 1, Math.max(1, x1 - x0), rowH - 2);
      }
      var ph = K[ki][phase];
      if (ph) { tl.fillStyle = '#111'; tl.fillRect(X(ph.end / cyc * bins) - 0.5, y, 1.5, rowH); }
      tl.restore();
    });
    // axis
    var aw = axCanvas.getBoundingClientRect().width;
    axCanvas.width = Math.round(aw * dp); axCanvas.height = Math.round(24 * dp);
    ax.setTransform(dp, 0, 0, dp, 0, 0); ax.clearRect(0, 0, aw, 24);
    ax.font = '11px system-ui, sans-serif'; ax.fillStyle = '#59636e'; ax.textBaseline = 'middle';
    ax.textAlign = 'right'; ax.fillText(phase + ' (' + fint(cyc) + ' cycles)', GUTTER - 6, 12);
    ax.textAlign = 'center';
    for (t = t0; t <= tv.b * cyc; t += step) {
      var x = X(t / cyc * bins);
      ax.fillRect(Math.round(x), 16, 1, 8);
      if (x > GUTTER + 20 && x < GUTTER + plotW - 10) ax.fillText(ftime(t), x, 9);
    }
    status.setAttribute('data-timeline', 'ok');
    status.setAttribute('data-timeline-rows', String(tlOrder.length));
  }
  function tlPoint(ev) {
    var r = tlCanvas.getBoundingClientRect(), plotW = Math.max(10, r.width - GUTTER - 8);
    var px = ev.clientX - r.left, py = ev.clientY - r.top;
    return { px: px, row: Math.floor((py - 1) / rowH), f: tv.a + (px - GUTTER) / plotW * (tv.b - tv.a), plotW: plotW };
  }
  var tdrag = null;
  tlCanvas.addEventListener('wheel', function (ev) {
    if (!ev.ctrlKey && !ev.shiftKey) return;
    ev.preventDefault();
    var p = tlPoint(ev), f = Math.exp((ev.deltaY || ev.deltaX) * 0.002), span = Math.min(1, Math.max(20 / D.timeline[phase].bins, (tv.b - tv.a) * f));
    var c = Math.max(0, Math.min(1, p.f)), a = c - (c - tv.a) * span / (tv.b - tv.a);
    tv.a = Math.max(0, Math.min(1 - span, a)); tv.b = tv.a + span; drawTimeline();
  }, { passive: false });
  tlCanvas.addEventListener('pointerdown', function (ev) { tdrag = { x: ev.clientX, a: tv.a, moved: false }; capture(tlCanvas, ev); });
  tlCanvas.addEventListener('pointerup', function (ev) {
    if (tdrag && !tdrag.moved) { var p = tlPoint(ev); if (p.row >= 0 && p.row < tlOrder.length) select(tlOrder[p.row], false); }
    tdrag = null;
  });
  tlCanvas.addEventListener('dblclick', function () { tv.a = 0; tv.b = 1; drawTimeline(); });
  tlCanvas.addEventListener('pointerleave', hideTip);
  tlCanvas.addEventListener('pointermove', function (ev) {
    var p = tlPoint(ev);
    if (tdrag) {
      var dx = (ev.clientX - tdrag.x) / p.plotW * (tv.b - tv.a);
      if (Math.abs(ev.clientX - tdrag.x) > 3) tdrag.moved = true;
      if (tdrag.moved) { var span = tv.b - tv.a; tv.a = Math.max(0, Math.min(1 - span, tdrag.a - dx)); tv.b = tv.a + span; drawTimeline(); hideTip(); return; }
    }
    if (p.row < 0 || p.row >= tlOrder.length || p.px < GUTTER) { hideTip(); return; }
    var ki = tlOrder[p.row], T = D.timeline[phase], k = K[ki], bin = Math.floor(p.f * T.bins), runs = runsOf(phase)[ki], what = 'idle';
    for (var j = 0; j < runs.length; j += 3) if (bin >= runs[j + 1] && bin < runs[j + 1] + runs[j + 2]) { what = CAT[runs[j]][0]; break; }
    var ph = k[phase], html = '<b>' + esc(k.name) + '</b> <span class="k">' + phase + '</span><div>at ' + ftime(p.f * T.cycles) +
      ' (cycle ' + fint(p.f * T.cycles) + '): ' + what + '</div>';
    if (ph) html += '<div><span class="k">compute</span> ' + fint(ph.compute) + ', <span class="k">fabric</span> ' + fint(ph.fabric) +
      ', <span class="k">waiting</span> ' + fint(ph.waiting) + ' cycles; done at ' + ftime(ph.end) + '</div>';
    showTip(html, ev);
  });

  // --- go ----------------------------------------------------------------------------------
  function layout() { resize(); fit(); draw(); drawTimeline(); }
  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { var s = view.s / fitScale; resize(); fit(); if (s !== 1) zoomAt(canvas.width / dpr / 2, canvas.height / dpr / 2, s); draw(); drawTimeline(); }, 100);
  });
  layout();
  if (search.value) applySearch();  // a reload keeps what was typed
})();
