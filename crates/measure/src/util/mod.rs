//! Helpers below every layer: atomic file writes, seeded tensors, UTC timestamps, and the
//! path settings the knob table installs for the layers below it (settings.rs), and where the
//! llama.cpp build is (llama_cpp.rs).

pub mod fill;
pub mod fsio;
pub mod llama_cpp;
pub mod settings;
pub mod time;

/// The workspace root, the checkout this was built from (fixtures/, scripts/, target/,
/// target-reports/ live there): two folders above this crate (crates/measure).
pub fn root() -> &'static std::path::Path {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(std::path::Path::parent)
        .unwrap_or(here)
}

/// serde's reader of a count or duration in a record: a positive number, else None (records
/// written before such fields were optional said 0 for "not measured"). For
/// `#[serde(default, deserialize_with = "...")]` on an `Option` field.
pub fn positive_or_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + PartialOrd + Default,
{
    let v: Option<T> = serde::Deserialize::deserialize(d)?;
    Ok(v.filter(|x| *x > T::default()))
}
