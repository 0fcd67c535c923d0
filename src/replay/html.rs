//! The replay's HTML report (`sekisho replay --report out.html`): one self-contained file an
//! operator can attach to a change request. It owns the page — markup, CSS and the script that
//! draws the charts and tables from the [`Report`] embedded as JSON — and nothing else: it reads
//! no file, judges nothing, and the page it writes fetches nothing (a strict CSP says so, and
//! nothing in it names a URL).
//!
//! Data reaches the page two ways only: the JSON in `<script type="application/json">`, with
//! every `<`, `>` and `&` written as a `\u` escape so that no string in it can end the script
//! element; and the totals in `<noscript>`, escaped here as HTML. The script inserts text with
//! `textContent`, `createTextNode` and `setAttribute`, never as markup.

use std::fmt::Write as _;

use super::report::Report;

/// The page's Content-Security-Policy: inline style and script, `data:` images, nothing else.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(32 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        page,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
    );
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // An empty icon, so that the browser does not look for /favicon.ico beside the file.
    page.push_str("<link rel=\"icon\" href=\"data:,\">\n");
    let _ = writeln!(
        page,
        "<title>sekisho replay: {}</title>",
        escape(&report.config)
    );
    let _ = writeln!(page, "<style>{CSS}</style>\n</head>\n<body>");
    page.push_str("<header>\n<h1>sekisho replay report</h1>\n");
    page.push_str("<p id=\"subtitle\" class=\"sub\"></p>\n</header>\n");
    page.push_str("<noscript>\n<p>The charts and the other tables need JavaScript.</p>\n");
    page.push_str("<h2>Totals</h2>\n");
    totals_table(&mut page, report);
    page.push_str("</noscript>\n");
    page.push_str(BODY);
    page.push_str("<script type=\"application/json\" id=\"data\">");
    page.push_str(&json_for_script(report));
    page.push_str("</script>\n");
    let _ = write!(page, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    page
}

/// The report as JSON that is safe inside a `<script>` element: `<`, `>` and `&` only occur in
/// JSON strings, where `\u003c` and the like mean the same character to `JSON.parse`, so neither
/// `</script` nor `<!--` can appear. U+2028 and U+2029 are escaped too, for old parsers.
fn json_for_script(report: &Report) -> String {
    // Serialising these plain structs and string-keyed maps cannot fail; `null` is what the
    // page would show as "no data" should it ever.
    let json = serde_json::to_string(report).unwrap_or_else(|_| String::from("null"));
    let mut out = String::with_capacity(json.len() + 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text escaped for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The totals as label and value, the same rows the script's totals table shows.
fn totals(report: &Report) -> Vec<(&'static str, String)> {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| String::from("—"));
    let mut rows = vec![("Candidate config", report.config.clone())];
    if let Some(against) = &report.against {
        rows.push(("Compared against", against.clone()));
    }
    rows.extend([
        ("Logs", report.logs.len().to_string()),
        ("First request (UTC)", or_dash(&report.first)),
        ("Last request (UTC)", or_dash(&report.last)),
        ("Lines read", report.lines.to_string()),
        ("Lines not readable", report.unparsed.to_string()),
        ("Requests judged", report.requests.to_string()),
        (
            "Requests not judged (no client address)",
            report.unjudged.to_string(),
        ),
        (
            "Late requests (past the reorder window)",
            report.late.to_string(),
        ),
        ("Reorder window (s)", report.reorder_window_s.to_string()),
        ("Refused", report.refused.to_string()),
        (
            "Passed, but counted by a count-mode rule",
            report.counted.to_string(),
        ),
        ("Passed", report.passed.to_string()),
        (
            "Under-attack profile",
            String::from(if report.under_attack { "on" } else { "off" }),
        ),
        ("Bans issued", report.bans.len().to_string()),
        (
            "False-positive candidates",
            report.false_positive_candidates.total.to_string(),
        ),
    ]);
    rows
}

fn totals_table(page: &mut String, report: &Report) {
    page.push_str("<table class=\"totals\">\n<tbody>\n");
    for (label, value) in totals(report) {
        let _ = writeln!(
            page,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(&value)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// The sections the script fills; hidden until it has.
const BODY: &str = r##"<main id="report" hidden>
<section id="totals"><h2>Totals</h2></section>
<section id="timeline-section"><h2>Refused per minute, by rule</h2>
<svg id="timeline" class="chart" role="img" aria-label="Refused and counted requests per minute, stacked by rule"></svg>
<div id="timeline-legend" class="legend"></div></section>
<section id="top"><h2>Top refused</h2><div class="tops">
<figure><figcaption>Clients</figcaption><svg id="top-clients" class="chart top" role="img" aria-label="Top clients"></svg></figure>
<figure><figcaption>Paths</figcaption><svg id="top-paths" class="chart top" role="img" aria-label="Top paths"></svg></figure>
<figure><figcaption>User agents</figcaption><svg id="top-user-agents" class="chart top" role="img" aria-label="Top user agents"></svg></figure>
<figure><figcaption>Countries</figcaption><svg id="top-countries" class="chart top" role="img" aria-label="Top countries"></svg></figure>
</div></section>
<section id="rules"><h2>By rule</h2></section>
<section id="bans"><h2>Bans issued</h2></section>
<section id="false-positives"><h2>False-positive candidates</h2></section>
<section id="unparsed"><h2>Lines not readable</h2></section>
<section id="diff" hidden><h2>Changes from the compared config</h2></section>
</main>
"##;

const CSS: &str = r##"
body { font: 14px/1.4 system-ui, sans-serif; color: #1d232a; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.6em; margin: 0; }
h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ccd; padding-bottom: .2em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
.sub { color: #555; margin: .2em 0 0; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #d4d8de; padding: .2em .5em; text-align: left; vertical-align: top; }
thead th { background: #eef1f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td code { white-space: pre-wrap; word-break: break-all; }
.totals th { font-weight: normal; color: #333; }
.totals td { font-weight: 600; }
.chart { width: 100%; height: auto; display: block; }
.chart text { font-size: 11px; fill: #333; }
.chart .axis { stroke: #888; stroke-width: 1; }
.chart .grid { stroke: #e3e6ea; stroke-width: 1; }
.chart .requests { fill: #e3e6ea; }
.chart .bar { fill: #c0392b; }
.chart polyline.requests-line { fill: none; stroke: #6b7785; stroke-width: 1.5; }
.tops { display: grid; grid-template-columns: 1fr 1fr; gap: 0 2em; }
figure { margin: .5em 0; }
figcaption { font-weight: 600; margin-bottom: .2em; }
.legend { display: flex; flex-wrap: wrap; gap: .3em 1.2em; margin: .4em 0; font-size: 12px; }
.swatch { display: inline-block; width: .9em; height: .9em; vertical-align: -.1em; margin-right: .3em; border: 1px solid #0003; }
.swatch.hatched { background: repeating-linear-gradient(45deg, #888 0 2px, #fff 2px 4px); }
.empty { color: #666; font-style: italic; }
@media (max-width: 800px) { .tops { grid-template-columns: 1fr; } }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  section, figure, table { break-inside: avoid; }
  thead { display: table-header-group; }
}
"##;

/// Draws the page from the embedded JSON. Text goes in through `textContent`,
/// `createTextNode` and `setAttribute` only.
const SCRIPT: &str = r##"
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent) || {};
  // The SVG namespace, from an <svg> the HTML parser made, so the page names no URL.
  var SVG = document.getElementById("timeline").namespaceURI;
  var PALETTE = ["#c0392b", "#2e86c1", "#d68910", "#17a589", "#8e44ad", "#7f8c8d",
                 "#a04000", "#1f618d", "#b7950b", "#117864", "#6c3483", "#34495e"];

  function append(node, kids) {
    (kids || []).forEach(function (k) {
      if (k === null || k === undefined) { return; }
      node.appendChild(typeof k === "object" ? k : document.createTextNode(String(k)));
    });
    return node;
  }
  function html(tag, attrs, kids) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (a) { n.setAttribute(a, attrs[a]); });
    return append(n, kids);
  }
  function svg(tag, attrs, kids) {
    var n = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (a) { n.setAttribute(a, String(attrs[a])); });
    return append(n, kids);
  }
  function num(v) { return Number(v || 0).toLocaleString("en-US"); }
  function $(id) { return document.getElementById(id); }
  function empty(text) { return html("p", {"class": "empty"}, [text]); }
  function hhmm(t) { return String(t || "").slice(11, 16); }
  function cut(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }

  // A table: columns are [title, numeric?]; rows are arrays of cell values (text or nodes).
  function table(columns, rows) {
    var head = html("tr", {}, columns.map(function (c) {
      return html("th", c[1] ? {"class": "num", "scope": "col"} : {"scope": "col"}, [c[0]]);
    }));
    var body = rows.map(function (r) {
      return html("tr", {}, r.map(function (v, i) {
        return html("td", columns[i] && columns[i][1] ? {"class": "num"} : {},
                    [typeof v === "number" ? num(v) : v]);
      }));
    });
    return html("table", {}, [html("thead", {}, [head]), html("tbody", {}, body)]);
  }
  function code(text) { return html("code", {}, [text]); }
  function at(file, line) { return file + ":" + line; }

  // Rules in file order, then any name the data has that the order lacks.
  var rules = (data.rule_order || []).slice();
  function know(name) { if (rules.indexOf(name) < 0) { rules.push(name); } }
  Object.keys(data.by_rule || {}).forEach(know);
  (data.timeline || []).forEach(function (m) {
    Object.keys(m.refused || {}).forEach(know);
    Object.keys(m.counted || {}).forEach(know);
  });
  function color(rule) { return PALETTE[rules.indexOf(rule) % PALETTE.length]; }
  function swatch(rule, hatched) {
    var s = html("span", {"class": hatched ? "swatch hatched" : "swatch"});
    if (!hatched) { s.style.background = color(rule); }
    return s;
  }

  function subtitle() {
    var parts = ["config " + (data.config || "")];
    if (data.against) { parts.push("compared against " + data.against); }
    if (data.first) { parts.push(data.first + " \u2013 " + (data.last || "") + " (UTC)"); }
    $("subtitle").textContent = parts.join(" \u00b7 ");
  }

  function totals() {
    var fp = data.false_positive_candidates || {};
    var rows = [["Candidate config", data.config || ""]];
    if (data.against) { rows.push(["Compared against", data.against]); }
    rows.push(
      ["Logs", num((data.logs || []).length)],
      ["First request (UTC)", data.first || "\u2014"],
      ["Last request (UTC)", data.last || "\u2014"],
      ["Lines read", num(data.lines)],
      ["Lines not readable", num(data.unparsed)],
      ["Requests judged", num(data.requests)],
      ["Requests not judged (no client address)", num(data.unjudged)],
      ["Late requests (past the reorder window)", num(data.late)],
      ["Reorder window (s)", num(data.reorder_window_s)],
      ["Refused", num(data.refused)],
      ["Passed, but counted by a count-mode rule", num(data.counted)],
      ["Passed", num(data.passed)],
      ["Under-attack profile", data.under_attack ? "on" : "off"],
      ["Bans issued", num((data.bans || []).length)],
      ["False-positive candidates", num(fp.total)]);
    var t = html("table", {"class": "totals"}, [html("tbody", {}, rows.map(function (r) {
      return html("tr", {}, [html("th", {"scope": "row"}, [r[0]]), html("td", {}, [r[1]])]);
    }))]);
    var logs = (data.logs || []).map(function (l) {
      return [l.path, l.format, l.lines, l.unparsed];
    });
    append($("totals"), [t, html("h3", {}, ["Logs"]),
      logs.length ? table([["Log"], ["Format"], ["Lines", 1], ["Not readable", 1]], logs)
                  : empty("No log read.")]);
  }

  function timeline() {
    var minutes = data.timeline || [];
    var chart = $("timeline");
    if (!minutes.length) { chart.hidden = true; $("timeline-section").appendChild(empty("No requests.")); return; }
    var W = 960, H = 300, L = 56, R = 56, T = 12, B = 40;
    var pw = W - L - R, ph = H - T - B, step = pw / minutes.length, bw = Math.max(step * 0.8, 0.5);
    var ymax = 1, rmax = 1;
    minutes.forEach(function (m) {
      var s = 0;
      Object.keys(m.refused || {}).forEach(function (r) { s += m.refused[r]; });
      Object.keys(m.counted || {}).forEach(function (r) { s += m.counted[r]; });
      ymax = Math.max(ymax, s);
      rmax = Math.max(rmax, m.requests || 0);
    });
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    var defs = svg("defs");
    rules.forEach(function (r, i) {
      defs.appendChild(svg("pattern", {"id": "hatch-" + i, "width": 6, "height": 6,
        "patternUnits": "userSpaceOnUse", "patternTransform": "rotate(45)"}, [
        svg("rect", {"width": 6, "height": 6, "fill": "#fff"}),
        svg("rect", {"width": 3, "height": 6, "fill": color(r), "fill-opacity": 0.7})]));
    });
    chart.appendChild(defs);
    // Axes, grid and labels: left axis refused + counted, right axis requests.
    [0, 0.5, 1].forEach(function (f) {
      var y = T + ph - f * ph;
      chart.appendChild(svg("line", {"class": "grid", "x1": L, "x2": L + pw, "y1": y, "y2": y}));
      chart.appendChild(svg("text", {"x": L - 6, "y": y + 4, "text-anchor": "end"}, [num(Math.round(f * ymax))]));
      chart.appendChild(svg("text", {"x": L + pw + 6, "y": y + 4}, [num(Math.round(f * rmax))]));
    });
    chart.appendChild(svg("line", {"class": "axis", "x1": L, "x2": L, "y1": T, "y2": T + ph}));
    chart.appendChild(svg("line", {"class": "axis", "x1": L, "x2": L + pw, "y1": T + ph, "y2": T + ph}));
    chart.appendChild(svg("text", {"x": 4, "y": T + 4, "transform": "rotate(90 4 " + (T + 4) + ")"}, ["refused + counted"]));
    chart.appendChild(svg("text", {"x": W - 4, "y": T + 4, "transform": "rotate(90 " + (W - 4) + " " + (T + 4) + ")"}, ["requests"]));
    var every = Math.ceil(minutes.length / 12), points = [];
    minutes.forEach(function (m, i) {
      var x = L + i * step + (step - bw) / 2, y = T + ph;
      var g = svg("g", {"class": "minute", "data-minute": m.minute});
      var sr = 0, sc = 0;
      rules.forEach(function (r) {
        var n = (m.refused || {})[r] || 0;
        if (n <= 0) { return; }
        var h = n / ymax * ph; y -= h; sr += n;
        g.appendChild(svg("rect", {"class": "bar", "data-rule": r, "x": x, "y": y, "width": bw, "height": h, "fill": color(r)}));
      });
      rules.forEach(function (r) {
        var n = (m.counted || {})[r] || 0;
        if (n <= 0) { return; }
        var h = n / ymax * ph; y -= h; sc += n;
        g.appendChild(svg("rect", {"class": "bar counted", "data-rule": r, "x": x, "y": y, "width": bw, "height": h,
          "fill": "url(#hatch-" + rules.indexOf(r) + ")", "stroke": color(r), "stroke-width": 0.5}));
      });
      g.appendChild(svg("title", {}, [m.minute + ": " + num(m.requests) + " requests, " + num(sr) + " refused, " + num(sc) + " counted"]));
      chart.appendChild(g);
      points.push((L + i * step + step / 2) + "," + (T + ph - (m.requests || 0) / rmax * ph));
      if (i % every === 0) {
        chart.appendChild(svg("line", {"class": "axis", "x1": L + i * step + step / 2, "x2": L + i * step + step / 2, "y1": T + ph, "y2": T + ph + 4}));
        chart.appendChild(svg("text", {"x": L + i * step + step / 2, "y": T + ph + 16, "text-anchor": "middle"}, [hhmm(m.minute)]));
      }
    });
    chart.appendChild(svg("polyline", {"class": "requests-line", "points": points.join(" ")}));
    chart.appendChild(svg("text", {"x": L + pw / 2, "y": H - 6, "text-anchor": "middle"},
      ["minute (UTC), " + minutes[0].minute.slice(0, 10)]));
    var legend = $("timeline-legend"), seen = {};
    minutes.forEach(function (m) {
      Object.keys(m.refused || {}).forEach(function (r) { if (m.refused[r] > 0) { seen[r] = 1; } });
      Object.keys(m.counted || {}).forEach(function (r) { if (m.counted[r] > 0) { seen[r] = 1; } });
    });
    rules.forEach(function (r) {
      if (seen[r]) { legend.appendChild(html("span", {"class": "item"}, [swatch(r, false), r])); }
    });
    legend.appendChild(html("span", {"class": "item"}, [swatch("", true), "hatched: counted (count mode, passed)"]));
    var line = html("span", {"class": "item"}, ["\u2014 requests (right axis)"]);
    line.style.color = "#6b7785";
    legend.appendChild(line);
  }

  function topChart(id, entries) {
    var chart = $(id);
    entries = entries || [];
    if (!entries.length) { chart.hidden = true; chart.parentNode.appendChild(empty("None refused.")); return; }
    var W = 520, LW = 210, NW = 110, RH = 20, bw = W - LW - NW - 8, max = 1;
    entries.forEach(function (e) { max = Math.max(max, e.requests || 0, e.refused || 0); });
    chart.setAttribute("viewBox", "0 0 " + W + " " + (entries.length * RH + 4));
    entries.forEach(function (e, i) {
      var y = i * RH + 2;
      var g = svg("g", {"class": "entry"}, [svg("title", {}, [e.key + ": " + num(e.refused) + " refused of " + num(e.requests) + " requests"])]);
      g.appendChild(svg("text", {"x": LW - 6, "y": y + 13, "text-anchor": "end"}, [cut(e.key, 34)]));
      g.appendChild(svg("rect", {"class": "requests", "x": LW, "y": y + 2, "width": (e.requests || 0) / max * bw, "height": RH - 5}));
      g.appendChild(svg("rect", {"class": "bar", "x": LW, "y": y + 2, "width": (e.refused || 0) / max * bw, "height": RH - 5}));
      g.appendChild(svg("text", {"x": LW + bw + 6, "y": y + 13}, [num(e.refused) + " / " + num(e.requests)]));
      chart.appendChild(g);
    });
  }

  function byRule() {
    var by = data.by_rule || {}, fp = (data.false_positive_candidates || {}).by_rule || {};
    var rows = rules.filter(function (r) { return by[r]; }).map(function (r) {
      return [html("span", {}, [swatch(r, false), r]), by[r].refused, by[r].counted, fp[r] || 0];
    });
    $("rules").appendChild(rows.length
      ? table([["Rule"], ["Refused", 1], ["Counted", 1], ["False-positive candidates", 1]], rows)
      : empty("No rule."));
  }

  function bans() {
    var rows = (data.bans || []).map(function (b) {
      return [b.client, b.policy, b.mode, b.at, b.until, b.seconds, b.reason];
    });
    $("bans").appendChild(rows.length
      ? table([["Client"], ["Policy"], ["Mode"], ["At"], ["Until"], ["Seconds", 1], ["Reason"]], rows)
      : empty("No ban."));
  }

  function falsePositives() {
    var fp = data.false_positive_candidates || {}, s = $("false-positives");
    s.appendChild(html("p", {}, [num(fp.total) + " requests from " + num(fp.clients) +
      " clients that the origin answered 2xx/3xx would be refused."]));
    var rows = rules.filter(function (r) { return (fp.by_rule || {})[r]; }).map(function (r) {
      return [r, fp.by_rule[r]];
    });
    if (rows.length) { s.appendChild(table([["Rule"], ["Requests", 1]], rows)); }
    var ex = (fp.examples || []).map(function (e) {
      return [at(e.file, e.line), e.time, e.client, e.method, code(e.target), e.status, code(e.user_agent), e.rule];
    });
    if (ex.length) {
      append(s, [html("h3", {}, ["Examples"]),
        table([["Where"], ["Time"], ["Client"], ["Method"], ["Target"], ["Status", 1], ["User agent"], ["Rule"]], ex)]);
    }
  }

  function unparsed() {
    var s = $("unparsed"), ex = data.unparsed_examples || [];
    s.appendChild(html("p", {}, [num(data.unparsed) + " lines could not be read" +
      (ex.length ? "; the first " + num(ex.length) + ":" : ".")]));
    if (ex.length) {
      s.appendChild(table([["File"], ["Line", 1], ["Why"], ["Text"]], ex.map(function (u) {
        return [u.file, u.line, u.reason, code(u.text)];
      })));
    }
  }

  function diff() {
    var d = data.diff, s = $("diff");
    if (!d) { return; }
    s.hidden = false;
    s.appendChild(table([["Change"], ["Requests", 1]], [
      ["Passed before, refused by the candidate", d.newly_refused],
      ["Refused before, passed by the candidate", d.newly_passed],
      ["Refused by both, by another rule", d.refused_by_another_rule]]));
    var by = d.by_rule || {}, names = Object.keys(by);
    names.forEach(know);
    names.sort(function (a, b) { return rules.indexOf(a) - rules.indexOf(b); });
    if (names.length) {
      append(s, [html("h3", {}, ["By rule"]), table([["Rule"], ["Newly refused", 1], ["Newly passed", 1]],
        names.map(function (r) { return [r, by[r].newly_refused, by[r].newly_passed]; }))]);
    }
    var ex = (d.examples || []).map(function (e) {
      return [e.change, at(e.file, e.line), e.time, e.client, e.method, code(e.target), e.status,
              e.before || "pass", e.after || "pass"];
    });
    if (ex.length) {
      append(s, [html("h3", {}, ["Examples"]), table([["Change"], ["Where"], ["Time"], ["Client"],
        ["Method"], ["Target"], ["Status", 1], ["Before"], ["After"]], ex)]);
    }
  }

  subtitle();
  totals();
  timeline();
  topChart("top-clients", data.top_clients);
  topChart("top-paths", data.top_paths);
  topChart("top-user-agents", data.top_user_agents);
  topChart("top-countries", data.top_countries);
  byRule();
  bans();
  falsePositives();
  unparsed();
  diff();
  $("report").hidden = false;
  document.body.dataset.rendered = "1";
  document.body.dataset.resources = String(performance.getEntriesByType("resource").length);
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::report::{Example, Top};

    const HOSTILE: &str = "</script><script>document.body.dataset.pwned='1'</script><!--";

    fn report() -> Report {
        let mut report = Report {
            config: String::from("conf/<candidate> & \"x\".yaml"),
            ..Report::default()
        };
        report.top_user_agents.push(Top {
            key: HOSTILE.to_string(),
            requests: 3,
            refused: 2,
        });
        report.top_paths.push(Top {
            key: String::from("/go?to=https://example.com/&x=http://example.org/"),
            requests: 1,
            refused: 1,
        });
        report.false_positive_candidates.examples.push(Example {
            user_agent: HOSTILE.to_string(),
            ..Example::default()
        });
        report
    }

    /// The page without the embedded JSON.
    fn outside_data(page: &str) -> String {
        let open = "<script type=\"application/json\" id=\"data\">";
        let start = page.find(open).expect("data script") + open.len();
        let end = start + page[start..].find("</script>").expect("data script end");
        format!("{}{}", &page[..start], &page[end..])
    }

    #[test]
    fn names_no_url_outside_the_data_and_has_the_csp() {
        let page = render(&report());
        assert!(
            page.contains("https://example.com/"),
            "the data keeps its URL"
        );
        let rest = outside_data(&page);
        for scheme in ["http://", "https://"] {
            assert!(!rest.contains(scheme), "{scheme} outside the data");
        }
        assert!(page.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        )));
        assert!(!rest.contains("src="), "nothing is loaded by reference");
    }

    #[test]
    fn the_data_cannot_close_its_script_and_reads_back_the_same() {
        let page = render(&report());
        let open = "<script type=\"application/json\" id=\"data\">";
        let start = page.find(open).expect("data script") + open.len();
        let end = start + page[start..].find("</script>").expect("data script end");
        let json = &page[start..end];
        assert!(!json.contains('<'), "no < in the data: {json}");
        let back: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(back["top_user_agents"][0]["key"], HOSTILE);
        assert_eq!(back["config"], "conf/<candidate> & \"x\".yaml");
        // The data script and the drawing script, no third.
        assert_eq!(page.matches("<script").count(), 2);
    }

    #[test]
    fn the_noscript_totals_are_escaped() {
        let page = render(&report());
        assert!(page.contains("<td>conf/&lt;candidate&gt; &amp; &quot;x&quot;.yaml</td>"));
        assert!(page.contains("<title>sekisho replay: conf/&lt;candidate&gt;"));
        assert!(!page.contains("<candidate>"));
    }
}
