/* main.c - moec's command line: dispatches to the subcommands of moe-language.md section 6.
 * Exit status 0 success, 1 failure, 2 a bad command line (cli.h). */
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "diag.h"

#ifndef MOE_VERSION
#define MOE_VERSION "0.0.0"
#endif

static void usage(FILE *out) {
    fprintf(out,
        "usage: moec <command> [options]\n"
        "\n"
        "commands:\n"
        "  check FILE [--model NAME]            parse and validate; silent on success\n"
        "  stats FILE [--model NAME] [--json]   parameters, FLOPs and memory per rank\n"
        "  build FILE -o OUT [--model NAME] [--target cpu|cuda|all]\n"
        "        [--emit ast|ir|schedule|c|cuda] [-O0..-O3] [--tune-db FILE]\n"
        "                                       compile to an executable\n"
        "  tune FILE [--model NAME] [--target cpu|cuda] [--db FILE] [--budget SECONDS]\n"
        "                                       measure kernel variants, record the winners\n"
        "\n"
        "  moec --help | --version; COMMAND -h for a command's options\n"
        "  FILE - reads the model from standard input\n"
        "\n"
        "exit status: 0 success, 1 failure (errors in the model, a failed build),\n"
        "2 a bad command line\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "--version")) { printf("moec %s\n", MOE_VERSION); return 0; }
    if (!strcmp(cmd, "check")) return moec_cmd_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "stats")) return moec_cmd_stats(argc - 1, argv + 1);
    if (!strcmp(cmd, "build")) return moec_cmd_build(argc - 1, argv + 1);
    if (!strcmp(cmd, "tune")) return moec_cmd_tune(argc - 1, argv + 1);
    static const char *const commands[] = {"check", "stats", "build", "tune", "help"};
    const char *near = diag_nearest(cmd, commands, 5);
    if (near) {
        fprintf(stderr, "moec: unknown command '%s'; did you mean '%s'?\n", cmd, near);
        return 2;
    }
    fprintf(stderr, "moec: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
