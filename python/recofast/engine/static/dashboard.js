/* The recofast dashboard: polls /dashboard/data (the engine) and the sidecar's /metrics every
   1.5 s and feeds Chart.js charts. Counters are cumulative: rates are differences between
   polls, quantiles come from the difference of histogram buckets over the last WINDOW s. */
(function () {
  "use strict";
  var P = recofastPage, POLL = 1500, KEEP = 120, WINDOW = 15;
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569"];
  var KINDS = ["checkpoint", "rollback", "drift", "adapt", "stale", "alert"];
  var samples = [];  /* {t, data, side} */
  var charts = {};
  window.recofastCharts = charts;
  document.getElementById("shop-link").href = P.keep("/shop");

  function color(i) { return COLORS[i % COLORS.length]; }
  function line(id, yTitle) {
    return charts[id] = new Chart(document.getElementById(id), {
      type: "line", data: {labels: [], datasets: []},
      options: {animation: false, responsive: true, maintainAspectRatio: true, aspectRatio: 2.2,
                elements: {point: {radius: 1.5}}, interaction: {mode: "index", intersect: false},
                scales: {x: {ticks: {maxTicksLimit: 6}}, y: {beginAtZero: true, title: {display: !!yTitle, text: yTitle}}}}
    });
  }
  function bar(id, horizontal, yTitle) {
    return charts[id] = new Chart(document.getElementById(id), {
      type: "bar", data: {labels: [], datasets: []},
      options: {animation: false, responsive: true, aspectRatio: 2.2, indexAxis: horizontal ? "y" : "x",
                scales: {y: {beginAtZero: true, title: {display: !!yTitle, text: yTitle}}}}
    });
  }
  line("c-events", "events/s"); line("c-dlq", "share"); line("c-fresh", "seconds"); line("c-latency", "ms");
  bar("c-lists", false, "lists"); line("c-hit", "hit rate");
  bar("c-source", false, "%"); bar("c-variant", false, "%"); bar("c-revenue", true, "revenue");
  bar("c-trending", true, "score");
  charts["c-timeline"] = new Chart(document.getElementById("c-timeline"), {
    type: "scatter", data: {datasets: []},
    options: {animation: false, aspectRatio: 5,
              scales: {x: {type: "linear", ticks: {callback: function (v) { return new Date(v * 1000).toLocaleTimeString(); }, maxTicksLimit: 8}},
                       y: {min: -0.5, max: KINDS.length - 0.5, ticks: {stepSize: 1, callback: function (v) { return KINDS[v] || ""; }}}},
              plugins: {tooltip: {callbacks: {label: function (c) { return c.raw.kind + ": " + c.raw.detail; }}}}}
  });

  /* -- numbers ------------------------------------------------------------------------------- */
  function quantile(le, counts, q) {
    var n = counts[counts.length - 1];
    if (!(n > 0)) return null;
    var want = q * n, prevB = 0, prevC = 0;
    for (var i = 0; i < le.length; i++) {
      if (counts[i] >= want) {
        if (le[i] === "+Inf") return prevB;
        var b = Number(le[i]);
        return counts[i] === prevC ? b : prevB + (b - prevB) * (want - prevC) / (counts[i] - prevC);
      }
      if (le[i] !== "+Inf") prevB = Number(le[i]);
      prevC = counts[i];
    }
    return prevB;
  }
  function diff(a, b) { return a.map(function (x, i) { return x - ((b && b[i]) || 0); }); }
  function base(now) {  /* the oldest sample within WINDOW s of now (or the first) */
    for (var i = 0; i < samples.length; i++) if (now.t - samples[i].t <= WINDOW) return samples[i];
    return samples[0];
  }
  function parseProm(text, name) {
    var le = [], counts = {}, out = {le: [], counts: []};
    text.split("\n").forEach(function (l) {
      if (l.indexOf(name + "_bucket{") !== 0) return;
      var m = /le="([^"]+)"/.exec(l);
      if (!m) return;
      var v = Number(l.slice(l.lastIndexOf(" ") + 1));
      if (!(m[1] in counts)) { le.push(m[1]); counts[m[1]] = 0; }
      counts[m[1]] += v;
    });
    le.sort(function (a, b) { return (a === "+Inf" ? Infinity : Number(a)) - (b === "+Inf" ? Infinity : Number(b)); });
    le.forEach(function (k) { out.le.push(k); out.counts.push(counts[k]); });
    return out;
  }
  function pct(x) { return x == null ? "-" : (100 * x).toFixed(2) + " %"; }
  function num(x) { return x == null ? "-" : Math.round(x).toLocaleString(); }

  /* -- charts -------------------------------------------------------------------------------- */
  function push(id, label, values) {  /* values: {series: number|null} */
    var c = charts[id];
    c.data.labels.push(label);
    Object.keys(values).forEach(function (k) {
      var ds = c.data.datasets.find(function (d) { return d.label === k; });
      if (!ds) {
        ds = {label: k, data: c.data.labels.slice(0, -1).map(function () { return null; }), borderColor: color(c.data.datasets.length),
              backgroundColor: color(c.data.datasets.length), borderWidth: 2, spanGaps: true};
        c.data.datasets.push(ds);
      }
      ds.data.push(values[k]);
    });
    c.data.datasets.forEach(function (ds) { if (ds.data.length < c.data.labels.length) ds.data.push(null); });
    if (c.data.labels.length > KEEP) {
      c.data.labels.shift();
      c.data.datasets.forEach(function (ds) { ds.data.shift(); });
    }
    c.update();
  }
  function setBars(id, labels, sets) {
    var c = charts[id];
    c.data.labels = labels;
    c.data.datasets = sets.map(function (s, i) {
      return {label: s.label, data: s.data, backgroundColor: s.color || color(i), grouped: s.grouped !== false,
              barPercentage: s.grouped === false ? 0.25 : 0.8};
    });
    c.update();
  }
  function rateSets(rows, key) {
    var scale = function (x) { return x == null ? null : 100 * x; };
    return [
      {label: "CTR", data: rows.map(function (r) { return scale(r.ctr); }), color: "#2563eb"},
      {label: "CTR 95 %", data: rows.map(function (r) { return r.ctr_lo == null ? null : [scale(r.ctr_lo), scale(r.ctr_hi)]; }), color: "#93c5fd"},
      {label: "conversion", data: rows.map(function (r) { return scale(r.conversion); }), color: "#16a34a"},
      {label: "conversion 95 %", data: rows.map(function (r) { return r.conversion_lo == null ? null : [scale(r.conversion_lo), scale(r.conversion_hi)]; }), color: "#86efac"}
    ];
  }
  function table(el, rows, key, extra) {
    var h = "<table><tr><th>" + key + "</th><th>lists</th><th>shown</th><th>clicks</th><th>CTR (95 %)</th><th>purchases</th><th>conversion (95 %)</th><th>revenue</th>" + (extra ? "<th>" + extra.head + "</th>" : "") + "</tr>";
    rows.forEach(function (r) {
      h += "<tr><td>" + esc(r[key]) + "</td><td>" + num(r.lists) + "</td><td>" + num(r.shown) + "</td><td>" + num(r.clicks) + "</td><td>" +
        pct(r.ctr) + " (" + pct(r.ctr_lo) + " – " + pct(r.ctr_hi) + ")</td><td>" + num(r.purchases) + "</td><td>" + pct(r.conversion) +
        " (" + pct(r.conversion_lo) + " – " + pct(r.conversion_hi) + ")</td><td>" + num(r.revenue) + "</td>" + (extra ? "<td>" + extra.cell(r) + "</td>" : "") + "</tr>";
    });
    document.getElementById(el).innerHTML = h + "</table>";
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }

  function render(now, prev) {
    var d = now.data, label = new Date(d.time * 1000).toLocaleTimeString();
    var dt = prev ? Math.max(1e-3, d.time - prev.data.time) : null;
    if (prev) {
      var ev = {}, types = d.events_by_type, before = prev.data.events_by_type;
      Object.keys(types).sort().forEach(function (k) { ev[k] = (types[k] - (before[k] || 0)) / dt; });
      ev["applied (engine)"] = (d.counts.events_applied_total - prev.data.counts.events_applied_total) / dt;
      push("c-events", label, ev);
      var dlq = d.counts.events_dlq_total - prev.data.counts.events_dlq_total;
      var all = dlq + d.counts.events_applied_total - prev.data.counts.events_applied_total;
      push("c-dlq", label, {"dead letters / events": all > 0 ? dlq / all : 0, "dead letters/s": dlq / dt});
    }
    var b = base(now);
    if (b !== now) {
      var fc = diff(d.freshness.counts, b.data.freshness.counts);
      push("c-fresh", label, {p50: quantile(d.freshness.le, fc, 0.5), p99: quantile(d.freshness.le, fc, 0.99)});
      if (now.side && b.side) {
        var lc = diff(now.side.counts, b.side.counts);
        var p50 = quantile(now.side.le, lc, 0.5), p99 = quantile(now.side.le, lc, 0.99);
        push("c-latency", label, {p50: p50 == null ? null : 1000 * p50, p99: p99 == null ? null : 1000 * p99});
      }
      var lt = d.loop && d.loop.total, lb = b.data.loop && b.data.loop.total;
      if (lt) {
        var checks = lt.hit_checks - ((lb && lb.hit_checks) || 0), hits = lt.hits - ((lb && lb.hits) || 0);
        push("c-hit", label, {"last 15 s": checks > 0 ? hits / checks : null, "since start": lt.hit_checks > 0 ? lt.hits / lt.hit_checks : null});
      }
    }
    if (d.loop) {
      var src = d.loop.by_source, vr = d.loop.by_variant;
      setBars("c-lists", src.map(function (r) { return r.source; }), [{label: "lists", data: src.map(function (r) { return r.lists; })}]);
      setBars("c-source", src.map(function (r) { return r.source; }), rateSets(src));
      setBars("c-variant", vr.map(function (r) { return r.ev; }), rateSets(vr));
      var rl = src.map(function (r) { return "source " + r.source; }).concat(vr.map(function (r) { return r.ev; }));
      setBars("c-revenue", rl, [{label: "revenue", data: src.map(function (r) { return r.revenue; }).concat(vr.map(function (r) { return r.revenue; }))}]);
      table("t-source", src, "source");
      var per = {};
      (d.loop.experiments || []).forEach(function (x) {
        (x.variants || []).forEach(function (v) { per[x.experiment + "/" + v.variant] = v; });
        (x.comparisons || []).forEach(function (c) { (per[x.experiment + "/" + c.variant] || {}).text = c.text; });
      });
      table("t-variant", vr, "ev", {head: "per user (95 %), against the control", cell: function (r) {
        var v = per[r.ev];
        if (!v) return "-";
        return esc(v.metric) + " " + (v.value == null ? "-" : v.value.toFixed(4)) + " (" + (v.lo == null ? "-" : v.lo.toFixed(4)) + " – " +
          (v.hi == null ? "-" : v.hi.toFixed(4)) + ")" + (v.control ? " control" : "") + (v.text ? "<br>" + esc(v.text) : "");
      }});
    }
    var tr = d.trending || [];
    if (Array.isArray(tr)) setBars("c-trending", tr.map(function (t) { return t.item + (t.category ? " (" + t.category + ")" : ""); }), [{label: "trending score", data: tr.map(function (t) { return t.score; })}]);
    var marks = d.timeline || [], tc = charts["c-timeline"];
    tc.data.datasets = KINDS.map(function (k, i) {
      return {label: k, backgroundColor: color(i), pointRadius: 5,
              data: marks.filter(function (m) { return (KINDS.indexOf(m.kind) < 0 ? "alert" : m.kind) === k; })
                         .map(function (m) { return {x: m.ts, y: i, kind: m.kind, detail: m.detail}; })};
    });
    tc.update();
    document.getElementById("timeline").innerHTML = marks.slice(-50).reverse().map(function (m) {
      return "<li>" + new Date(m.ts * 1000).toLocaleTimeString() + " <b>" + esc(m.kind) + "</b> " + esc(m.detail || "") + "</li>";
    }).join("");
    var cps = Array.isArray(d.checkpoints) ? d.checkpoints : [];
    document.getElementById("model").innerHTML = "<p>model <b>v" + d.model_version + "</b>, stream seq " + num(d.counts.stream_seq) +
      ", " + num(d.pending) + " pending, health <b>" + esc(d.health) + "</b></p><table><tr><th>checkpoint</th><th>time</th><th>stream seq</th><th>events</th></tr>" +
      cps.slice().reverse().map(function (c) {
        return "<tr><td>v" + c.version + (c.rolled_back_from != null ? " (rollback from v" + c.rolled_back_from + ")" : "") + "</td><td>" +
          (c.time ? new Date(c.time * 1000).toLocaleTimeString() : esc(c.error || "-")) + "</td><td>" + num(c.stream_seq) + "</td><td>" + num(c.events_applied_total) + "</td></tr>";
      }).join("") + "</table>";
  }

  function sidecarMetrics() {
    return fetch(P.sidecar + "/metrics", {cache: "no-store"}).then(function (r) { return r.text(); })
      .then(function (t) { document.getElementById("latency-note").textContent = "from " + P.sidecar + "/metrics"; return parseProm(t, "recofast_sidecar_request_seconds"); })
      .catch(function () { document.getElementById("latency-note").textContent = "sidecar " + P.sidecar + " not reachable (?sidecar=URL; its cors_origins must allow " + location.origin + ")"; return null; });
  }

  function tick() {
    Promise.all([P.engine("/dashboard/data"), sidecarMetrics()]).then(function (got) {
      var now = {t: got[0].time, data: got[0], side: got[1]};
      var prev = samples[samples.length - 1];
      samples.push(now);
      while (samples.length > 2 && now.t - samples[0].t > 4 * WINDOW) samples.shift();
      render(now, prev);
      var s = document.getElementById("status");
      s.textContent = "live, " + new Date().toLocaleTimeString();
      s.className = "";
    }).catch(function (e) {
      var s = document.getElementById("status");
      s.textContent = "no data: " + e.message;
      s.className = "bad";
    }).then(function () { setTimeout(tick, POLL); });
  }
  tick();
})();
