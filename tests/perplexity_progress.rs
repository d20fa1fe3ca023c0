//! Long perplexity runs report progress after every window (issue 29, item 6): the events count
//! up to exactly the windows and tokens the result reports, for both windowings.

use candle_core::{DType, Device};
use modelbench::engine::perplexity::{chunked_perplexity_with, perplexity_with, Progress};
use modelbench::engine::scenario::prepare;
use modelbench::models::sources::loading::open;
use modelbench::models::sources::ModelRef;

#[test]
fn progress_counts_every_window_and_token() {
    let r = "fixture:llama";
    let res = prepare(r, &ModelRef::parse(r).unwrap(), &[]).unwrap();
    let mut l = open(res, &Device::Cpu, DType::F32, Some(64)).unwrap();
    let ids: Vec<u32> = (0..150u32).map(|i| (i * 7 + 3) % 200).collect();
    // Sliding: windows of 32 advancing by 24 over 150 ids.
    let mut events: Vec<Progress> = Vec::new();
    let mut on = |p: &Progress| events.push(*p);
    let p = perplexity_with(l.model.as_mut(), &ids, 32, 24, None, Some(&mut on)).unwrap();
    assert_eq!(events.len(), p.windows);
    let last = events.last().unwrap();
    assert_eq!((last.windows_done, last.windows), (p.windows, p.windows));
    assert_eq!(last.tokens_scored, p.tokens_scored);
    assert_eq!(last.tokens_total, p.tokens_scored);
    assert!(events
        .windows(2)
        .all(|w| w[0].tokens_scored < w[1].tokens_scored));
    assert!(events.iter().all(|e| e.windows == p.windows), "{events:?}");
    assert!(last.eta_s().abs() < 1e-9 && last.tok_s() > 0.0);
    assert!(last.line().contains("tok/s") && last.line().contains("ETA"));
    // llama-perplexity's chunks: 150 / 32 = 4 chunks.
    let mut events: Vec<Progress> = Vec::new();
    let mut on = |p: &Progress| events.push(*p);
    let p = chunked_perplexity_with(l.model.as_mut(), &ids, 32, Some(1), Some(&mut on)).unwrap();
    assert_eq!(p.windows, 4);
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].tokens_total, p.tokens_scored);
    assert_eq!(events[3].tokens_scored, p.tokens_scored);
}
