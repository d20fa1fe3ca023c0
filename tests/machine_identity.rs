//! The machine identity (issue 46, item 6): two CPUs that share a model name ("AMD EPYC", 2
//! threads, no GPU) but not family/model or ISA features get different identities, so their
//! records are never compared as like for like: `modelbench compare` of two run folders, one
//! from each, refuses with both identities named (exit 2) and calls nothing a regression, while
//! the same two runs recorded on one identity compare. The noise profile files of the two are
//! different files. A record written before the identity existed still reads, with its old
//! key. And scripts/machine-id.sh (the shell's key, for `.ci/run`'s llama.cpp cache) prints
//! what the code computes.

mod common;

use std::path::Path;

use modelbench::measure::hardware::CpuIdentity;
use modelbench::output::record::{Kind, Precision, Record};
use modelbench::output::report::write_artifacts;

/// The first processor block of /proc/cpuinfo of the two AMD machines the project ran on
/// (fields as Linux prints them; the flags cut to those that matter plus neighbours).
const EPYC_VNNI: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni vaes\n\nprocessor\t: 1\n";
const EPYC_AVX2: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 avx avx2 fma vaes\n\nprocessor\t: 1\n";

fn record(id: Option<CpuIdentity>, samples: &[f64]) -> Record {
    let mut r = Record::from_samples(Kind::Generation, "medium", samples.to_vec(), 64);
    r.id = "medium/cpu-f32/fixture:llama".into();
    r.model.label = "fixture:llama".into();
    r.dtype = Precision::Float(candle_core::DType::F32);
    r.device = "cpu".into();
    r.prompt_tokens = Some(64);
    r.new_tokens = Some(64);
    r.sampling_desc = "greedy".into();
    r.hardware.cpu = "AMD EPYC".into();
    r.hardware.cores = 2;
    r.hardware.gpu = None;
    r.hardware.cpu_id = id;
    r
}

fn compare(base: &Path, new: &Path) -> std::process::Output {
    common::bin()
        .arg("compare")
        .arg(base)
        .arg(new)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MODELBENCH_DB")
        .output()
        .unwrap()
}

#[test]
fn two_cpus_of_one_model_name_are_two_identities() {
    let vnni = CpuIdentity::parse(EPYC_VNNI, (32, 1024, 32768));
    let avx2 = CpuIdentity::parse(EPYC_AVX2, (32, 512, 32768));
    assert_eq!(
        (vnni.vendor.as_str(), vnni.family, vnni.model, vnni.stepping),
        ("AuthenticAMD", 25, 17, 1)
    );
    assert_eq!(vnni.features, ["avx2", "avx512f", "vnni"]);
    assert_eq!(avx2.features, ["avx2"]);
    assert_eq!(
        vnni.key(),
        "amd-25-17-1-avx2-avx512f-vnni-l1d32k-l2-1024k-l3-32768k"
    );
    assert_eq!(avx2.key(), "amd-25-1-1-avx2-l1d32k-l2-512k-l3-32768k");

    // What the old fingerprint saw: the same machine twice.
    let (a, b) = (record(None, &[1.0]), record(None, &[1.0]));
    assert_eq!(a.hardware.fingerprint(), "AMD EPYC x2 | no-gpu");
    assert_eq!(a.hardware.fingerprint(), b.hardware.fingerprint());
    // With the identity: two machines, and two noise profile files.
    let (a, b) = (
        record(Some(vnni.clone()), &[1.0]),
        record(Some(avx2), &[1.0]),
    );
    assert_ne!(a.hardware.fingerprint(), b.hardware.fingerprint());
    assert!(a.hardware.fingerprint().contains(&vnni.key()));
    let root = Path::new("noise");
    assert_ne!(
        modelbench::output::noise::path_for(root, &a.hardware.fingerprint()),
        modelbench::output::noise::path_for(root, &b.hardware.fingerprint())
    );
    assert!(a.hardware.describe().contains("family 25 model 17"));
}

/// Both sides of the verdict: the new run is 30% slower. Recorded on two identities, `compare`
/// refuses (exit 2) naming both and says nothing of a regression; recorded on one identity,
/// the same samples compare and the slowdown is a regression.
#[test]
fn compare_across_two_identities_says_so_instead_of_a_regression() {
    let vnni = CpuIdentity::parse(EPYC_VNNI, (32, 1024, 32768));
    let avx2 = CpuIdentity::parse(EPYC_AVX2, (32, 512, 32768));
    let fast: Vec<f64> = (0..10).map(|i| 1.0 + 0.001 * i as f64).collect();
    let slow: Vec<f64> = fast.iter().map(|s| s * 1.3).collect();
    let tmp = tempfile::tempdir().unwrap();
    let (base, other, same) = (
        tmp.path().join("base"),
        tmp.path().join("other-cpu"),
        tmp.path().join("same-cpu"),
    );
    write_artifacts(&base, &[record(Some(vnni.clone()), &fast)]).unwrap();
    write_artifacts(&other, &[record(Some(avx2.clone()), &slow)]).unwrap();
    write_artifacts(&same, &[record(Some(vnni.clone()), &slow)]).unwrap();

    let o = compare(&base, &other);
    let t = common::text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("different hardware"), "{t}");
    assert!(t.contains(&vnni.key()) && t.contains(&avx2.key()), "{t}");
    assert!(!t.to_lowercase().contains("regression"), "{t}");

    let o = compare(&base, &same);
    let t = common::text(&o);
    assert!(t.to_lowercase().contains("regression"), "{t}");
}

/// A record from before the identity (no `cpu_id` field) reads, keeps its old key, and is
/// not like for like with a record that has an identity.
#[test]
fn a_record_without_an_identity_still_reads() {
    let r = record(
        Some(CpuIdentity::parse(EPYC_VNNI, (32, 1024, 32768))),
        &[1.0],
    );
    let mut v = serde_json::to_value(&r).unwrap();
    assert!(v["hardware"]["cpu_id"].is_object());
    v["hardware"].as_object_mut().unwrap().remove("cpu_id");
    let old: Record = serde_json::from_value(v).unwrap();
    assert_eq!(old.hardware.cpu_id, None);
    assert_eq!(old.hardware.fingerprint(), "AMD EPYC x2 | no-gpu");
    assert_ne!(old.hardware.fingerprint(), r.hardware.fingerprint());
}

/// The shell's key (scripts/machine-id.sh, which keys `.ci/run`'s llama.cpp cache) is the
/// code's, on this machine.
#[test]
fn the_shell_key_is_the_codes() {
    let o = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/machine-id.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let shell = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let code = CpuIdentity::probe();
    eprintln!("this machine: {shell} ({code:?})");
    assert_eq!(shell, code.key());
    assert!(code.family > 0 || !cfg!(target_arch = "x86_64"), "{code:?}");
}
