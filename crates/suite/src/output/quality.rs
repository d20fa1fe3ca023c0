//! The quality gate's verdicts, kept beside the build (target/modelbench-quality/) so
//! generation records of the same model can carry them (MLPerf pairs speed with accuracy):
//! only under the exact key they were measured for ([`VerdictKey`]). The hash of a weights
//! file ([`crate::util::fsio::file_sha256`]) is the util layer's, shared with the models
//! layer's GGUF-to-HF conversion.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The verdict of a quality gate against an independent reference (llama.cpp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub model: String,
    /// Which implementation ran (see ModelMeta::implementation).
    #[serde(default)]
    pub implementation: String,
    pub passed: bool,
    /// What it was checked against: the reference file and its llama.cpp build.
    pub reference: String,
    pub corpus: String,
    /// llama-perplexity's windowing: chunk length.
    pub n_ctx: usize,
    pub perplexity: f64,
    pub reference_perplexity: f64,
    /// |ppl / reference - 1| allowed.
    pub perplexity_tolerance: f64,
    pub perplexity_ok: bool,
    /// Per prompt: greedy tokens agreeing with the reference before the first difference.
    pub prompts: Vec<PromptAgreement>,
    /// Every prompt must agree on at least this many tokens.
    pub min_agreement: usize,
    /// A first difference (or a teacher-forced miss) at a reference step with a smaller
    /// top-1/top-2 margin is a near-tie (how far llama.cpp's own settings move a step's
    /// margin; see the reference's `tie_margin`).
    #[serde(default)]
    pub near_tie_margin: Option<f64>,
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAgreement {
    pub prompt: String,
    /// Leading tokens equal to the reference's.
    pub agree: usize,
    /// Tokens compared.
    pub of: usize,
    /// When the first difference falls on a near-tie of the reference: its top-1 minus top-2
    /// logit there.
    #[serde(default)]
    pub tie_margin: Option<f64>,
    /// Fed the reference's own tokens (teacher forcing on llama.cpp's f32-KV-cache run): the
    /// steps whose argmax is the reference's token. None in verdicts written before the check.
    #[serde(default)]
    pub forced_agree: Option<usize>,
    /// The teacher-forced steps whose argmax differs from the reference's where its margin is
    /// not a near-tie (`judge::quality::confident_misses`).
    #[serde(default)]
    pub confident_misses: Vec<usize>,
}

impl PromptAgreement {
    /// At least `min` leading tokens agree, or the first difference is at a reference near-tie,
    /// and no confident miss under teacher forcing (`judge::quality::prompt_ok`).
    pub fn ok(&self, min: usize) -> bool {
        crate::judge::quality::prompt_ok(
            self.agree,
            self.of,
            min,
            self.tie_margin,
            self.confident_misses.len(),
        )
    }
}

fn dir() -> PathBuf {
    crate::util::fsio::target_dir().join("modelbench-quality")
}

/// What a verdict holds for: the exact weights file, the code computing it, where and in
/// which precision. A record carries a verdict only under its own exact key (issue 29: a
/// verdict looked up by model label alone followed a model to other files, implementations,
/// devices, dtypes and commits it was never checked on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictKey {
    /// sha256 of the weights file (GGUF) or of its shards' sha256s in order (safetensors).
    pub file_sha256: String,
    /// [`crate::models::ModelMeta::implementation`].
    pub implementation: String,
    /// `cpu`, `cuda:0`.
    pub device: String,
    /// The precision label (`f32`, `gguf-Q4_K_M`...; the dtype the model ran in).
    pub dtype: String,
    /// modelbench's git commit, `+dirty.<hash of the diff>` when the tree had changes.
    pub commit: String,
}

impl VerdictKey {
    /// The key of a loaded model in this build; None (with why) when its weights are no file
    /// (synthetic seeded weights) or cannot be hashed.
    pub fn of(
        weights: &crate::models::Weights,
        implementation: &str,
        device: &str,
        dtype: &str,
    ) -> std::result::Result<VerdictKey, String> {
        let file_sha256 = match weights {
            crate::models::Weights::Gguf(p) => {
                crate::util::fsio::file_sha256(p).map_err(|e| e.to_string())?
            }
            crate::models::Weights::Safetensors(ps) => {
                let mut h = Sha256::new();
                for p in ps {
                    h.update(
                        crate::util::fsio::file_sha256(p)
                            .map_err(|e| e.to_string())?
                            .as_bytes(),
                    );
                }
                // config.json beside them is part of the model: the same weights with another
                // rope_scaling (say) are another model, with a verdict of its own.
                if let Some(c) = ps
                    .first()
                    .and_then(|p| p.parent())
                    .map(|d| d.join("config.json"))
                    .filter(|c| c.is_file())
                {
                    h.update(b"config.json");
                    h.update(
                        crate::util::fsio::file_sha256(&c)
                            .map_err(|e| e.to_string())?
                            .as_bytes(),
                    );
                }
                crate::util::fsio::hex(&h.finalize())
            }
            crate::models::Weights::Seeded(_) => {
                return Err("seeded synthetic weights are no file to check".into())
            }
        };
        Ok(VerdictKey {
            file_sha256,
            implementation: implementation.into(),
            device: device.into(),
            dtype: dtype.into(),
            commit: this_commit(),
        })
    }

    fn file(&self) -> PathBuf {
        let mut h = Sha256::new();
        h.update(serde_json::to_string(self).expect("json").as_bytes());
        dir().join("verdicts").join(format!(
            "{}.json",
            &crate::util::fsio::hex(&h.finalize())[..32]
        ))
    }
}

/// This build's commit: `BUILDINFO_GIT_COMMIT`, `+dirty.<hash of the diff>` when built from a
/// changed tree (two different uncommitted trees of one commit never share a verdict key).
pub fn this_commit() -> String {
    let b = crate::measure::hardware::build();
    if b.git_dirty == "true" || b.git_dirty == "yes" || b.git_dirty == "1" {
        format!(
            "{}+dirty.{}",
            b.git_commit,
            crate::measure::hardware::GIT_DIFF
        )
    } else {
        b.git_commit
    }
}
/// A stored verdict: its key and the gate's report (the KL-divergence gate's
/// `workloads::kld::KldVerdict`, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVerdict {
    pub key: VerdictKey,
    pub passed: bool,
    pub verdict: serde_json::Value,
}

pub fn save(key: &VerdictKey, passed: bool, verdict: serde_json::Value) -> crate::Result<PathBuf> {
    let path = key.file();
    let v = StoredVerdict {
        key: key.clone(),
        passed,
        verdict,
    };
    crate::util::fsio::atomic_write(
        &path,
        serde_json::to_string_pretty(&v).expect("json").as_bytes(),
    )?;
    Ok(path)
}

/// The verdict stored under exactly this key, if a gate ran for it.
pub fn load(key: &VerdictKey) -> Option<StoredVerdict> {
    let v: StoredVerdict = serde_json::from_str(&std::fs::read_to_string(key.file()).ok()?).ok()?;
    (v.key == *key).then_some(v)
}

/// What a record says about the model's quality: the verdict stored under its exact key
/// (file sha256, implementation, device, dtype, commit), or "not checked" with why.
pub fn verdict_value(
    model: &str,
    key: std::result::Result<VerdictKey, String>,
) -> serde_json::Value {
    match key {
        Err(why) => serde_json::json!({
            "model": model, "status": "not checked", "why": why
        }),
        Ok(k) => match load(&k) {
            Some(v) => serde_json::json!({
                "model": model,
                "status": if v.passed { "passed" } else { "failed" },
                "key": v.key,
                "verdict": v.verdict,
            }),
            None => serde_json::json!({
                "model": model,
                "status": "not checked",
                "key": k,
                "why": "no quality gate has run for this file, implementation, device, dtype and commit on this machine (`modelbench verify --model M`)"
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_found_only_under_its_exact_key() {
        let k = VerdictKey {
            file_sha256: "ab".repeat(32),
            implementation: "test-impl".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            commit: format!("unit-test-{}", std::process::id()),
        };
        save(&k, true, serde_json::json!({"x": 1})).unwrap();
        assert_eq!(verdict_value("m", Ok(k.clone()))["status"], "passed");
        for other in [
            VerdictKey {
                device: "cuda:0".into(),
                ..k.clone()
            },
            VerdictKey {
                dtype: "bf16".into(),
                ..k.clone()
            },
            VerdictKey {
                implementation: "other".into(),
                ..k.clone()
            },
            VerdictKey {
                commit: "other".into(),
                ..k.clone()
            },
            VerdictKey {
                file_sha256: "cd".repeat(32),
                ..k.clone()
            },
        ] {
            assert_eq!(verdict_value("m", Ok(other))["status"], "not checked");
        }
        let _ = std::fs::remove_file(k.file());
        assert_eq!(verdict_value("m", Err("why".into()))["why"], "why");
    }

    #[test]
    fn a_folders_key_covers_its_config() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("model.safetensors");
        std::fs::write(&st, b"weights").unwrap();
        let key = || {
            VerdictKey::of(
                &crate::models::Weights::Safetensors(vec![st.clone()]),
                "i",
                "cpu",
                "f32",
            )
            .unwrap()
            .file_sha256
        };
        let bare = key();
        std::fs::write(d.path().join("config.json"), b"{\"rope_scaling\": null}").unwrap();
        let a = key();
        assert_eq!(a, key(), "a key is stable");
        std::fs::write(d.path().join("config.json"), b"{\"rope_scaling\": {}}").unwrap();
        let b = key();
        assert!(bare != a && a != b, "{bare} {a} {b}");
    }
}
