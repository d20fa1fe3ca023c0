//! Flame graphs from `perf script` output: stacks folded root-first (Brendan Gregg's
//! `stackcollapse-perf` format, one `frame;frame;... count` line each) and drawn as an SVG
//! (root at the bottom, width proportional to samples, each frame's name, samples and share
//! in its tooltip). The regression profile of `compare --paired` records each side's flagged
//! scenario with `perf record -e cpu-clock --call-graph dwarf` (a software clock: the VM this
//! suite grew on has no hardware counters) and draws both.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Folded stacks: `root;...;leaf` -> samples.
pub type Folded = BTreeMap<String, u64>;

/// Folds `perf script` text: each sample is a header line (`comm pid time: period event:`)
/// followed by its frames, leaf first (`\taddr symbol+0xoff (dso)`), and a blank line. The
/// thread's name is the root frame; unknown frames are left out; offsets are dropped.
pub fn fold(perf_script: &str) -> Folded {
    let mut out = Folded::new();
    let mut comm: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |comm: &mut Option<String>, frames: &mut Vec<String>| {
        if let Some(c) = comm.take() {
            let mut stack = c;
            for f in frames.iter().rev() {
                stack.push(';');
                stack.push_str(f);
            }
            *out.entry(stack).or_insert(0) += 1;
        }
        frames.clear();
    };
    for line in perf_script.lines() {
        if line.trim().is_empty() {
            flush(&mut comm, &mut frames);
        } else if line.starts_with(char::is_whitespace) {
            if comm.is_some() {
                if let Some(f) = frame_name(line) {
                    frames.push(f);
                }
            }
        } else {
            flush(&mut comm, &mut frames);
            // `comm pid[/tid] [cpu] time: period event:`; the thread name may hold spaces and
            // digits, so the pid is found from the time (the first `<seconds>:` word).
            let words: Vec<&str> = line.split_whitespace().collect();
            let time_at = words.iter().position(|w| {
                w.strip_suffix(':')
                    .is_some_and(|t| t.parse::<f64>().is_ok())
            });
            let mut pid_at = time_at.unwrap_or(2).saturating_sub(1);
            if pid_at > 0 && words[pid_at].starts_with('[') {
                pid_at -= 1;
            }
            comm = Some(
                words[..pid_at.max(1).min(words.len())]
                    .join(" ")
                    .replace(';', ":"),
            );
        }
    }
    flush(&mut comm, &mut frames);
    out
}

/// The symbol of one frame line (`\t 7841fb modelbench::run+0x35b (/path/bin)`), without its
/// offset; None for `[unknown]`.
fn frame_name(line: &str) -> Option<String> {
    let rest = line.trim().split_once(char::is_whitespace)?.1.trim();
    let sym = match rest.rfind(" (") {
        Some(i) => &rest[..i],
        None => rest,
    };
    let sym = match sym.rfind("+0x") {
        Some(i) => &sym[..i],
        None => sym,
    };
    let sym = sym.trim();
    (!sym.is_empty() && sym != "[unknown]").then(|| sym.replace(';', ":"))
}

/// Total samples.
pub fn total(f: &Folded) -> u64 {
    f.values().sum()
}

/// Samples whose leaf (self time) is each function, largest first.
pub fn self_samples(f: &Folded) -> Vec<(String, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, n) in f {
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        *by.entry(leaf).or_insert(0) += n;
    }
    let mut v: Vec<(String, u64)> = by.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The function whose share of self samples grew most from `base` to `new`: (name, base
/// share, new share), shares in [0, 1]. None when either side has no samples.
pub fn grew_most(base: &Folded, new: &Folded) -> Option<(String, f64, f64)> {
    let (tb, tn) = (total(base) as f64, total(new) as f64);
    if tb == 0.0 || tn == 0.0 {
        return None;
    }
    let b: BTreeMap<String, u64> = self_samples(base).into_iter().collect();
    self_samples(new)
        .into_iter()
        .map(|(k, n)| {
            let sb = b.get(&k).copied().unwrap_or(0) as f64 / tb;
            (k, sb, n as f64 / tn)
        })
        .max_by(|x, y| (x.2 - x.1).total_cmp(&(y.2 - y.1)))
}

/// The folded stacks as text, one `stack count` line each.
pub fn folded_text(f: &Folded) -> String {
    let mut s = String::new();
    for (k, n) in f {
        let _ = writeln!(s, "{k} {n}");
    }
    s
}

#[derive(Default)]
struct Node {
    value: u64,
    children: BTreeMap<String, Node>,
}

const WIDTH: f64 = 1200.0;
const FRAME_H: f64 = 16.0;
const PAD_TOP: f64 = 40.0;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A warm colour from the frame's name (the same name, the same colour, in both graphs).
fn colour(name: &str) -> String {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let r = 205 + (h % 50);
    let g = (h >> 8) % 190;
    let b = (h >> 16) % 55;
    format!("rgb({r},{g},{b})")
}

/// The flame graph of `f` as an SVG document, titled `title`. Frames narrower than 0.1% of
/// the width are left out (their samples stay in their parents' widths).
pub fn svg(f: &Folded, title: &str) -> String {
    let mut root = Node::default();
    for (stack, &n) in f {
        root.value += n;
        let mut node = &mut root;
        for frame in stack.split(';') {
            node = node.children.entry(frame.to_string()).or_default();
            node.value += n;
        }
    }
    fn depth(n: &Node) -> usize {
        n.children.values().map(|c| 1 + depth(c)).max().unwrap_or(0)
    }
    let levels = depth(&root);
    let height = PAD_TOP + (levels as f64 + 1.0) * FRAME_H + 10.0;
    let total = root.value.max(1) as f64;
    let mut body = String::new();
    fn draw(
        body: &mut String,
        name: &str,
        n: &Node,
        x: f64,
        level: usize,
        total: f64,
        height: f64,
    ) {
        let w = n.value as f64 / total * WIDTH;
        if w < WIDTH * 0.001 {
            return;
        }
        let y = height - 10.0 - (level as f64 + 1.0) * FRAME_H;
        let chars = ((w - 4.0) / 7.0).floor().max(0.0) as usize;
        let label: String = if name.chars().count() <= chars {
            name.to_string()
        } else if chars > 2 {
            format!("{}..", name.chars().take(chars - 2).collect::<String>())
        } else {
            String::new()
        };
        let _ = writeln!(
            body,
            "<g><title>{} ({} samples, {:.2}%)</title><rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{:.1}\" fill=\"{}\" rx=\"2\"/><text x=\"{:.2}\" y=\"{:.2}\">{}</text></g>",
            xml(name),
            n.value,
            100.0 * n.value as f64 / total,
            FRAME_H - 1.0,
            colour(name),
            x + 3.0,
            y + FRAME_H - 4.5,
            xml(&label)
        );
        let mut cx = x;
        for (child, c) in &n.children {
            draw(body, child, c, cx, level + 1, total, height);
            cx += c.value as f64 / total * WIDTH;
        }
    }
    draw(&mut body, "all", &root, 0.0, 0, total, height);
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fdfdf6\"/>\n<text x=\"{:.0}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n{body}</svg>\n",
        WIDTH / 2.0,
        xml(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "modelbench  3799  1923.554579:    5025125 cpu-clock: \n\t          6f834e inner::leaf+0x3ae (/bin/modelbench)\n\t          6c5c4a modelbench::main+0x141a (/bin/modelbench)\n\t ffffffffffffffff [unknown] ([unknown])\n\nmodelbench  3799  1923.56:    5025125 cpu-clock: \n\t          6f834e inner::leaf+0x10 (/bin/modelbench)\n\t          6c5c4a modelbench::main+0x1 (/bin/modelbench)\n\nrayon worker 2  3801/3805  1923.57:    5025125 cpu-clock: \n\t          1 candle::matmul+0x2 (/bin/modelbench)\n\t          2 <a as b>::run+0x2 (/bin/modelbench)\n";

    #[test]
    fn folds_root_first_without_offsets_or_unknown_frames() {
        let f = fold(SCRIPT);
        assert_eq!(f.get("modelbench;modelbench::main;inner::leaf"), Some(&2));
        assert_eq!(
            f.get("rayon worker 2;<a as b>::run;candle::matmul"),
            Some(&1)
        );
        assert_eq!(total(&f), 3);
        assert_eq!(self_samples(&f)[0], ("inner::leaf".to_string(), 2));
    }

    #[test]
    fn the_function_that_grew_is_named() {
        let base = fold(SCRIPT);
        let mut new = base.clone();
        *new.get_mut("rayon worker 2;<a as b>::run;candle::matmul")
            .unwrap() += 5;
        let (name, b, n) = grew_most(&base, &new).unwrap();
        assert_eq!(name, "candle::matmul");
        assert!((b - 1.0 / 3.0).abs() < 1e-9 && (n - 6.0 / 8.0).abs() < 1e-9);
        // An unchanged profile names the largest share change, which is zero.
        let (_, b, n) = grew_most(&base, &base).unwrap();
        assert_eq!(b, n);
        assert!(grew_most(&Folded::new(), &base).is_none());
    }

    #[test]
    fn svg_has_every_frame_with_its_share() {
        let s = svg(&fold(SCRIPT), "a <test>");
        assert!(s.starts_with("<?xml") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;test&gt;"));
        assert!(s.contains("<title>inner::leaf (2 samples, 66.67%)</title>"));
        assert!(s.contains("<title>&lt;a as b&gt;::run (1 samples, 33.33%)</title>"));
        assert!(s.contains("<title>all (3 samples, 100.00%)</title>"));
        assert_eq!(s.matches("<rect x=").count(), 7);
    }
}
