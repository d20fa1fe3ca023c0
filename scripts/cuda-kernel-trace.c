// cuda-kernel-trace: the device timeline of any CUDA program, kernel by kernel, from CUPTI's
// activity API (the records Nsight Systems is built on), with no change to the program: it is
// loaded by the CUDA driver itself through CUDA_INJECTION64_PATH. Part of modelbench (issue 60:
// where a decode step's time goes on the GPU, for candle and for llama.cpp alike).
//
// Build (no GPU needed; CUPTI's headers and libcupti come with scripts/install-cuda-toolchain.sh):
//   gcc -O2 -shared -fPIC -I"$CUDA_HOME/include" scripts/cuda-kernel-trace.c
//       -o cuda-kernel-trace.so -L"$CUDA_HOME/lib" -lcupti     (one command)
// Use (libcupti.so.13 on the loader path, e.g. from the nvidia-cuda-cupti wheel):
//   CUDA_INJECTION64_PATH=$PWD/cuda-kernel-trace.so CUDA_KERNEL_TRACE_OUT=/tmp/t program ...
// writes /tmp/t.<pid>.tsv, one line per device activity, times in ns of CUPTI's clock:
//   K <start> <end> <stream> <graph id> <name>     a kernel (graph-launched ones too)
//   M <start> <end> <stream> <bytes> <copy kind>   a memory copy (1 HtoD, 2 DtoH, 8 DtoD, ...)
//   S <start> <end> <stream> <bytes>               a memset
//   D <dropped records>                            records CUPTI dropped (a buffer was full)
// The records are the device's own start and end stamps of each activity inside the running
// program (not each kernel timed alone); scripts/cuda-trace-summary.py turns two such traces
// (the same generation with two decode lengths) into per-token device busy time, idle time
// between kernels, and the kernels that take it.
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

#define BUF_SIZE (16u << 20)
static FILE *g_out = NULL;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = (uint8_t *) aligned_alloc(8, BUF_SIZE);
    *size = *buffer ? BUF_SIZE : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void) ctx; (void) stream; (void) size;
    CUpti_Activity *rec = NULL;
    pthread_mutex_lock(&g_lock);
    while (g_out && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        switch (rec->kind) {
        case CUPTI_ACTIVITY_KIND_KERNEL:
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
            CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *) rec;
            fprintf(g_out, "K\t%llu\t%llu\t%u\t%u\t%s\n", (unsigned long long) k->start,
                    (unsigned long long) k->end, k->streamId, k->graphId, k->name ? k->name : "?");
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
            CUpti_ActivityMemcpy6 *m = (CUpti_ActivityMemcpy6 *) rec;
            fprintf(g_out, "M\t%llu\t%llu\t%u\t%llu\t%u\n", (unsigned long long) m->start,
                    (unsigned long long) m->end, m->streamId, (unsigned long long) m->bytes,
                    (unsigned) m->copyKind);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
            CUpti_ActivityMemset4 *m = (CUpti_ActivityMemset4 *) rec;
            fprintf(g_out, "S\t%llu\t%llu\t%u\t%llu\n", (unsigned long long) m->start,
                    (unsigned long long) m->end, m->streamId, (unsigned long long) m->bytes);
            break;
        }
        default:
            break;
        }
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(NULL, 0, &dropped) == CUPTI_SUCCESS && dropped && g_out) {
        fprintf(g_out, "D\t%zu\n", dropped);
    }
    pthread_mutex_unlock(&g_lock);
    free(buffer);
}

static void at_exit(void) {
    cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    pthread_mutex_lock(&g_lock);
    if (g_out) { fclose(g_out); g_out = NULL; }
    pthread_mutex_unlock(&g_lock);
}

static int check(CUptiResult r, const char *what) {
    if (r == CUPTI_SUCCESS) return 0;
    const char *msg = NULL;
    cuptiGetResultString(r, &msg);
    fprintf(stderr, "cuda-kernel-trace: %s failed: %s\n", what, msg ? msg : "unknown error");
    return 1;
}

// Called by the CUDA driver when it loads this library (CUDA_INJECTION64_PATH).
int InitializeInjection(void) {
    const char *base = getenv("CUDA_KERNEL_TRACE_OUT");
    if (!base || !*base) {
        fprintf(stderr, "cuda-kernel-trace: set CUDA_KERNEL_TRACE_OUT to the trace file's prefix\n");
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.%d.tsv", base, (int) getpid());
    g_out = fopen(path, "w");
    if (!g_out) { fprintf(stderr, "cuda-kernel-trace: cannot write %s\n", path); return 0; }
    if (check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks")
        || check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enabling kernel records")
        || check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enabling memcpy records")
        || check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enabling memset records")) {
        fclose(g_out);
        g_out = NULL;
        return 0;
    }
    atexit(at_exit);
    return 1;
}
