//! The browsable report (target-reports/index.html and the benchmark pages, issue 47), opened
//! in a real browser: headless Chromium (Debian's `chromium`, `scripts/install-chromium.sh`)
//! loads the pages from file:// and dumps the DOM it rendered, scripts run. Checked against
//! the results database, never against the page itself:
//! - the newest run's summary table has exactly the benchmarks the database holds for that
//!   run, each once, and the verdicts of both sides (the slowed benchmark SLOWER, the others
//!   within noise);
//! - a benchmark page's chart has one point per row the database holds for that benchmark,
//!   one series per machine, a noise band behind every point that has a previous one;
//! - no page names an http(s) URL (nothing leaves file://), and the browser logged nothing
//!   (no script error);
//! - the check itself fails on a page that lost a benchmark's row.
//!
//! Without chromium the test skips by the suite's one rule (tests/common's `skip_or_fail`): it
//! says so and logs the skip; under CI it fails instead (`.ci/run` installs chromium with
//! scripts/install-chromium.sh and sets `MODELBENCH_REQUIRE_CHROMIUM`: 1 after the install,
//! 0 only when Debian's mirror is unreachable, so only then may it skip under CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use modelbench::output::record::{Kind, Record};
use modelbench::output::report::{write_index, RunDir};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// What Chromium did with a page: the DOM it rendered (scripts run), what it logged (console
/// messages appear as `CONSOLE` lines) and every request the page made (from its net log).
struct Rendered {
    dom: String,
    log: String,
    requests: Vec<String>,
}

/// Opens `page` from file:// in headless Chromium with a fresh profile and nothing in the
/// background (the flags of docs/report.md), and records its network log.
fn render(browser: &Path, page: &Path) -> Rendered {
    let scratch = tempfile::tempdir().unwrap();
    let net_log = scratch.path().join("net.json");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed on {}: {}\n{log}",
        page.display(),
        out.status
    );
    let requests = page_requests(&net_log);
    Rendered { dom, log, requests }
}

/// The URLs the page itself requested, from Chromium's net log: every `URL_REQUEST_START_JOB`
/// with an initiator (a page opened from file:// is the opaque origin `null`). Chromium's own
/// requests (update checks, accounts) carry the initiator `not an origin` and are not the
/// page's. The page's own file:// loads do not go through URL requests, so any entry is a
/// request leaving file://.
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log)
        .unwrap_or_else(|e| panic!("chromium wrote no net log {}: {e}", net_log.display()));
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the net log {} does not parse: {e}", net_log.display()));
    let start_job = doc["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_i64()
        .expect("the net log names its event types");
    doc["events"]
        .as_array()
        .expect("net log events")
        .iter()
        .filter(|e| e["type"].as_i64() == Some(start_job))
        // The job's begin event carries the URL and initiator; its end event carries neither.
        .filter_map(|e| {
            Some((
                e["params"]["url"].as_str()?,
                e["params"]["initiator"].as_str(),
            ))
        })
        .filter(|(_, initiator)| *initiator != Some("not an origin"))
        .map(|(url, _)| url.to_string())
        .collect()
}

/// Nothing the browser logged (no console message, no script error) and no request.
fn clean(what: &str, r: &Rendered) {
    assert!(
        !r.log.contains("CONSOLE"),
        "{what}: the browser logged console messages (a script error?):\n{}",
        r.log
    );
    assert!(
        r.requests.is_empty(),
        "{what}: the page made requests leaving file://: {:?}",
        r.requests
    );
}

/// Criterion-like samples around `median` seconds (a fixed, small spread).
fn samples(median: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| median * (1.0 + 0.01 * ((i as f64) * 1.7).sin()))
        .collect()
}

fn record(id: &str, model: &str, median: f64, cpu: Option<&str>) -> Record {
    let scenario = id.split('/').next().unwrap();
    let mut r = Record::from_samples(Kind::Generation, scenario, samples(median, 20), 16);
    r.id = id.to_string();
    r.model.label = model.to_string();
    r.device = "cpu".into();
    if let Some(c) = cpu {
        r.hardware.cpu = c.to_string();
    }
    r
}

const BENCHES: [(&str, &str, f64); 3] = [
    ("short/cpu-f32/fixture:llama", "fixture:llama", 0.010),
    ("medium/cpu-f32/fixture:llama", "fixture:llama", 0.030),
    ("short/cpu-f32/fixture:qwen3", "fixture:qwen3", 0.012),
];

/// The benchmark whose newest run is 50% slower.
const SLOWED: &str = "medium/cpu-f32/fixture:llama";

/// Four runs: one of another machine (one benchmark), two alike, one with SLOWED 1.5x.
fn make_runs(root: &Path) {
    let mut other = RunDir::new(root, Some("1-other"));
    other
        .push(record(BENCHES[1].0, BENCHES[1].1, 0.025, Some("Other CPU")))
        .unwrap();
    other.complete().unwrap();
    for (label, slow) in [("2-base", 1.0), ("3-again", 1.0), ("4-slow", 1.5)] {
        let mut run = RunDir::new(root, Some(label));
        for (id, model, m) in BENCHES {
            let f = if id == SLOWED { slow } else { 1.0 };
            run.push(record(id, model, m * f, None)).unwrap();
        }
        // Each ended: a run still running is no later run's baseline.
        run.complete().unwrap();
    }
    write_index(root).unwrap();
}

/// The text of an HTML fragment (tags dropped, entities of the page's text decoded).
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The rows of the table with `id` in a rendered DOM: each row's cells as text, plus the
/// row's raw HTML.
fn table_rows(dom: &str, id: &str) -> Vec<(Vec<String>, String)> {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else {
        return Vec::new();
    };
    let t = &dom[start..];
    let t = &t[..t.find("</table>").unwrap_or(t.len())];
    let Some(body) = t.find("<tbody>") else {
        return Vec::new();
    };
    t[body..]
        .split("<tr")
        .skip(1)
        .map(|row| {
            let cells = row
                .split("<td")
                .skip(1)
                .map(|c| text(&format!("<td{c}")).trim().to_string())
                .collect();
            (cells, row.to_string())
        })
        .collect()
}

/// Every benchmark the database holds for the newest run is in the summary table once.
fn check_summary(dom: &str, expected: &[String]) -> Result<(), String> {
    let rows = table_rows(dom, "summary-table");
    let ids: Vec<String> = rows.iter().map(|(c, _)| c[0].clone()).collect();
    for e in expected {
        let n = ids.iter().filter(|id| id.starts_with(e.as_str())).count();
        if n != 1 {
            return Err(format!(
                "benchmark {e} is in the summary table {n} times (rows: {ids:?})"
            ));
        }
    }
    if rows.len() != expected.len() {
        return Err(format!(
            "the summary table has {} rows, the database {} benchmarks for the newest run",
            rows.len(),
            expected.len()
        ));
    }
    Ok(())
}

fn db_query(root: &Path, sql: &str, params: &[&str]) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(root.join("modelbench.db")).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        (0..n)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(|r| {
        r.unwrap()
            .into_iter()
            .map(|v| match v {
                rusqlite::types::Value::Text(s) => s,
                rusqlite::types::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    })
    .collect()
}

fn no_external_urls(what: &str, html: &str) {
    for scheme in ["http://", "https://", "//cdn", "src=\"//", "href=\"//"] {
        assert!(
            !html.contains(scheme),
            "{what} names `{scheme}`: the report must work from file:// without the network"
        );
    }
}

#[test]
fn the_report_renders_in_chromium_with_the_databases_rows_points_and_verdicts() {
    let Some(browser) = chromium() else {
        common::skip_or_fail(
            "chromium",
            "not on PATH (scripts/install-chromium.sh installs Debian's package)",
            false,
            Some("MODELBENCH_REQUIRE_CHROMIUM"),
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    make_runs(&root);

    // Expected rows: the newest run's benchmarks, from the database.
    let newest = db_query(&root, "SELECT MAX(run) FROM records", &[])[0][0].clone();
    assert!(newest.ends_with("4-slow"), "{newest}");
    let expected: Vec<String> = db_query(
        &root,
        "SELECT bench_id FROM records WHERE run = ? AND harness = 'criterion' ORDER BY seq",
        &[&newest],
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(expected.len(), 3);

    let rendered = render(&browser, &root.join("index.html"));
    clean("index.html", &rendered);
    let dom = rendered.dom;
    assert!(dom.contains(&format!("Newest run: {newest}")), "{dom}");
    check_summary(&dom, &expected).unwrap();
    // The script ran: it marks every header of a sortable table.
    assert!(
        dom.contains("<th class=\"sortable\">benchmark</th>"),
        "{dom}"
    );
    // Verdicts, both sides.
    for (cells, _) in table_rows(&dom, "summary-table") {
        let verdict = &cells[4];
        if cells[0].starts_with(SLOWED) {
            assert_eq!(verdict, "SLOWER", "{cells:?}");
            assert!(cells[5].contains("SLOWER (±20%)"), "{cells:?}");
        } else {
            assert_eq!(verdict, "within noise", "{cells:?}");
        }
    }
    // No noise profile under this root: the page says every verdict used the default.
    assert!(
        dom.contains("id=\"thresholds\">No noise thresholds were measured on this machine"),
        "{dom}"
    );
    // The list of changes beyond noise above the table: the slowed benchmark only.
    let list = dom
        .split("id=\"flagged-list\"")
        .nth(1)
        .and_then(|t| t.split("</ul>").next())
        .unwrap_or_else(|| panic!("no list of changes beyond noise: {dom}"));
    let items: Vec<String> = list.split("<li>").skip(1).map(text).collect();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        items[0].starts_with("SLOWER") && items[0].contains(SLOWED),
        "{items:?}"
    );

    // Each benchmark's page: one point per database row, one series per machine.
    let keys = db_query(
        &root,
        "SELECT record_key, bench_id, COUNT(*), COUNT(DISTINCT hardware_fp), COUNT(DISTINCT run) FROM records GROUP BY record_key",
        &[],
    );
    assert_eq!(keys.len(), 3);
    let rows = table_rows(&dom, "benchmarks-table");
    for k in &keys {
        let (id, points, machines) = (&k[1], k[2].parse::<usize>().unwrap(), &k[3]);
        let (_, raw) = rows
            .iter()
            .find(|(c, _)| &c[0] == id)
            .unwrap_or_else(|| panic!("{id} is not in the benchmarks table"));
        let href = raw
            .split("href=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let page = root.join(href);
        let rendered = render(&browser, &page);
        clean(id, &rendered);
        let pdom = rendered.dom;
        let drawn = pdom.matches("<g class=\"point").count();
        assert_eq!(drawn, points, "{id}: points drawn vs rows in the database");
        assert_eq!(
            pdom.matches("class=\"errorbar\"").count(),
            points,
            "{id}: a 95% interval per point"
        );
        let series = pdom.matches("<g class=\"legend\">").count();
        assert_eq!(
            series.to_string(),
            *machines,
            "{id}: one series per machine"
        );
        // A band behind every point with a previous point of its machine.
        assert_eq!(
            pdom.matches("class=\"band\"").count(),
            points - series,
            "{id}"
        );
        let flagged = pdom.matches("point flagged slower").count();
        assert_eq!(
            flagged,
            usize::from(id == SLOWED),
            "{id}: ringed SLOWER points"
        );
        assert_eq!(
            table_rows(&pdom, "history-table").len(),
            points,
            "{id}: the history table"
        );
        no_external_urls(id, &pdom);
    }

    // Nothing leaves file://: no page source names a URL.
    let mut files = vec![root.join("index.html")];
    for e in std::fs::read_dir(root.join("site/bench")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in &files {
        no_external_urls(
            &f.display().to_string(),
            &std::fs::read_to_string(f).unwrap(),
        );
    }
    no_external_urls("index.html (rendered)", &dom);

    // The check fails when the page loses a benchmark's rows.
    let html = std::fs::read_to_string(root.join("index.html")).unwrap();
    let start = html
        .find(&format!("<tr data-key=\"generation | {SLOWED}"))
        .expect("the slowed benchmark's row in the source");
    let end = start + html[start..].find("</tr>").unwrap() + "</tr>".len();
    let broken = root.join("index-without-a-row.html");
    std::fs::write(&broken, format!("{}{}", &html[..start], &html[end..])).unwrap();
    let bdom = render(&browser, &broken).dom;
    let err = check_summary(&bdom, &expected).expect_err("a lost row must fail the check");
    assert!(err.contains(SLOWED), "{err}");
    // ... and the request check sees a page that reaches out (a remote image).
    let leaky = root.join("leaky.html");
    std::fs::write(
        &leaky,
        "<!doctype html><html><body><img src=\"https://example.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let requests = render(&browser, &leaky).requests;
    assert_eq!(
        requests,
        ["https://example.invalid/x.png"],
        "the net log must show a page's request"
    );
    std::fs::remove_file(&leaky).unwrap();

    // Sections: none without their files; each with its data and links once a run holds it.
    for id in ["peers", "depth", "paired"] {
        assert!(!dom.contains(&format!("id=\"{id}\"")), "{id} without data");
    }
    let newest_dir = root.join(&newest);
    std::fs::write(
        newest_dir.join("peers.md"),
        "# Peers\n\n| scenario | candle / llama.cpp |\n|---|---:|\n| medium | 0.42 [0.40, 0.44] |\n",
    )
    .unwrap();
    std::fs::write(
        newest_dir.join("depth.csv"),
        "model,depth,prefill_tok_s\nfixture:llama,512,1234.5\n",
    )
    .unwrap();
    let paired = root.join("20990101_000000-paired");
    std::fs::create_dir_all(&paired).unwrap();
    std::fs::write(
        paired.join("paired.json"),
        serde_json::json!({"base": "main", "new": "HEAD", "inject": "decode:5%", "threshold": 0.02,
            "model": "fixture:llama", "rows": [{"scenario": "medium", "metric": "decode",
            "pairs": 60, "ratio": 1.05, "ci95": [1.04, 1.06], "verdict": "Regression"}]})
        .to_string(),
    )
    .unwrap();
    write_index(&root).unwrap();
    let rendered = render(&browser, &root.join("index.html"));
    clean("index.html with sections", &rendered);
    let dom = rendered.dom;
    let section = |id: &str| {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("a section {id}"));
        dom[start..].split("<h2").next().unwrap().to_string()
    };
    let peers = section("peers");
    assert!(peers.contains("<td>0.42 [0.40, 0.44]</td>"), "{peers}");
    assert!(
        peers.contains(&format!("href=\"{newest}/peers.md\"")),
        "{peers}"
    );
    let depth = section("depth");
    assert!(depth.contains("<td>1234.5</td>"), "{depth}");
    let listed = section("paired");
    assert!(
        listed.contains("Regression") && listed.contains("1.050x"),
        "{listed}"
    );
    // The paired comparison is listed on the page of its scenario and model only.
    for k in &keys {
        let page = root
            .join("site/bench")
            .join(format!("{}.html", k[1].replace(['/', ':'], "_")));
        let pdom = render(&browser, &page).dom;
        let on_page = pdom.contains("20990101_000000-paired/paired.md");
        assert_eq!(on_page, k[1] == SLOWED, "{}: the paired comparison", k[1]);
    }
}
