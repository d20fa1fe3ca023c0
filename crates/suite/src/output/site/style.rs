//! The site's stylesheet and its one script, written beside the pages (no CDN, no server:
//! the pages work from `file://`).

/// site/style.css.
pub const CSS: &str = r#"
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --bg: #ffffff; --alt: #f6f7f9;
  --accent: #2458b3; --bad: #b3261e; --bad-bg: #fde8e6; --good: #1b7f3a; --good-bg: #e5f5ea;
  --neutral-bg: #eef0f4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  color: var(--fg); background: var(--bg); }
header.top { background: #1d2330; color: #fff; padding: 10px 24px; display: flex; gap: 24px;
  align-items: baseline; flex-wrap: wrap; }
header.top a { color: #cfd8ea; text-decoration: none; }
header.top a:hover { color: #fff; text-decoration: underline; }
header.top .brand { font-weight: 700; font-size: 18px; color: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 12px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
h1.mono { font-size: 22px; }
p.meta, .muted { color: var(--muted); }
p.meta { margin: 2px 0 12px; }
a { color: var(--accent); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 13.5px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--alt); font-weight: 600; white-space: nowrap; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \2195"; color: #9aa3b2; font-size: 11px; }
th.sorted-asc::after { content: " \25B2"; color: var(--fg); }
th.sorted-desc::after { content: " \25BC"; color: var(--fg); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
.verdict { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px;
  font-weight: 600; white-space: nowrap; background: var(--neutral-bg); color: var(--muted); }
.verdict.slower { background: var(--bad-bg); color: var(--bad); }
.verdict.faster { background: var(--good-bg); color: var(--good); }
.verdict.noise { background: var(--neutral-bg); color: #3b4352; }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 11px;
  background: #fff4d6; color: #7a5200; white-space: nowrap; }
.note { background: #fffaf0; border: 1px solid #f0dca8; border-radius: 6px; padding: 6px 12px; }
.flagged { border: 1px solid var(--line); border-left: 4px solid var(--bad); border-radius: 6px;
  padding: 4px 14px; margin: 8px 0 12px; }
.flagged h3 { margin: 6px 0 4px; font-size: 15px; }
.flagged ul { margin: 4px 0 8px; padding-left: 0; list-style: none; }
.flagged li { margin: 3px 0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card .n { font-size: 22px; font-weight: 700; }
.card.bad .n { color: var(--bad); } .card.good .n { color: var(--good); }
.chart { width: 100%; max-width: 1000px; height: auto; border: 1px solid var(--line); border-radius: 6px; }
.chart text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: #3b4352; }
.chart .grid { stroke: #eceff3; }
.chart .axis { stroke: #9aa3b2; }
.chart .band { fill: #2458b3; fill-opacity: 0.10; stroke: #2458b3; stroke-opacity: 0.35; stroke-dasharray: 3 2; }
.chart .point circle { stroke: #fff; stroke-width: 1.5; }
.chart .point.flagged circle.ring { fill: none; stroke-width: 2.5; }
.chart .point.slower circle.ring { stroke: #b3261e; }
.chart .point.faster circle.ring { stroke: #1b7f3a; }
.chart .point:hover circle { stroke: #000; }
img.figure { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
.files a { margin-right: 10px; }
.nowrap { white-space: nowrap; }
.small { font-size: 11.5px; color: var(--muted); word-break: break-all; }
details { margin: 6px 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
"#;

/// site/sort.js: click a header of a `table.sortable` to sort its rows by that column (the
/// cell's `data-sort` when it has one, else its text; numbers numerically).
pub const SORT_JS: &str = r#"(function () {
  function key(td) {
    var v = td.getAttribute('data-sort');
    if (v === null) v = td.textContent.trim();
    var n = parseFloat(v);
    return isNaN(n) || !/^[-+]?[0-9.]/.test(v) ? v.toLowerCase() : n;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.classList.add('sortable');
      th.addEventListener('click', function () {
        var asc = !th.classList.contains('sorted-asc');
        table.querySelectorAll('thead th').forEach(function (h) {
          h.classList.remove('sorted-asc', 'sorted-desc');
        });
        th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"#;
