//! PyTorch (transformers) as a peer: its settings, the `peer_torch.py` worker's protocol and
//! the peer records built from what it reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{peer_model, set_workload, Peer};
use crate::engine::generate::Trace;
use crate::engine::scenario::Scenario;
use crate::error::{Error, Result};
use crate::measure::process::ProcessUse;
use crate::measure::threads::ThreadUse;
use crate::output::record::{
    gen_metrics, trial_rates, Engine, Harness, Kind, ModelInfo, Precision, Record,
};

// ---------------------------------------------------------------- PyTorch (peer_torch.py)

/// How the PyTorch peer is run: the attention implementation transformers builds the model
/// with (None: transformers' own default, `sdpa` on CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchSetting {
    pub attn: Option<String>,
}

impl TorchSetting {
    /// The setting that does candle's work: candle's attention path (`eager`: the softmax of
    /// QK^T times V in plain ops; `flash` has no CPU counterpart in transformers and is passed
    /// as `flash_attention_2`, which transformers refuses without the package).
    pub fn matched(candle_attention: &str) -> TorchSetting {
        let attn = match candle_attention {
            "eager" => "eager",
            "flash" => "flash_attention_2",
            other => other,
        };
        TorchSetting {
            attn: Some(attn.to_string()),
        }
    }

    /// transformers' defaults, as a user calling from_pretrained without arguments gets them.
    pub fn defaults() -> TorchSetting {
        TorchSetting { attn: None }
    }

    pub fn is_default(&self) -> bool {
        self.attn.is_none()
    }

    /// The part of the record id that tells the settings apart: `attn-eager`, `defaults`.
    pub fn id(&self) -> String {
        match &self.attn {
            Some(a) => format!("attn-{a}"),
            None => "defaults".into(),
        }
    }
}

/// peer_torch.py's first line, once the model is loaded (the fields modelbench reads; the whole
/// object is kept).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchHello {
    pub torch_version: String,
    pub transformers_version: String,
    pub device: String,
    pub dtype: String,
    /// torch.get_num_threads() after torch.set_num_threads.
    pub threads: usize,
    pub interop_threads: usize,
    pub model_dir: String,
    pub model_class: String,
    pub attn_implementation: Option<String>,
    pub load_s: f64,
}

/// One timed generation of peer_torch.py (one reply line).
#[derive(Debug, Clone, Deserialize)]
pub struct TorchTrial {
    pub prompt_tokens: usize,
    pub token_times_s: Vec<f64>,
    pub generated_ids: Vec<u32>,
    /// The KV-cache class generate() used (None: no cache).
    #[serde(default)]
    pub cache: Option<String>,
}

/// The last JSON object line of `text`, parsed; `bad` makes the error.
pub(super) fn json_line(text: &str, bad: &dyn Fn(String) -> Error) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| bad("no JSON object".into()))?;
    serde_json::from_str(line).map_err(|e| bad(e.to_string()))
}

/// Exactly `n` > 0 positive, non-decreasing token times and `n` ids.
pub(super) fn token_times_ok(times: &[f64], ids: usize, n: usize) -> bool {
    times.len() == n
        && ids == n
        && n > 0
        && times.first().is_some_and(|&x| x > 0.0)
        && times.windows(2).all(|w| w[1] >= w[0])
}

/// Parses peer_torch.py's first line (`what`: the script, for the error).
pub fn parse_torch_hello(text: &str, what: &str) -> Result<(TorchHello, Value)> {
    let bad = |e: String| Error::Report(format!("{what}: not peer_torch.py's first line: {e}"));
    let v = json_line(text, &bad)?;
    let h: TorchHello = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    Ok((h, v))
}

/// Parses one reply of peer_torch.py: `new_tokens` increasing token times and ids from a
/// prompt of `prompt_tokens` ids.
pub fn parse_torch_trial(
    text: &str,
    prompt_tokens: usize,
    new_tokens: usize,
    what: &str,
) -> Result<TorchTrial> {
    let bad = |e: String| Error::Report(format!("{what}: not a peer_torch.py reply: {e}"));
    let v = json_line(text, &bad)?;
    let t: TorchTrial = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    if !token_times_ok(&t.token_times_s, t.generated_ids.len(), new_tokens)
        || t.prompt_tokens != prompt_tokens
    {
        return Err(bad(format!(
            "expected {new_tokens} increasing token times and ids from {prompt_tokens} prompt ids, got {} and {} from {}",
            t.token_times_s.len(),
            t.generated_ids.len(),
            t.prompt_tokens
        )));
    }
    Ok(t)
}

/// A generation as the engine's own trace type, so a peer's metrics come from the same code
/// as candle's ([`gen_metrics`]).
pub(super) fn peer_trace(prompt_tokens: usize, ids: &[u32], times_s: &[f64]) -> Trace {
    Trace {
        prompt_tokens,
        tokens: ids.to_vec(),
        token_times: times_s
            .iter()
            .map(|&s| std::time::Duration::from_secs_f64(s))
            .collect(),
        tokenize: std::time::Duration::ZERO,
        text: None,
        // A peer's logits never reach us.
        non_finite_steps: None,
    }
}

/// One timed repetition of the PyTorch peer, with the threads measured busy in its process
/// over the request (None: /proc not readable, or too short to account).
#[derive(Debug, Clone)]
pub struct TorchRun {
    pub trial: TorchTrial,
    pub thread_use: Option<ThreadUse>,
}

impl TorchRun {
    pub fn trace(&self) -> Trace {
        let t = &self.trial;
        peer_trace(t.prompt_tokens, &t.generated_ids, &t.token_times_s)
    }
}

/// peer_torch.py running as a worker: loaded once, one generation per request. Its process is
/// modelbench's child, so its threads' CPU time is read from /proc/<pid>/task (as llama.cpp's
/// are, from inside its process) and its peak RSS from wait4 when it ends ([`Self::finish`]).
pub struct TorchWorker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: std::time::Instant,
    program: PathBuf,
    what: String,
    pub setting: TorchSetting,
    pub hello: TorchHello,
    pub raw_hello: Value,
}

/// peer_torch.py in the repository.
pub fn torch_script() -> PathBuf {
    crate::util::root().join("scripts/peer_torch.py")
}

impl TorchWorker {
    /// Starts `python scripts/peer_torch.py --serve SPEC` (the spec written to `spec_path`:
    /// model_dir, threads, dtype, device and the setting's attention) and waits until the
    /// model is loaded. A worker that fails to start or load is one error with the last line of
    /// its stderr.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        python: &Path,
        model_dir: &Path,
        threads: usize,
        dtype: &str,
        device: &str,
        setting: &TorchSetting,
        spec_path: &Path,
    ) -> Result<TorchWorker> {
        use std::process::Stdio;
        let spec = json!({
            "model_dir": model_dir,
            "threads": threads,
            "dtype": dtype,
            "device": device,
            "attn_implementation": setting.attn,
        });
        crate::util::fsio::atomic_write(spec_path, spec.to_string().as_bytes())?;
        let script = torch_script();
        let started = std::time::Instant::now();
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--serve")
            .arg(spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(python))?;
        let stderr = crate::measure::process::read_in_background(
            child.stderr.take().expect("stderr is piped"),
        );
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let what = format!("{} --serve ({})", script.display(), setting.id());
        let mut w = TorchWorker {
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
            started,
            program: python.to_path_buf(),
            what,
            setting: setting.clone(),
            hello: TorchHello {
                torch_version: String::new(),
                transformers_version: String::new(),
                device: String::new(),
                dtype: String::new(),
                threads: 0,
                interop_threads: 0,
                model_dir: String::new(),
                model_class: String::new(),
                attn_implementation: None,
                load_s: f64::NAN,
            },
            raw_hello: Value::Null,
        };
        let line = w.read_line()?;
        let (hello, raw) = parse_torch_hello(&line, &w.what)?;
        w.hello = hello;
        w.raw_hello = raw;
        Ok(w)
    }

    /// The next line of the worker's stdout; at its end, the worker's own error.
    pub(super) fn read_line(&mut self) -> Result<String> {
        use std::io::BufRead;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(Error::io(&self.program))?;
        if n == 0 {
            drop(self.stdin.take());
            let stderr = self.stderr.take();
            let ended = crate::measure::process::wait_measured(
                &mut self.child,
                self.started,
                move || stderr.and_then(|h| h.join().ok()).unwrap_or_default(),
                &self.program,
                &self.what,
            );
            return Err(match ended {
                Err(e) => e.into(),
                Ok(_) => Error::Report(format!(
                    "{} {}: ended without answering",
                    self.program.display(),
                    self.what
                )),
            });
        }
        Ok(line)
    }

    /// Runs one generation of `new_tokens` from `ids`; returns its token times and the threads
    /// measured busy in the worker's process over the request.
    pub fn generate(
        &mut self,
        ids: &[u32],
        new_tokens: usize,
        sampling: &crate::engine::sampling::SamplingParams,
        seed: u64,
    ) -> Result<TorchRun> {
        use std::io::Write;
        let req = json!({
            "ids": ids,
            "new_tokens": new_tokens,
            "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k,
                "top_p": sampling.top_p, "repetition_penalty": sampling.repetition_penalty},
            "seed": seed,
        });
        let pid = self.child.id().to_string();
        let before = crate::measure::threads::Ticks::read(&pid);
        let t0 = std::time::Instant::now();
        // A failed write (a broken pipe) means the worker is gone: read_line then says why.
        if let Some(i) = self.stdin.as_mut() {
            let _ = writeln!(i, "{req}").and_then(|_| i.flush());
        }
        let line = self.read_line()?;
        let wall = t0.elapsed().as_secs_f64();
        let thread_use = before
            .zip(crate::measure::threads::Ticks::read(&pid))
            .and_then(|(b, a)| ThreadUse::from_cpu_seconds(&b.seconds_until(&a), wall));
        let trial = parse_torch_trial(&line, ids.len(), new_tokens, &self.what)?;
        Ok(TorchRun { trial, thread_use })
    }

    /// Ends the worker (end of input) and returns what its process used over its life: load,
    /// warm-ups and every trial (wait4).
    pub fn finish(mut self) -> Result<ProcessUse> {
        drop(self.stdin.take());
        let stderr = self.stderr.take();
        Ok(crate::measure::process::wait_measured(
            &mut self.child,
            self.started,
            move || stderr.and_then(|h| h.join().ok()).unwrap_or_default(),
            &self.program,
            &self.what,
        )?)
    }
}

impl Drop for TorchWorker {
    fn drop(&mut self) {
        // A worker dropped on an error path: end it rather than leave it waiting on stdin.
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The engine column's label: `torch (f32, attention eager)`, `torch defaults (f32, attention sdpa)`.
pub fn torch_setting_label(setting: &TorchSetting, h: &TorchHello) -> String {
    format!(
        "torch{} ({}, attention {})",
        if setting.is_default() {
            " defaults"
        } else {
            ""
        },
        h.dtype,
        h.attn_implementation.as_deref().unwrap_or("not reported")
    )
}

/// A record of the PyTorch peer's repetitions of one scenario in one setting, run in
/// alternation with candle's trials. Everything in it is the peer's own: metrics from its token
/// times (by candle's definitions, [`gen_metrics`]), its load time (from_pretrained + to(device)
/// in the worker), its process's peak RSS (wait4 when the worker ended: `process`, None when
/// not measured), its versions, dtype, attention implementation and KV cache, its thread count
/// as torch reports it and the threads measured busy. `model_meta`: candle's description of
/// the same weights (layers, hidden, vocab), which the peer loads from the same files.
pub fn torch_record(
    s: &Scenario,
    runs: &[TorchRun],
    worker: (&TorchSetting, &TorchHello, &Value),
    process: Option<ProcessUse>,
    model_meta: &ModelInfo,
) -> Result<Record> {
    let (setting, h, raw) = worker;
    if runs.is_empty() {
        return Err(Error::Report("torch: no repetition ran".into()));
    }
    let traces: Vec<Trace> = runs.iter().map(TorchRun::trace).collect();
    let e2e: Vec<f64> = traces.iter().map(|t| t.e2e().as_secs_f64()).collect();
    let mut r = Record::from_samples(Kind::Peer, &s.name, e2e, s.new_tokens as u64);
    r.harness = Harness::Cli;
    r.gen = Some(gen_metrics(&traces));
    let attn = h
        .attn_implementation
        .clone()
        .unwrap_or_else(|| "not reported".into());
    let cache = runs[0]
        .trial
        .cache
        .clone()
        .map(|c| format!("KV cache on ({c})"))
        .unwrap_or_else(|| "KV cache not reported".into());
    r.engine = Some(Engine {
        name: Peer::Torch.name().into(),
        version: format!(
            "torch {} / transformers {}",
            h.torch_version, h.transformers_version
        ),
        flags: format!(
            "peer_torch.py worker ({}); generate() on {}, dtype {}, attention {attn}; {cache}; min_new_tokens = max_new_tokens; set_num_threads = set_num_interop_threads = {}",
            if setting.is_default() {
                "transformers' default attention".to_string()
            } else {
                format!("attn_implementation={}", setting.attn.as_deref().unwrap_or(""))
            },
            h.device,
            h.dtype,
            h.threads
        ),
        threads: Some(h.threads),
    });
    let thread_use =
        ThreadUse::median(&runs.iter().filter_map(|r| r.thread_use).collect::<Vec<_>>());
    r.model = ModelInfo {
        source: h.model_dir.clone(),
        prefill_mode: "one forward of the prompt (generate())".into(),
        ..peer_model(
            model_meta.clone(),
            h.load_s,
            format!(
                "transformers {} ({})",
                h.transformers_version, h.model_class
            ),
            attn,
        )
    };
    match process {
        Some(p) => {
            r.memory.host_peak_bytes = Some(p.max_rss_bytes);
            r.memory.host_method = "peak RSS of the peer_torch.py worker process (wait4 ru_maxrss over its life: load, warm-ups and the trials of every scenario)".into();
        }
        None => {
            r.memory.host_peak_bytes = None;
            r.memory.host_method = "not available (the worker's process was not measured)".into();
        }
    }
    r.memory.gpu_method = "not available (CPU run)".into();
    r.dtype = Precision::parse(&h.dtype).unwrap_or(Precision::Unreported);
    set_workload(&mut r, s);
    r.extra = json!({
        "method": "scripts/peer_torch.py as a worker: loaded once, then one generate() per request, alternating with candle's trials repetition by repetition, from the same prompt ids as candle's trial of that repetition, crediting the same G generated tokens (min_new_tokens = max_new_tokens); a streamer timestamps each token once it is on the host; TTFT = first token, E2E = last, as candle's engine",
        "setting": setting.id(),
        "setting_label": torch_setting_label(setting, h),
        "attn_implementation": h.attn_implementation,
        "kv_cache": runs[0].trial.cache,
        "trial_rates": trial_rates(&traces),
        "threads_reported": h.threads,
        "interop_threads_reported": h.interop_threads,
        "thread_use": thread_use,
        "load_s": h.load_s,
        "process": process,
        "hello": raw,
        "runs": runs.iter().map(|r| json!({
            "prompt_tokens": r.trial.prompt_tokens,
            "token_times_s": r.trial.token_times_s,
            "generated_ids": r.trial.generated_ids,
            "thread_use": r.thread_use,
        })).collect::<Vec<_>>(),
    });
    Ok(r)
}
