//! Prefix caching in `modelbench serve` (llama-server's `cache_prompt`, vLLM's automatic prefix
//! caching): a request whose prompt begins with tokens a slot's cache already holds runs only
//! the rest of its prompt.
//!
//! The cache is the slots' own: each slot keeps the keys and values of the last sequence it
//! ran after that sequence ends, and the scheduler knows which tokens they are ([`Held`]). It
//! is bounded by `--max-batch` sequences of at most the context each, and holds nothing a
//! running sequence does not. A request takes, among the free slots, the one whose tokens
//! share the longest prefix with its prompt (least recently freed first among equals, so a
//! conversation's last turn survives the others' new ones); when a running sequence shares a
//! longer one (a system prompt every conversation begins with), the free slot becomes a copy
//! of those positions ([`StepModel::fork`]: copy-on-reuse, the running sequence goes on
//! undisturbed). At least the prompt's last token always runs (its logits start the answer).
//!
//! What reuse may change: the reused positions were computed as the earlier sequence's
//! prefill chunks or one decode step each; run again they would be computed in this prompt's
//! chunks. Chunks stay at the same absolute offsets (0, C, 2C, ...) whatever was reused, so
//! the positions after the first chunk boundary run as without the cache; whether the outputs
//! stay bit-identical is measured, not assumed (docs/serving.md, tests/serve_prefix.rs).

use crate::models::batched::StepModel;

/// The tokens each slot's cache holds, in order, and when each slot was last freed.
pub struct Held {
    tokens: Vec<Vec<u32>>,
    /// Per slot: how many of its first tokens a prefill chunk computed (the rest were decode
    /// steps, whose keys and values differ from a prefill's in rounding: measured, and only
    /// reused when `decoded` says so).
    prefilled: Vec<usize>,
    /// Reuse positions a decode step computed too (llama-server's behaviour; outputs may then
    /// differ from the cache off). False: only prefill-computed positions, which compute
    /// bit-alike (outputs as with the cache off).
    decoded: bool,
    /// The order in which free slots were freed (oldest first).
    clock: u64,
    freed_at: Vec<u64>,
}

/// Where a new sequence starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The free slot it takes.
    pub slot: usize,
    /// Prompt positions it reuses (0: it starts empty).
    pub reused: usize,
    /// Whether the reused positions were copied (from another slot, or cut from this slot's
    /// longer sequence) rather than continued in place.
    pub copied: bool,
}

/// Length of the common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Held {
    pub fn new(slots: usize, decoded: bool) -> Held {
        Held {
            tokens: vec![Vec::new(); slots],
            prefilled: vec![0; slots],
            decoded,
            clock: 0,
            freed_at: vec![0; slots],
        }
    }

    /// Slot `slot`'s cache took `tokens` (a step ran them: a prefill chunk, or one decode).
    pub fn ran(&mut self, slot: usize, tokens: &[u32], prefill: bool) {
        if let Some(t) = self.tokens.get_mut(slot) {
            if prefill && self.prefilled[slot] == t.len() {
                self.prefilled[slot] += tokens.len();
            }
            t.extend_from_slice(tokens);
        }
    }

    /// Slot `slot`'s cache is empty or undefined (a fresh start, a failed step).
    pub fn clear(&mut self, slot: usize) {
        if let Some(t) = self.tokens.get_mut(slot) {
            t.clear();
            self.prefilled[slot] = 0;
        }
    }

    /// Slot `to` now holds a copy of the first `len` tokens of slot `from`.
    pub fn copied(&mut self, from: usize, to: usize, len: usize) {
        let t: Vec<u32> = self.tokens[from][..len.min(self.tokens[from].len())].to_vec();
        self.prefilled[to] = self.prefilled[from].min(t.len());
        self.tokens[to] = t;
    }

    /// Slot `slot` went back to the free list.
    pub fn freed(&mut self, slot: usize) {
        self.clock += 1;
        if let Some(f) = self.freed_at.get_mut(slot) {
            *f = self.clock;
        }
    }

    /// The free slot a prompt `ids` takes and the positions it may reuse: the longest prefix
    /// among free slots (in place) and running ones (`busy`, by copy), at most all but the
    /// prompt's last token; `reuse` false: the least recently freed slot, nothing reused.
    /// Nothing is changed: [`Held::place`] carries it out.
    pub fn choose(&self, free: &[usize], busy: &[usize], ids: &[u32], reuse: bool) -> Choice {
        let oldest = *free
            .iter()
            .min_by_key(|&&s| (self.freed_at[s], s))
            .expect("a free slot");
        let cap = ids.len().saturating_sub(1);
        if !reuse || cap == 0 {
            return Choice::Start(oldest);
        }
        let lcp = |s: usize| {
            let usable = if self.decoded {
                cap
            } else {
                cap.min(self.prefilled[s])
            };
            common_prefix(&self.tokens[s], ids).min(usable)
        };
        // Longest first, then least recently freed.
        let best_free = free
            .iter()
            .copied()
            .max_by_key(|&s| (lcp(s), std::cmp::Reverse((self.freed_at[s], s))));
        let best_busy = busy.iter().copied().max_by_key(|&s| (lcp(s), s));
        let (f, fl) = best_free.map_or((oldest, 0), |s| (s, lcp(s)));
        match best_busy.map(|s| (s, lcp(s))) {
            Some((b, bl)) if bl > fl => Choice::Copy {
                from: b,
                to: oldest,
                len: bl,
            },
            _ if fl == 0 => Choice::Start(oldest),
            _ if fl == self.tokens[f].len() => Choice::Continue { slot: f, len: fl },
            _ => Choice::Copy {
                from: f,
                to: f,
                len: fl,
            },
        }
    }

    /// Carries out `choice` on `model` (starting the slot empty where the model cannot copy
    /// or keep the positions) and updates what the slots hold. The caller removes the
    /// placement's slot from the free list.
    pub fn place(
        &mut self,
        choice: Choice,
        model: &mut dyn StepModel,
    ) -> crate::error::Result<Placement> {
        let start = |held: &mut Held, model: &mut dyn StepModel, slot: usize| {
            held.clear(slot);
            model.start(slot).map(|()| Placement {
                slot,
                reused: 0,
                copied: false,
            })
        };
        match choice {
            Choice::Start(slot) => Ok(start(self, model, slot)?),
            Choice::Continue { slot, len } => Ok(Placement {
                slot,
                reused: len,
                copied: false,
            }),
            Choice::Copy { from, to, len } => match model.fork(from, to, len) {
                Ok(true) => {
                    self.copied(from, to, len);
                    Ok(Placement {
                        slot: to,
                        reused: len,
                        copied: true,
                    })
                }
                Ok(false) => Ok(start(self, model, to)?),
                Err(e) => {
                    eprintln!(
                        "prefix cache: copying {len} positions of slot {from} failed ({e}); the prompt runs whole"
                    );
                    Ok(start(self, model, to)?)
                }
            },
        }
    }
}

/// What [`Held::choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The slot starts empty.
    Start(usize),
    /// The slot's cache is exactly the prompt's first `len` tokens: it goes on from there.
    Continue { slot: usize, len: usize },
    /// Slot `to` becomes a copy of the first `len` positions of slot `from` (may be `to`).
    Copy { from: usize, to: usize, len: usize },
}

impl Choice {
    /// The free slot this choice takes.
    pub fn slot(self) -> usize {
        match self {
            Choice::Start(s) | Choice::Continue { slot: s, .. } => s,
            Choice::Copy { to, .. } => to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(slots: &[&[u32]]) -> Held {
        let mut h = Held::new(slots.len(), false);
        for (s, t) in slots.iter().enumerate() {
            h.ran(s, t, true);
            h.freed(s);
        }
        h
    }

    #[test]
    fn a_free_slot_holding_the_prompts_start_is_continued_or_cut() {
        let h = held(&[&[1, 2, 3], &[1, 2, 9, 9], &[7]]);
        // Slot 0 holds exactly the prompt's first three tokens.
        assert_eq!(
            h.choose(&[0, 1, 2], &[], &[1, 2, 3, 4, 5], true),
            Choice::Continue { slot: 0, len: 3 }
        );
        // Slot 1 shares two tokens and holds more: cut to two.
        assert_eq!(
            h.choose(&[1, 2], &[], &[1, 2, 3, 4], true),
            Choice::Copy {
                from: 1,
                to: 1,
                len: 2
            }
        );
        // The prompt's last token always runs.
        assert_eq!(
            h.choose(&[0], &[], &[1, 2, 3], true),
            Choice::Copy {
                from: 0,
                to: 0,
                len: 2
            }
        );
    }

    #[test]
    fn nothing_shared_or_reuse_off_takes_the_least_recently_freed_slot() {
        let mut h = held(&[&[1], &[2], &[3]]);
        h.freed(0); // slot 0 freed last: slot 1 is now the oldest
        assert_eq!(h.choose(&[0, 1, 2], &[], &[9, 9], true), Choice::Start(1));
        assert_eq!(h.choose(&[0, 1, 2], &[], &[1, 2], false), Choice::Start(1));
        assert_eq!(h.choose(&[0], &[], &[1], true), Choice::Start(0));
    }

    #[test]
    fn a_running_sequence_with_a_longer_prefix_is_copied_into_the_oldest_free_slot() {
        let h = held(&[&[5, 6, 7, 8], &[5], &[9]]);
        assert_eq!(
            h.choose(&[1, 2], &[0], &[5, 6, 7, 1], true),
            Choice::Copy {
                from: 0,
                to: 1,
                len: 3
            }
        );
        // As long a prefix in a free slot: no copy from the running one.
        let h = held(&[&[5, 6], &[5, 6], &[9]]);
        assert_eq!(
            h.choose(&[1, 2], &[0], &[5, 6, 7], true),
            Choice::Continue { slot: 1, len: 2 }
        );
    }

    #[test]
    fn decoded_positions_are_reused_only_when_asked() {
        for decoded in [false, true] {
            let mut h = Held::new(1, decoded);
            h.ran(0, &[1, 2, 3], true);
            h.ran(0, &[4], false);
            h.ran(0, &[5], false);
            h.freed(0);
            let got = h.choose(&[0], &[], &[1, 2, 3, 4, 5, 6], true);
            let want = if decoded {
                Choice::Continue { slot: 0, len: 5 }
            } else {
                Choice::Copy {
                    from: 0,
                    to: 0,
                    len: 3,
                }
            };
            assert_eq!(got, want, "decoded {decoded}");
        }
    }

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
