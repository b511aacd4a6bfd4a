/* treason plot: zoom, pan, hover and downloads for the page's time-sequence graphs.
 *
 * Every graph is first drawn by treason as static SVG. This script redraws the data layer of
 * a graph from its embedded series (JSON) whenever the view changes, with the same element
 * classes and colours, and keeps the <svg>'s data-x / data-y axis mapping current. Nothing is
 * fetched: the page works offline. docs/plot.md describes the page.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLOURS = {retraction: "#8c8c8c", shrink: "#e67e00", beyond: "#d62728", kernel: "#8e24aa"};
  var DATA = "#1f4fa0", RETRANSMIT = "#17a2b8", ACK = "#2ca02c", EDGE = "#b8860b";
  var CLUSTER_PX = 70, LIMIT = 3000, HIT_PX = 7;
  var SEVERITY = {retraction: 1, shrink: 2, beyond: 3, kernel: 4};

  function el(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function num(v) { return String(Math.round(v * 10) / 10); }
  function clear(g) { while (g.firstChild) g.removeChild(g.firstChild); }

  /* Round tick values 1, 2 or 5 times a power of ten apart (treason.output.svg.ticks). */
  function ticks(lo, hi, target) {
    var span = hi - lo;
    if (!(span > 0) || !isFinite(span)) return [lo];
    var raw = span / target, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .filter(function (v) { return v >= raw; })[0];
    var first = Math.ceil(lo / step) * step, out = [];
    for (var v = first; v <= hi + step * 1e-9; v = first + out.length * step)
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  function tickLabel(v, step) {
    var d = step > 0 ? Math.max(0, -Math.floor(Math.log10(step))) : 0;
    return v.toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d});
  }
  function timeUnit(span) {
    if (span >= 2) return ["seconds", 1];
    if (span >= 2e-3) return ["milliseconds", 1e3];
    return ["microseconds", 1e6];
  }

  function Graph(svg) {
    this.svg = svg;
    this.data = JSON.parse(document.getElementById(svg.getAttribute("data-series")).textContent);
    var x = svg.getAttribute("data-x").split(" ").map(Number);
    var y = svg.getAttribute("data-y").split(" ").map(Number);
    this.x0 = x[0]; this.x1 = x[1]; this.y0 = y[0]; this.y1 = y[1];
    this.home = [x[2], x[3], y[2], y[3]];
    this.view = this.home.slice();
    this.box = svg.closest(".graph");
    this.tip = this.box.querySelector(".tip");
    this.picked = this.box.querySelector(".picked");
    this.layer = svg.querySelector("g.data");
    this.marks = svg.querySelector("g.marks");
    this.axes = svg.querySelector("g.axes");
    this.labels = svg.querySelector("g.labels");
    this.wire();
  }

  Graph.prototype.px = function (t) {
    var v = this.view;
    return this.x0 + (t - v[0]) * (this.x1 - this.x0) / (v[1] - v[0]);
  };
  Graph.prototype.py = function (s) {
    var v = this.view;
    return this.y0 + (s - v[2]) * (this.y1 - this.y0) / (v[3] - v[2]);
  };
  Graph.prototype.tAt = function (px) {
    var v = this.view;
    return v[0] + (px - this.x0) * (v[1] - v[0]) / (this.x1 - this.x0);
  };
  Graph.prototype.sAt = function (py) {
    var v = this.view;
    return v[2] + (py - this.y0) * (v[3] - v[2]) / (this.y1 - this.y0);
  };

  /* The view becomes times lo..hi and sequence numbers slo..shi; everything is redrawn. */
  Graph.prototype.setView = function (lo, hi, slo, shi) {
    if (!(hi > lo) || !(shi > slo)) return;
    this.view = [lo, hi, slo, shi];
    this.svg.setAttribute("data-x", [this.x0, this.x1, lo, hi].join(" "));
    this.svg.setAttribute("data-y", [this.y0, this.y1, slo, shi].join(" "));
    this.drawAxes();
    this.drawData();
    this.drawMarks();
  };

  Graph.prototype.drawAxes = function () {
    var g = this.axes, v = this.view, self = this;
    clear(g);
    var u = timeUnit(v[1] - v[0]), xt = ticks(v[0] * u[1], v[1] * u[1], 8);
    var step = xt.length > 1 ? xt[1] - xt[0] : 1;
    xt.forEach(function (t) {
      var x = num(self.px(t / u[1]));
      g.appendChild(el("line", {x1: x, y1: self.y1, x2: x, y2: self.y0 + 4, stroke: "#e4e4e4"}));
      g.appendChild(el("text", {x: x, y: self.y0 + 16, "text-anchor": "middle"},
                       tickLabel(t, step)));
    });
    var yt = ticks(v[2], v[3], 7);
    step = yt.length > 1 ? yt[1] - yt[0] : 1;
    yt.forEach(function (s) {
      var y = num(self.py(s));
      g.appendChild(el("line", {x1: self.x0 - 4, y1: y, x2: self.x1, y2: y, stroke: "#e4e4e4"}));
      g.appendChild(el("text", {x: self.x0 - 7, y: y, dy: 4, "text-anchor": "end"},
                       tickLabel(s, Math.max(step, 1))));
    });
    g.appendChild(el("text", {x: num((this.x0 + this.x1) / 2), y: this.y0 + 34,
                              "text-anchor": "middle"}, u[0] + " since the first packet"));
    g.appendChild(el("text", {transform: "translate(14 " + num((this.y0 + this.y1) / 2) +
                              ") rotate(-90)", "text-anchor": "middle"},
                     "relative sequence number (bytes)"));
  };

  /* Step lines through the ACKs in view (and one either side), at most a few vertices per
     pixel column beyond LIMIT: first, lowest, highest and last (as treason.output.svg). */
  Graph.prototype.stepLine = function (col) {
    var a = this.data.acked, v = this.view, verts = [], prev = null;
    var i0 = 0, i1 = a.length - 1;
    while (i0 < a.length && a[i0][0] < v[0]) i0++;
    while (i1 >= 0 && a[i1][0] > v[1]) i1--;
    i0 = Math.max(0, i0 - 1); i1 = Math.min(a.length - 1, i1 + 1);
    for (var i = i0; i <= i1; i++) {
      var x = this.px(a[i][0]), y = this.py(a[i][col]);
      if (prev !== null) verts.push([x, prev]);
      verts.push([x, y]);
      prev = y;
    }
    if (verts.length) verts.push([Math.max(this.x1, verts[verts.length - 1][0]), prev]);
    if (verts.length > LIMIT) verts = decimate(verts);
    return verts.map(function (p) { return num(p[0]) + "," + num(p[1]); }).join(" ");
  };

  function decimate(verts) {
    var out = [], col = [], id = null;
    function flush() {
      if (col.length <= 4) { out.push.apply(out, col); return; }
      var lo = 0, hi = 0;
      col.forEach(function (p, i) { if (p[1] < col[lo][1]) lo = i; if (p[1] > col[hi][1]) hi = i; });
      [0, lo, hi, col.length - 1].sort(function (a, b) { return a - b; })
        .filter(function (v, i, arr) { return i === 0 || v !== arr[i - 1]; })
        .forEach(function (i) { out.push(col[i]); });
    }
    verts.forEach(function (p) {
      var c = Math.floor(p[0]);
      if (c !== id) { flush(); col = []; id = c; }
      col.push(p);
    });
    flush();
    return out;
  }

  Graph.prototype.drawData = function () {
    var g = this.layer, v = this.view, self = this;
    clear(g);
    g.appendChild(el("polyline", {"class": "ack-line", fill: "none", stroke: ACK,
                                  "stroke-width": 1.3, points: this.stepLine(2)}));
    g.appendChild(el("polyline", {"class": "edge-line", fill: "none", stroke: EDGE,
                                  "stroke-width": 1.3, points: this.stepLine(3)}));
    var inView = this.data.sent.filter(function (s) { return s[0] >= v[0] && s[0] <= v[1]; });
    [[0, DATA, "data"], [1, RETRANSMIT, "retransmit"]].forEach(function (kind) {
      var bars = inView.filter(function (s) { return s[4] === kind[0]; });
      if (!bars.length) return;
      var cols = {}, list = [];
      bars.forEach(function (s) {
        var x = self.px(s[0]), ya = self.py(s[2]), yb = self.py(s[3]);
        if (bars.length <= LIMIT) { list.push([x, ya, yb]); return; }
        var c = Math.floor(x), span = cols[c];  /* one bar per pixel column */
        if (!span) { cols[c] = span = [x, Math.max(ya, yb), Math.min(ya, yb)]; list.push(span); }
        span[1] = Math.max(span[1], ya, yb); span[2] = Math.min(span[2], ya, yb);
      });
      var serifs = list.length <= 400, d = [];
      list.forEach(function (b) {
        d.push("M" + num(b[0]) + " " + num(b[1]) + "V" + num(b[2]));
        if (serifs) d.push("M" + num(b[0] - 2) + " " + num(b[1]) + "h4M" + num(b[0] - 2) +
                           " " + num(b[2]) + "h4");
      });
      g.appendChild(el("path", {"class": kind[2], stroke: kind[1], "stroke-width": 1.2,
                                fill: "none", d: d.join("")}));
    });
  };

  Graph.prototype.visibleEvents = function () {
    var v = this.view;
    return this.data.events.filter(function (e) { return e.t >= v[0] && e.t <= v[1]; });
  };

  Graph.prototype.drawMarks = function () {
    var self = this, g = this.marks;
    clear(g);
    var evs = this.visibleEvents();
    evs.forEach(function (e) {
      var c = COLOURS[e.cls], x = num(self.px(e.t));
      var yo = num(self.py(e.old)), yn = num(self.py(e.new));
      var m = el("g", {"class": "event " + e.cls, "data-frame": e.frame, "data-old": e.old,
                       "data-new": e.new});
      m.appendChild(el("line", {"class": "taken", x1: x, y1: yo, x2: x, y2: yn, stroke: c,
                                "stroke-width": 6, "stroke-opacity": ".45"}));
      if (e.beyond) m.appendChild(el("line", {"class": "beyond", x1: x, y1: num(self.py(e.nxt)),
                                              x2: x, y2: yn, stroke: c, "stroke-width": 2}));
      m.appendChild(el("circle", {cx: x, cy: yn, r: 4, fill: c, stroke: "#fff",
                                  "stroke-width": 1}));
      g.appendChild(m);
    });
    /* Labels: one per cluster of events closer than CLUSTER_PX (treason.output.plot). */
    var l = this.labels, groups = [], start = 0, y = this.y1 - 12;
    clear(l);
    evs.slice().sort(function (a, b) { return a.t - b.t || a.frame - b.frame; })
      .forEach(function (e) {
        var x = self.px(e.t);
        if (groups.length && x - start < CLUSTER_PX) groups[groups.length - 1].push(e);
        else { groups.push([e]); start = x; }
      });
    groups.forEach(function (group) {
      var worst = group.reduce(function (a, b) {
        var d = SEVERITY[b.cls] - SEVERITY[a.cls];
        return d > 0 || (d === 0 && b.back > a.back) ? b : a;
      });
      var c = COLOURS[worst.cls], x = 0;
      group.forEach(function (e) { x += self.px(e.t); });
      x = num(x / group.length);
      var text = group.length === 1 ? "#" + worst.frame + " \u2212" + worst.back + " B"
                                    : group.length + " events";
      var g2 = el("g", {"class": "label",
                        "data-frames": group.map(function (e) { return e.frame; }).join(" ")});
      g2.appendChild(el("line", {x1: x, y1: y + 3, x2: x, y2: self.y1, stroke: c,
                                 "stroke-width": ".8", "stroke-dasharray": "2 2"}));
      g2.appendChild(el("text", {x: x, y: y, "text-anchor": "middle", fill: c,
                                 style: "fill:" + c}, text));
      l.appendChild(g2);
    });
  };

  /* What lies under the pointer (SVG pixels): an event, an ACK and its edge step, a segment. */
  Graph.prototype.hit = function (x, y) {
    var self = this, best = null, bestD = HIT_PX;
    function consider(d, what) { if (d < bestD) { bestD = d; best = what; } }
    this.visibleEvents().forEach(function (e) {
      var ex = self.px(e.t), ya = self.py(e.old), yb = self.py(e.new);
      var dy = y < Math.min(ya, yb) ? Math.min(ya, yb) - y : y > Math.max(ya, yb) ? y - Math.max(ya, yb) : 0;
      consider(Math.max(Math.abs(ex - x), dy) - 2, {kind: "event", e: e});
    });
    if (best) return best;
    var t0 = this.tAt(x - HIT_PX), t1 = this.tAt(x + HIT_PX);
    this.data.acked.forEach(function (a) {
      if (a[0] < t0 || a[0] > t1) return;
      var ax = self.px(a[0]);
      consider(Math.hypot(ax - x, self.py(a[2]) - y), {kind: "ack", a: a});
      consider(Math.hypot(ax - x, self.py(a[3]) - y), {kind: "edge", a: a});
    });
    this.data.sent.forEach(function (s) {
      if (s[0] < t0 || s[0] > t1) return;
      var sx = self.px(s[0]), ya = self.py(s[3]), yb = self.py(s[2]);
      var dy = y < ya ? ya - y : y > yb ? y - yb : 0;
      consider(Math.max(Math.abs(sx - x), dy), {kind: "sent", s: s});
    });
    return best;
  };

  Graph.prototype.describe = function (h) {
    var d = this.data, t0 = d.t0, seq0 = d.seq0;
    function when(t) {
      var at = t0 + t, whole = Math.floor(at), micros = Math.round((at - whole) * 1e6);
      if (micros === 1000000) { whole += 1; micros = 0; }
      var day = new Date(whole * 1000).toISOString().slice(0, 19).replace("T", " ");
      return "time " + day + "." + String(micros).padStart(6, "0") + " UTC (" + t.toFixed(6) +
             " s in)";
    }
    function abs(rel) { return (seq0 + rel) % 4294967296; }
    if (h.kind === "event") {
      var e = h.e;
      return "frame " + e.frame + ": " + e.cls + " event\n" + when(e.t) + "\nright edge " +
             e.old + " -> " + e.new + " (relative)\n" + e.back + " bytes taken back, " +
             e.beyond + " beyond snd_nxt " + e.nxt + "\n" + e.row +
             (e.kernel ? "\nkernel log: " + e.kernel : "");
    }
    if (h.kind === "ack" || h.kind === "edge") {
      var a = h.a;
      return "frame " + a[1] + ": " + (h.kind === "ack" ? "ACK" : "right edge step") + "\n" +
             when(a[0]) + "\nack " + a[2] + " (absolute " + abs(a[2]) + "), window " + a[4] +
             " << " + d.scale + "\nright edge " + a[3] + " (relative)";
    }
    var s = h.s;
    return "frame " + s[1] + ": " + (s[4] ? "retransmitted " : "") + "segment\n" + when(s[0]) +
           "\nseq " + s[2] + " to " + s[3] + " (absolute " + abs(s[2]) + "), " + (s[3] - s[2]) +
           " bytes";
  };

  /* Pointer position in the SVG's own pixels (the graph may be scaled to the page). */
  Graph.prototype.local = function (ev) {
    var r = this.svg.getBoundingClientRect(), vb = this.svg.viewBox.baseVal;
    return [(ev.clientX - r.left) * vb.width / r.width, (ev.clientY - r.top) * vb.height / r.height];
  };

  Graph.prototype.zoomAt = function (x, y, factor, onlyX) {
    var v = this.view, t = this.tAt(x), s = this.sAt(y);
    var ny = onlyX ? [v[2], v[3]] : [s - (s - v[2]) * factor, s + (v[3] - s) * factor];
    this.setView(t - (t - v[0]) * factor, t + (v[1] - t) * factor, ny[0], ny[1]);
  };

  Graph.prototype.wire = function () {
    var self = this, svg = this.svg, drag = null, rect = null;
    Array.prototype.forEach.call(svg.querySelectorAll("title"), function (t) { t.remove(); });
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var p = self.local(ev);
      self.zoomAt(p[0], p[1], ev.deltaY < 0 ? 0.8 : 1.25, ev.shiftKey);
    }, {passive: false});
    svg.addEventListener("mousedown", function (ev) {
      if (ev.button !== 0) return;
      ev.preventDefault();
      drag = {p: self.local(ev), view: self.view.slice(), pan: ev.shiftKey};
    });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      var p = self.local(ev), v = drag.view;
      if (drag.pan) {
        var dt = (p[0] - drag.p[0]) * (v[1] - v[0]) / (self.x1 - self.x0);
        var ds = (p[1] - drag.p[1]) * (v[3] - v[2]) / (self.y1 - self.y0);
        self.setView(v[0] - dt, v[1] - dt, v[2] - ds, v[3] - ds);
        return;
      }
      if (!rect) { rect = el("rect", {"class": "zoombox"}); svg.appendChild(rect); }
      rect.setAttribute("x", Math.min(p[0], drag.p[0]));
      rect.setAttribute("y", Math.min(p[1], drag.p[1]));
      rect.setAttribute("width", Math.abs(p[0] - drag.p[0]));
      rect.setAttribute("height", Math.abs(p[1] - drag.p[1]));
    });
    window.addEventListener("mouseup", function (ev) {
      if (!drag) return;
      var p = self.local(ev), start = drag.p, wasPan = drag.pan;
      drag = null;
      if (rect) { rect.remove(); rect = null; }
      if (wasPan) return;
      if (Math.abs(p[0] - start[0]) > 5 && Math.abs(p[1] - start[1]) > 5) {
        var ta = self.tAt(start[0]), tb = self.tAt(p[0]);
        var sa = self.sAt(start[1]), sb = self.sAt(p[1]);
        self.setView(Math.min(ta, tb), Math.max(ta, tb), Math.min(sa, sb), Math.max(sa, sb));
      } else {
        self.pick(p[0], p[1]);
      }
    });
    svg.addEventListener("mousemove", function (ev) {
      if (drag) return;
      var p = self.local(ev), h = self.hit(p[0], p[1]);
      if (!h) { self.tip.style.display = "none"; return; }
      var r = self.box.getBoundingClientRect();
      self.tip.textContent = self.describe(h);
      self.tip.style.display = "block";
      var left = ev.clientX - r.left + 14, width = self.tip.offsetWidth;
      if (left + width > r.width) left = Math.max(0, ev.clientX - r.left - 14 - width);
      self.tip.style.left = left + "px";
      self.tip.style.top = (ev.clientY - r.top + 14) + "px";
    });
    svg.addEventListener("mouseleave", function () { self.tip.style.display = "none"; });
    svg.addEventListener("dblclick", function () { self.reset(); });
    this.box.querySelector("[data-act=reset]").addEventListener("click", function () { self.reset(); });
    this.box.querySelector("[data-act=svg]").addEventListener("click", function () { self.saveSvg(); });
    this.box.querySelector("[data-act=png]").addEventListener("click", function () { self.savePng(); });
  };

  /* A click: a mark's numbers stay below the graph; a cluster label zooms into its events. */
  Graph.prototype.pick = function (x, y) {
    if (y < this.y1) {
      var self = this, evs = this.visibleEvents(), near = evs.filter(function (e) {
        return Math.abs(self.px(e.t) - x) < CLUSTER_PX;
      });
      if (near.length > 1) {
        var lo = Math.min.apply(null, near.map(function (e) { return e.t; }));
        var hi = Math.max.apply(null, near.map(function (e) { return e.t; }));
        var pad = Math.max((hi - lo) * 0.2, (this.view[1] - this.view[0]) * 1e-3);
        this.setView(lo - pad, hi + pad, this.view[2], this.view[3]);
        return;
      }
    }
    var h = this.hit(x, y);
    this.picked.textContent = h ? this.describe(h) : "";
  };

  Graph.prototype.reset = function () {
    var h = this.home;
    this.setView(h[0], h[1], h[2], h[3]);
  };

  Graph.prototype.svgText = function () {
    var copy = this.svg.cloneNode(true);
    var style = el("style", {}, "text{font:11px system-ui,sans-serif;fill:#333}" +
                                ".title{font-weight:600;font-size:12px}");
    copy.insertBefore(style, copy.firstChild);
    return new XMLSerializer().serializeToString(copy);
  };

  Graph.prototype.name = function (ext) {
    return "treason-" + this.svg.getAttribute("data-flow").replace(/[^\w.-]+/g, "_") + "." + ext;
  };

  function download(href, name) {
    var a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  Graph.prototype.saveSvg = function () {
    var url = URL.createObjectURL(new Blob([this.svgText()], {type: "image/svg+xml"}));
    download(url, this.name("svg"));
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  };

  Graph.prototype.savePng = function () {
    var self = this, vb = this.svg.viewBox.baseVal, img = new Image();
    img.onload = function () {
      var canvas = document.createElement("canvas");
      canvas.width = vb.width * 2;
      canvas.height = vb.height * 2;
      var ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.scale(2, 2);
      ctx.drawImage(img, 0, 0, vb.width, vb.height);
      download(canvas.toDataURL("image/png"), self.name("png"));
    };
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(this.svgText());
  };

  var graphs = [];
  Array.prototype.forEach.call(document.querySelectorAll("svg[data-series]"), function (svg) {
    graphs.push(new Graph(svg));
  });
  var select = document.getElementById("flow-select");
  if (select) select.addEventListener("change", function () {
    Array.prototype.forEach.call(document.querySelectorAll("section.flow"), function (s) {
      s.style.display = !select.value || s.id === select.value ? "" : "none";
    });
  });
  window.treasonGraphs = graphs; /* for scripts and tests: each graph's view and setView */
})();
