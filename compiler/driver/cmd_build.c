/* placeholder */
#include "commands.h"
int moec_cmd_build(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int moec_cmd_tune(int argc, char **argv) { (void)argc; (void)argv; return 1; }
