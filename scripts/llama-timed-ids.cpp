// llama-timed-ids: one timed greedy generation with llama.cpp from given prompt token ids, the
// peer program of `modelbench peers` (issue 30). Part of modelbench (scripts/build-llama-cpp.sh
// compiles it against the same static libllama / libggml as the other tools).
//
// It does what candle's generation trial does, on the same ids: one prompt pass over all P ids
// (n_batch = n_ubatch = P), the argmax of the last position's logits is token 1, then G-1 single
// token steps, each taking the argmax; no sampler, no EOS stop. Every token's time since the
// start of the prompt pass is printed, so modelbench computes TTFT, TPOT, prefill and decode
// rates with the same code as for candle. Before the timed generation, --warmup untimed ones
// run (the KV cache is cleared before each).
//
// usage: llama-timed-ids -m MODEL --ids FILE -n G [-t THREADS] [-ctk TYPE] [-ctv TYPE]
//                        [--fa on|off|auto] [--warmup W] [-ngl N]
//   -ngl N: layers offloaded to the GPU of a CUDA build (default 0: all on the CPU; 99: every
//   layer, as `modelbench peers --device cuda` runs it).
//   FILE: the prompt token ids, whitespace-separated. TYPE: f32, f16, bf16, q8_0 (omitted:
//   llama.cpp's default, f16). --fa omitted: llama.cpp's default, auto.
// Output: one JSON object on stdout (see the keys below); errors: one line on stderr, exit 1/2.
//
// Measured here, not echoed: load_s (llama_model_load_from_file), context_s
// (llama_init_from_model), the per-thread CPU time of the timed generation from
// /proc/self/task/*/stat (utime + stime, clock ticks), and the flash-attention setting that
// llama.cpp resolved "auto" to (read from its own log line).
#include "llama.h"
#include <chrono>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

static std::string g_fa_resolved = "not reported";

static void log_cb(ggml_log_level level, const char * text, void *) {
    if (strstr(text, "Flash Attention enabled")) g_fa_resolved = "enabled";
    if (strstr(text, "Flash Attention not supported")) g_fa_resolved = "disabled";
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

// utime + stime (clock ticks) of every thread of this process.
static std::map<long, long long> thread_ticks() {
    std::map<long, long long> out;
    DIR * d = opendir("/proc/self/task");
    if (!d) return out;
    while (dirent * e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/stat");
        std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        size_t p = s.rfind(')');
        if (p == std::string::npos) continue;
        std::istringstream rest(s.substr(p + 2));
        std::string field;
        long long ut = 0, st = 0;
        // fields after the comm: state(3) ... utime(14) stime(15)
        for (int i = 3; i <= 15 && (rest >> field); i++) {
            if (i == 14) ut = atoll(field.c_str());
            if (i == 15) st = atoll(field.c_str());
        }
        out[atol(e->d_name)] = ut + st;
    }
    closedir(d);
    return out;
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

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    std::string model_path, ids_path, ctk, ctv, fa_arg = "default";
    int n_threads = 0, n_gen = 0, warmup = 1, n_gpu_layers = 0;
    llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    bool fa_given = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", a.c_str()); exit(2); }
            return argv[++i];
        };
        if (a == "-m") model_path = next();
        else if (a == "--ids") ids_path = next();
        else if (a == "-t") n_threads = atoi(next().c_str());
        else if (a == "-n") n_gen = atoi(next().c_str());
        else if (a == "--warmup") warmup = atoi(next().c_str());
        else if (a == "-ngl") n_gpu_layers = atoi(next().c_str());
        else if (a == "-ctk") ctk = next();
        else if (a == "-ctv") ctv = next();
        else if (a == "--fa") {
            fa_arg = next();
            fa_given = true;
            if (fa_arg == "on") fa = LLAMA_FLASH_ATTN_TYPE_ENABLED;
            else if (fa_arg == "off") fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            else if (fa_arg == "auto") fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
            else { fprintf(stderr, "error: --fa on|off|auto, not %s\n", fa_arg.c_str()); return 2; }
        }
        else { fprintf(stderr, "error: unknown argument %s\n", a.c_str()); return 2; }
    }
    if (model_path.empty() || ids_path.empty() || n_gen < 1 || warmup < 0 || n_threads < 0) {
        fprintf(stderr, "usage: %s -m MODEL --ids FILE -n G [-t THREADS] [-ctk TYPE] [-ctv TYPE] [--fa on|off|auto] [--warmup W] [-ngl N]\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> ids;
    {
        std::ifstream f(ids_path);
        if (!f) { fprintf(stderr, "error: cannot read %s\n", ids_path.c_str()); return 2; }
        long long v;
        while (f >> v) ids.push_back((llama_token) v);
        if (ids.empty()) { fprintf(stderr, "error: %s holds no token ids\n", ids_path.c_str()); return 2; }
    }
    const int n_prompt = (int) ids.size();
    llama_log_set(log_cb, nullptr);
    llama_backend_init();

    using clk = std::chrono::steady_clock;
    auto secs = [](clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    auto t_load0 = clk::now();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    // llama.cpp's own switch for --no-repack (LLAMA_ARG_REPACK=false): no extra buffer types.
    // The project's scripts set it on CPUs with AMX, whose ggml matmul (ggml_backend_amx_mul_mat)
    // faults on this project's Intel VMs.
    if (const char * r = getenv("LLAMA_ARG_REPACK")) {
        std::string v = r;
        if (v == "0" || v == "false" || v == "off" || v == "no") mp.use_extra_bufts = false;
    }
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "error: unable to load %s\n", model_path.c_str()); return 1; }
    auto t_load1 = clk::now();
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token t : ids) {
        if (t < 0 || t >= n_vocab) { fprintf(stderr, "error: prompt id %d is outside the vocabulary (%d)\n", t, n_vocab); return 2; }
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_gen;
    cp.n_batch = n_prompt;
    cp.n_ubatch = n_prompt;
    cp.n_seq_max = 1;
    if (n_threads > 0) { cp.n_threads = n_threads; cp.n_threads_batch = n_threads; }
    if (fa_given) cp.flash_attn_type = fa;
    if (!ctk.empty() && !parse_type(ctk, cp.type_k)) { fprintf(stderr, "error: -ctk %s: use f32, f16, bf16 or q8_0\n", ctk.c_str()); return 2; }
    if (!ctv.empty() && !parse_type(ctv, cp.type_v)) { fprintf(stderr, "error: -ctv %s: use f32, f16, bf16 or q8_0\n", ctv.c_str()); return 2; }
    auto t_ctx0 = clk::now();
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "error: failed to create the context\n"); return 1; }
    auto t_ctx1 = clk::now();

    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    auto set_tokens = [&](const llama_token * t, int n, llama_pos pos0) {
        llama_batch_ext_clear(batch);
        for (int i = 0; i < n; i++) {
            const int32_t idx = llama_batch_ext_add_token(batch, 0, t[i]);
            const llama_pos pos = pos0 + i;
            llama_batch_ext_set_pos(batch, idx, &pos);
        }
        llama_batch_ext_set_output_logits(batch, n - 1, true);
    };
    auto argmax = [&]() {
        const float * lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) if (lg[v] > lg[best]) best = v;
        return (llama_token) best;
    };
    std::vector<double> times;
    std::vector<llama_token> gen;
    auto generate = [&]() -> bool {
        llama_memory_clear(llama_get_memory(ctx), true);
        times.clear();
        gen.clear();
        auto t0 = clk::now();
        set_tokens(ids.data(), n_prompt, 0);
        llama_pos n_past = 0;
        int n_in = n_prompt;
        for (int step = 0; step < n_gen; step++) {
            if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) return false;
            n_past += n_in;
            llama_token t = argmax();
            times.push_back(secs(t0, clk::now()));
            gen.push_back(t);
            set_tokens(&t, 1, n_past);
            n_in = 1;
        }
        return true;
    };
    for (int w = 0; w < warmup; w++) {
        if (!generate()) { fprintf(stderr, "error: decode failed (warm-up)\n"); return 1; }
    }
    auto ticks0 = thread_ticks();
    auto tw0 = clk::now();
    if (!generate()) { fprintf(stderr, "error: decode failed\n"); return 1; }
    auto tw1 = clk::now();
    auto ticks1 = thread_ticks();
    const double hz = (double) sysconf(_SC_CLK_TCK);

    std::string o = "{\"tool\":\"llama-timed-ids\"";
    auto num = [](double x) { char b[64]; snprintf(b, sizeof b, "%.9g", x); return std::string(b); };
    char desc[256] = {0};
    llama_model_desc(model, desc, sizeof desc);
    o += ",\"model\":" + jstr(model_path);
    o += ",\"model_desc\":" + jstr(desc);
    o += ",\"model_size_bytes\":" + std::to_string(llama_model_size(model));
    o += ",\"model_n_params\":" + std::to_string(llama_model_n_params(model));
    o += ",\"load_s\":" + num(secs(t_load0, t_load1));
    o += ",\"context_s\":" + num(secs(t_ctx0, t_ctx1));
    o += ",\"prompt_tokens\":" + std::to_string(n_prompt);
    o += ",\"new_tokens\":" + std::to_string(n_gen);
    o += ",\"warmup\":" + std::to_string(warmup);
    o += ",\"n_gpu_layers\":" + std::to_string(n_gpu_layers);
    o += ",\"n_threads\":" + std::to_string(llama_n_threads(ctx));
    o += ",\"n_threads_batch\":" + std::to_string(llama_n_threads_batch(ctx));
    o += ",\"n_ctx\":" + std::to_string(llama_n_ctx(ctx));
    o += ",\"n_batch\":" + std::to_string(llama_n_batch(ctx));
    o += ",\"n_ubatch\":" + std::to_string(llama_n_ubatch(ctx));
    o += ",\"type_k\":" + jstr(ggml_type_name(cp.type_k));
    o += ",\"type_v\":" + jstr(ggml_type_name(cp.type_v));
    o += ",\"flash_attn_requested\":" + jstr(fa_given ? fa_arg : std::string("default (") + llama_flash_attn_type_name(cp.flash_attn_type) + ")");
    o += ",\"flash_attn_resolved\":" + jstr(cp.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_AUTO ? g_fa_resolved : std::string(llama_flash_attn_type_name(cp.flash_attn_type)));
    o += ",\"timed_wall_s\":" + num(secs(tw0, tw1));
    o += ",\"thread_cpu_s\":[";
    bool first = true;
    for (auto & kv : ticks1) {
        auto it = ticks0.find(kv.first);
        long long d = kv.second - (it == ticks0.end() ? 0 : it->second);
        if (!first) o += ",";
        o += num(d / hz);
        first = false;
    }
    o += "],\"token_times_s\":[";
    for (size_t i = 0; i < times.size(); i++) { if (i) o += ","; o += num(times[i]); }
    o += "],\"generated_ids\":[";
    for (size_t i = 0; i < gen.size(); i++) { if (i) o += ","; o += std::to_string(gen[i]); }
    o += "],\"system_info\":" + jstr(llama_print_system_info());
    o += "}";
    printf("%s\n", o.c_str());
    fflush(stdout);
    llama_batch_ext_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
