//! Perplexity of a text on a loaded model, sliding-window or llama-perplexity's chunks: one
//! iteration scores the whole text (see [`crate::engine::perplexity`]); its record holds the
//! quality figure and the time.

use std::time::{Duration, Instant};

use crate::engine::perplexity::{
    chunked_perplexity_with, perplexity_with, Perplexity as Ppl, Progress, Windowing,
};
use crate::error::Result;
use crate::measure::device::DeviceSpec;
use crate::models::sources::loading::Loaded;
use crate::output::record::{Kind, Record};

use super::generation::{model_info, precision_of};
use super::{Measured, Target, Workload};

pub struct Perplexity<'a> {
    pub loaded: &'a mut Loaded,
    /// The text's name (its file name): the record's scenario.
    pub text_name: String,
    /// The text's ids; for [`Windowing::LlamaCpp`] with `<bos>` first when the tokenizer
    /// has one (llama.cpp's tokenization of the file).
    pub ids: Vec<u32>,
    pub seq_len: usize,
    pub windowing: Windowing,
    pub bos: Option<u32>,
    pub device: DeviceSpec,
    pub dtype: candle_core::DType,
    /// Print a progress line to stderr after every window (chunk): tokens/s and ETA.
    pub progress: bool,
}

impl Workload for Perplexity<'_> {
    type Out = Ppl;

    fn group(&self) -> String {
        "perplexity".into()
    }

    fn name(&self) -> String {
        let w = match self.windowing {
            Windowing::Sliding { stride } => format!("s{}-w{stride}", self.seq_len),
            Windowing::LlamaCpp => format!("c{}-llama-cpp", self.seq_len),
        };
        format!("{}/{}/{w}", self.loaded.resolved.label, self.text_name)
    }

    fn target(&self) -> Target {
        Target::new(self.device, precision_of(self.loaded, self.dtype))
    }

    /// Not known before the run (the windows decide); the record uses the scored count.
    fn tokens_per_iter(&self) -> u64 {
        self.ids.len().saturating_sub(1) as u64
    }

    fn iterate(&mut self, _trial: u64) -> Result<(Duration, Ppl)> {
        let t = Instant::now();
        let m = self.loaded.model.as_mut();
        let mut print = |p: &Progress| eprintln!("perplexity: {}", p.line());
        let progress: Option<&mut dyn FnMut(&Progress)> = if self.progress {
            Some(&mut print)
        } else {
            None
        };
        let p = match self.windowing {
            Windowing::Sliding { stride } => {
                perplexity_with(m, &self.ids, self.seq_len, stride, self.bos, progress)?
            }
            Windowing::LlamaCpp => {
                chunked_perplexity_with(m, &self.ids, self.seq_len, self.bos, progress)?
            }
        };
        Ok((t.elapsed(), p))
    }

    fn record(&self, m: &Measured<Ppl>) -> Record {
        let p = m.outs.last().expect("one measured run");
        let mut r = Record::from_samples(
            Kind::Perplexity,
            &format!("perplexity/{}", self.text_name),
            m.iter_s.clone(),
            p.tokens_scored as u64,
        );
        r.power = m.power.clone();
        r.memory.host_huge_page_bytes = m.huge_page_bytes;
        r.model = model_info(self.loaded);
        r.shape = serde_json::json!({"text": self.text_name, "seq_len": self.seq_len,
            "windowing": self.windowing.name(), "stride": p.stride, "tokens": self.ids.len()});
        r.extra = serde_json::to_value(p).expect("perplexity serialises");
        r
    }
}
