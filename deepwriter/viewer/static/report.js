/* The run report's viewer: draws window.__REPORT (written by deepwriter/viewer/page.py) into #app.
   Vanilla JS, no network: charts are SVG drawn here; details come from window.__chunks, filled by
   inline scripts or by chunk files loaded on demand with <script src>. Text from the data is set
   with textContent only, never parsed as HTML. */
(function () {
  "use strict";
  var REPORT = window.__REPORT;
  var PAGE_SIZE = 100;
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2f6fdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

  // --- small helpers ---------------------------------------------------------------------------------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (k === "text") node.textContent = a[k];
      else if (k === "cls") node.className = a[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), a[k]);
      else if (a[k] !== null && a[k] !== undefined) node.setAttribute(k, a[k]);
    });
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(node, c); });
    else node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    return node;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en-US");
      var d = digits === undefined ? (Math.abs(v) < 0.01 ? 6 : 3) : digits;
      return Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toFixed(d);
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function textBlock(text, cls) { return el("div", { cls: "text " + (cls || "") }, text || ""); }
  function kvTable(obj) {
    var keys = Object.keys(obj || {});
    if (!keys.length) return el("p", { cls: "muted" }, "none recorded");
    return el("table", { cls: "kv" }, keys.map(function (k) {
      return el("tr", {}, el("td", {}, k), el("td", { cls: isNum(obj[k]) ? "num" : "" }, fmt(obj[k])));
    }));
  }
  // digits: every number of the table with this many decimals (a score table: 70.00, not 70)
  function simpleTable(header, rows, digits) {
    return el("table", {},
      el("thead", {}, el("tr", {}, header.map(function (h) { return el("th", {}, h); }))),
      el("tbody", {}, rows.map(function (r) {
        return el("tr", {}, r.map(function (v) {
          var shown = v instanceof Node ? v : (digits !== undefined && isNum(v) ? v.toFixed(digits) : fmt(v));
          return el("td", { cls: isNum(v) ? "num" : "" }, shown);
        }));
      })));
  }

  // --- charts (SVG) ------------------------------------------------------------------------------------
  function scale(lo, hi, a, b) {
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    return function (v) { return a + (v - lo) * (b - a) / (hi - lo); };
  }
  // series: [{name, points: [[x, y], ...], dots: bool}]
  function lineChart(title, series, opts) {
    opts = opts || {};
    var W = opts.width || 420, H = opts.height || 220, L = 52, B = 28, T = 10, Rm = 10;
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (isNum(p[1])) { xs.push(p[0]); ys.push(p[1]); } }); });
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "line-chart" });
    if (!xs.length) return figure(title, root);
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.05 || 1;
    y0 -= pad; y1 += pad;
    var sx = scale(x0, x1, L, W - Rm), sy = scale(y0, y1, H - B, T);
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4;
      root.appendChild(svg("line", { x1: L, x2: W - Rm, y1: sy(yv), y2: sy(yv), "class": "grid" }));
      root.appendChild(svg("text", { x: L - 4, y: sy(yv) + 3, "text-anchor": "end", text: fmt(yv, 3) }));
    }
    root.appendChild(svg("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis" }));
    root.appendChild(svg("line", { x1: L, x2: W - Rm, y1: H - B, y2: H - B, "class": "axis" }));
    var xticks = x1 === x0 ? [x0] : [x0, x0 + (x1 - x0) / 2, x1];
    xticks.forEach(function (xv) {
      root.appendChild(svg("text", { x: sx(xv), y: H - B + 14, "text-anchor": "middle", text: String(Math.round(xv * 10) / 10) }));
    });
    if (opts.xlabel) root.appendChild(svg("text", { x: (L + W) / 2, y: H - 2, "text-anchor": "middle", text: opts.xlabel }));
    series.forEach(function (s, k) {
      var color = s.color || COLORS[k % COLORS.length];
      var pts = s.points.filter(function (p) { return isNum(p[1]); });
      if (!s.dotsOnly && pts.length > 1) {
        root.appendChild(svg("polyline", {
          points: pts.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" "),
          fill: "none", stroke: color, "stroke-width": 1.8
        }));
      }
      if (s.dots || s.dotsOnly || pts.length === 1) {
        pts.forEach(function (p) {
          var c = svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.dotsOnly ? 3 : 3.5, fill: color, "fill-opacity": s.dotsOnly ? 0.55 : 1 });
          c.appendChild(svg("title", { text: s.name + ": " + fmt(p[1]) + " at " + p[0] }));
          root.appendChild(c);
        });
      }
      root.appendChild(svg("text", { x: L + 6 + 110 * k, y: T + 10, fill: color, style: "fill:" + color, text: s.name }));
    });
    return figure(title, root);
  }
  function barChart(title, labels, values, opts) {
    opts = opts || {};
    var n = labels.length, rowH = 18, L = opts.labelWidth || 170, W = opts.width || 460, H = 14 + n * rowH;
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "bar-chart" });
    var vals = values.map(function (v) { return isNum(v) ? v : 0; });
    var hi = Math.max.apply(null, vals.concat([opts.max || 0, 1e-9]));
    var sx = scale(0, hi, L, W - 60);
    labels.forEach(function (lab, i) {
      var y = 6 + i * rowH;
      root.appendChild(svg("text", { x: L - 6, y: y + 12, "text-anchor": "end", text: String(lab).slice(0, 34) }));
      var bar = svg("rect", { x: L, y: y + 2, width: Math.max(0, sx(vals[i]) - L), height: rowH - 5, fill: (opts.colors || COLORS)[opts.colorBy ? opts.colorBy(i) : 0] });
      bar.appendChild(svg("title", { text: lab + ": " + fmt(values[i]) }));
      root.appendChild(bar);
      root.appendChild(svg("text", { x: sx(vals[i]) + 4, y: y + 12, text: fmt(values[i], 2) }));
    });
    return figure(title, root);
  }
  function histogramChart(title, hist, color) {
    var W = 420, H = 170, L = 40, B = 28, T = 8;
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "histogram" });
    var counts = hist.counts || [], edges = hist.edges || [];
    if (!counts.length) return figure(title, root);
    var top = Math.max.apply(null, counts), bw = (W - L - 8) / counts.length;
    var sy = scale(0, top, H - B, T);
    counts.forEach(function (c, i) {
      var r = svg("rect", { x: L + i * bw + 1, y: sy(c), width: Math.max(1, bw - 2), height: H - B - sy(c), fill: color || COLORS[0] });
      r.appendChild(svg("title", { text: Math.round(edges[i]) + "–" + Math.round(edges[i + 1]) + " words: " + c }));
      root.appendChild(r);
    });
    root.appendChild(svg("line", { x1: L, x2: W - 8, y1: H - B, y2: H - B, "class": "axis" }));
    root.appendChild(svg("text", { x: L, y: H - B + 14, text: Math.round(edges[0]) }));
    root.appendChild(svg("text", { x: W - 8, y: H - B + 14, "text-anchor": "end", text: Math.round(edges[edges.length - 1]) + " words" }));
    root.appendChild(svg("text", { x: L - 4, y: T + 8, "text-anchor": "end", text: top }));
    return figure(title, root);
  }
  function figure(title, chart) { return el("figure", { cls: "chart" }, chart, el("figcaption", {}, title)); }

  // --- details loaded on demand ----------------------------------------------------------------------
  var waiting = {};
  window.__onchunk = function (run, kind, n) {
    var key = run + "/" + kind + "/" + n;
    (waiting[key] || []).forEach(function (cb) { cb(window.__chunks[key]); });
    delete waiting[key];
  };
  function detail(run, kind, index, cb) {
    var info = REPORT.chunks[run + "/" + kind];
    var n = Math.floor(index / info.size), key = run + "/" + kind + "/" + n;
    var ready = function (data) { cb(data[index - n * info.size]); };
    if (window.__chunks[key]) return ready(window.__chunks[key]);
    if (waiting[key]) return waiting[key].push(ready);
    waiting[key] = [ready];
    var src = info.prefix + String(n).padStart(4, "0") + ".js";
    document.head.appendChild(el("script", {
      src: src,
      onerror: function () {
        delete waiting[key];
        cb(null, "could not load " + src + " (is the folder beside report.html?)");
      }
    }));
  }

  // --- a sortable, filterable, paged table --------------------------------------------------------------
  // spec: {columns: [{key, label, index, numeric, render}], rows, filters: [{label, options, test}],
  //        onSelect(rowIndex, tr), rowClass(row), name}
  function dataTable(spec) {
    var state = { sort: null, dir: 1, page: 0, filter: {}, selected: -1 };
    var box = el("div", { cls: "datatable", "data-name": spec.name });
    var filterBar = el("div", { cls: "filters" });
    var counter = el("span", { cls: "count" });
    var thead = el("tr");
    var tbody = el("tbody");
    var pageLabel = el("span", { cls: "page-label" });
    var prev = el("button", { type: "button", cls: "prev", onclick: function () { go(state.page - 1); } }, "‹ prev");
    var next = el("button", { type: "button", cls: "next", onclick: function () { go(state.page + 1); } }, "next ›");
    (spec.filters || []).forEach(function (f, k) {
      var sel = el("select", { "data-filter": f.key, onchange: function () { state.filter[k] = sel.value; state.page = 0; draw(); } },
        f.options.map(function (o) { return el("option", { value: o }, o); }));
      state.filter[k] = f.options[0];
      filterBar.appendChild(el("label", {}, f.label + " ", sel));
    });
    filterBar.appendChild(counter);
    spec.columns.forEach(function (c) {
      var th = el("th", { cls: "sortable", "data-col": c.key, title: "sort by " + c.label }, c.label);
      th.addEventListener("click", function () {
        if (state.sort === c) state.dir = -state.dir; else { state.sort = c; state.dir = c.numeric ? -1 : 1; }
        state.page = 0;
        draw();
      });
      thead.appendChild(th);
    });
    var view = [];
    function compute() {
      view = [];
      spec.rows.forEach(function (row, i) {
        for (var k = 0; k < (spec.filters || []).length; k++) {
          var f = spec.filters[k];
          if (state.filter[k] !== f.options[0] && !f.test(row, state.filter[k])) return;
        }
        view.push(i);
      });
      if (state.sort) {
        var c = state.sort, d = state.dir;
        view.sort(function (a, b) {
          var va = spec.rows[a][c.index], vb = spec.rows[b][c.index];
          if (va === vb) return a - b;
          if (va === null || va === undefined) return 1;  // missing values last, whatever the direction
          if (vb === null || vb === undefined) return -1;
          return (va < vb ? -1 : 1) * d;
        });
      }
    }
    function go(p) { state.page = p; draw(); }
    function draw() {
      compute();
      var pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
      state.page = Math.max(0, Math.min(state.page, pages - 1));
      Array.prototype.forEach.call(thead.children, function (th) {
        th.classList.remove("sorted-asc", "sorted-desc");
        if (state.sort && th.getAttribute("data-col") === state.sort.key) th.classList.add(state.dir > 0 ? "sorted-asc" : "sorted-desc");
      });
      tbody.textContent = "";
      view.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE).forEach(function (i) {
        var row = spec.rows[i];
        var tr = el("tr", { cls: "row " + (spec.rowClass ? spec.rowClass(row) : ""), "data-index": i });
        if (i === state.selected) tr.classList.add("selected");
        spec.columns.forEach(function (c) {
          var v = row[c.index];
          var shown = c.render ? c.render(v, row) : (c.digits !== undefined && isNum(v) ? v.toFixed(c.digits) : fmt(v));
          tr.appendChild(el("td", { cls: c.numeric ? "num" : "" }, shown));
        });
        tr.addEventListener("click", function () {
          state.selected = i;
          Array.prototype.forEach.call(tbody.children, function (r) { r.classList.remove("selected"); });
          tr.classList.add("selected");
          spec.onSelect(i, tr);
        });
        tbody.appendChild(tr);
      });
      counter.textContent = view.length + " of " + spec.rows.length + " " + spec.name;
      counter.setAttribute("data-shown", view.length);
      counter.setAttribute("data-total", spec.rows.length);
      pageLabel.textContent = "page " + (state.page + 1) + " of " + pages;
      prev.disabled = state.page === 0;
      next.disabled = state.page >= pages - 1;
    }
    append(box, [filterBar, el("table", { cls: "rows" }, el("thead", {}, thead), tbody),
      el("div", { cls: "pager" }, prev, pageLabel, next)]);
    draw();
    return box;
  }

  // --- synthesis ---------------------------------------------------------------------------------------
  function synthesisSection(run, data) {
    var s = data.synthesize;
    var sec = el("section", { cls: "stage", id: "synthesis-" + run }, el("h2", {}, "Synthesis"));
    if (!s) return append(sec, el("p", { cls: "muted" }, "The synthesize stage has not written anything yet.")), sec;
    var col = {};
    s.columns.forEach(function (c, i) { col[c] = i; });
    var counts = s.counts || {};
    append(sec, el("p", {}, fmt(counts.pairs !== undefined ? counts.pairs : s.rows.length) + " pairs, " + fmt(counts.kept) +
      " kept, " + fmt(counts.discarded) + " discarded; " + fmt(counts.accepted_edits) + " accepted edits in " + fmt(counts.steps) +
      " steps. Scores are clipped mean NLLs of y given x and z: lower is better."));
    // every discard by its reason (prompts over a model's context included): verdicts, never outages
    var reasons = Object.keys(counts).filter(function (k) {
      return k.indexOf("discarded_") === 0 && ["discarded_before_search", "discarded_by_quality_filters", "discarded_over_context"].indexOf(k) < 0;
    });
    if (reasons.length) append(sec, [el("h3", {}, "Discarded, by reason"), simpleTable(["reason", "pairs"], reasons.map(function (k) {
      return [k.slice("discarded_".length), counts[k]];
    }).concat([["rewrite steps refused for length (segment kept)", counts.refine_steps_over_context || 0]]))]);
    var cmp = (s.metrics || {}).released_comparison;
    if (cmp) {
      var pm = function (k, d) { return fmt(cmp[k], d) + " ± " + fmt(cmp[k + "_se"], d); };
      append(sec, [el("h3", {}, "Ours vs the authors' released trajectories (" + fmt(cmp.pairs) + " pairs)"),
        simpleTable(["", "ours", "released", "ours − released"], [
          ["score (same scorer; lower is better)", pm("score_ours", 4), pm("score_released", 4), pm("score_difference", 4)],
          ["thinking length (words)", pm("words_ours", 1), pm("words_released", 1), "–"],
          ["accepted edits", pm("accepted_edits_ours", 2), "–", "–"],
          ["pairs where ours scores lower", pm("ours_lower_share", 3), "–", "–"]
        ]),
        el("p", { cls: "muted" }, "Means ± their standard errors, pair for pair on the pairs both were scored on.")]);
    }
    var cats = ["all"].concat(Array.from(new Set(s.rows.map(function (r) { return r[col.category]; }))).sort());
    var detailBox = el("div", { cls: "detail", id: "pair-detail-" + run, hidden: "" });
    var num = function (k, label, digits) { return { key: k, label: label, index: col[k], numeric: true, digits: digits }; };
    var table = dataTable({
      name: "pairs",
      rows: s.rows,
      columns: [
        { key: "id", label: "id", index: col.id },
        { key: "category", label: "category", index: col.category },
        { key: "kept", label: "verdict", index: col.kept, render: function (v, row) { return v ? "kept" : "discarded: " + row[col.reason]; } },
        num("score_z0", "score z0", 4), num("score_final", "score final", 4),
        { key: "delta", label: "Δ", index: col.score_final, numeric: true, render: function (v, row) {
          var d = isNum(v) && isNum(row[col.score_z0]) ? v - row[col.score_z0] : null;
          return el("span", { cls: d < 0 ? "pos" : "" }, d === null ? "–" : d.toFixed(4));
        } },
        num("steps", "steps"), num("accepted", "accepted edits"), num("tokens", "tokens")
      ],
      filters: [
        { key: "verdict", label: "verdict", options: ["all", "kept", "discarded"], test: function (r, v) { return (v === "kept") === !!r[col.kept]; } },
        { key: "category", label: "category", options: cats, test: function (r, v) { return r[col.category] === v; } },
        { key: "improvement", label: "improvement", options: ["all", "improved", "unchanged"], test: function (r, v) {
          var better = isNum(r[col.score_final]) && isNum(r[col.score_z0]) && r[col.score_final] < r[col.score_z0];
          return (v === "improved") === better;
        } }
      ],
      rowClass: function (r) { return r[col.kept] ? "kept" : "discarded"; },
      onSelect: function (i) {
        detailBox.hidden = false;
        detailBox.textContent = "Loading pair " + s.rows[i][col.id] + "…";
        detail(run, "pairs", i, function (d, err) { showPair(detailBox, s.rows[i], col, d, err); });
      }
    });
    append(sec, [table, detailBox]);
    return sec;
  }

  function showPair(box, row, col, d, err) {
    box.textContent = "";
    if (!d) return append(box, el("p", { cls: "neg" }, err || "no detail for this pair"));
    var edits = d.z.filter(function (p) { return p.before !== undefined; });
    var zView = el("div", { cls: "text z-final" }, d.z.map(function (p) {
      if (p.before === undefined) return p.text;
      return el("mark", { cls: "edit", title: "replaced (step " + p.steps.join(", ") + "): " + p.before }, p.text);
    }));
    var scorePts = d.scores.map(function (v, k) { return [k, v]; });
    var candPts = [];
    d.steps.forEach(function (st) { st.candidates.forEach(function (c) { if (isNum(c.score)) candPts.push([st.step, c.score]); }); });
    append(box, [
      el("h3", {}, "Pair " + row[col.id] + " · " + row[col.category] + " · " + (row[col.kept] ? "kept" : "discarded: " + row[col.reason])),
      el("div", { cls: "two" },
        el("div", {}, el("h3", {}, "x — the request"), textBlock(d.x, "x")),
        el("div", {}, el("h3", {}, "y — the answer"), textBlock(d.y, "y"))),
      el("div", { cls: "charts" },
        lineChart("score vs step (lower is better); dots: every candidate's score", [
          { name: "current z", points: scorePts, dots: true },
          { name: "candidates", points: candPts, dotsOnly: true, color: "#e67e22" }
        ], { xlabel: "step" }),
        kvTable({ "score z0": row[col.score_z0], "score final": row[col.score_final], steps: row[col.steps],
          "accepted edits": row[col.accepted], "prompt tokens": d.tokens.prompt, "completion tokens": d.tokens.completion,
          "target tokens": d.tokens.target, trigger: d.trigger,
          "model seconds (generate + score: its share of the batched calls)": d.model_s,
          "wall seconds in flight (admitted to done, beside the other pairs in flight)": d.in_flight_s })),
      el("h3", {}, "z — the final thinking (accepted rewrites highlighted; hover for the text they replaced)"),
      zView,
      edits.length ? el("h3", {}, "Accepted rewrites") : null,
      edits.map(function (p) {
        return el("div", { cls: "cand won edit-pair" },
          el("div", { cls: "muted" }, "step " + p.steps.join(", ") + ": score " + fmt(p.score_before) + " → " + fmt(p.score_after)),
          el("div", { cls: "text replaced" }, p.before), el("div", { cls: "text" }, p.text));
      }),
      d.z0 !== null && d.z0 !== undefined ? el("details", {}, el("summary", {}, "z0 — the initial thinking"), textBlock(d.z0)) : null,
      d.raw_initial ? el("details", {}, el("summary", {}, "raw initial generation (unparseable)"), textBlock(d.raw_initial)) : null,
      el("h3", {}, "Search steps"),
      d.steps.length ? d.steps.map(function (st) {
        return el("div", { cls: "step" },
          el("div", {}, el("b", {}, "step " + st.step), " · segment " + st.segment + " · " + (st.accepted ? "accepted" : "kept the current z")),
          st.candidates.map(function (c, k) {
            var won = st.accepted && isNum(c.score) && c.score === Math.min.apply(null, st.candidates.map(function (x) { return isNum(x.score) ? x.score : Infinity; }));
            return el("details", { cls: "cand" + (won ? " won" : "") },
              el("summary", {}, "candidate " + (k + 1) + ": score " + fmt(c.score) + (c.text === null ? " (unparseable)" : "")),
              textBlock(c.text !== null ? c.text : c.raw));
          }));
      }) : el("p", { cls: "muted" }, "no search steps (discarded before the search, or z0 already below the stop threshold)")
    ]);
  }

  // --- mix ------------------------------------------------------------------------------------------------
  function mixSection(run, data) {
    var m = data.mix;
    var sec = el("section", { cls: "stage", id: "mix-" + run }, el("h2", {}, "Mix"));
    if (!m) return append(sec, el("p", { cls: "muted" }, "The mix stage has not run.")), sec;
    var cats = m.categories.map(function (r) { return r[0] + " · " + r[1]; });
    var sources = Object.keys(m.lengths);
    append(sec, [
      el("div", { cls: "two" }, el("div", {}, el("h3", {}, "Counts"), kvTable(m.counts)), el("div", {}, el("h3", {}, "Metrics"), kvTable(m.metrics))),
      el("div", { cls: "charts" },
        barChart("samples by source and category", cats, m.categories.map(function (r) { return r[2]; }), { labelWidth: 230 }),
        sources.map(function (s, k) { return histogramChart("answer length of " + s + " samples (words)", m.lengths[s], COLORS[k % COLORS.length]); })),
      el("h3", {}, "What each filter dropped"),
      m.dropped.length ? simpleTable(["filter", "dropped", "examples"], m.dropped.map(function (f) {
        return [f.filter, f.count, el("div", {}, f.examples.map(function (e) {
          return el("div", {}, el("b", {}, (e.id || "?") + " "), "(" + (e.source || "") + ", " + (e.category || "") + "): " + (e.reason || ""));
        }))];
      })) : el("p", { cls: "muted" }, "No filter removed anything."),
      m.skipped ? el("p", {}, m.skipped + " bad input records skipped (skipped.jsonl)") : null,
      el("details", {}, el("summary", {}, "Data card (DATA_CARD.md)"), textBlock(m.card))
    ]);
    return sec;
  }

  // --- sft --------------------------------------------------------------------------------------------------
  function sftSection(run, data) {
    var t = data.sft;
    var sec = el("section", { cls: "stage", id: "sft-" + run }, el("h2", {}, "SFT"));
    if (!t) return append(sec, el("p", { cls: "muted" }, "The sft stage has not run.")), sec;
    var charts = [];
    var titles = { loss: "training loss", learning_rate: "learning rate", tokens_per_s: "throughput (tokens/s)", grad_norm: "gradient norm" };
    Object.keys(titles).forEach(function (k) {
      if (t.series[k]) charts.push(lineChart(titles[k] + " vs step", [{ name: k, points: t.series[k], dots: t.series[k].length < 40 }], { xlabel: "step" }));
    });
    var mem = t.memory;
    append(sec, [
      el("div", { cls: "charts" }, charts.length ? charts : el("p", { cls: "muted" }, "No train_log.jsonl rows yet.")),
      el("div", { cls: "two" }, el("div", {}, el("h3", {}, "Counts"), kvTable(t.counts)), el("div", {}, el("h3", {}, "Metrics"), kvTable(t.metrics))),
      el("h3", {}, "Memory: the planner's estimate vs measured (GiB)"),
      mem.planned ? el("div", { cls: "charts" }, barChart(
        "planner estimate per GPU by part, and the measured peak (" + (mem.measured_on === "gpu"
          ? "GPU max allocated" : "CPU max RSS of the process; the estimate's 4 GiB runtime is CUDA's") + ")",
        ["weights", "gradients", "optimizer", "activations", "runtime", "estimate: total", "measured peak"],
        [mem.planned.weights, mem.planned.gradients, mem.planned.optimizer, mem.planned.activations, mem.planned.overhead,
          mem.planned.total, mem.measured_gb],
        { colorBy: function (i) { return i < 5 ? 0 : i - 4; } })) : null,
      kvTable({
        "planner estimate, total": mem.planned ? mem.planned.total : "not available (no model config.json or settings)",
        "measured peak": mem.measured_gb,
        "measured on": mem.measured_on || "–"
      })
    ]);
    return sec;
  }

  // --- eval ---------------------------------------------------------------------------------------------------
  function evalSection(run, data) {
    var e = data["eval"];
    var sec = el("section", { cls: "stage", id: "eval-" + run }, el("h2", {}, "Eval"));
    if (!e) return append(sec, el("p", { cls: "muted" }, "The eval stage has not run.")), sec;
    if (e.paper) append(sec, [el("h3", {}, "Headline (the paper's layout)"), simpleTable(e.paper.header, e.paper.rows, 2), e.paper.notes.map(function (n) { return el("p", { cls: "muted" }, n); })]);
    if (e.reported) {
      // the paper's own figures, beside the run's and never mixed into them; an unknown figure stays empty
      var shown = e.reported.rows.map(function (r) { return r.map(function (v) { return v === null ? "" : v; }); });
      var table = simpleTable(e.reported.header, shown, 2);
      table.className = "reported";
      append(sec, el("div", { cls: "reported-box", id: "reported-" + run }, [el("h3", {}, e.reported.title), table,
        e.reported.notes.map(function (n) { return el("p", { cls: "muted" }, n); })]));
    }
    var cols = Object.keys(e.headline);
    append(sec, el("div", { cls: "charts" },
      cols.length ? barChart("headline (0–100)", cols, cols.map(function (c) { return e.headline[c]; }), { max: 100 }) : null,
      e.breakdowns.map(function (b, k) {
        var labels = Object.keys(b.values);
        return barChart(b.benchmark + ": " + b.title, labels, labels.map(function (l) { return b.values[l]; }), { colors: [COLORS[(k + 1) % COLORS.length]] });
      })));
    var j = e.judge || {};
    append(sec, kvTable({ "model under test": j.model_under_test, judge: j.judge, "judge mode": j.judge_mode,
      "judge calls": (j.judge_stats || {}).calls, "judge failures": (j.judge_stats || {}).failed, "cost (USD)": (j.judge_stats || {}).cost_usd }));
    var agree = e.agreement || {};
    if (Object.keys(agree).length) {
      // eval.judge_samples > 1: how far the judge agrees with itself, and where it disagrees most
      append(sec, [el("h3", {}, "Judge agreement (judge samples)"),
        simpleTable(["benchmark", "Krippendorff's α", "items", "judgments per item", "mean spread"],
          Object.keys(agree).map(function (b) { var a = agree[b]; return [b, a.alpha, String(a.items), String(a.judgments_per_item), a.mean_spread]; }), 2),
        el("p", { cls: "muted" }, "α: 1 when every judgment of an item gives the same score, 0 when they agree no more than chance."),
        el("h3", {}, "Items the judgments disagree on most"),
        simpleTable(["benchmark", "id", "spread", "scores"], [].concat.apply([], Object.keys(agree).map(function (b) {
          return agree[b].most_disagreed.map(function (d) { return [b, d.id, d.spread, d.scores.map(function (v) { return v.toFixed(1); }).join(", ")]; });
        })), 2)]);
    }
    var panel = e.panel || {};
    if (Object.keys(panel).length) {
      // eval.panel: several judges of the same answers, how far they agree, and where they disagree most
      var fmt = function (v) { return isNum(v) ? v.toFixed(1) : "–"; };
      append(sec, el("div", { id: "panel-" + run }, [el("h3", {}, "Judge panel agreement"),
        simpleTable(["benchmark", "judges", "Krippendorff's α", "items", "mean spread"],
          Object.keys(panel).map(function (b) { var a = panel[b]; return [b, a.judges.join(", "), a.alpha, String(a.items), a.mean_spread]; }), 2),
        el("p", { cls: "muted" }, "α across the judges' scores of the same items: 1 when they always agree, 0 when no more than chance. The headline is the first judge's."),
        el("h3", {}, "Items the judges disagree on most"),
        simpleTable(["benchmark", "id", "spread", "scores"], [].concat.apply([], Object.keys(panel).map(function (b) {
          return panel[b].most_disagreed.map(function (d) {
            return [b, d.id, d.spread, Object.keys(d.scores).map(function (j) { return j + ": " + fmt(d.scores[j]); }).join(", ")];
          });
        })), 2)]));
    }
    var col = {};
    e.columns.forEach(function (c, i) { col[c] = i; });
    var benches = ["all"].concat(Array.from(new Set(e.rows.map(function (r) { return r[col.benchmark]; }))).sort());
    var box = el("div", { cls: "detail", id: "item-detail-" + run, hidden: "" });
    append(sec, [el("h3", {}, "Items"), dataTable({
      name: "items",
      rows: e.rows,
      columns: [
        { key: "benchmark", label: "benchmark", index: col.benchmark }, { key: "id", label: "id", index: col.id },
        { key: "score", label: "score", index: col.score, numeric: true, digits: 2 }, { key: "failure", label: "failure", index: col.failure }
      ],
      filters: [{ key: "benchmark", label: "benchmark", options: benches, test: function (r, v) { return r[col.benchmark] === v; } }],
      onSelect: function (i) {
        box.hidden = false;
        box.textContent = "Loading…";
        detail(run, "items", i, function (d, err) { showItem(box, e.rows[i], col, d, err); });
      }
    }), box]);
    return sec;
  }

  function showItem(box, row, col, d, err) {
    box.textContent = "";
    if (!d) return append(box, el("p", { cls: "neg" }, err || "no detail for this item"));
    var judges = Object.keys(d.judge || {});
    append(box, [
      el("h3", {}, row[col.benchmark] + " · " + row[col.id]),
      el("h3", {}, "Prompt"), textBlock(d.prompt),
      el("div", { cls: "two" },
        el("div", {}, el("h3", {}, "Answer"), textBlock(d.answer, "answer")),
        el("div", {}, el("h3", {}, "Thinking (stripped from the answer)"), d.thinking ? textBlock(d.thinking, "thinking") : el("p", { cls: "muted" }, "none"))),
      el("h3", {}, "Judge scores"),
      judges.map(function (k) {
        var o = d.judge[k] || {};
        var names = Object.keys(o.values || {});
        return el("div", { cls: "judge" }, el("div", { cls: "muted" }, k + (o.ok === false ? " — failed: " + (o.error || "") : "")),
          names.length ? simpleTable(["criterion", "score", "reason"], names.map(function (n) { return [n, o.values[n], (o.reasons || {})[n] || ""]; })) : null);
      }),
      d.criteria.length ? simpleTable(["criterion", "score", "reason"], d.criteria.map(function (c) { return [c.name, c.score, c.reason]; })) : null,
      el("h3", {}, "Fields"), kvTable(d.fields)
    ]);
  }

  // --- several runs: the ablation table ---------------------------------------------------------------------
  function signed(v) { return (v >= 0 ? "+" : "") + v.toFixed(2); }

  // `+1.20* [+0.30, +2.10] p=0.01`: * where the interval excludes 0; a difference whose interval holds 0 is muted
  function pairedCell(p) {
    var sure = isNum(p.low) && isNum(p.high) && (p.low > 0 || p.high < 0);
    var text = signed(p.diff) + (sure ? "*" : "") + (isNum(p.low) ? " [" + signed(p.low) + ", " + signed(p.high) + "]" : "") +
      (isNum(p.p_value) ? " p=" + p.p_value.toPrecision(2) : "");
    return el("span", { cls: sure ? (p.diff >= 0 ? "pos" : "neg") : "muted", title: "paired over " + p.n + " items" }, text);
  }

  function ablationSection() {
    var runs = REPORT.runs;
    var cols = [];
    runs.forEach(function (r) { Object.keys((r["eval"] || {}).headline || {}).forEach(function (c) { if (cols.indexOf(c) < 0) cols.push(c); }); });
    var ref = runs[0];
    var refHead = (ref["eval"] || {}).headline || {};
    var stat = function (r) {
      var s = r.synthesize || {}, c = s.counts || {};
      return [c.kept, c.accepted_edits, ((r.mix || {}).counts || {}).total, ((r.sft || {}).metrics || {}).last_loss];
    };
    var header = ["run", "recipe", "report"].concat(cols, cols.map(function (c) { return "Δ " + c; }), ["kept pairs", "accepted edits", "mix samples", "last loss"]);
    var rows = runs.map(function (r, i) {
      var head = (r["eval"] || {}).headline || {};
      var link = REPORT.links[i] ? el("a", { href: REPORT.links[i] }, "report.html") : "–";
      return [r.label, r.recipe, link].concat(
        cols.map(function (c) { return isNum(head[c]) ? head[c].toFixed(2) : "–"; }),
        cols.map(function (c) {
          if (i === 0 || !isNum(head[c]) || !isNum(refHead[c])) return "–";
          // the paired difference over the items both runs scored, with its 95% interval and permutation test
          var p = (r.paired_vs_first || {})[c];
          if (p && isNum(p.diff)) return pairedCell(p);
          var d = head[c] - refHead[c];
          return el("span", { cls: d >= 0 ? "pos" : "neg" }, (d >= 0 ? "+" : "") + d.toFixed(2));
        }),
        stat(r));
    });
    return el("section", { cls: "stage", id: "ablations" }, el("h2", {}, "Runs compared"),
      el("p", { cls: "muted" }, "Differences (Δ) are against the first run, " + ref.label + ": paired over the items both " +
        "runs scored, with the 95% bootstrap interval and a paired permutation test's p; * where the interval excludes 0."),
      simpleTable(header, rows),
      cols.length ? el("div", { cls: "charts" }, cols.map(function (c) {
        return barChart(c, runs.map(function (r) { return r.label; }), runs.map(function (r) { return ((r["eval"] || {}).headline || {})[c]; }), { max: 100, labelWidth: 220, colorBy: function (i) { return i; } });
      })) : null);
  }

  // --- several runs judged head to head (python -m deepwriter.eval.pairwise) --------------------------------
  function pairwiseSection() {
    var res = REPORT.pairwise;
    var num = function (v) { return isNum(v) ? v.toFixed(3) : "–"; };
    var ci = function (v, lh) { return num(v) + (lh && isNum(lh[0]) ? " [" + num(lh[0]) + ", " + num(lh[1]) + "]" : ""); };
    var pairs = Object.keys(res.pairs || {}).filter(function (k) { return res.pairs[k].n; });
    var bt = Object.keys(res.bradley_terry || {});
    var panel = Object.keys(res.panel || {});
    return el("section", { cls: "stage", id: "pairwise" }, el("h2", {}, "Runs judged head to head"),
      el("p", { cls: "muted" }, "Judge " + res.judge + ": " + res.comparisons + " comparisons, each asked in both orders; a verdict " +
        "that followed the position is a flip, counted as a tie. Flip rate " + num(res.flip_rate) + "; " + res.unjudged +
        " without a usable verdict. Win rates count ties as half; the length-controlled one is read at equal answer length."),
      simpleTable(["X vs Y", "items", "X win rate [95%]", "length-controlled [95%]", "X wins / ties / Y wins", "flip rate"],
        pairs.map(function (k) { var p = res.pairs[k];
          return [k, String(p.n), ci(p.win_rate, p.win_rate_ci), ci(p.lc_win_rate, p.lc_win_rate_ci), p.x_wins + " / " + p.ties + " / " + p.y_wins, num(p.flip_rate)]; })),
      bt.length ? simpleTable(["run", "Bradley–Terry rating [95%]"], bt.map(function (r) { var b = res.bradley_terry[r]; return [r, ci(b.rating, [b.low, b.high])]; })) : null,
      panel.length ? simpleTable(["panel judge", "model", "comparisons", "flip rate", "Cohen's κ with the judge"],
        panel.map(function (l) { var p = res.panel[l]; return [l, p.judge, String(p.comparisons), num(p.flip_rate), num(p.vs_judge.kappa)]; })) : null);
  }

  // --- the SLURM jobs of a run submitted with launcher=slurm ---------------------------------------------------
  function jobsSection(i, data) {
    var rec = data.jobs;
    if (!rec || !(rec.jobs || []).length) return null;
    var header = ["stage", "job", "resources", "after", "state", "exit", "restarts", "log"];
    var rows = rec.jobs.map(function (j) {
      return [j.stage, j.job_id, j.resources, j.after ? j.after + " (" + j.dependency + ")" : "–",
        j.state || "submitted", j.exit_code || "–", j.restarts === undefined ? "–" : String(j.restarts), j.log];
    });
    // the managed server replicas' own jobs (serving.placement: slurm), each up during its stages
    (rec.servers || []).forEach(function (j) {
      rows.push(["server " + j.group + " #" + j.index, j.job_id, j.node_list ? "node " + j.node_list : "–", "–",
        j.state || "?", j.exit_code || "–", "–", j.log || "–"]);
    });
    var result = rec.result && rec.result.line ? el("p", { cls: "neg" }, rec.result.line) : null;
    var reused = (rec.reused || []).length ? el("p", { cls: "muted" }, "finished already, no job: " + rec.reused.join(", ")) : null;
    return el("section", { cls: "stage", id: "jobs-" + i }, el("h2", {}, "SLURM jobs"),
      el("p", { cls: "muted" }, rec.jobs.length + " job(s), each after the one before (afterok)" +
        ((rec.servers || []).length ? "; " + rec.servers.length + " server replica job(s) submitted by them" : "")),
      reused, result, simpleTable(header, rows));
  }

  // --- the page -----------------------------------------------------------------------------------------------
  function runView(i) {
    var data = REPORT.runs[i];
    var stages = Object.keys(data.stages || {}).map(function (k) { return k + " " + (data.stages[k].status || "?"); }).join(" · ");
    return el("div", { cls: "run", "data-run": i },
      el("p", { cls: "muted" }, "run " + data.label + (stages ? " — " + stages : "")),
      jobsSection(i, data), synthesisSection(i, data), mixSection(i, data), sftSection(i, data), evalSection(i, data));
  }

  function render() {
    var app = document.getElementById("app");
    app.textContent = "";
    var runs = REPORT.runs;
    var nav = el("nav", {}, ["synthesis", "mix", "sft", "eval"].map(function (s) { return el("a", { href: "#" + s + "-0" }, s); }));
    var header = el("header", { cls: "top" }, el("h1", {}, runs.length > 1 ? "deepwriter: " + runs.length + " runs" : "deepwriter run " + runs[0].label), nav);
    var main = el("main");
    append(app, [header, main]);
    if (runs.length === 1) {
      main.appendChild(runView(0));
    } else {
      main.appendChild(ablationSection());
      if (REPORT.pairwise) main.appendChild(pairwiseSection());
      var holder = el("div");
      var built = {};
      var tabs = el("div", { cls: "tabs" }, runs.map(function (r, i) {
        return el("button", { type: "button", "data-run": i, onclick: function () { show(i); } }, r.label);
      }));
      var show = function (i) {
        Array.prototype.forEach.call(tabs.children, function (b, k) { b.classList.toggle("active", k === i); });
        Array.prototype.forEach.call(holder.children, function (c) { c.hidden = true; });
        if (!built[i]) { built[i] = runView(i); holder.appendChild(built[i]); }
        built[i].hidden = false;
        nav.querySelectorAll("a").forEach(function (a) { a.setAttribute("href", a.getAttribute("href").replace(/-\d+$/, "-" + i)); });
      };
      append(main, [el("h2", {}, "Each run"), tabs, holder]);
      show(0);
    }
    // the time to first render, for the scale bench and for anyone curious
    app.setAttribute("data-render-ms", performance.now().toFixed(1));
  }

  render();
})();
