//! One header parse per load (issue 63 item 3): `modelbench generate` of a GGUF model reads
//! the file's header once, when its reference is resolved; the preflight, the scenario check,
//! the tokenizer and the loader use the header that travels with the resolved source
//! (`Resolved::gguf`). Every read is counted where it happens: the project's bounded scan and
//! candle's `Content::read` (`gguf::check::header_reads`), so one `generate` must count exactly
//! one of each. One test in its own binary: the counter is process-wide.

use clap::Parser;
use modelbench::models::gguf::check::header_reads;
use modelbench::models::sources::{resolve, ModelRef};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: modelbench::app::args::GenerateArgs,
}

#[test]
fn one_generate_reads_each_gguf_header_once() {
    // Both implementations' load paths: candle-transformers' (llama's default; lfm2's, which
    // rebuilds itself from the kept header on a reset) and the project's own.
    for model in [
        "gguf:fixture:llama",
        "gguf:fixture:llama?impl=modelbench",
        "gguf:fixture:qwen2",
        "gguf:fixture:lfm2",
    ] {
        // The fixture file is written (by the project's writer) before counting.
        let res = resolve(&ModelRef::parse(model).unwrap(), model).unwrap();
        // The counter counts: reading the header again is two reads (scan, candle's reader).
        let modelbench::models::Weights::Gguf(path) = &res.weights else {
            panic!("{model} is not a GGUF file")
        };
        let before = header_reads();
        modelbench::models::gguf::check::read_header(path).unwrap();
        assert_eq!(header_reads() - before, 2, "{model}: read_header");
        let cli = Cli::try_parse_from([
            "generate",
            "--model",
            model,
            "--prompt",
            "one two three",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ])
        .unwrap();
        let before = header_reads();
        modelbench::app::generate::generate(cli.args).unwrap();
        let reads = header_reads() - before;
        assert_eq!(
            reads, 2,
            "{model}: one generate read the header {reads} times (one bounded scan and one candle read expected)"
        );
    }
}
