// llama-logits: llama.cpp's full-vocabulary logits, as f32, at the positions llama-perplexity
// scores; the full-precision reference of modelbench's KL-divergence gate (issue 61 items 2-3).
// Part of modelbench (scripts/build-llama-cpp.sh compiles it against the same static libllama /
// libggml as the other tools).
//
// llama-perplexity --kl-divergence-base stores log-probabilities in 16 bits (a step of 0.00024
// nats), which puts a floor of about 1e-4 under every KLD measured against it. This program
// writes the logits themselves, so a KLD against it is exact to f32.
//
// usage:
//   llama-logits -m MODEL --ids FILE -c N_CTX --first F -o OUT [-t THREADS] [-ub N_UBATCH]
//                [-ctk TYPE] [-ctv TYPE] [--fa on|off]
//     FILE holds whitespace-separated token ids, a whole number of chunks of N_CTX ids (BOS in
//     place, as llama-perplexity evaluates them). Each chunk is evaluated from an empty KV cache
//     in micro-batches of N_UBATCH ids (default N_CTX: the whole chunk at once, as
//     llama-perplexity does); the logits of positions F .. N_CTX-2 of every chunk (the ones
//     llama-perplexity scores against the next id when F = N_CTX/2) are written to OUT:
//     8 bytes "MBLOGIT1", u32 n_vocab, u32 n_rows, then n_rows x n_vocab f32 (little-endian).
//     --rope-base-ulps N: the model's RoPE base (its `<arch>.rope.freq_base`) moved N f32 ulps
//     up: the RoPE frequencies' own f32 resolution, a perturbation at the arithmetic's level.
//     TYPE: f32 (default here: the cache closest to an f32 implementation), f16, bf16, q8_0.
//     --fa: default off. One JSON object on stdout says what ran (threads, batch sizes, types,
//     flash attention, llama.cpp's system info).
//   llama-logits --to-f32 IN OUT [-t THREADS]
//     IN rewritten with every tensor as F32 (llama_model_quantize, LLAMA_FTYPE_ALL_F32, with
//     requantizing allowed): ggml's own dequantization, metadata and vocabulary kept.
// Errors: one line on stderr, exit 1 (llama.cpp failed) or 2 (bad arguments or input).
#include "llama.h"
#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

static void log_cb(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static bool parse_type(const std::string & v, ggml_type & t) {
    if (v == "f32") t = GGML_TYPE_F32;
    else if (v == "f16") t = GGML_TYPE_F16;
    else if (v == "bf16") t = GGML_TYPE_BF16;
    else if (v == "q8_0") t = GGML_TYPE_Q8_0;
    else return false;
    return true;
}

static std::string jstr(const std::string & s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if ((unsigned char) c < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; }
        else o += c;
    }
    return o + "\"";
}

static int to_f32(const std::string & in, const std::string & out, int n_threads) {
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = LLAMA_FTYPE_ALL_F32;
    qp.allow_requantize = true;
    qp.quantize_output_tensor = true;
    if (n_threads > 0) qp.nthread = n_threads;
    const std::string tmp = out + ".partial";
    if (llama_model_quantize(in.c_str(), tmp.c_str(), &qp) != 0) {
        std::remove(tmp.c_str());
        fprintf(stderr, "error: llama_model_quantize could not rewrite %s as F32\n", in.c_str());
        return 1;
    }
    if (std::rename(tmp.c_str(), out.c_str()) != 0) {
        fprintf(stderr, "error: cannot move %s to %s\n", tmp.c_str(), out.c_str());
        return 1;
    }
    printf("{\"tool\":\"llama-logits\",\"to_f32\":%s,\"from\":%s}\n", jstr(out).c_str(), jstr(in).c_str());
    return 0;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    std::string model_path, ids_path, out_path, ctk = "f32", ctv = "f32", fa_arg = "off", f32_in, f32_out;
    int n_threads = 0, n_ctx = 0, first = -1, n_ubatch = 0, rope_ulps = 0;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", a.c_str()); exit(2); }
            return argv[++i];
        };
        if (a == "-m") model_path = next();
        else if (a == "--ids") ids_path = next();
        else if (a == "-o") out_path = next();
        else if (a == "-t") n_threads = atoi(next().c_str());
        else if (a == "-c") n_ctx = atoi(next().c_str());
        else if (a == "--first") first = atoi(next().c_str());
        else if (a == "-ub") n_ubatch = atoi(next().c_str());
        else if (a == "-ctk") ctk = next();
        else if (a == "-ctv") ctv = next();
        else if (a == "--fa") fa_arg = next();
        else if (a == "--rope-base-ulps") rope_ulps = atoi(next().c_str());
        else if (a == "--to-f32") { f32_in = next(); f32_out = next(); }
        else { fprintf(stderr, "error: unknown argument %s\n", a.c_str()); return 2; }
    }
    llama_log_set(log_cb, nullptr);
    llama_backend_init();
    if (!f32_in.empty()) return to_f32(f32_in, f32_out, n_threads);

    if (model_path.empty() || ids_path.empty() || out_path.empty() || n_ctx < 4 || first < 0
        || first > n_ctx - 2 || n_threads < 0 || n_ubatch < 0) {
        fprintf(stderr, "usage: %s -m MODEL --ids FILE -c N_CTX --first F -o OUT [-t THREADS] [-ub N_UBATCH] [-ctk TYPE] [-ctv TYPE] [--fa on|off]\n", argv[0]);
        return 2;
    }
    if (n_ubatch == 0) n_ubatch = n_ctx;
    llama_flash_attn_type fa;
    if (fa_arg == "on") fa = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    else if (fa_arg == "off") fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    else { fprintf(stderr, "error: --fa on|off, not %s\n", fa_arg.c_str()); return 2; }

    std::vector<llama_token> ids;
    {
        std::ifstream f(ids_path);
        if (!f) { fprintf(stderr, "error: cannot read %s\n", ids_path.c_str()); return 2; }
        long long v;
        while (f >> v) ids.push_back((llama_token) v);
    }
    if (ids.empty() || ids.size() % n_ctx != 0) {
        fprintf(stderr, "error: %s holds %zu ids, not a whole number of chunks of %d\n", ids_path.c_str(), ids.size(), n_ctx);
        return 2;
    }
    const int n_chunks = (int) (ids.size() / n_ctx);

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    // llama.cpp's own switch for --no-repack (LLAMA_ARG_REPACK=false), as llama-timed-ids.
    if (const char * r = getenv("LLAMA_ARG_REPACK")) {
        std::string v = r;
        if (v == "0" || v == "false" || v == "off" || v == "no") mp.use_extra_bufts = false;
    }
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "error: unable to load %s\n", model_path.c_str()); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token t : ids) {
        if (t < 0 || t >= n_vocab) { fprintf(stderr, "error: id %d is outside the vocabulary (%d)\n", t, n_vocab); return 2; }
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ubatch;
    cp.n_seq_max = 1;
    cp.flash_attn_type = fa;
    if (n_threads > 0) { cp.n_threads = n_threads; cp.n_threads_batch = n_threads; }
    float rope_base = 0.0f;
    if (rope_ulps != 0) {
        char key[256], val[256];
        for (int32_t i = 0; i < llama_model_meta_count(model); i++) {
            if (llama_model_meta_key_by_index(model, i, key, sizeof key) < 0) continue;
            const std::string k = key, suffix = ".rope.freq_base";
            if (k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0
                && llama_model_meta_val_str_by_index(model, i, val, sizeof val) >= 0) {
                rope_base = strtof(val, nullptr);
            }
        }
        if (!(rope_base > 0.0f)) { fprintf(stderr, "error: --rope-base-ulps: the model has no <arch>.rope.freq_base\n"); return 2; }
        for (int u = 0; u < abs(rope_ulps); u++) rope_base = nextafterf(rope_base, rope_ulps > 0 ? INFINITY : 0.0f);
        cp.rope_freq_base = rope_base;
    }
    if (!parse_type(ctk, cp.type_k)) { fprintf(stderr, "error: -ctk %s: use f32, f16, bf16 or q8_0\n", ctk.c_str()); return 2; }
    if (!parse_type(ctv, cp.type_v)) { fprintf(stderr, "error: -ctv %s: use f32, f16, bf16 or q8_0\n", ctv.c_str()); return 2; }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "error: failed to create the context\n"); return 1; }

    const std::string tmp = out_path + ".partial";
    FILE * out = fopen(tmp.c_str(), "wb");
    if (!out) { fprintf(stderr, "error: cannot write %s\n", tmp.c_str()); return 2; }
    const uint32_t rows_per_chunk = (uint32_t) (n_ctx - 1 - first);
    const uint32_t header[2] = { (uint32_t) n_vocab, rows_per_chunk * (uint32_t) n_chunks };
    fwrite("MBLOGIT1", 1, 8, out);
    fwrite(header, sizeof(uint32_t), 2, out);

    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    for (int c = 0; c < n_chunks; c++) {
        llama_memory_clear(llama_get_memory(ctx), true);
        const llama_token * chunk = ids.data() + (size_t) c * n_ctx;
        llama_batch_ext_clear(batch);
        std::vector<int32_t> want;
        for (int i = 0; i < n_ctx; i++) {
            const int32_t idx = llama_batch_ext_add_token(batch, 0, chunk[i]);
            const llama_pos pos = i;
            llama_batch_ext_set_pos(batch, idx, &pos);
            if (i >= first && i <= n_ctx - 2) {
                llama_batch_ext_set_output_logits(batch, idx, true);
                want.push_back(i);
            }
        }
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
            fclose(out);
            std::remove(tmp.c_str());
            fprintf(stderr, "error: decode of chunk %d failed\n", c);
            return 1;
        }
        for (int32_t i : want) {
            const float * lg = llama_get_logits_ith(ctx, i);
            if (!lg || fwrite(lg, sizeof(float), n_vocab, out) != (size_t) n_vocab) {
                fclose(out);
                std::remove(tmp.c_str());
                fprintf(stderr, "error: no logits for position %d of chunk %d (or the write failed)\n", i, c);
                return 1;
            }
        }
    }
    if (fclose(out) != 0 || std::rename(tmp.c_str(), out_path.c_str()) != 0) {
        std::remove(tmp.c_str());
        fprintf(stderr, "error: cannot write %s\n", out_path.c_str());
        return 1;
    }
    std::string o = "{\"tool\":\"llama-logits\"";
    char desc[256] = {0};
    llama_model_desc(model, desc, sizeof desc);
    o += ",\"model\":" + jstr(model_path);
    o += ",\"model_desc\":" + jstr(desc);
    o += ",\"n_vocab\":" + std::to_string(n_vocab);
    o += ",\"n_chunks\":" + std::to_string(n_chunks);
    o += ",\"n_ctx\":" + std::to_string(llama_n_ctx(ctx));
    o += ",\"first\":" + std::to_string(first);
    o += ",\"rows\":" + std::to_string(rows_per_chunk * n_chunks);
    o += ",\"n_threads\":" + std::to_string(llama_n_threads_batch(ctx));
    o += ",\"n_batch\":" + std::to_string(llama_n_batch(ctx));
    o += ",\"n_ubatch\":" + std::to_string(llama_n_ubatch(ctx));
    o += ",\"type_k\":" + jstr(ggml_type_name(cp.type_k));
    o += ",\"type_v\":" + jstr(ggml_type_name(cp.type_v));
    o += ",\"flash_attn\":" + jstr(fa_arg);
    if (rope_ulps != 0) { char b[64]; snprintf(b, sizeof b, "%.9g", rope_base); o += ",\"rope_freq_base\":" + std::string(b); }
    o += ",\"system_info\":" + jstr(llama_print_system_info());
    o += "}";
    puts(o.c_str());
    llama_batch_ext_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
