//! Serving latency arithmetic of `modelbench load`, as pure functions on recorded timings:
//! TTFT, TPOT = (E2E - TTFT) / (output tokens - 1), ITL, p50/p90/p99, request and token
//! throughput, and goodput under service-level objectives (SLOs).
//!
//! Definitions (vLLM's `benchmark_serving`, MLPerf Inference's server scenario):
//! - TTFT: request sent -> first streamed chunk with content received;
//! - E2E: request sent -> last byte of the response received;
//! - TPOT: per request, (E2E - TTFT) / (output tokens - 1); undefined for one token;
//! - ITL: the gaps between successive content chunks, pooled over all requests;
//! - goodput: requests per second of the run that met every SLO (TTFT <= limit and TPOT <=
//!   limit; a request with one token has no TPOT and meets a TPOT limit).

use serde::{Deserialize, Serialize};

use crate::measure::stats::{percentile, percentiles, Percentiles};

/// One request as the load generator saw it. Times in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTiming {
    /// When it was sent, from the start of the measured window (negative: never).
    pub sent_s: f64,
    /// Time to the first content chunk; None when none came.
    pub ttft_s: Option<f64>,
    /// Time to the end of the response; None when it failed.
    pub e2e_s: Option<f64>,
    /// Arrival of each content chunk, from when the request was sent.
    pub chunk_s: Vec<f64>,
    /// Output tokens: the server's `usage.completion_tokens` where it reports it, else the
    /// content chunks counted.
    pub output_tokens: usize,
    /// The server's `usage.prompt_tokens` (None: not reported).
    pub prompt_tokens: Option<usize>,
    /// Why it failed (HTTP status and message, transport error); None on success.
    pub error: Option<String>,
    /// What the server said about the request where it says it (`modelbench serve`'s
    /// `modelbench` object: queue time, batch sizes seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<serde_json::Value>,
    /// The request's number: its prompt and seed are a function of it (and the load's seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// sha256 (first 16 hex digits, [`crate::measure::outputs::hash_text`]) of the whole text
    /// the server returned: what the output verdict compares between two loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_sha256: Option<String>,
    /// Which turn of its conversation (0 first) in a multi-turn load; None: a lone request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<usize>,
    /// The `max_tokens` the request asked for, where a load varies it (`load
    /// --dataset-output-lengths`); None: the level's fixed `--max-tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Prompt tokens the server says it did not run again (its prefix cache:
    /// `usage.prompt_tokens_details.cached_tokens`, or llama-server's `timings.cache_n`);
    /// None: not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<usize>,
}

impl RequestTiming {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.e2e_s.is_some()
    }
    /// (E2E - TTFT) / (output tokens - 1); None for fewer than two tokens or a failure.
    pub fn tpot_s(&self) -> Option<f64> {
        tpot(self.e2e_s?, self.ttft_s?, self.output_tokens)
    }
    /// Gaps between successive content chunks.
    pub fn itl_s(&self) -> Vec<f64> {
        itl(&self.chunk_s)
    }
}

/// TPOT = (E2E - TTFT) / (n - 1); None for n < 2.
pub fn tpot(e2e_s: f64, ttft_s: f64, output_tokens: usize) -> Option<f64> {
    (output_tokens >= 2).then(|| (e2e_s - ttft_s) / (output_tokens - 1) as f64)
}

/// Inter-token latencies: the differences of successive arrival times.
pub fn itl(times_s: &[f64]) -> Vec<f64> {
    times_s.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Service-level objectives; a limit left None is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

/// MLPerf Inference's server-scenario limits of its LLM benchmarks (mlcommons/inference,
/// loadgen/mlperf.conf: `<model>.Server.ttft_latency` / `tpot_latency`, milliseconds; MLPerf
/// checks them at the 99th percentile).
pub const SLO_PRESETS: [(&str, f64, f64); 8] = [
    ("llama2-70b", 2000.0, 200.0),
    ("llama2-70b-interactive", 450.0, 40.0),
    ("mixtral-8x7b", 2000.0, 200.0),
    ("llama3.1-405b", 6000.0, 175.0),
    ("llama3.1-405b-interactive", 4500.0, 80.0),
    ("llama3.1-8b", 2000.0, 100.0),
    ("llama3.1-8b-interactive", 500.0, 30.0),
    ("deepseek-r1", 2000.0, 80.0),
];

impl Slo {
    /// `ttft=2000ms,tpot=100ms,e2e=10s` (units ms or s; any subset, at least one).
    pub fn parse(s: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=value (e.g. ttft=2000ms)"))?;
            let ms = parse_ms(v.trim())?;
            match k.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2e" => slo.e2e_ms = Some(ms),
                other => return Err(format!("unknown SLO `{other}` (allowed: ttft, tpot, e2e)")),
            }
        }
        if slo == Slo::default() {
            return Err("no limit given (e.g. ttft=2000ms,tpot=100ms)".into());
        }
        Ok(slo)
    }

    /// An MLPerf preset by name (see [`SLO_PRESETS`]).
    pub fn preset(name: &str) -> Result<Slo, String> {
        SLO_PRESETS
            .iter()
            .find(|p| p.0 == name)
            .map(|&(_, ttft, tpot)| Slo {
                ttft_ms: Some(ttft),
                tpot_ms: Some(tpot),
                e2e_ms: None,
            })
            .ok_or_else(|| {
                let names: Vec<&str> = SLO_PRESETS.iter().map(|p| p.0).collect();
                format!("unknown preset `{name}` (allowed: {})", names.join(", "))
            })
    }

    /// Whether a successful request met every limit.
    pub fn met_by(&self, r: &RequestTiming) -> bool {
        if !r.ok() {
            return false;
        }
        let within = |limit: Option<f64>, v: Option<f64>| match (limit, v) {
            (Some(l), Some(v)) => v * 1e3 <= l,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let tpot_ok = match (self.tpot_ms, r.tpot_s()) {
            (Some(l), Some(v)) => v * 1e3 <= l,
            _ => true, // one-token answers have no TPOT
        };
        within(self.ttft_ms, r.ttft_s) && tpot_ok && within(self.e2e_ms, r.e2e_s)
    }

    pub fn describe(&self) -> String {
        let mut p = Vec::new();
        for (n, v) in [
            ("ttft", self.ttft_ms),
            ("tpot", self.tpot_ms),
            ("e2e", self.e2e_ms),
        ] {
            if let Some(v) = v {
                p.push(format!("{n}<={v}ms"));
            }
        }
        p.join(",")
    }
}

fn parse_ms(v: &str) -> Result<f64, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return Err(format!("`{v}` needs a unit (ms or s)"));
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x * scale),
        _ => Err(format!("`{v}` is not a positive duration")),
    }
}

/// A duration flag: `30s`, `500ms`, `2m`.
pub fn parse_duration_s(v: &str) -> Result<f64, String> {
    let v = v.trim();
    if let Some(m) = v.strip_suffix('m').filter(|m| !m.ends_with('m')) {
        if let Ok(x) = m.parse::<f64>() {
            if x > 0.0 && x.is_finite() {
                return Ok(x * 60.0);
            }
        }
    }
    parse_ms(v).map(|ms| ms / 1e3)
}

/// What a load level produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    /// First send -> last completion of the measured requests, seconds.
    pub duration_s: f64,
    pub request_s: Option<f64>,
    pub output_tok_s: Option<f64>,
    /// Output tokens per second of one request after its first token: 1 / TPOT, median.
    pub tok_s_per_user: Option<f64>,
    pub output_tokens: usize,
    pub ttft_ms: Option<Percentiles>,
    pub tpot_ms: Option<Percentiles>,
    pub itl_ms: Option<Percentiles>,
    pub e2e_ms: Option<Percentiles>,
    /// Requests per second that met every SLO (None: no SLO given).
    pub goodput_request_s: Option<f64>,
    /// Share of all requests that met every SLO.
    pub slo_attained: Option<f64>,
    /// MLPerf's verdict: p99 TTFT and p99 TPOT within their limits.
    pub slo_p99_met: Option<bool>,
}

/// Aggregates the requests of one load level.
pub fn summarize_load(reqs: &[RequestTiming], slo: Option<&Slo>) -> LoadSummary {
    let ms = |v: Vec<f64>| percentiles(&v.iter().map(|x| x * 1e3).collect::<Vec<_>>());
    let ok: Vec<&RequestTiming> = reqs.iter().filter(|r| r.ok()).collect();
    let start = reqs.iter().map(|r| r.sent_s).fold(f64::INFINITY, f64::min);
    let end = ok
        .iter()
        .map(|r| r.sent_s + r.e2e_s.unwrap_or(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let duration_s = if ok.is_empty() { 0.0 } else { end - start };
    let per_s = |n: f64| (duration_s > 0.0).then(|| n / duration_s);
    let output_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let tpots: Vec<f64> = ok.iter().filter_map(|r| r.tpot_s()).collect();
    let ttft = ms(ok.iter().filter_map(|r| r.ttft_s).collect());
    let tpot = ms(tpots.clone());
    let mut inv: Vec<f64> = tpots
        .iter()
        .filter(|t| **t > 0.0)
        .map(|t| 1.0 / t)
        .collect();
    inv.sort_by(f64::total_cmp);
    let met = slo.map(|s| reqs.iter().filter(|r| s.met_by(r)).count());
    LoadSummary {
        requests: reqs.len(),
        completed: ok.len(),
        errors: reqs.len() - ok.len(),
        duration_s,
        request_s: per_s(ok.len() as f64),
        output_tok_s: per_s(output_tokens as f64),
        tok_s_per_user: (!inv.is_empty()).then(|| percentile(&inv, 0.5)),
        output_tokens,
        ttft_ms: ttft,
        tpot_ms: tpot,
        itl_ms: ms(ok.iter().flat_map(|r| r.itl_s()).collect()),
        e2e_ms: ms(ok.iter().filter_map(|r| r.e2e_s).collect()),
        goodput_request_s: met.and_then(|m| per_s(m as f64)),
        slo_attained: met.and_then(|m| (!reqs.is_empty()).then(|| m as f64 / reqs.len() as f64)),
        slo_p99_met: slo.map(|s| {
            let t_ok = s.ttft_ms.is_none_or(|l| ttft.is_some_and(|p| p.p99 <= l));
            let p_ok = s.tpot_ms.is_none_or(|l| tpot.is_none_or(|p| p.p99 <= l));
            t_ok && p_ok
        }),
    }
}

/// One turn of the conversations of a multi-turn load: its successful requests' prompt
/// lengths, the prompt tokens the server took from its cache, TTFT and E2E.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnSummary {
    /// 1 for the first turn.
    pub turn: usize,
    pub requests: usize,
    pub errors: usize,
    pub prompt_tokens_mean: Option<f64>,
    /// Mean over the requests whose server reported it; None where none did.
    pub cached_tokens_mean: Option<f64>,
    /// Cached prompt tokens over prompt tokens, summed over those requests.
    pub cached_share: Option<f64>,
    pub ttft_ms: Option<Percentiles>,
    pub e2e_ms: Option<Percentiles>,
}

/// The requests of a multi-turn load by turn (requests without a turn left out).
pub fn summarize_turns(reqs: &[RequestTiming]) -> Vec<TurnSummary> {
    let turns = reqs
        .iter()
        .filter_map(|r| r.turn)
        .max()
        .map_or(0, |t| t + 1);
    let ms = |v: Vec<f64>| percentiles(&v.iter().map(|x| x * 1e3).collect::<Vec<_>>());
    (0..turns)
        .map(|t| {
            let all: Vec<&RequestTiming> = reqs.iter().filter(|r| r.turn == Some(t)).collect();
            let ok: Vec<&&RequestTiming> = all.iter().filter(|r| r.ok()).collect();
            let prompts: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.prompt_tokens.map(|p| p as f64))
                .collect();
            let both: Vec<(f64, f64)> = ok
                .iter()
                .filter_map(|r| Some((r.cached_tokens? as f64, r.prompt_tokens? as f64)))
                .collect();
            let cached: f64 = both.iter().map(|b| b.0).sum();
            let prompt: f64 = both.iter().map(|b| b.1).sum();
            TurnSummary {
                turn: t + 1,
                requests: all.len(),
                errors: all.len() - ok.len(),
                prompt_tokens_mean: percentiles(&prompts).map(|p| p.mean),
                cached_tokens_mean: (!both.is_empty()).then(|| cached / both.len() as f64),
                cached_share: (prompt > 0.0).then(|| cached / prompt),
                ttft_ms: ms(ok.iter().filter_map(|r| r.ttft_s).collect()),
                e2e_ms: ms(ok.iter().filter_map(|r| r.e2e_s).collect()),
            }
        })
        .collect()
}

/// Exponential inter-arrival gaps of a Poisson process at `rate` per second, seeded
/// (inverse CDF: -ln(1 - u) / rate).
pub fn poisson_gaps(rate: f64, n: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            -(1.0 - u).ln() / rate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three recorded requests (times in s), expectations computed by hand.
    fn recorded() -> Vec<RequestTiming> {
        vec![
            // TTFT 0.1, chunks at 0.1 0.2 0.4 0.5 -> E2E 0.5, 4 tokens, TPOT (0.5-0.1)/3
            RequestTiming {
                sent_s: 0.0,
                ttft_s: Some(0.1),
                e2e_s: Some(0.5),
                chunk_s: vec![0.1, 0.2, 0.4, 0.5],
                output_tokens: 4,
                prompt_tokens: Some(16),
                error: None,
                ..Default::default()
            },
            // TTFT 0.3, chunks 0.3 0.5 -> E2E 0.5, 2 tokens, TPOT 0.2; sent at 1.0, ends 1.5
            RequestTiming {
                sent_s: 1.0,
                ttft_s: Some(0.3),
                e2e_s: Some(0.5),
                chunk_s: vec![0.3, 0.5],
                output_tokens: 2,
                prompt_tokens: Some(16),
                error: None,
                ..Default::default()
            },
            RequestTiming {
                sent_s: 0.5,
                error: Some("HTTP 500".into()),
                ..Default::default()
            },
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn tpot_and_itl_follow_their_definitions() {
        assert!(close(tpot(0.5, 0.1, 4).unwrap(), 0.4 / 3.0));
        assert_eq!(tpot(0.5, 0.1, 1), None);
        let gaps = itl(&[0.1, 0.2, 0.4, 0.5]);
        assert_eq!(gaps.len(), 3);
        assert!(close(gaps[0], 0.1) && close(gaps[1], 0.2) && close(gaps[2], 0.1));
    }

    #[test]
    fn summary_of_recorded_timings() {
        let s = summarize_load(&recorded(), None);
        assert_eq!((s.requests, s.completed, s.errors), (3, 2, 1));
        // first send 0.0, last completion 1.0 + 0.5
        assert!(close(s.duration_s, 1.5));
        assert!(close(s.request_s.unwrap(), 2.0 / 1.5));
        assert_eq!(s.output_tokens, 6);
        assert!(close(s.output_tok_s.unwrap(), 4.0));
        // TTFT {100, 300} ms: p50 200, p90 100 + 0.9 * 200 = 280, p99 298
        let t = s.ttft_ms.unwrap();
        assert!(close(t.p50, 200.0) && close(t.p90, 280.0) && close(t.p99, 298.0));
        // TPOT {133.33, 200} ms
        let p = s.tpot_ms.unwrap();
        assert!(close(p.p50, (400.0 / 3.0 + 200.0) / 2.0));
        // ITL pooled {100, 200, 100, 200} ms: p50 150, p90 200
        let i = s.itl_ms.unwrap();
        assert!(close(i.p50, 150.0) && close(i.p90, 200.0) && close(i.mean, 150.0));
        let e = s.e2e_ms.unwrap();
        assert!(close(e.p50, 500.0));
        // per user: median of 1/TPOT = {7.5, 5} -> 6.25 tok/s
        assert!(close(s.tok_s_per_user.unwrap(), 6.25));
        assert_eq!(s.goodput_request_s, None);
    }

    #[test]
    fn goodput_counts_requests_meeting_every_slo() {
        let reqs = recorded();
        // TTFT <= 200 ms: only the first; TPOT <= 150 ms: the first (133) too.
        let slo = Slo::parse("ttft=200ms,tpot=150ms").unwrap();
        let s = summarize_load(&reqs, Some(&slo));
        assert!(close(s.goodput_request_s.unwrap(), 1.0 / 1.5));
        assert!(close(s.slo_attained.unwrap(), 1.0 / 3.0));
        assert_eq!(s.slo_p99_met, Some(false), "p99 TTFT 298 ms > 200 ms");
        // Loose limits: both successes meet them, the failure never does.
        let slo = Slo::parse("ttft=1s,tpot=250ms").unwrap();
        let s = summarize_load(&reqs, Some(&slo));
        assert!(close(s.goodput_request_s.unwrap(), 2.0 / 1.5));
        assert_eq!(s.slo_p99_met, Some(true));
        // TPOT limit between the two: 150 ms keeps the 133 ms one only.
        assert!(!Slo::parse("tpot=150ms").unwrap().met_by(&reqs[1]));
        assert!(Slo::parse("tpot=150ms").unwrap().met_by(&reqs[0]));
    }

    #[test]
    fn slo_and_duration_parsing() {
        let s = Slo::parse("ttft=2s, tpot=100ms").unwrap();
        assert_eq!(
            (s.ttft_ms, s.tpot_ms, s.e2e_ms),
            (Some(2000.0), Some(100.0), None)
        );
        assert!(Slo::parse("ttft=2000").is_err(), "unit required");
        assert!(Slo::parse("foo=1ms").is_err());
        assert!(Slo::parse("").is_err());
        assert!(Slo::parse("ttft=-1ms").is_err());
        let p = Slo::preset("llama2-70b").unwrap();
        assert_eq!((p.ttft_ms, p.tpot_ms), (Some(2000.0), Some(200.0)));
        assert!(Slo::preset("nope").is_err());
        assert!(close(parse_duration_s("30s").unwrap(), 30.0));
        assert!(close(parse_duration_s("250ms").unwrap(), 0.25));
        assert!(close(parse_duration_s("2m").unwrap(), 120.0));
        assert!(parse_duration_s("30").is_err());
    }

    #[test]
    fn poisson_gaps_are_seeded_with_the_right_mean() {
        let a = poisson_gaps(4.0, 20_000, 7);
        assert_eq!(a, poisson_gaps(4.0, 20_000, 7));
        assert_ne!(a[..10], poisson_gaps(4.0, 10, 8)[..]);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 0.25).abs() < 0.01, "mean gap {mean} vs 1/rate 0.25");
        assert!(a.iter().all(|g| *g >= 0.0));
    }
}
