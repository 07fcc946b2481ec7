/* bronzeline status page: draws the run charts with uPlot from the JSON embedded in the page. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bl-data").textContent);
  var tz = data.tz;

  function series(field) {
    // uPlot wants one x array shared by every series: one slot per run, null where a run is another table's.
    var runs = data.runs.slice().sort(function (a, b) { return a.t - b.t; });
    var xs = runs.map(function (r) { return r.t; });
    var columns = data.tables.map(function (name) {
      return runs.map(function (r) { return r.table === name ? r[field] : null; });
    });
    return [xs].concat(columns);
  }

  function compact(v) {
    if (v == null) { return ""; }
    var a = Math.abs(v);
    if (a >= 1e6) { return +(v / 1e6).toFixed(1) + "M"; }
    if (a >= 1e4) { return +(v / 1e3).toFixed(1) + "k"; }
    return v.toLocaleString();
  }

  function axisSize(u, values) {
    // wide enough for the longest tick label, so none is cut off
    var longest = (values || []).reduce(function (m, v) { return Math.max(m, String(v).length); }, 0);
    return Math.max(40, longest * 7 + 20);
  }

  function draw(id, field, unit) {
    var el = document.getElementById(id);
    if (!data.runs.length) {
      el.innerHTML = '<div class="empty">no loaded runs yet</div>';
      return;
    }
    var opts = {
      width: Math.max(el.clientWidth, 300),
      height: 280,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max * 1.1, 1)]; } } },
      axes: [{ stroke: "#6b7280", grid: { stroke: "#eef0f3" } },
             { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, size: axisSize,
               values: function (u, vals) { return vals.map(function (v) { return compact(v) + unit; }); } }],
      series: [{}].concat(data.tables.map(function (name, i) {
        return { label: name, stroke: data.colors[i], width: 2, spanGaps: true,
                 points: { show: true, size: 6, fill: data.colors[i] },
                 value: function (u, v) { return v == null ? "—" : v.toLocaleString() + unit; } };
      }))
    };
    var plot = new uPlot(opts, series(field), el);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(el.clientWidth, 300), height: 280 });
    });
  }

  draw("chart-rows", "rows", "");
  draw("chart-duration", "seconds", " s");
})();
