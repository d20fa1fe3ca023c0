//! Markdown and CSV as HTML, for the reports a run wrote as text.

use std::fmt::Write as _;

use super::esc;

/// Markdown as the run folders write it (headings, paragraphs, pipe tables, `code`) in HTML.
pub fn markdown_html(md: &str) -> String {
    let inline = |s: &str| {
        let e = esc(s);
        let mut out = String::new();
        for (i, part) in e.split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(&part.replace("**", ""));
            }
        }
        out
    };
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut h = String::new();
    let mut in_table = false;
    let mut header_done = false;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            if !in_table {
                h.push_str("<table class=\"sortable\"><thead><tr>");
                for c in cells(t) {
                    let _ = write!(h, "<th>{}</th>", inline(&c));
                }
                h.push_str("</tr></thead><tbody>\n");
                in_table = true;
                header_done = false;
                continue;
            }
            if !header_done && t.chars().all(|c| "|-: ".contains(c)) {
                header_done = true;
                continue;
            }
            h.push_str("<tr>");
            for c in cells(t) {
                let _ = write!(h, "<td>{}</td>", inline(&c));
            }
            h.push_str("</tr>\n");
            continue;
        }
        if in_table {
            h.push_str("</tbody></table>\n");
            in_table = false;
        }
        if t.is_empty() {
            continue;
        }
        if let Some(x) = t.strip_prefix('#') {
            let _ = writeln!(h, "<h3>{}</h3>", inline(x.trim_start_matches('#').trim()));
        } else {
            let _ = writeln!(h, "<p>{}</p>", inline(t));
        }
    }
    if in_table {
        h.push_str("</tbody></table>\n");
    }
    h
}

/// A CSV file (first line: header) as a table.
pub fn csv_html(csv: &str) -> String {
    let mut h = String::from("<table class=\"sortable\">");
    for (i, line) in csv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        if i == 0 {
            h.push_str("<thead>");
        } else if i == 1 {
            h.push_str("<tbody>");
        }
        h.push_str("<tr>");
        for c in line.split(',') {
            let _ = write!(h, "<{tag}>{}</{tag}>", esc(c.trim_matches('"')));
        }
        h.push_str("</tr>");
        if i == 0 {
            h.push_str("</thead>");
        }
    }
    h.push_str("</tbody></table>\n");
    h
}
