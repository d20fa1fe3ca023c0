//! Value parsers of the knob table and the CLI: each turns one knob's text into a typed
//! value or an error naming the knob, the value and what is allowed. The knob table
//! ([`super::knobs`]) checks with them and the plans ([`super::plans`]) build with them; they
//! use neither, so the three modules import one way (knobs -> values <- plans -> knobs).

use std::time::Duration;

use candle_core::DType;

use crate::engine::scenario::{Scenario, Tier, SCENARIO_NAMES};
use crate::error::{Error, Result};
use crate::measure::device::{parse_dtype, DeviceSpec, DTYPES_ALLOWED};
use crate::models::sources::{sources_help, ModelRef};

pub fn parse_models(list: &str, knob: &str) -> Result<Vec<(String, ModelRef)>> {
    let mut out = Vec::new();
    for m in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let r = ModelRef::parse(m)
            .map_err(|e| Error::knob(knob, list, e.to_string(), sources_help()))?;
        if out.iter().any(|(l, _): &(String, ModelRef)| l == m) {
            return Err(Error::knob(
                knob,
                list,
                format!("`{m}` is listed twice"),
                sources_help(),
            ));
        }
        out.push((m.to_string(), r));
    }
    if out.is_empty() {
        return Err(Error::knob(knob, list, "no models", sources_help()));
    }
    Ok(out)
}

pub fn parse_seed(v: &str, knob: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        Error::knob(
            knob,
            v,
            "not a non-negative integer",
            "0..=18446744073709551615",
        )
    })
}

/// A run-folder label: letters, digits, `-`, `_`, `.`.
pub fn check_label(v: &str, knob: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(Error::knob(
            knob,
            v,
            "not usable in a folder name",
            "1-64 of [A-Za-z0-9._-]",
        ))
    }
}

pub fn parse_tier(v: &str) -> Result<Tier> {
    Tier::parse(v.trim())
        .ok_or_else(|| Error::knob("MODELBENCH_TIER", v, "unknown tier", Tier::ALLOWED))
}

pub fn parse_scenarios(list: &str) -> Result<Vec<Scenario>> {
    let mut v = Vec::new();
    for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        v.push(Scenario::by_name(n).map_err(|_| {
            Error::knob(
                "MODELBENCH_SCENARIOS",
                list,
                format!("unknown scenario `{n}`"),
                SCENARIO_NAMES,
            )
        })?);
    }
    if v.is_empty() {
        return Err(Error::knob(
            "MODELBENCH_SCENARIOS",
            list,
            "no scenarios",
            SCENARIO_NAMES,
        ));
    }
    Ok(v)
}

pub fn parse_device(v: &str, knob: &str) -> Result<DeviceSpec> {
    v.trim()
        .parse()
        .map_err(|e: String| Error::knob(knob, v, e, DeviceSpec::ALLOWED))
}

pub fn parse_dtype_knob(v: &str, knob: &str) -> Result<DType> {
    parse_dtype(v.trim()).map_err(|e| Error::knob(knob, v, e, DTYPES_ALLOWED))
}

/// A comma list of dtypes, or `none` (empty).
pub fn parse_dtypes(v: &str, knob: &str) -> Result<Vec<DType>> {
    if v.trim() == "none" {
        return Ok(Vec::new());
    }
    let out: Vec<DType> = v
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| parse_dtype_knob(d, knob))
        .collect::<Result<_>>()?;
    if out.is_empty() {
        return Err(Error::knob(knob, v, "empty list", DTYPES_ALLOWED));
    }
    Ok(out)
}

pub fn parse_secs(s: &str, knob: &str) -> Result<Duration> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| Error::knob(knob, s, "not a number", "a number of seconds > 0"))?;
    if !(v > 0.0 && v < 86400.0) {
        return Err(Error::knob(
            knob,
            s,
            "out of range",
            "a number of seconds in (0, 86400)",
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn parse_bool(v: &str, knob: &str) -> Result<bool> {
    match v.trim() {
        "1" | "true" | "TRUE" | "yes" | "on" => Ok(true),
        "0" | "false" | "FALSE" | "no" | "off" => Ok(false),
        _ => Err(Error::knob(
            knob,
            v,
            "not a boolean",
            "1, true, yes, on, 0, false, no, off",
        )),
    }
}

/// A directory that exists or can be created (its nearest existing ancestor is a directory).
pub fn parse_dir(v: &str, knob: &str) -> Result<std::path::PathBuf> {
    let p = std::path::PathBuf::from(v.trim());
    let mut a = Some(p.as_path());
    while let Some(d) = a {
        if d.as_os_str().is_empty() {
            break;
        }
        if d.exists() {
            return if d.is_dir() {
                Ok(p.clone())
            } else {
                Err(Error::knob(
                    knob,
                    v,
                    format!("{} is not a directory", d.display()),
                    "a directory path",
                ))
            };
        }
        a = d.parent();
    }
    Ok(p)
}

pub fn parse_grid(v: &str) -> Result<&'static str> {
    match v.trim() {
        "default" => Ok("default"),
        "gpu03" => Ok("gpu03"),
        _ => Err(Error::knob(
            "MODELBENCH_PSANN_GRID",
            v,
            "unknown grid",
            "default, gpu03",
        )),
    }
}

pub fn parse_bases(v: &str) -> Result<Vec<crate::models::training::psann::Base>> {
    use crate::models::training::psann::Base;
    let mut bases = Vec::new();
    for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        bases.push(Base::parse(b).ok_or_else(|| {
            Error::knob(
                "MODELBENCH_PSANN_BASES",
                v,
                format!("unknown base `{b}`"),
                Base::ALLOWED,
            )
        })?);
    }
    if bases.is_empty() {
        return Err(Error::knob(
            "MODELBENCH_PSANN_BASES",
            v,
            "no bases",
            Base::ALLOWED,
        ));
    }
    Ok(bases)
}

/// A comma list of positive integers, or `none` (an empty list).
pub fn parse_optional_list(name: &str, v: &str) -> Result<Vec<usize>> {
    if v.trim() == "none" {
        return Ok(Vec::new());
    }
    parse_list(name, v)
}

/// A comma list of positive integers.
pub fn parse_list(name: &str, v: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p.parse::<usize>() {
            Ok(n) if n > 0 => out.push(n),
            _ => {
                return Err(Error::knob(
                    name,
                    v,
                    format!("`{p}` is not a positive integer"),
                    "a comma list of positive integers",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::knob(
            name,
            v,
            "empty list",
            "a comma list of positive integers",
        ));
    }
    Ok(out)
}

pub fn positive(name: &str, v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::knob(
            name,
            v,
            "not a positive integer",
            "an integer >= 1",
        )),
    }
}

/// An attention backend (`eager`, `flash`, `chunked`, `chunked:N`).
pub fn parse_attention(v: &str, knob: &str) -> Result<crate::models::attention::Attention> {
    use crate::models::attention::Attention;
    Attention::parse(v).map_err(|reason| Error::knob(knob, v, reason, Attention::ALLOWED))
}

/// A count that may be 0.
pub fn parse_count(v: &str, knob: &str) -> Result<usize> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| Error::knob(knob, v, "not an integer >= 0", "an integer >= 0"))
}

/// KV-cache depths: a comma list of integers >= 0, sorted, without repeats.
pub fn parse_depths(v: &str, knob: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = p.parse::<usize>().map_err(|_| {
            Error::knob(
                knob,
                v,
                format!("`{p}` is not an integer >= 0"),
                "a comma list of integers >= 0",
            )
        })?;
        out.push(n);
    }
    if out.is_empty() {
        return Err(Error::knob(
            knob,
            v,
            "empty list",
            "a comma list of integers >= 0",
        ));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A comma list of backbone families (the original sweep's names `omni_mixture`, `hybrid_transformer`
/// too), duplicates dropped.
pub fn parse_families(
    v: &str,
    name: &str,
) -> Result<Vec<crate::models::training::backbone::Family>> {
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f = crate::models::training::backbone::Family::parse(p).ok_or_else(|| {
            Error::knob(
                name,
                v,
                format!("unknown architecture `{p}`"),
                crate::models::training::backbone::Family::ALLOWED,
            )
        })?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(Error::knob(
            name,
            v,
            "empty list",
            crate::models::training::backbone::Family::ALLOWED,
        ));
    }
    Ok(out)
}

/// `cpu` or `gpu` (`cuda`, `cuda:N` also accepted) to a device.
pub fn parse_accelerator(v: &str, name: &str) -> Result<DeviceSpec> {
    match v.trim() {
        "cpu" => Ok(DeviceSpec::Cpu),
        "gpu" => Ok(DeviceSpec::Cuda(0)),
        other => other
            .parse::<DeviceSpec>()
            .map_err(|e| Error::knob(name, v, e, "cpu, gpu (CUDA device 0), cuda:N")),
    }
}

/// An injected change of the numerics (`lm_head:0.5%`, `off`): see `measure::inject`.
pub fn parse_numeric(v: &str, knob: &str) -> Result<Option<crate::measure::inject::Numeric>> {
    crate::measure::inject::parse_numeric(v)
        .map_err(|e| Error::knob(knob, v, e, "OP:PCT% (OP lm_head; e.g. lm_head:0.5%), off"))
}

/// An injected slowdown (`decode:5%`, `all:work=1000`, `off`): see `measure::inject`.
pub fn parse_injection(v: &str, knob: &str) -> Result<Option<crate::measure::inject::Injection>> {
    crate::measure::inject::parse(v).map_err(|e| {
        Error::knob(
            knob,
            v,
            e,
            "PHASE:PCT% (PHASE prefill, decode, all or op:KIND; e.g. decode:5%, op:rms_norm:100%), PHASE:work=N, off",
        )
    })
}
