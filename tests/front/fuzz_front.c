/* fuzz_front.c - libFuzzer target: any bytes through the whole front end.
 *
 * Parse, import resolution (imports are turned off: the fuzzer must not read files),
 * inheritance, the semantic pass, diagnostics printing, the AST dump and, for a
 * model that checks, the stats. Built with ASan and UBSan (MOE_FUZZ=ON, clang); a
 * crash, a sanitizer report, a leak or a timeout is a bug.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "front.h"
#include "stats.h"

static FILE *sink;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    sink = fopen("/dev/null", "w");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    front *f = front_create();
    if (!f) return 0;
    front_allow_imports(f, false);
    const md_model *m = front_load_text(f, "fuzz.moe", (const char *)data, size, NULL);
    if (sink) {
        front_print_diagnostics(f, sink);
        front_dump_ast(f, sink);
    }
    /* stats allocate per layer and tensor: bounded so one input stays fast */
    if (m && m->layers <= 256) {
        md_stats s;
        if (md_stats_compute(m, front_arena(f), &s) == 0 && sink) {
            md_stats_print(sink, m, &s);
            md_stats_print_json(sink, m, &s);
        }
    }
    front_destroy(f);
    return 0;
}
